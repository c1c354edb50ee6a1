"""One shard -> its integrity problems and one example of summary features, in a single read.

The shard is memory-mapped and walked in chunks of frames: each chunk feeds both the SHA-256 of
the file and the feature accumulators, so a shard is never in RAM whole and is read once (its
labels, a few bytes per frame, are hashed and mapped separately). An example is
``{feature: [values]}``, the columnar shape TFDV's statistics take; a feature that cannot be
computed (a missing channel, unreadable labels) is left out, and the schema's presence rules
then report it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import GENRES
from pipeline.core.manifest import ShardRow
from pipeline.infra.drift import CHANNELS, frame_features
from pipeline.validate.anomalies import Anomaly

INT, FLOAT, STRING = "INT", "FLOAT", "STRING"

FEATURES: dict[str, tuple[str, str]] = {
    "frames": (INT, "frames in the shard"),
    "channels": (INT, "colour channels per frame (3 for RGB)"),
    "height": (INT, "frame height in pixels"),
    "width": (INT, "frame width in pixels"),
    "fps": (FLOAT, "sampling rate the frames were decoded at"),
    "duration_s": (FLOAT, "seconds of video the shard covers (frames / fps)"),
    "dtype": (STRING, "pixel type of the shard array"),
    **{
        f"pixel_{stat}_{channel}": (FLOAT, f"{stat} of the {channel.upper()} channel (0-255)")
        for stat in ("mean", "std", "min", "max")
        for channel in CHANNELS
    },
    "black_fraction": (FLOAT, "fraction of frames darker than validate.black_level"),
    "motion": (FLOAT, "mean absolute difference between consecutive frames (0-255)"),
    "frozen_fraction": (FLOAT, "fraction of frames identical to the one before"),
    "frame_brightness": (FLOAT, "per frame: mean pixel value (one value per frame)"),
    "frame_motion": (
        FLOAT,
        "per frame after a shard's first: mean absolute difference from the frame before (0-255)",
    ),
    "labels_dtype": (STRING, "type of the labels array"),
    "label_min": (FLOAT, "smallest label value (labels are 0 or 1)"),
    "label_max": (FLOAT, "largest label value (labels are 0 or 1)"),
    "label_nan_count": (INT, "labels that are NaN"),
    "labels_per_frame": (FLOAT, "mean number of genres on per frame"),
    **{
        f"label_fraction_{genre}": (FLOAT, f"fraction of frames labelled {genre}")
        for genre in GENRES
    },
    "frame_genre": (STRING, "per labelled frame: each genre it carries (the genre mix)"),
}
"""Every feature of an example: name -> (TFDV type, what it means for a reader of the report)."""

LIST_FEATURES = frozenset({"frame_brightness", "frame_motion", "frame_genre"})
"""Features with one value per frame (distributions for drift); all others hold one value."""

LABEL_FEATURES = frozenset(name for name in FEATURES if "label" in name or name == "frame_genre")
"""Features computed from the labels file; absent for unlabelled shards (the serving data)."""

_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


class ShardError(Exception):
    """A file that cannot be read as the array it should hold; the message says why."""


@dataclass
class Mapped:
    """A memory-mapped ``.npy`` array and where its data starts in the file."""

    array: np.ndarray
    offset: int


def open_npy(path: Path) -> Mapped:
    """Memory-map a ``.npy`` file after checking its header against its size."""
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            if version not in _HEADER_READERS:
                raise ValueError(f"unsupported .npy version {version}")
            shape, fortran_order, dtype = _HEADER_READERS[version](handle)
            offset = handle.tell()
    except FileNotFoundError:
        raise ShardError("file is missing") from None
    except (ValueError, OSError) as exc:
        raise ShardError(f"not a readable .npy file ({exc})") from None
    if dtype.hasobject:
        raise ShardError("holds Python objects, not numbers")
    if fortran_order:
        raise ShardError("is stored in Fortran order, not C order")
    needed = offset + math.prod(shape) * dtype.itemsize
    size = path.stat().st_size
    if size < needed:
        raise ShardError(f"truncated: {size} bytes, its header needs {needed}")
    if math.prod(shape) == 0:
        return Mapped(np.zeros(shape, dtype), offset)
    return Mapped(np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape), offset)


def hashed_chunks(mapped: Mapped, path: Path, chunk_rows: int, digest: Any) -> Iterator[np.ndarray]:
    """Yield the array in chunks of rows while feeding ``digest`` every byte of its file."""
    array = mapped.array
    with open(path, "rb") as handle:
        digest.update(handle.read(mapped.offset))
        for start in range(0, len(array), chunk_rows):
            chunk = array[start : start + chunk_rows]
            digest.update(chunk)
            yield chunk
        handle.seek(mapped.offset + array.nbytes)
        digest.update(handle.read())


def label_features(labels: np.ndarray) -> dict[str, list]:
    """Validity and genre-mix features of a ``(frames, genres)`` labels array."""
    example: dict[str, list] = {"labels_dtype": [str(labels.dtype)]}
    values = np.asarray(labels, dtype=np.float64)
    if values.ndim != 2 or values.shape[1] != len(GENRES) or not len(values):
        return example
    nan = np.isnan(values)
    example["label_nan_count"] = [int(nan.sum())]
    if not nan.all():
        example["label_min"] = [float(values[~nan].min())]
        example["label_max"] = [float(values[~nan].max())]
    on = values == 1
    example["labels_per_frame"] = [float(on.sum(axis=1).mean())]
    for index, genre in enumerate(GENRES):
        example[f"label_fraction_{genre}"] = [float(on[:, index].mean())]
    example["frame_genre"] = [GENRES[genre] for _, genre in zip(*np.nonzero(on), strict=True)]
    return example


Problem = tuple[str, str, str]
"""An integrity problem: (feature or file, what was expected, what was found)."""


def inspect_shard(
    row: ShardRow, shards_dir: str, black_level: float, chunk_frames: int
) -> dict[str, Any]:
    """Check one manifest row's files and summarise them.

    Returns ``{"split", "shard", "example", "anomalies"}``: ``example`` is None when the shard
    cannot be read; ``anomalies`` (as JSON dicts) name each way the files disagree with the row.
    """
    path = Path(shards_dir) / row.shard
    example, problems = _shard_example(path, row, black_level, chunk_frames)
    if example is not None and row.labels is not None:
        labels, label_problems = _label_example(Path(shards_dir) / row.labels, row)
        example.update(labels)
        problems += label_problems
    anomalies = [
        Anomaly("integrity", row.split, feature, expected, found, (row.shard,))
        for feature, expected, found in problems
    ]
    return {
        "split": row.split,
        "shard": row.shard,
        "example": example,
        "anomalies": [anomaly.to_json() for anomaly in anomalies],
    }


def _shard_example(
    path: Path, row: ShardRow, black_level: float, chunk_frames: int
) -> tuple[dict[str, list] | None, list[Problem]]:
    try:
        mapped = open_npy(path)
    except ShardError as exc:
        return None, [("shard", "a readable .npy file", f"{path}: {exc}")]
    frames = mapped.array
    if frames.ndim != 4:
        return None, [("shard", "axes (frames, channels, height, width)", f"shape {frames.shape}")]
    digest = hashlib.sha256()
    example = frame_features(hashed_chunks(mapped, path, chunk_frames, digest), black_level)
    problems = []
    if digest.hexdigest() != row.sha256:
        problems.append(("shard", f"sha256 {row.sha256}", f"sha256 {digest.hexdigest()} of {path}"))
    shape = dict(zip(("frames", "channels", "height", "width"), frames.shape, strict=True))
    for key, actual in shape.items():
        example[key] = [actual]
        if getattr(row, key) != actual:
            problems.append((key, f"{getattr(row, key)} (manifest)", f"{actual} in {path}"))
    example["fps"] = [float(row.fps)]
    example["duration_s"] = [shape["frames"] / row.fps]
    example["dtype"] = [str(frames.dtype)]
    return example, problems


def _label_example(path: Path, row: ShardRow) -> tuple[dict[str, list], list[Problem]]:
    try:
        mapped = open_npy(path)
    except ShardError as exc:
        return {}, [("labels", "a readable .npy file", f"{path}: {exc}")]
    digest = hashlib.sha256(path.read_bytes()).hexdigest()  # (frames, 6) bytes: small
    problems = []
    if digest != row.labels_sha256:
        problems.append(("labels", f"sha256 {row.labels_sha256}", f"sha256 {digest} of {path}"))
    expected = (row.frames, len(GENRES))
    if mapped.array.shape != expected:
        problems.append(
            ("labels", f"shape {expected} (frames, genres)", f"shape {mapped.array.shape}")
        )
    return label_features(mapped.array), problems
