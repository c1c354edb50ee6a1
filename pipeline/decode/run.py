"""Stage ``decode``: trailers -> channels_first uint8 ``.npy`` shards, on Apache Beam.

Reads every video the annotations list (or every video in ``decode.input_dir``), samples frames
by timestamp (rule in ``pipeline/core/video.py``), and writes shards, labels, the manifest
(``pipeline/core/manifest.py``), a report and the stage's metrics. What is left to decode comes from
``plan``; each Beam worker drives one supervised decoder process (``pipeline/infra/sandbox.py``)
running ``worker.decode_part``: a video that aborts, segfaults or hangs decord fails alone, is
named in the report, and everything else is still decoded. Trailers whose source, labels and
params are unchanged since the last run, and whose shards are intact, are skipped; every file
in the videos folder that is not decoded is listed in the report with the reason.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import threading
import time
from pathlib import Path

import apache_beam as beam
from tqdm import tqdm

from pipeline.core import manifest
from pipeline.core.annotations import Problem
from pipeline.core.config import Config, DecodeConfig
from pipeline.core.errors import StageError
from pipeline.core.io import NO_SPACE, DiskFull, read_json, remove_leftovers, write_json
from pipeline.core.video import cut_short_message
from pipeline.decode import worker
from pipeline.decode.plan import decode_params, find_trailers, plan_jobs
from pipeline.decode.receipts import (
    Verify,
    decoded_parts,
    shard_rows,
    source_digests,
    tidy_receipts,
)
from pipeline.decode.worker import Job, Trailer
from pipeline.infra.beam import new_pipeline
from pipeline.infra.sandbox import CallFailed, Sandbox, SandboxError

log = logging.getLogger(__name__)

DECODER = worker.__name__
PRELOAD = (DECODER, "decord")
"""What the decoder processes import as they start, before their first video arrives."""


class DecodeParts(beam.DoFn):
    """Decode each Job in this worker's sandboxed decoder process.

    A part's outcome is a file: its receipt when it succeeds, its failure note when it does not
    (files, not Beam outputs, so that a part is accounted for the moment it ends, on any runner).
    Relative paths in a Job are taken from ``cwd``, the stage's working directory, wherever the
    worker runs (a Dask worker has its own).
    """

    def __init__(self, stall_timeout_s: float, worker_max_videos: int, cwd: str) -> None:
        self.stall_timeout_s = stall_timeout_s
        self.worker_max_videos = worker_max_videos
        self.cwd = cwd
        self.sandbox: Sandbox | None = None

    def setup(self) -> None:
        self.sandbox = Sandbox(
            self.stall_timeout_s, self.worker_max_videos, preload=PRELOAD, cwd=self.cwd
        )
        self.sandbox.start()

    def process(self, job: Job) -> None:
        try:
            self.sandbox.call(f"{DECODER}:decode_part", {"job": job})
        except (CallFailed, SandboxError) as exc:
            try:
                write_json(Path(self.cwd) / job.failure_note, {"error": str(exc)})
            except DiskFull as full:  # no room for the note either: the stage is told below
                log.warning("%s (%s)", full, exc)

    def teardown(self) -> None:
        if self.sandbox is not None:
            self.sandbox.close()


def run_beam(jobs: list[Job], config: Config) -> None:
    """Decode ``jobs`` on the configured Beam runner; each leaves a receipt or a failure note."""
    decode: DecodeConfig = config.decode
    with Progress(jobs), new_pipeline(config.beam, partitions=len(jobs)) as pipeline:
        (
            pipeline
            | "Parts" >> beam.Create(jobs, reshuffle=True)
            | "Decode"
            >> beam.ParDo(
                DecodeParts(decode.stall_timeout_s, decode.worker_max_videos, os.getcwd())
            )
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
        quiet = not log.isEnabledFor(logging.INFO)  # trailers -q
        with tqdm(total=len(self.jobs), unit="part", desc="decode", disable=quiet or None) as bar:
            while True:
                stopping = self.stop.wait(self.interval_s)
                for job in self.jobs:
                    if job in done:
                        continue
                    if _written_since(job.receipt, start):
                        frames += sum(row.frames for row in shard_rows(read_json(job.receipt)))
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


def run(config: Config) -> None:
    """Decode every trailer that changed, then write the manifest, the report and the metrics."""
    started = time.time()
    decode, paths = config.decode, config.paths
    found, problems, skipped = find_trailers(config)
    trailers = {trailer.trailer_id: trailer for trailer in found}
    params = decode_params(decode)
    paths.shards.mkdir(parents=True, exist_ok=True)
    digests = source_digests(paths.shards, sorted({t.source for t in trailers.values()}))
    fingerprints = {
        key: trailer.fingerprint(params, digests[trailer.source])
        for key, trailer in trailers.items()
    }
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
        run_beam(jobs, config)
        stop_if_disk_full(jobs)
    decoded_frames = sum(
        row.frames
        for job in jobs
        if _written_since(job.receipt, started)
        for row in shard_rows(read_json(job.receipt))
    )
    decoded, failures = collect(trailers, fingerprints, jobs, paths.shards, decode.verify)
    rows = [row for parts in decoded for part in parts for row in shard_rows(part)]
    manifest.write_manifest(paths.manifest, rows)
    problems += failures
    for problem in problems:
        log.warning("%s", problem.reason)
    truncated = {row.trailer_id: row for row in rows if row.missing_s}
    for row in truncated.values():
        log.warning(
            "%s: %s; its readable frames are decoded",
            row.source,
            cut_short_message(row.source_duration_s, row.missing_s),
        )
    failed = {p.trailer_id for p in problems if p.trailer_id} | {
        p.reason for p in problems if p.trailer_id is None
    }
    videos = len(trailers.keys() | failed)
    seconds = time.time() - started
    repeated = {
        parts[0]["trailer_id"]: sum(part["repeated_frames"] for part in parts) for parts in decoded
    }
    write_json(
        paths.decode_report,
        {
            "videos": videos,
            "decoded": len(todo) - len(failures),
            "unchanged": len(trailers) - len(todo),
            "failed": [
                {
                    "trailer_id": p.trailer_id,
                    "video": trailers[p.trailer_id].video if p.trailer_id in trailers else None,
                    "reason": p.reason,
                }
                for p in problems
            ],
            "skipped": [dataclasses.asdict(file) for file in skipped],
            "trailers": {key: trailer.video for key, trailer in sorted(trailers.items())},
            "shards": len(rows),
            "frames_decoded": decoded_frames,
            "repeated_frames": repeated,
            "truncated": {key: row.missing_s for key, row in sorted(truncated.items())},
        },
    )
    if decoded_frames:  # timings are logged, not written: the outputs hash the same on any machine
        log.info(
            "decoded %d frames in %.1f s (%.0f frames/s)",
            decoded_frames,
            seconds,
            decoded_frames / seconds,
        )
    write_json(  # the same numbers whoever decoded what when: a rerun leaves git clean
        paths.metrics("decode"),
        {
            "videos": videos,
            "failed": len(failed),
            "shards": len(rows),
            "frames": sum(row.frames for row in rows),
            "repeated_frames": sum(repeated.values()),
        },
    )
    if videos and len(failed) / videos > decode.max_failed_fraction:
        raise StageError(
            f"{len(failed)} of {videos} videos failed (decode.max_failed_fraction is "
            f"{decode.max_failed_fraction:g}); reasons in {paths.decode_report}"
        )


def stop_if_disk_full(jobs: list[Job]) -> None:
    """DiskFull, in the first full part's words, if any part found the disk full: no trailer
    is to blame. Its shards were written whole or not at all; the parts that finished keep
    theirs, so the rerun once space is freed decodes only the rest."""
    full = [
        note["error"]
        for job in jobs
        if (note := read_json(job.failure_note)) and NO_SPACE in note["error"]
    ]
    if full:
        more = f" ({len(full) - 1} more parts found the disk full)" if len(full) > 1 else ""
        raise DiskFull(full[0] + more)


def collect(
    trailers: dict[str, Trailer],
    fingerprints: dict[str, str],
    jobs: list[Job],
    shards_dir: Path,
    verify: Verify,
) -> tuple[list[list[dict]], list[Problem]]:
    """Each complete trailer's receipts (older ones tidied away), and a problem per failed one.

    A failed trailer keeps the receipts of its finished parts: the next run decodes the rest.
    """
    notes: dict[str, list[Path]] = {}
    for job in jobs:
        notes.setdefault(job.trailer.trailer_id, []).append(job.failure_note)
    decoded, failures = [], []
    for trailer_id, trailer in trailers.items():
        coverage = decoded_parts(shards_dir, trailer_id, fingerprints[trailer_id], verify)
        if coverage.complete:
            tidy_receipts(shards_dir, trailer_id, coverage.parts)
            decoded.append(coverage.parts)
            continue
        reasons = [note["error"] for path in notes.get(trailer_id, ()) if (note := read_json(path))]
        reason = reasons[0] if reasons else "no worker reported on it (worker lost?)"
        failures.append(Problem(trailer_id, f"{trailer.source}: {reason}"))
        for path in notes.get(trailer_id, ()):
            path.unlink(missing_ok=True)
    return decoded, failures
