"""Stage ``decode``: trailers -> channels_first uint8 ``.npy`` shards, on Apache Beam.

Reads every video the annotations list (or every video in ``decode.input_dir``), samples frames
by timestamp (rule in ``pipeline/video.py``), and writes shards, labels and a manifest (layout in
``pipeline/shards.py``). Each Beam worker drives one supervised decoder process
(``pipeline/sandbox.py``): a video that aborts, segfaults or hangs decord fails alone, is named
in ``decode_report.json``, and everything else is still decoded. Trailers whose source, labels
and params are unchanged since the last run are skipped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import threading
import time
from pathlib import Path

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from tqdm import tqdm

from pipeline.annotations import Problem, check_trailer_id, labelled_trailers
from pipeline.config import Config, DecodeConfig
from pipeline.errors import StageError
from pipeline.io import atomic_open, remove_leftovers, write_json
from pipeline.sandbox import CallFailed, Sandbox, SandboxError
from pipeline.shards import UNLABELLED, DecodeParams, Job, read_receipt, receipt_path

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v")


class DecodeTrailers(beam.DoFn):
    """Decode each Job in this worker's sandboxed decoder process; yield one outcome per job."""

    def __init__(self, stall_timeout_s: float, worker_max_videos: int) -> None:
        self.stall_timeout_s = stall_timeout_s
        self.worker_max_videos = worker_max_videos
        self.sandbox: Sandbox | None = None

    def setup(self) -> None:
        self.sandbox = Sandbox(self.stall_timeout_s, self.worker_max_videos)

    def process(self, job: Job):
        try:
            receipt = self.sandbox.call("pipeline.shards:decode_trailer", {"job": job})
        except (CallFailed, SandboxError) as exc:
            yield {"trailer_id": job.trailer_id, "source": job.source, "error": str(exc)}
        else:
            frames = sum(row["frames"] for row in receipt["shards"])
            yield {"trailer_id": job.trailer_id, "source": job.source, "frames": frames}

    def teardown(self) -> None:
        if self.sandbox is not None:
            self.sandbox.close()


def beam_options(decode: DecodeConfig) -> PipelineOptions:
    """Runner and options from the config: DirectRunner here, Dask/Flink/Spark/Dataflow alike.

    Beam's DirectRunner first tries Prism, a runner binary it downloads at run time, which
    ignores ``direct_running_mode``; its fallback, the FnApiRunner, is the local runner we
    mean, so "DirectRunner" runs on it directly, offline or not.
    """
    local = decode.runner == "DirectRunner"
    flags = [f"--runner={'FnApiRunner' if local else decode.runner}"]
    if local:
        flags += [
            f"--direct_running_mode={decode.direct_running_mode}",
            f"--direct_num_workers={worker_count(decode)}",
        ]
    flags += [f"--{key}={value}" for key, value in decode.runner_options.items()]
    return PipelineOptions(flags)


def plan_jobs(config: Config) -> tuple[list[Job], list[Problem]]:
    """Every trailer to decode, and the problems of those that cannot even be tried."""
    decode, paths = config.decode, config.paths
    params = DecodeParams(
        fps=decode.fps,
        height=decode.height,
        width=decode.width,
        aspect=decode.aspect,
        max_frames_per_shard=decode.max_frames_per_shard,
        fault_tolerance=decode.fault_tolerance,
    )

    def job(trailer_id: str, split: str, source: Path, segments) -> Job:
        return Job(trailer_id, split, str(source), segments, str(paths.shards), params, threads=1)

    if decode.source == "folder":
        jobs, problems = _folder_jobs(Path(decode.input_dir or paths.videos), job)
    else:
        trailers, problems = labelled_trailers(paths.annotations, paths.splits)
        jobs = []
        for trailer_id, (split, segments) in trailers.items():
            source = paths.videos / f"trailer_{trailer_id}.mp4"
            if source.is_file():
                jobs.append(job(trailer_id, split, source, tuple(segments)))
            else:
                problems.append(Problem(trailer_id, f"{source}: file not found"))
    threads = decoder_threads(decode, len(jobs))
    return [dataclasses.replace(j, threads=threads) for j in jobs], problems


def worker_count(decode: DecodeConfig) -> int:
    return decode.num_workers or os.cpu_count() or 1


