"""Evaluation metrics of one genre (or all six), pure NumPy and scikit-learn.

Per frame: ``labels`` are 0/1 and ``scores`` probabilities, both 1-D over the frames of every
trailer of a split. A frame is predicted positive when its score is at least the threshold
(scikit-learn's convention, so a threshold tuned on its curve means what it says). A metric a
split cannot define (average precision with no positive frame, ROC AUC with one class only) is
``None``; :func:`macro` leaves it out.

Segments: ``(start_s, end_s)`` intervals of one genre in one trailer; a predicted segment
matches a true one at IoU >= ``min_iou``, each at most once (:func:`match_segments`);
precision, recall and F1 at each of :data:`SEGMENT_IOUS` (THUMOS), and average precision of
segments ranked by their mean probability, averaged over :data:`MAP_IOUS` (ActivityNet's mAP,
:func:`segment_average_precision`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from pipeline.core.timeline import runs, segment_times

MOTION_ONLY = ("comedy", "musical", "horror", "suspense")
"""The genres only motion tells apart (two look-alike pairs, ``pipeline/synth/grammar.py``):
a per-frame model cannot separate them, so the gain from time shows here first."""

RECALL_GRID = np.linspace(0.0, 1.0, 101)
"""Recall levels (steps of 0.01) at which PR curves are written for DVC plots: one grid for
every model, so one file holds both curves."""

Segment = tuple[float, float]

SEGMENT_IOUS = (0.3, 0.5, 0.7)
"""The IoUs segment precision, recall and F1 are given at (THUMOS'14 quotes 0.3 to 0.7)."""
MAP_IOUS = tuple(round(0.5 + 0.05 * step, 2) for step in range(10))
"""ActivityNet's IoUs, 0.5:0.05:0.95: segment mAP is the mean of the average precisions."""


def has_both_classes(labels: np.ndarray) -> bool:
    return 0 < int(np.sum(labels)) < len(labels)


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """scikit-learn's average precision (the step-wise area, no interpolation); None with no
    positive frame."""
    if not np.any(labels):
        return None
    return float(average_precision_score(labels, scores))


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve; None unless there are positive and negative frames."""
    if not has_both_classes(labels):
        return None
    return float(roc_auc_score(labels, scores))


def tuned_threshold(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """The threshold with the best F1 on these frames (the lowest such); None with no positive."""
    if not np.any(labels):
        return None
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    precision, recall = precision[:-1], recall[:-1]  # the last point has no threshold
    denominator = precision + recall
    f1 = np.divide(
        2 * precision * recall, denominator, out=np.zeros_like(denominator), where=denominator > 0
    )
    return float(thresholds[int(np.argmax(f1))])


def at_threshold(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    """Precision, recall and F1 of the frames scored at least ``threshold``: precision None
    when none is, recall None when no frame is positive, F1 None when both are."""
    predicted = np.asarray(scores) >= threshold
    truth = np.asarray(labels).astype(bool)
    hits = int(np.sum(predicted & truth))
    return counts_scores(hits, int(np.sum(predicted)), int(np.sum(truth)))


def counts_scores(hits: int, predicted: int, actual: int) -> dict:
    """Precision ``hits / predicted``, recall ``hits / actual``, F1 ``2 hits / (predicted +
    actual)``, each None where its denominator is 0."""
    return {
        "precision": hits / predicted if predicted else None,
        "recall": hits / actual if actual else None,
        "f1": 2 * hits / (predicted + actual) if predicted + actual else None,
    }


def pr_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """scikit-learn's precision-recall curve ``(recall, precision)``; None with no positive."""
    if not np.any(labels):
        return None
    precision, recall, _ = precision_recall_curve(labels, scores)
    return recall, precision


def interpolated_precision(recall: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """Precision at each :data:`RECALL_GRID` level: the best precision at that recall or more
    (the usual interpolated PR curve; 0 beyond the highest recall reached). Points at recall 0
    are left out: scikit-learn ends every curve with (0, 1), a precision of no prediction."""
    recall, precision = np.asarray(recall), np.asarray(precision)
    reached = recall > 0
    order = np.argsort(recall[reached])
    recall, precision = recall[reached][order], precision[reached][order]
    best_from_here = np.maximum.accumulate(precision[::-1])[::-1]
    index = np.searchsorted(recall, RECALL_GRID, side="left")
    padded = np.append(best_from_here, 0.0)
    return padded[index]


def true_segments(labels: np.ndarray, fps: float, duration_s: float) -> list[Segment]:
    """Runs of one genre's 0/1 frame labels as ``(start_s, end_s)``, timed as
    :func:`pipeline.core.timeline.genre_segments` times predicted ones."""
    return [segment_times(first, stop, fps, duration_s) for first, stop in runs(labels > 0)]


def iou(first: Segment, second: Segment) -> float:
    """Intersection over union of two time intervals (0 when they do not overlap)."""
    overlap = min(first[1], second[1]) - max(first[0], second[0])
    if overlap <= 0:
        return 0.0
    return overlap / (max(first[1], second[1]) - min(first[0], second[0]))


def match_segments(predicted: Sequence[Segment], truth: Sequence[Segment], min_iou: float) -> int:
    """How many predicted segments match a true one, one-to-one: pairs at IoU >= ``min_iou``
    are taken greedily, highest IoU first, each segment at most once."""
    pairs = sorted(
        (
            (iou(p, t), i, j)
            for i, p in enumerate(predicted)
            for j, t in enumerate(truth)
            if iou(p, t) >= min_iou
        ),
        reverse=True,
    )
    used_predicted, used_truth = set(), set()
    for _, i, j in pairs:
        if i not in used_predicted and j not in used_truth:
            used_predicted.add(i)
            used_truth.add(j)
    return len(used_predicted)


def segment_average_precision(
    predicted: Sequence[Sequence[tuple[Segment, float]]],
    truth: Sequence[Sequence[Segment]],
    min_iou: float,
) -> float | None:
    """ActivityNet's average precision of one genre at one IoU: every trailer's predicted
    ``(segment, score)`` ranked by score over all trailers; each, in turn, is a hit when a true
    segment of its trailer not yet taken overlaps it at IoU >= ``min_iou`` (it takes the one
    of highest IoU); the area under the interpolated precision-recall curve. None with no true
    segment."""
    actual = sum(len(segments) for segments in truth)
    if actual == 0:
        return None
    ranked = sorted(
        (
            (score, trailer, segment)
            for trailer, rows in enumerate(predicted)
            for segment, score in rows
        ),
        key=lambda item: -item[0],
    )
    taken = [set() for _ in truth]
    hits = np.zeros(len(ranked))
    for rank, (_, trailer, segment) in enumerate(ranked):
        overlaps = [
            (iou(segment, true), index)
            for index, true in enumerate(truth[trailer])
            if index not in taken[trailer]
        ]
        best = max(overlaps, default=(0.0, -1))
        if best[0] >= min_iou:
            taken[trailer].add(best[1])
            hits[rank] = 1
    found = np.cumsum(hits)
    precision = found / np.arange(1, len(ranked) + 1)
    recall = found / actual
    # VOC/ActivityNet interpolation: precision at each recall is the best at that recall or more.
    precision = np.concatenate([[0.0], precision, [0.0]])
    recall = np.concatenate([[0.0], recall, [1.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1]) + 1
    return float(np.sum((recall[steps] - recall[steps - 1]) * precision[steps]))


def mean_average_precision(
    predicted: Sequence[Sequence[tuple[Segment, float]]], truth: Sequence[Sequence[Segment]]
) -> float | None:
    """Segment mAP: :func:`segment_average_precision` averaged over :data:`MAP_IOUS`."""
    return macro(segment_average_precision(predicted, truth, level) for level in MAP_IOUS)


def macro(values: Iterable[float | None]) -> float | None:
    """The mean of the defined values; None if none is."""
    defined = [value for value in values if value is not None]
    return float(np.mean(defined)) if defined else None


def difference(first: float | None, second: float | None) -> float | None:
    """``first - second``, None unless both are defined."""
    return None if first is None or second is None else first - second
