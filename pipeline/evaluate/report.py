"""Evaluate's numbers: every model's per-genre and macro scores on a split, and the gain from time.

Three levels, each per genre then macro (the mean over the genres where the split defines it):

- **frames**: average precision and ROC AUC over every frame of every trailer of the split,
  and precision, recall and F1 at a threshold tuned on the val split (the best F1 there; the
  config's ``timeline.threshold`` for a genre val has no positive frame of);
- **segments**: the segments ``trailers predict`` writes, decoded by each genre's rule tuned on
  val (:mod:`pipeline.evaluate.rules`), against the labels' runs: precision, recall and F1
  matched one-to-one at IoU 0.3, 0.5, 0.7 and ``evaluate.segment_iou``, counts pooled over
  the trailers, and segment mAP over IoU 0.5:0.05:0.95 (:mod:`pipeline.evaluate.metrics`);
  ``segments_untuned`` the same with the config's ``timeline:`` rule for every genre (the
  timeline before tuning);
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
from pipeline.core.timeline import SegmentRules, column_segments, config_rules, trailer_scores
from pipeline.evaluate.metrics import (
    MOTION_ONLY,
    SEGMENT_IOUS,
    at_threshold,
    average_precision,
    counts_scores,
    difference,
    macro,
    match_segments,
    mean_average_precision,
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


def iou_key(level: float) -> str:
    """``0.5`` -> ``"iou50"``: a report key and an MLflow metric name part."""
    return f"iou{round(level * 100)}"


def segment_levels(segment_iou: float) -> list[float]:
    """The IoUs segment precision, recall and F1 are given at: THUMOS's and the config's."""
    return sorted({*SEGMENT_IOUS, segment_iou})


def segment_scores(
    trailers: Sequence[ScoredTrailer], model: str, rules: SegmentRules, segment_iou: float
) -> dict[str, dict]:
    """Per genre, the segments ``rules`` decode against the labels' runs: at each IoU of
    :func:`segment_levels` the matched, predicted and true counts (pooled over the trailers)
    with precision, recall and F1, and the segment mAP (``map``)."""
    levels = segment_levels(segment_iou)
    results = {}
    for index, genre in enumerate(GENRES):
        predicted, truths = [], []
        for trailer in trailers:
            column = trailer.probabilities[model][:, index]
            found = column_segments(column, rules[genre], trailer.fps, trailer.duration_s)
            predicted.append([((start, end), mean) for start, end, mean in found])
            truths.append(true_segments(trailer.labels[:, index], trailer.fps, trailer.duration_s))
        scores: dict = {}
        for level in levels:
            matched = sum(
                match_segments([segment for segment, _ in found], truth, level)
                for found, truth in zip(predicted, truths, strict=True)
            )
            count, actual = sum(map(len, predicted)), sum(map(len, truths))
            scores[iou_key(level)] = {
                "matched": matched,
                "predicted": count,
                "true": actual,
                **counts_scores(matched, count, actual),
            }
        scores["map"] = mean_average_precision(predicted, truths)
        results[genre] = scores
    return results


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
    trailers: Sequence[ScoredTrailer],
    val: Sequence[ScoredTrailer],
    model: str,
    config: Config,
    rules: SegmentRules,
) -> dict:
    """Every number of one model: per genre (frames and segments of the segment-labelled
    trailers, segments by ``rules`` and by the config's rule; trailers of all), macro, and which
    genres the split left a metric undefined for."""
    whole = trailer_level(trailers, model, config.timeline.trailer_top_fraction)
    levels = {"trailers": whole}
    exact = segment_labelled(trailers)
    segment_iou = config.evaluate.segment_iou
    if exact:
        thresholds = tuned_thresholds(val, model, config.timeline)
        untuned = config_rules(config.timeline)
        levels["frames"] = frame_scores(exact, model, thresholds)
        levels["segments"] = segment_scores(exact, model, rules, segment_iou)
        levels["segments_untuned"] = segment_scores(exact, model, untuned, segment_iou)

    def value(level: str, genre: str, *keys: str) -> float | None:
        if level not in levels:
            return None
        item = levels[level][genre]
        for key in keys:
            item = item[key]
        return item

    def mean(level: str, *keys: str, genres: Sequence[str] = GENRES) -> float | None:
        return macro(value(level, genre, *keys) for genre in genres)

    at_levels = {
        f"segment_{key}_{iou_key(level)}": mean("segments", iou_key(level), key)
        for level in segment_levels(segment_iou)
        for key in ("precision", "recall", "f1")
    }
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
            "segment_precision": mean("segments", iou_key(segment_iou), "precision"),
            "segment_recall": mean("segments", iou_key(segment_iou), "recall"),
            "segment_f1": mean("segments", iou_key(segment_iou), "f1"),
            **at_levels,
            "segment_map": mean("segments", "map"),
            "segment_f1_untuned": mean("segments_untuned", iou_key(segment_iou), "f1"),
            "segment_map_untuned": mean("segments_untuned", "map"),
            "trailer_average_precision": mean("trailers", "average_precision"),
        },
        "motion_only_average_precision": mean("frames", "average_precision", genres=MOTION_ONLY),
        "undefined": {
            f"{level}.{key}": [genre for genre in GENRES if value(level, genre, key) is None]
            for level, key in (
                ("frames", "average_precision"),
                ("frames", "roc_auc"),
                ("segments", "map"),
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
    "segment_f1_iou30": ("macro", "segment_f1_iou30"),
    "segment_f1_iou50": ("macro", "segment_f1_iou50"),
    "segment_f1_iou70": ("macro", "segment_f1_iou70"),
    "segment_map": ("macro", "segment_map"),
    "segment_f1_untuned": ("macro", "segment_f1_untuned"),
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
