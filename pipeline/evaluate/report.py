"""Evaluate's numbers: every model's per-genre and macro scores on a split, and the gain from time.

Three levels, each per genre then macro (the mean over the genres where the split defines it):

- **frames**: average precision and ROC AUC over every frame of every trailer of the split,
  and precision, recall and F1 at a threshold tuned on the val split (the best F1 there; the
  config's ``timeline.threshold`` for a genre val has no positive frame of);
- **segments**: the timeline ``trailers predict`` writes (``timeline.threshold``,
  ``timeline.min_segment_s``) against the labels' runs, matched one-to-one at IoU >=
  ``evaluate.segment_iou``; counts pooled over the trailers;
- **trailers**: average precision of each trailer's score
  (:func:`pipeline.core.timeline.trailer_scores`)
  against whether the genre appears anywhere in it, the figure comparable with published
  trailer-level results.

Label levels: frames and segments are scored against segment labels only; a trailer labelled
at trailer level (``label_level: trailer``: its frame labels are copies of the trailer's genres)
counts at the trailer level alone. A split with no segment-labelled trailer has trailer figures
only, and the report says why (``no_frame_scores``).

The gain from time is the ConvLSTM (``classifier``) minus the per-frame ``baseline``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pipeline import GENRES
from pipeline.core.config import Config, TimelineConfig
from pipeline.core.timeline import genre_segments, trailer_scores
from pipeline.evaluate.metrics import (
    MOTION_ONLY,
    at_threshold,
    average_precision,
    counts_scores,
    difference,
    macro,
    match_segments,
    roc_auc,
    true_segments,
    tuned_threshold,
)

DIGITS = 4
"""Decimals of every number in the report and the metrics."""


@dataclass(frozen=True)
class ScoredTrailer:
    """One labelled trailer and each model's probabilities of its frames, float ``(frames, 6)``."""

    trailer_id: str
    fps: float
    duration_s: float
    source: str
    labels: np.ndarray
    probabilities: Mapping[str, np.ndarray]
    label_level: str = "segment"
    """``segment`` (timed labels: frames can be scored) or ``trailer`` (whole-trailer labels)."""


NO_FRAME_SCORES = (
    "every trailer of the split is labelled at trailer level: its frame labels are the "
    "trailer's genres copied onto every frame, so frames and segments cannot be scored"
)


def segment_labelled(trailers: Sequence[ScoredTrailer]) -> list[ScoredTrailer]:
    """The trailers whose frame labels are true per-frame labels."""
    return [trailer for trailer in trailers if trailer.label_level == "segment"]


def label_levels(trailers: Sequence[ScoredTrailer]) -> dict[str, int]:
    """How many trailers of each label level."""
    return {
        level: sum(1 for trailer in trailers if trailer.label_level == level)
        for level in ("segment", "trailer")
    }


def pooled(trailers: Sequence[ScoredTrailer], model: str) -> tuple[np.ndarray, np.ndarray]:
    """Labels and ``model``'s probabilities of every frame of ``trailers``, concatenated."""
    labels = np.concatenate([trailer.labels for trailer in trailers])
    scores = np.concatenate([trailer.probabilities[model] for trailer in trailers])
    return labels, scores


def tuned_thresholds(
    val: Sequence[ScoredTrailer], model: str, timeline: TimelineConfig
) -> dict[str, dict]:
    """Per genre, ``model``'s best-F1 threshold on ``val``'s segment-labelled trailers and where
    it comes from."""
    val = segment_labelled(val)
    labels, scores = pooled(val, model) if val else (None, None)
    tuned = {}
    for index, genre in enumerate(GENRES):
        threshold = tuned_threshold(labels[:, index], scores[:, index]) if val else None
        tuned[genre] = (
            {"threshold": threshold, "from": "val"}
            if threshold is not None
            else {"threshold": timeline.threshold, "from": "timeline.threshold"}
        )
    return tuned


def frame_scores(
    trailers: Sequence[ScoredTrailer], model: str, thresholds: Mapping[str, dict]
) -> dict[str, dict]:
    labels, scores = pooled(trailers, model)
    results = {}
    for index, genre in enumerate(GENRES):
        truth, score = labels[:, index], scores[:, index]
        threshold = thresholds[genre]["threshold"]
        results[genre] = {
            "positives": int(truth.sum()),
            "average_precision": average_precision(truth, score),
            "roc_auc": roc_auc(truth, score),
            "threshold": threshold,
            "threshold_from": thresholds[genre]["from"],
            **at_threshold(truth, score, threshold),
        }
    return results


def segment_scores(
    trailers: Sequence[ScoredTrailer], model: str, timeline: TimelineConfig, min_iou: float
) -> dict[str, dict]:
    counts = {genre: np.zeros(3, dtype=np.int64) for genre in GENRES}  # matched, predicted, true
    for trailer in trailers:
        rows = genre_segments(
            trailer.probabilities[model], trailer.fps, trailer.duration_s, timeline
        )
        for index, genre in enumerate(GENRES):
            predicted = [(row["start_s"], row["end_s"]) for row in rows if row["genre"] == genre]
            truth = true_segments(trailer.labels[:, index], trailer.fps, trailer.duration_s)
            matched = match_segments(predicted, truth, min_iou)
            counts[genre] += (matched, len(predicted), len(truth))
    return {
        genre: {
            "matched": int(matched),
            "predicted": int(predicted),
            "true": int(actual),
            **counts_scores(int(matched), int(predicted), int(actual)),
        }
        for genre, (matched, predicted, actual) in counts.items()
    }


