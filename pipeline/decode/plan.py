"""What is left to decode: the trailers to read, and the parts their receipts do not cover.

A long video is cut into parts, runs of whole shards, so that all workers share it; parts come
largest first, so that runners that hand out work in order balance it.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from pipeline import UNLABELLED
from pipeline.annotations import Problem, check_trailer_id, labelled_trailers
from pipeline.beam import usable_cpus, worker_count
from pipeline.config import Config, DecodeConfig
from pipeline.decode.receipts import decoded_parts
from pipeline.decode.worker import DecodeParams, Job, Trailer
from pipeline.errors import StageError
from pipeline.video import container_duration

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v")


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
        source = paths.video(trailer_id)
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
    workers = worker_count(config.beam)
    splitting = decode.split_videos and workers > 1
    gaps = []  # (trailer, first shard not covered, estimated shards in all or None)
    for trailer_id, trailer in trailers.items():
        done, complete = decoded_parts(shards_dir, trailer_id, fingerprints[trailer_id])
        if not complete:
            start = done[-1]["stop_shard"] if done else 0
            total = _estimated_shards(trailer.source, decode) if splitting else None
            gaps.append((trailer, start, total))
    left = sum(max(1, total - start) for _, start, total in gaps if total is not None)
    share = math.ceil(left / workers) if left else 0
    planned = []  # (rough cost, job)
    for trailer, start, total in gaps:
        size = Path(trailer.source).stat().st_size
        for first, stop in _parts(start, total, share):
            job = Job(
                trailer, params, str(shards_dir), fingerprints[trailer.trailer_id], first, stop
            )
            planned.append((_cost(size, first, stop, total), job))
    planned.sort(key=lambda pair: -pair[0])
    threads = decoder_threads(decode, min(workers, len(planned)))
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


def decoder_threads(decode: DecodeConfig, busy_workers: int) -> int:
    """decord threads per video: as configured, or (0) the usable cores shared by the busy
    workers."""
    if decode.decoder_threads:
        return decode.decoder_threads
    return max(1, usable_cpus() // max(1, busy_workers))


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
