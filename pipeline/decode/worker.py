"""The per-part worker: decode a run of a trailer's shards, label every frame, write them.

Runs inside each Beam worker's sandboxed decoder process (``pipeline/infra/sandbox.py``), which
imports this module and decord as it starts, and nothing of Beam.

Layout under the shards folder (``config.paths.shards``)::

    <split>/trailer_<id>-<k>.npy          uint8 (frames, 3, height, width), channels_first RGB
    <split>/trailer_<id>-<k>.labels.npy   uint8 (frames, 6), multi-hot in GENRES order
    receipts/trailer_<id>/<fp>-<k>.json   one part of the trailer: what was written from shard k
    manifest.jsonl                        one row per shard (written by the decode stage)

Shard ``k`` holds output frames ``k * max_frames_per_shard`` onwards, whoever decodes it. A long
video is decoded in parts, runs of whole shards, so that several workers share it; each part
writes its receipt after its shards. ``<fp>`` is the trailer's fingerprint (source, labels,
params): a trailer is done when its receipts with the current fingerprint chain from shard 0
to the video's end, so killing the stage at any moment loses at most the parts in flight
(``pipeline/decode/receipts.py``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from pipeline import GENRES
from pipeline.core.annotations import Segment
from pipeline.core.io import save_npy, write_json
from pipeline.core.manifest import ShardRow
from pipeline.core.video import VideoError, sample_video
from pipeline.decode.receipts import file_stats, part_receipt_path, stats_path

FINGERPRINT_CHARS = 16
"""Hex digits of the fingerprint kept in receipt names (64 bits: collisions are not a risk)."""
ROW_FORMAT = 2
"""What a receipt's manifest rows record, in the fingerprint so that receipts written before a
change are decoded again rather than reused without it (2: the source's frame size and whether
it is synth's)."""


class AnnotationError(ValueError):
    """A segment that does not fit its video (e.g. it ends after the video does)."""


@dataclass(frozen=True)
class DecodeParams:
    """Everything that changes the shards a video gives."""

    fps: float
    height: int
    width: int
    aspect: Literal["letterbox", "crop"]
    max_frames_per_shard: int
    fault_tolerance: float
    remux_formats: tuple[str, ...]
    allow_truncated: bool
    decoder: Literal["auto", "pyav"]


@dataclass(frozen=True)
class Trailer:
    """One video to decode and its labels (None if unlabelled); ``video`` is its path relative
    to the videos folder, as the user named it."""

    trailer_id: str
    split: str
    source: str
    segments: tuple[Segment, ...] | None
    video: str
    synthetic: bool = False
    """One of the videos ``trailers synth`` wrote (its receipt lists the file's bytes)."""

    @property
    def label_level(self) -> str | None:
        """``trailer`` when only whole-trailer labels exist (weak frame labels), ``segment``
        when any label is timed, None when unlabelled."""
        if self.segments is None:
            return None
        return "trailer" if all(s.whole_trailer for s in self.segments) else "segment"

    def fingerprint(self, params: DecodeParams, source_sha256: str) -> str:
        """Changes when the source file's path or bytes, its labels, its split, whether it is
        synth's, the decode params or what a manifest row records (:data:`ROW_FORMAT`) change."""
        key = {
            "source": [self.source, source_sha256],
            "split": self.split,
            "segments": None if self.segments is None else [asdict(s) for s in self.segments],
            "params": asdict(params),
            "synthetic": self.synthetic,
            "row_format": ROW_FORMAT,
        }
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()
        return digest[:FINGERPRINT_CHARS]


@dataclass(frozen=True)
class Job:
    """Shards ``first_shard`` to ``stop_shard`` (exclusive; None: to the end) of a trailer."""

    trailer: Trailer
    params: DecodeParams
    shards_dir: str
    fingerprint: str
    first_shard: int = 0
    stop_shard: int | None = None
    threads: int = 1

    @property
    def receipt(self) -> Path:
        return part_receipt_path(
            Path(self.shards_dir), self.trailer.trailer_id, self.fingerprint, self.first_shard
        )

    @property
    def failure_note(self) -> Path:
        """Where a worker leaves the reason this part failed, for the stage to report."""
        return self.receipt.with_suffix(".failed")


def frame_labels(times: np.ndarray, segments: tuple[Segment, ...]) -> np.ndarray:
    """Multi-hot ``(frames, 6)`` uint8: genre ``g`` is on at ``t`` if a segment covers it."""
    labels = np.zeros((len(times), len(GENRES)), dtype=np.uint8)
    for segment in segments:
        covered = (times >= segment.start_s) & (times < segment.end_s)
        labels[covered, GENRES.index(segment.genre)] = 1
    return labels


def _check_segments(segments: tuple[Segment, ...], duration_s: float, slack_s: float) -> None:
    for segment in segments:
        if not segment.whole_trailer and segment.end_s > duration_s + slack_s:
            raise AnnotationError(
                f"segment {segment.start_s:.3f}-{segment.end_s:.3f} s ({segment.genre}) ends "
                f"after the video ({duration_s:.3f} s)"
            )


def decode_part(job: Job, progress: Callable[[int], None] = lambda frames: None) -> dict:
    """Decode, label and write one part of a trailer; return its receipt. Runs inside a Sandbox.

    Raises VideoError for an unreadable video and AnnotationError for labels that do not fit.
    ``progress`` is told the number of frames written after each shard.
    """
    trailer, params, shards_dir = job.trailer, job.params, Path(job.shards_dir)
    per_shard = params.max_frames_per_shard
    first_frame = job.first_shard * per_shard
    stop_frame = None if job.stop_shard is None else job.stop_shard * per_shard
    sampling, chunks = sample_video(
        trailer.source,
        params.fps,
        params.height,
        params.width,
        params.aspect,
        chunk_frames=per_shard,
        threads=job.threads,
        fault_tolerance=params.fault_tolerance,
        remux_formats=params.remux_formats,
        first_frame=first_frame,
        stop_frame=stop_frame,
        allow_truncated=params.allow_truncated,
        decoder=params.decoder,
    )
    total = len(sampling.indices)
    labels = None
    if trailer.segments is not None:
        _check_segments(trailer.segments, sampling.duration_s, sampling.duration_s / total)
        labels = frame_labels(sampling.times, trailer.segments)
    rows, repeated, first = [], 0, min(first_frame, total)
    for k, frames in enumerate(chunks, start=job.first_shard):
        stem = f"{trailer.split}/trailer_{trailer.trailer_id}-{k}"
        labels_name = labels_sha256 = None
        if labels is not None:
            labels_name = f"{stem}.labels.npy"
            labels_sha256 = save_npy(shards_dir / labels_name, labels[first : first + len(frames)])
        row = ShardRow(
            shard=f"{stem}.npy",
            labels=labels_name,
            trailer_id=trailer.trailer_id,
            split=trailer.split,
            first_frame=first,
            frames=len(frames),
            fps=params.fps,
            channels=frames.shape[1],
            height=frames.shape[2],
            width=frames.shape[3],
            source=trailer.source,
            source_duration_s=round(sampling.duration_s, 6),
            sha256=save_npy(shards_dir / f"{stem}.npy", frames),
            labels_sha256=labels_sha256,
            video=trailer.video,
            label_level=trailer.label_level,
            decoder=sampling.decoder,
            missing_s=sampling.missing_s,
            source_width=sampling.source_size[0],
            source_height=sampling.source_size[1],
            synthetic=trailer.synthetic,
        )
        repeated += _repeated_frames(frames, sampling.indices[first : first + len(frames)])
        rows.append(row.to_dict())
        first += len(frames)
        progress(len(frames))
    wanted = total if stop_frame is None else min(stop_frame, total)
    if first != wanted:
        raise VideoError(f"decoded {first} of {wanted} sampled frames")
    end = stop_frame is None or stop_frame >= total
    receipt = {
        "trailer_id": trailer.trailer_id,
        "split": trailer.split,
        "source": trailer.source,
        "video": trailer.video,
        "fingerprint": job.fingerprint,
        "first_shard": job.first_shard,
        "stop_shard": job.first_shard + len(rows),
        "end": end,
        "source_frames": sampling.source_frames,
        "source_duration_s": round(sampling.duration_s, 6),
        "repeated_frames": repeated,
        "shards": rows,
    }
    write_json(stats_path(job.receipt), file_stats(shards_dir, rows))
    write_json(job.receipt, receipt)
    return receipt


def _repeated_frames(frames: np.ndarray, indices: np.ndarray) -> int:
    """Sampled frames identical to the one before although they come from another source frame.

    Static shots repeat too, so this is a figure for the report, not a failure; a jump in it
    flags decord's silent substitution of broken frames.
    """
    if len(frames) < 2:
        return 0
    same = np.all(frames[1:] == frames[:-1], axis=(1, 2, 3)) & (indices[1:] != indices[:-1])
    return int(same.sum())
