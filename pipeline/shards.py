"""One trailer's shards: decode its video, label every sampled frame, write them atomically.

Layout under the shards folder (``config.paths.shards``)::

    <split>/trailer_<id>-<k>.npy          uint8 (frames, 3, height, width), channels_first RGB
    <split>/trailer_<id>-<k>.labels.npy   uint8 (frames, 6), multi-hot in GENRES order
    receipts/trailer_<id>.json            what was written, from which source, with which params
    manifest.jsonl                        one row per shard (written by the decode stage)

A receipt is written last, after every shard of its trailer: a trailer without a current
receipt is decoded again, so killing the stage at any moment loses nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pipeline import GENRES
from pipeline.annotations import Segment
from pipeline.io import save_npy, write_json
from pipeline.video import Geometry, VideoError, probe, read_frames

UNLABELLED = "unlabelled"
"""The split of videos decoded from a folder without annotations (no labels are written)."""


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


@dataclass(frozen=True)
class Job:
    """One trailer to decode: where it is, where it goes, and its labels (None if unlabelled)."""

    trailer_id: str
    split: str
    source: str
    segments: tuple[Segment, ...] | None
    shards_dir: str
    params: DecodeParams
    threads: int

    def fingerprint(self) -> str:
        """Changes when the source file, its labels, its split or the decode params change."""
        stat = Path(self.source).stat()
        key = {
            "source": [self.source, stat.st_size, stat.st_mtime_ns],
            "split": self.split,
            "segments": None if self.segments is None else [asdict(s) for s in self.segments],
            "params": asdict(self.params),
        }
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def receipt_path(shards_dir: Path, trailer_id: str) -> Path:
    return shards_dir / "receipts" / f"trailer_{trailer_id}.json"


def read_receipt(shards_dir: Path, trailer_id: str) -> dict[str, Any] | None:
    """The trailer's receipt if it and every file it lists exist, else None."""
    path = receipt_path(shards_dir, trailer_id)
    try:
        receipt = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    files = [row[key] for row in receipt["shards"] for key in ("shard", "labels") if row[key]]
    if not all((shards_dir / name).is_file() for name in files):
        return None
    return receipt


def frame_labels(times: np.ndarray, segments: tuple[Segment, ...]) -> np.ndarray:
    """Multi-hot ``(frames, 6)`` uint8: genre ``g`` is on at ``t`` if a segment covers it."""
    labels = np.zeros((len(times), len(GENRES)), dtype=np.uint8)
    for segment in segments:
        covered = (times >= segment.start_s) & (times < segment.end_s)
        labels[covered, GENRES.index(segment.genre)] = 1
    return labels


def _check_segments(segments: tuple[Segment, ...], duration_s: float, slack_s: float) -> None:
    for segment in segments:
        if segment.end_s > duration_s + slack_s:
            raise AnnotationError(
                f"segment {segment.start_s:.3f}-{segment.end_s:.3f} s ({segment.genre}) ends "
                f"after the video ({duration_s:.3f} s)"
            )


def decode_trailer(job: Job, progress: Callable[[int], None] = lambda frames: None) -> dict:
    """Decode, label and write one trailer; return its receipt. Runs inside a Sandbox.

    Raises VideoError for an unreadable video and AnnotationError for labels that do not fit.
    ``progress`` is told the number of frames written after each shard.
    """
    params, shards_dir = job.params, Path(job.shards_dir)
    info = probe(job.source)
    geometry = Geometry.fit(info.width, info.height, params.width, params.height, params.aspect)
    sampling, chunks = read_frames(
        job.source,
        params.fps,
        geometry,
        chunk_frames=params.max_frames_per_shard,
        threads=job.threads,
        fault_tolerance=params.fault_tolerance,
    )
    labels = None
    if job.segments is not None:
        _check_segments(
            job.segments, sampling.duration_s, sampling.duration_s / len(sampling.indices)
        )
        labels = frame_labels(sampling.times, job.segments)
    rows, repeated, first = [], 0, 0
    for k, frames in enumerate(chunks):
        stem = f"{job.split}/trailer_{job.trailer_id}-{k}"
        digest = save_npy(shards_dir / f"{stem}.npy", frames)
        row = {
            "shard": f"{stem}.npy",
            "labels": None,
            "labels_sha256": None,
            "trailer_id": job.trailer_id,
            "split": job.split,
            "first_frame": first,
            "frames": len(frames),
            "fps": params.fps,
            "channels": frames.shape[1],
            "height": frames.shape[2],
            "width": frames.shape[3],
            "source": job.source,
            "source_duration_s": round(sampling.duration_s, 6),
            "sha256": digest,
        }
        if labels is not None:
            row["labels"] = f"{stem}.labels.npy"
            row["labels_sha256"] = save_npy(
                shards_dir / row["labels"], labels[first : first + len(frames)]
            )
        repeated += _repeated_frames(frames, sampling.indices[first : first + len(frames)])
        rows.append(row)
        first += len(frames)
        progress(len(frames))
    if first != len(sampling.indices):
        raise VideoError(f"decoded {first} of {len(sampling.indices)} sampled frames")
    receipt = {
        "trailer_id": job.trailer_id,
        "split": job.split,
        "source": job.source,
        "fingerprint": job.fingerprint(),
        "source_frames": sampling.source_frames,
        "source_duration_s": round(sampling.duration_s, 6),
        "repeated_frames": repeated,
        "shards": rows,
    }
    _replace_receipt(shards_dir, receipt)
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


def _replace_receipt(shards_dir: Path, receipt: dict) -> None:
    """Write the new receipt, then delete the trailer's shards that it no longer lists."""
    old = read_receipt(shards_dir, receipt["trailer_id"])
    write_json(receipt_path(shards_dir, receipt["trailer_id"]), receipt)
    if old is None:
        return
    keep = {row[key] for row in receipt["shards"] for key in ("shard", "labels")}
    for row in old["shards"]:
        for key in ("shard", "labels"):
            if row[key] and row[key] not in keep:
                (shards_dir / row[key]).unlink(missing_ok=True)
