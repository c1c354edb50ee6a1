"""What is left to decode: the trailers to read, and the parts their receipts do not cover.

Every file in the videos folder is accounted for: a video to decode, or a skipped file with the
reason. A video found in a folder gets its id from its name (``trailer_id_for``); a labelled
one has the id its labels give. A long video is cut into parts, runs of whole shards, so that
all workers share it; parts come largest first, so that runners that hand out work in order
balance it. A rerun decodes the gaps the intact receipts leave, and nothing else.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from pipeline import UNLABELLED
from pipeline.core.annotations import Problem, SynthVideos, labelled_trailers, trailer_id_for
from pipeline.core.config import Config, DecodeConfig
from pipeline.core.errors import StageError
from pipeline.core.video import Skipped, container_duration, list_videos
from pipeline.decode.receipts import decoded_parts
from pipeline.decode.worker import DecodeParams, Job, Trailer
from pipeline.infra.beam import decoder_threads, worker_count


def decode_params(decode: DecodeConfig) -> DecodeParams:
    return DecodeParams(
        fps=decode.fps,
        height=decode.height,
        width=decode.width,
        aspect=decode.aspect,
        max_frames_per_shard=decode.max_frames_per_shard,
        fault_tolerance=decode.fault_tolerance,
        remux_formats=decode.remux_formats,
        allow_truncated=decode.allow_truncated,
        decoder=decode.decoder,
    )


def find_trailers(config: Config) -> tuple[list[Trailer], list[Problem], list[Skipped]]:
    """Every trailer to decode, the problems of those that cannot even be tried, and the files
    in the videos folder that are not decoded. A trailer whose file ``trailers synth`` wrote
    (its receipt, ``paths.synth_receipt``) is marked synthetic."""
    decode, paths = config.decode, config.paths
    folder = Path(decode.input_dir or paths.videos)
    if not folder.is_dir():
        raise StageError(f"videos folder {folder} (decode.input_dir): not a folder")
    videos, skipped = list_videos(folder, decode.video_extensions)
    if decode.source == "folder":
        if not videos:
            raise StageError(
                f"videos folder {folder}: no video in it (decode.video_extensions: "
                f"{' '.join(decode.video_extensions)})"
            )
        demo = SynthVideos.read(paths.synth_receipt)
        trailers = [
            Trailer(
                trailer_id_for(video),
                UNLABELLED,
                str(folder / video),
                None,
                video,
                folder / video in demo,
            )
            for video in videos
        ]
        return trailers, [], skipped
    labelled, problems = labelled_trailers(paths.annotations, paths.splits)
    demo = SynthVideos.read(paths.synth_receipt)
    trailers = []
    for trailer_id, labels in labelled.items():
        video = labels.video or paths.video(trailer_id).name
        source = folder / video
        if source.is_file():
            segments = tuple(labels.segments)
            trailers.append(
                Trailer(trailer_id, labels.split, str(source), segments, video, source in demo)
            )
        else:
            problems.append(Problem(trailer_id, f"{source}: file not found"))
    named = {trailer.video for trailer in trailers}
    skipped += [Skipped(v, f"not in {paths.annotations.name}") for v in videos if v not in named]
    return trailers, problems, skipped


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
    gaps = []  # (trailer, first shard not covered, stop or None, estimated shards or None)
    for trailer_id, trailer in trailers.items():
        coverage = decoded_parts(shards_dir, trailer_id, fingerprints[trailer_id], decode.verify)
        total = None
        if splitting and not coverage.complete:
            total = _estimated_shards(trailer.source, decode)
        gaps += [(trailer, first, stop, total) for first, stop in coverage.gaps]
    left = sum(
        max(1, (total if stop is None else stop) - first)
        for _, first, stop, total in gaps
        if total is not None
    )
    share = math.ceil(left / workers) if left else 0
    planned = []  # (rough cost, job)
    for trailer, start, end, total in gaps:
        size = Path(trailer.source).stat().st_size
        parts = [(start, end)] if end is not None else _parts(start, total, share)
        for first, stop in parts:
            job = Job(
                trailer, params, str(shards_dir), fingerprints[trailer.trailer_id], first, stop
            )
            planned.append((_cost(size, first, stop, total), job))
    planned.sort(key=lambda pair: -pair[0])
    threads = decoder_threads(decode.decoder_threads, min(workers, len(planned)))
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