def trailer_level(
    trailers: Sequence[ScoredTrailer], model: str, top_fraction: float
) -> dict[str, dict]:
    present = np.stack([trailer.labels.any(axis=0) for trailer in trailers])
    scores = np.stack(
        [trailer_scores(trailer.probabilities[model], top_fraction) for trailer in trailers]
    )
    return {
        genre: {
            "positives": int(present[:, index].sum()),
            "average_precision": average_precision(present[:, index], scores[:, index]),
        }
        for index, genre in enumerate(GENRES)
    }


def model_report(
    trailers: Sequence[ScoredTrailer], val: Sequence[ScoredTrailer], model: str, config: Config
) -> dict:
    """Every number of one model: per genre (frames and segments of the segment-labelled
    trailers, trailers of all), macro, and which genres the split left a metric undefined for.
    """
    whole = trailer_level(trailers, model, config.timeline.trailer_top_fraction)
    levels = {"trailers": whole}
    exact = segment_labelled(trailers)
    if exact:
        thresholds = tuned_thresholds(val, model, config.timeline)
        levels["frames"] = frame_scores(exact, model, thresholds)
        levels["segments"] = segment_scores(
            exact, model, config.timeline, config.evaluate.segment_iou
        )

    def value(level: str, genre: str, key: str) -> float | None:
        return levels[level][genre][key] if level in levels else None

    def mean(level: str, key: str, genres: Sequence[str] = GENRES) -> float | None:
        return macro(value(level, genre, key) for genre in genres)

    return {
        "label_levels": label_levels(trailers),
        **({} if exact else {"no_frame_scores": NO_FRAME_SCORES}),
        "genres": {genre: {level: levels[level][genre] for level in levels} for genre in GENRES},
        "macro": {
            "average_precision": mean("frames", "average_precision"),
            "roc_auc": mean("frames", "roc_auc"),
            "precision": mean("frames", "precision"),
            "recall": mean("frames", "recall"),
            "f1": mean("frames", "f1"),
            "segment_precision": mean("segments", "precision"),
            "segment_recall": mean("segments", "recall"),
            "segment_f1": mean("segments", "f1"),
            "trailer_average_precision": mean("trailers", "average_precision"),
        },
        "motion_only_average_precision": mean("frames", "average_precision", MOTION_ONLY),
        "undefined": {
            f"{level}.{key}": [genre for genre in GENRES if value(level, genre, key) is None]
            for level, key in (
                ("frames", "average_precision"),
                ("frames", "roc_auc"),
                ("trailers", "average_precision"),
            )
        },
    }


def gain(classifier: Mapping, baseline: Mapping) -> dict:
    """What time adds: the classifier's average precision minus the baseline's, per genre
    (frames and trailers), macro and on the mean of the motion-only genres."""

    def per_genre(level: str) -> dict[str, float | None]:
        return {
            genre: difference(
                classifier["genres"][genre].get(level, {}).get("average_precision"),
                baseline["genres"][genre].get(level, {}).get("average_precision"),
            )
            for genre in GENRES
        }

    return {
        "average_precision": per_genre("frames"),
        "trailer_average_precision": per_genre("trailers"),
        "macro_average_precision": difference(
            classifier["macro"]["average_precision"], baseline["macro"]["average_precision"]
        ),
        "macro_trailer_average_precision": difference(
            classifier["macro"]["trailer_average_precision"],
            baseline["macro"]["trailer_average_precision"],
        ),
        "motion_only_average_precision": difference(
            classifier["motion_only_average_precision"], baseline["motion_only_average_precision"]
        ),
    }


def trailer_average_precision(trailer: ScoredTrailer, model: str) -> float | None:
    """One trailer's macro per-frame average precision over the genres it shows (the index of
    viewer pages sorts by it); None for a trailer labelled at trailer level."""
    if trailer.label_level != "segment":
        return None
    return macro(
        average_precision(trailer.labels[:, index], trailer.probabilities[model][:, index])
        for index in range(len(GENRES))
    )


def rounded(value: object) -> object:
    """Every float in a nested structure rounded to :data:`DIGITS` decimals."""
    if isinstance(value, float):
        return round(value, DIGITS)
    if isinstance(value, Mapping):
        return {key: rounded(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [rounded(item) for item in value]
    return value


SUMMARY = {
    "macro_ap": ("macro", "average_precision"),
    "macro_roc_auc": ("macro", "roc_auc"),
    "macro_f1": ("macro", "f1"),
    "segment_f1": ("macro", "segment_f1"),
    "trailer_ap": ("macro", "trailer_average_precision"),
}
"""The metrics file's name for each model's macro number (``<model>_<name>``)."""


def summary(models: Mapping[str, Mapping], gains: Mapping) -> dict[str, float]:
    """The flat summary ``dvc metrics show`` prints; numbers a split leaves undefined are left
    out (the report says why)."""
    numbers: dict[str, float | None] = {}
    for model, report in models.items():
        for name, (section, key) in SUMMARY.items():
            numbers[f"{model}_{name}"] = report[section][key]
        numbers[f"{model}_motion_only_ap"] = report["motion_only_average_precision"]
    numbers["gain_macro_ap"] = gains["macro_average_precision"]
    numbers["gain_motion_only_ap"] = gains["motion_only_average_precision"]
    numbers["gain_trailer_ap"] = gains["macro_trailer_average_precision"]
    return {name: round(value, DIGITS) for name, value in numbers.items() if value is not None}
