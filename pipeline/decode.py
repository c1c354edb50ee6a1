"""Stage ``decode``: trailers -> channels_first uint8 ``.npy`` shards, on Apache Beam.

Reads every video the annotations list (or every video in ``decode.input_dir``), samples frames
by timestamp (rule in ``pipeline/video.py``), and writes shards, labels and a manifest (layout in
``pipeline/shards.py``). Long videos are cut into parts, runs of whole shards, so that all
workers share them. Each Beam worker drives one supervised decoder process
(``pipeline/sandbox.py``): a video that aborts, segfaults or hangs decord fails alone, is named
in ``decode_report.json``, and everything else is still decoded. Trailers whose source, labels
and params are unchanged since the last run are skipped.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import math
import os
import threading
import time
from pathlib import Path

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from tqdm import tqdm

from pipeline.annotations import Problem, check_trailer_id, labelled_trailers
from pipeline.config import Config, DecodeConfig
from pipeline.errors import StageError
from pipeline.io import atomic_open, read_json, remove_leftovers, write_json
from pipeline.sandbox import CallFailed, Sandbox, SandboxError
from pipeline.shards import (
    UNLABELLED,
    DecodeParams,
    Job,
    Trailer,
    decoded_parts,
    tidy_receipts,
)
from pipeline.video import container_duration

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v")
DECODER = "pipeline.shards"
PRELOAD = (DECODER, "decord")
"""What the decoder processes import as they start, before their first video arrives."""


class DecodeParts(beam.DoFn):
    """Decode each Job in this worker's sandboxed decoder process.

    A part's outcome is a file: its receipt when it succeeds, its failure note when it does not
    (files, not Beam outputs, so that a part is accounted for the moment it ends, on any runner).
    """

    def __init__(self, stall_timeout_s: float, worker_max_videos: int) -> None:
        self.stall_timeout_s = stall_timeout_s
        self.worker_max_videos = worker_max_videos
        self.sandbox: Sandbox | None = None

    def setup(self) -> None:
        self.sandbox = Sandbox(self.stall_timeout_s, self.worker_max_videos, preload=PRELOAD)
        self.sandbox.start()

    def process(self, job: Job) -> None:
        try:
            self.sandbox.call(f"{DECODER}:decode_part", {"job": job})
        except (CallFailed, SandboxError) as exc:
            write_json(job.failure_note, {"error": str(exc)})

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


def decode_params(decode: DecodeConfig) -> DecodeParams:
    return DecodeParams(
        fps=decode.fps,
        height=decode.height,
        width=decode.width,
        aspect=decode.aspect,
        max_frames_per_shard=decode.max_frames_per_shard,
        fault_tolerance=decode.fault_tolerance,
    )


def find_trailers(config: Config) -> tuple[list[Trailer], list[Problem]]:
    """Every trailer to decode, and the problems of those that cannot even be tried."""
    decode, paths = config.decode, config.paths
    if decode.source == "folder":
        return _folder_trailers(Path(decode.input_dir or paths.videos))
    labelled, problems = labelled_trailers(paths.annotations, paths.splits)
    trailers = []
    for trailer_id, (split, segments) in labelled.items():
        source = paths.videos / f"trailer_{trailer_id}.mp4"
        if source.is_file():
            trailers.append(Trailer(trailer_id, split, str(source), tuple(segments)))
        else:
            problems.append(Problem(trailer_id, f"{source}: file not found"))
    return trailers, problems


def plan_jobs(
    trailers: dict[str, Trailer], fingerprints: dict[str, str], config: Config
) -> list[Job]:
    """The parts still to decode: what each trailer's current receipts do not cover yet.

    With several workers, a trailer longer than its fair share of the work (the shards left,
    over the workers) is cut into near-equal parts. Parts come largest first, so that runners
    that hand out work in order (Beam's local runner deals it round robin) balance it.
    """
    decode, shards_dir = config.decode, config.paths.shards
    params = decode_params(decode)
    splitting = decode.split_videos and worker_count(decode) > 1
    gaps = []  # (trailer, first shard not covered, estimated shards in all or None)
    for trailer_id, trailer in trailers.items():
        done, complete = decoded_parts(shards_dir, trailer_id, fingerprints[trailer_id])
        if not complete:
            start = done[-1]["stop_shard"] if done else 0
            total = _estimated_shards(trailer.source, decode) if splitting else None
            gaps.append((trailer, start, total))
    left = sum(max(1, total - start) for _, start, total in gaps if total is not None)
    share = math.ceil(left / worker_count(decode)) if left else 0
    planned = []  # (rough cost, job)
    for trailer, start, total in gaps:
        size = Path(trailer.source).stat().st_size
        for first, stop in _parts(start, total, share):
            job = Job(
                trailer, params, str(shards_dir), fingerprints[trailer.trailer_id], first, stop
            )
            planned.append((_cost(size, first, stop, total), job))
    planned.sort(key=lambda pair: -pair[0])
    threads = decoder_threads(decode, len(planned))
    return [dataclasses.replace(job, threads=threads) for _, job in planned]


def _cost(size: int, first: int, stop: int | None, total: int | None) -> float:
    """The bytes of source a part decodes, roughly: the video's share its shards are."""
    if total is None:
        return size
    return size * max((total if stop is None else stop) - first, 1) / total


def _estimated_shards(source: str, decode: DecodeConfig) -> int | None:
    duration = container_duration(source)
    if duration is None:
        return None
    return max(1, math.ceil(duration * decode.fps / decode.max_frames_per_shard))


def _parts(start: int, total: int | None, share: int) -> list[tuple[int, int | None]]:
    """Cut shards ``start`` to ``total`` into near-equal runs of at most ``share`` shards (0: do
    not cut); the last run stays open-ended, as the estimate from the header may be short."""
    if not share or total is None or total - start <= share:
        return [(start, None)]
    count = math.ceil((total - start) / share)
    bounds = [start + (total - start) * i // count for i in range(count)]
    return list(zip(bounds, [*bounds[1:], None], strict=True))


def worker_count(decode: DecodeConfig) -> int:
    return decode.num_workers or os.cpu_count() or 1


def decoder_threads(decode: DecodeConfig, jobs: int) -> int:
    """decord threads per video: as configured, or (0) the cores shared by the busy workers."""
    if decode.decoder_threads:
        return decode.decoder_threads
    busy = max(1, min(worker_count(decode), jobs))
    return max(1, (os.cpu_count() or 1) // busy)


def _folder_trailers(folder: Path) -> tuple[list[Trailer], list[Problem]]:
    if not folder.is_dir():
        raise StageError(f"decode.input_dir {folder}: not a folder")
    trailers, problems, seen = [], [], {}
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
            trailers.append(Trailer(trailer_id, UNLABELLED, str(source), None))
    return trailers, problems


def run_beam(jobs: list[Job], decode: DecodeConfig) -> None:
    """Decode ``jobs`` on the configured Beam runner; each leaves a receipt or a failure note."""
    try:
        pipeline = beam.Pipeline(options=beam_options(decode))
    except ValueError as exc:
        raise StageError(f"decode.runner {decode.runner!r}: {str(exc).split('. ')[0]}") from None
    with Progress(jobs), pipeline:
        (
            pipeline
            | "Parts" >> beam.Create(jobs, reshuffle=True)
            | "Decode" >> beam.ParDo(DecodeParts(decode.stall_timeout_s, decode.worker_max_videos))
        )


class Progress:
    """A tqdm bar fed by the receipts workers write, whatever the runner: parts done, with
    trailers done and frames per second beside it."""

    def __init__(self, jobs: list[Job], interval_s: float = 0.5) -> None:
        self.jobs = jobs
        self.interval_s = interval_s
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        start, done, frames = time.time(), set(), 0
        parts_left = collections.Counter(job.trailer.trailer_id for job in self.jobs)
        with tqdm(total=len(self.jobs), unit="part", desc="decode", disable=None) as bar:
            while True:
                stopping = self.stop.wait(self.interval_s)
                for job in self.jobs:
                    if job in done:
                        continue
                    if _written_since(job.receipt, start):
                        frames += sum(row["frames"] for row in _receipt_rows(job.receipt))
                    elif not _written_since(job.failure_note, start):
                        continue
                    done.add(job)
                    parts_left[job.trailer.trailer_id] -= 1
                    bar.update(1)
                trailers_done = sum(1 for left in parts_left.values() if not left)
                bar.set_postfix(
                    trailers=f"{trailers_done}/{len(parts_left)}",
                    frames_per_s=f"{frames / max(time.time() - start, 1e-9):.0f}",
                )
                if stopping:
                    return

    def __enter__(self) -> Progress:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        self.thread.join()


def _written_since(path: Path, start: float) -> bool:
    try:
        return path.stat().st_mtime >= start
    except FileNotFoundError:
        return False


def _receipt_rows(path: Path) -> list[dict]:
    receipt = read_json(path)
    return receipt["shards"] if receipt else []


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
    found, problems = find_trailers(config)
    trailers = {trailer.trailer_id: trailer for trailer in found}
    params = decode_params(decode)
    fingerprints = {key: trailer.fingerprint(params) for key, trailer in trailers.items()}
    paths.shards.mkdir(parents=True, exist_ok=True)
    remove_leftovers(paths.shards, recursive=True)
    jobs = plan_jobs(trailers, fingerprints, config)
    for job in jobs:
        job.failure_note.unlink(missing_ok=True)
    todo = {job.trailer.trailer_id for job in jobs}
    log.info(
        "%d trailers: %d to decode in %d parts, %d unchanged",
        len(trailers),
        len(todo),
        len(jobs),
        len(trailers) - len(todo),
    )
    if jobs:
        run_beam(jobs, decode)
    decoded_frames = sum(
        row["frames"]
        for job in jobs
        if _written_since(job.receipt, started)
        for row in _receipt_rows(job.receipt)
    )
    decoded, failures = collect(trailers, fingerprints, jobs, paths.shards)
    shard_count = write_manifest(paths.manifest, [part for parts in decoded for part in parts])
    problems += failures
    for problem in problems:
        log.warning("%s", problem.reason)
    failed = {p.trailer_id for p in problems if p.trailer_id} | {
        p.reason for p in problems if p.trailer_id is None
    }
    videos = len(trailers.keys() | failed)
    seconds = time.time() - started
    write_json(
        paths.decode_report,
        {
            "videos": videos,
            "decoded": len(todo) - len(failures),
            "unchanged": len(trailers) - len(todo),
            "failed": [{"trailer_id": p.trailer_id, "reason": p.reason} for p in problems],
            "shards": shard_count,
            "frames_decoded": decoded_frames,
            "seconds": round(seconds, 3),
            "frames_per_second": round(decoded_frames / seconds, 1) if seconds else None,
            "repeated_frames": {
                parts[0]["trailer_id"]: sum(part["repeated_frames"] for part in parts)
                for parts in decoded
            },
        },
    )
    if videos and len(failed) / videos > decode.max_failed_fraction:
        raise StageError(
            f"{len(failed)} of {videos} videos failed (decode.max_failed_fraction is "
            f"{decode.max_failed_fraction:g}); reasons in {paths.decode_report}"
        )


def collect(
    trailers: dict[str, Trailer], fingerprints: dict[str, str], jobs: list[Job], shards_dir: Path
) -> tuple[list[list[dict]], list[Problem]]:
    """Each complete trailer's receipts (older ones tidied away), and a problem per failed one.

    A failed trailer keeps the receipts of its finished parts: the next run decodes the rest.
    """
    notes: dict[str, list[Path]] = {}
    for job in jobs:
        notes.setdefault(job.trailer.trailer_id, []).append(job.failure_note)
    decoded, failures = [], []
    for trailer_id, trailer in trailers.items():
        parts, complete = decoded_parts(shards_dir, trailer_id, fingerprints[trailer_id])
        if complete:
            tidy_receipts(shards_dir, trailer_id, parts)
            decoded.append(parts)
            continue
        reasons = [note["error"] for path in notes.get(trailer_id, ()) if (note := read_json(path))]
        reason = reasons[0] if reasons else "no worker reported on it (worker lost?)"
        failures.append(Problem(trailer_id, f"{trailer.source}: {reason}"))
        for path in notes.get(trailer_id, ()):
            path.unlink(missing_ok=True)
    return decoded, failures
