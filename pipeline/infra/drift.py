"""TFDV's drift measure, shared by validate (a split against train) and predict (one video
against its model's training split, :func:`video_drift`).

The features of frames (:func:`frame_features`: pixel statistics, brightness per frame, motion),
the comparators laid on a schema (:func:`set_comparators`: Jensen-Shannon divergence of a
numeric feature's histogram, L-infinity distance of a categorical one's frequencies) and the
measurements TFDV's result holds (:func:`measurements`) are defined here once.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import tensorflow_data_validation as tfdv
from tensorflow_data_validation.statistics import stats_impl
from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2, statistics_pb2

from pipeline.core.errors import StageError

CHANNELS: tuple[str, ...] = ("r", "g", "b")
"""Channel order of a frame's first axis (RGB); per-channel features are named after it."""


def frame_features(chunks: Iterable[np.ndarray], black_level: float) -> dict[str, list]:
    """Pixel, brightness and motion features of ``(frames, channels, h, w)`` chunks: one
    example, ``{feature: [values]}`` (the columnar shape TFDV's statistics take)."""
    total = total_sq = low = high = None
    brightness: list[float] = []
    motion: list[float] = []
    previous = None
    pixels = 0
    for chunk in chunks:
        values = chunk.astype(np.float64)
        axes = (0, 2, 3)
        sums, squares = values.sum(axis=axes), np.square(values).sum(axis=axes)
        mins, maxs = values.min(axis=axes), values.max(axis=axes)
        if total is None:
            total, total_sq, low, high = sums, squares, mins, maxs
        else:
            total, total_sq = total + sums, total_sq + squares
            low, high = np.minimum(low, mins), np.maximum(high, maxs)
        pixels += values.shape[0] * values.shape[2] * values.shape[3]
        brightness.extend(values.mean(axis=(1, 2, 3)).tolist())
        steps = values if previous is None else np.concatenate([previous, values])
        motion.extend(np.abs(np.diff(steps, axis=0)).mean(axis=(1, 2, 3)).tolist())
        previous = values[-1:]
    if total is None:
        return {}
    mean = total / pixels
    std = np.sqrt(np.maximum(total_sq / pixels - np.square(mean), 0.0))
    example: dict[str, list] = {}
    for index, channel in enumerate(CHANNELS[: len(total)]):
        for stat, values in (("mean", mean), ("std", std), ("min", low), ("max", high)):
            example[f"pixel_{stat}_{channel}"] = [float(values[index])]
    frames = len(brightness)
    example["black_fraction"] = [sum(b < black_level for b in brightness) / frames]
    example["motion"] = [float(np.mean(motion)) if motion else 0.0]
    example["frozen_fraction"] = [sum(m == 0 for m in motion) / frames]
    example["frame_brightness"] = brightness
    example["frame_motion"] = motion
    return example


FRAME_FEATURES: tuple[str, ...] = tuple(
    frame_features([np.zeros((1, len(CHANNELS), 1, 1), np.uint8)], black_level=0.0)
)
"""Every feature :func:`frame_features` gives."""


def check_frame_features(names: Iterable[str], key: str) -> None:
    """StageError naming the config ``key`` if a name is not a frame feature."""
    for name in names:
        if name not in FRAME_FEATURES:
            raise StageError(f"{key}: unknown feature {name!r}; known: {', '.join(FRAME_FEATURES)}")


def load_statistics(path: Path) -> statistics_pb2.DatasetFeatureStatisticsList:
    """TFDV's binary statistics file; StageError, one line naming it, when it cannot be read."""
    try:
        return tfdv.load_stats_binary(str(path))
    except Exception as exc:  # TFDV raises what protobuf and its file reader raise
        raise StageError(f"{path}: cannot read TFDV statistics ({exc})") from None


def set_comparators(
    schema: schema_pb2.Schema, thresholds: Mapping[str, float], field: str = "drift_comparator"
) -> None:
    """Lay a comparator (``drift_comparator`` or ``skew_comparator``) with its threshold on each
    feature ``thresholds`` names: the Jensen-Shannon divergence of a numeric feature's
    histogram, the L-infinity distance between a categorical feature's frequencies."""
    for feature in schema.feature:
        if feature.name in thresholds:
            comparator = getattr(feature, field)
            if feature.type == schema_pb2.BYTES:
                comparator.infinity_norm.threshold = thresholds[feature.name]
            else:
                comparator.jensen_shannon_divergence.threshold = thresholds[feature.name]


def measurements(result: anomalies_pb2.Anomalies, split: str) -> list[dict[str, Any]]:
    """Every drift and skew measurement in TFDV's result:
    ``{check, split, feature, measure, value, threshold}``."""
    measured = []
    for info in result.drift_skew_info:
        name = ".".join(info.path.step)
        for check, values in (("drift", info.drift_measurements), ("skew", info.skew_measurements)):
            for value in values:
                measured.append(
                    {
                        "check": check,
                        "split": split,
                        "feature": name,
                        "measure": anomalies_pb2.DriftSkewInfo.Measurement.Type.Name(value.type),
                        "value": value.value,
                        "threshold": value.threshold,
                    }
                )
    return measured


def statistics_of(examples: list[dict[str, list]]) -> statistics_pb2.DatasetFeatureStatisticsList:
    """TFDV's statistics of frame-feature examples (all floats), computed in this process."""
    names = sorted({name for example in examples for name in example})
    columns = [
        pa.array([example.get(name) for example in examples], type=pa.list_(pa.float64()))
        for name in names
    ]
    batch = pa.RecordBatch.from_arrays(columns, names=names)
    return stats_impl.generate_statistics_in_memory(batch, tfdv.StatsOptions())


def video_drift(
    examples: list[dict[str, list]],
    baseline: statistics_pb2.DatasetFeatureStatisticsList,
    thresholds: Mapping[str, float],
) -> list[dict[str, Any]]:
    """How far a video's examples (one per shard-long stretch of its frames) are from
    ``baseline`` (a training split's statistics) on each feature ``thresholds`` names: validate's
    drift measure, the video standing in for a split."""
    current = statistics_of(examples)
    schema = tfdv.infer_schema(current)
    set_comparators(schema, thresholds)
    result = tfdv.validate_statistics(current, schema, previous_statistics=baseline)
    return measurements(result, "video")


class ExampleTap:
    """Passes chunks of frames through unchanged while summarising them as validate summarises
    shards: one example (:func:`frame_features`) per ``frames_per_example`` frames."""

    def __init__(self, frames_per_example: int, black_level: float):
        self.frames_per_example = frames_per_example
        self.black_level = black_level
        self.examples: list[dict[str, list]] = []
        self._pending: list[np.ndarray] = []
        self._count = 0

    def __call__(self, chunks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        for chunk in chunks:
            start = 0
            while start < len(chunk):
                take = min(self.frames_per_example - self._count, len(chunk) - start)
                self._pending.append(chunk[start : start + take].copy())
                self._count += take
                start += take
                if self._count == self.frames_per_example:
                    self._flush()
            yield chunk
        if self._count:
            self._flush()

    def _flush(self) -> None:
        self.examples.append(frame_features(self._pending, self.black_level))
        self._pending, self._count = [], 0
