"""Reading decoded shards: a trailer is its manifest rows in ``first_frame`` order.

Shared by the stages that read what decode wrote (train's input pipeline, evaluate). Files are
memory-mapped (``np.load(mmap_mode="r")``) and checked against their manifest row; anything
missing or of the wrong shape is a :class:`pipeline.core.errors.StageError` naming the file.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline import GENRES
from pipeline.core.errors import StageError
from pipeline.core.manifest import ShardRow


def map_npy(path: Path) -> np.ndarray:
    """A ``.npy`` file, memory-mapped."""
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise StageError(f"{path}: shard file missing (run `trailers decode`)") from None
    except ValueError as exc:
        raise StageError(f"{path}: not a .npy array ({exc})") from None


def check_shape(path: Path, array: np.ndarray, shape: tuple[int, ...], dtype: str) -> None:
    """StageError unless ``array`` (read from ``path``) has the manifest's shape and dtype."""
    if array.shape != shape or array.dtype != np.dtype(dtype):
        raise StageError(
            f"{path}: expected {dtype} {shape} as the manifest says, "
            f"found {array.dtype} {array.shape}"
        )


def by_trailer(rows: Sequence[ShardRow]) -> list[list[ShardRow]]:
    """Rows grouped by trailer (sorted by id), each group in ``first_frame`` order."""
    ordered = sorted(rows, key=lambda row: (row.trailer_id, row.first_frame))
    return [list(group) for _, group in itertools.groupby(ordered, lambda row: row.trailer_id)]


def check_contiguous(rows: Sequence[ShardRow]) -> None:
    """StageError unless one trailer's rows (in order) follow each other frame for frame."""
    for before, after in itertools.pairwise(rows):
        if after.first_frame != before.first_frame + before.frames:
            raise StageError(
                f"{after.shard}: starts at frame {after.first_frame}, expected "
                f"{before.first_frame + before.frames} (after {before.shard})"
            )


def read_trailer(rows: Sequence[ShardRow], shards_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """One labelled trailer's whole frames, uint8 ``(frames, channels, height, width)``, and
    labels, uint8 ``(frames, len(GENRES))``, its shards concatenated in order."""
    check_contiguous(rows)
    frames, labels = [], []
    for row in rows:
        if row.labels is None:
            raise StageError(f"{row.shard}: no labels; evaluation needs labels")
        shard, label = Path(shards_dir) / row.shard, Path(shards_dir) / row.labels
        frames.append(map_npy(shard))
        check_shape(shard, frames[-1], (row.frames, row.channels, row.height, row.width), "uint8")
        labels.append(map_npy(label))
        check_shape(label, labels[-1], (row.frames, len(GENRES)), "uint8")
    return np.concatenate(frames), np.concatenate(labels)