def decoder_threads(decode: DecodeConfig, jobs: int) -> int:
    """decord threads per video: as configured, or (0) the cores shared by the busy workers."""
    if decode.decoder_threads:
        return decode.decoder_threads
    busy = max(1, min(worker_count(decode), jobs))
    return max(1, (os.cpu_count() or 1) // busy)


def _folder_jobs(folder: Path, job) -> tuple[list[Job], list[Problem]]:
    if not folder.is_dir():
        raise StageError(f"decode.input_dir {folder}: not a folder")
    jobs, problems, seen = [], [], {}
    for source in sorted(folder.iterdir()):
        if source.suffix.lower() not in VIDEO_SUFFIXES:
            continue
        trailer_id = source.stem.removeprefix("trailer_")
        bad_id = check_trailer_id(trailer_id)
        if bad_id:
            problems.append(Problem(None, f"{source}: {bad_id}"))
        elif trailer_id in seen:
            problems.append(
                Problem(trailer_id, f"{source}: duplicate trailer id of {seen[trailer_id]}")
            )
        else:
            seen[trailer_id] = source
            jobs.append(job(trailer_id, UNLABELLED, source, None))
    return jobs, problems


def run_beam(jobs: list[Job], decode: DecodeConfig, shards_dir: Path) -> list[dict]:
    """Decode ``jobs`` on the configured Beam runner; return one outcome per job."""
    scratch = shards_dir.parent / ".decode-outcomes"
    shutil.rmtree(scratch, ignore_errors=True)  # a killed run's leftovers
    try:
        pipeline = beam.Pipeline(options=beam_options(decode))
    except ValueError as exc:
        raise StageError(f"decode.runner {decode.runner!r}: {str(exc).split('. ')[0]}") from None
    try:
        with Progress(jobs, shards_dir), pipeline:
            (
                pipeline
                | "Trailers" >> beam.Create(jobs, reshuffle=True)
                | "Decode"
                >> beam.ParDo(DecodeTrailers(decode.stall_timeout_s, decode.worker_max_videos))
                | "ToJson" >> beam.Map(json.dumps)
                | "Outcomes" >> beam.io.WriteToText(f"{scratch}/outcome", file_name_suffix=".jsonl")
            )
        return [
            json.loads(line)
            for path in sorted(scratch.glob("outcome*.jsonl"))
            for line in path.read_text().splitlines()
        ]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class Progress:
    """A tqdm bar (trailers, frames/s) fed by the receipts workers write, whatever the runner."""

    def __init__(self, jobs: list[Job], shards_dir: Path, interval_s: float = 0.5) -> None:
        self.receipts = [receipt_path(shards_dir, job.trailer_id) for job in jobs]
        self.interval_s = interval_s
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        start, done, frames = time.time(), set(), 0
        with tqdm(total=len(self.receipts), unit="trailer", desc="decode", disable=None) as bar:
            while not self.stop.wait(self.interval_s) or len(done) < len(self.receipts):
                for path in self.receipts:
                    if path not in done and path.is_file() and path.stat().st_mtime >= start:
                        done.add(path)
                        frames += sum(r["frames"] for r in json.loads(path.read_text())["shards"])
                        bar.update(1)
                bar.set_postfix(frames_per_s=f"{frames / max(time.time() - start, 1e-9):.0f}")
                if self.stop.is_set():
                    break

    def __enter__(self) -> Progress:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        self.thread.join()


def write_manifest(path: Path, receipts: list[dict]) -> int:
    """One JSON line per shard, sorted by split, trailer and first frame; returns the count."""
    rows = sorted(
        (row for receipt in receipts for row in receipt["shards"]),
        key=lambda row: (row["split"], row["trailer_id"], row["first_frame"]),
    )
    with atomic_open(path) as handle:
        handle.writelines(json.dumps(row, sort_keys=True) + "\n" for row in rows)
    return len(rows)


def run(config: Config) -> None:
    """Decode every trailer that changed, then write the manifest and the report."""
    started = time.time()
    decode, paths = config.decode, config.paths
    jobs, problems = plan_jobs(config)
    paths.shards.mkdir(parents=True, exist_ok=True)
    remove_leftovers(paths.shards, recursive=True)
    todo = [job for job in jobs if not _unchanged(job, paths.shards)]
    log.info("%d trailers: %d to decode, %d unchanged", len(jobs), len(todo), len(jobs) - len(todo))
    outcomes = run_beam(todo, decode, paths.shards) if todo else []
    failures = [
        Problem(o["trailer_id"], f"{o['source']}: {o['error']}") for o in outcomes if "error" in o
    ]
    failed_ids = {problem.trailer_id for problem in failures}
    receipts = [
        receipt
        for job in jobs
        if job.trailer_id not in failed_ids
        and (receipt := read_receipt(paths.shards, job.trailer_id)) is not None
    ]
    shard_count = write_manifest(paths.manifest, receipts)
    problems += failures
    for problem in problems:
        log.warning("%s", problem.reason)
    job_ids = {job.trailer_id for job in jobs}
    failed = {p.trailer_id for p in problems if p.trailer_id} | {
        p.reason for p in problems if p.trailer_id is None
    }
    videos = len(job_ids | failed)
    decoded_frames = sum(o.get("frames", 0) for o in outcomes)
    seconds = time.time() - started
    write_json(
        paths.decode_report,
        {
            "videos": videos,
            "decoded": sum(1 for o in outcomes if "error" not in o),
            "unchanged": len(jobs) - len(todo),
            "failed": [{"trailer_id": p.trailer_id, "reason": p.reason} for p in problems],
            "shards": shard_count,
            "frames_decoded": decoded_frames,
            "seconds": round(seconds, 3),
            "frames_per_second": round(decoded_frames / seconds, 1) if seconds else None,
            "repeated_frames": {r["trailer_id"]: r["repeated_frames"] for r in receipts},
        },
    )
    if videos and len(failed) / videos > decode.max_failed_fraction:
        raise StageError(
            f"{len(failed)} of {videos} videos failed (decode.max_failed_fraction is "
            f"{decode.max_failed_fraction:g}); reasons in {paths.decode_report}"
        )


def _unchanged(job: Job, shards_dir: Path) -> bool:
    receipt = read_receipt(shards_dir, job.trailer_id)
    return receipt is not None and receipt["fingerprint"] == job.fingerprint()
