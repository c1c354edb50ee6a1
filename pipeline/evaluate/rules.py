"""Each genre's segment rule, tuned on the val split: every combination of
``evaluate.tune_rules`` (:class:`pipeline.core.config.RuleGridConfig`) is tried, and the one with
the best segment F1 at ``evaluate.segment_iou`` (counts pooled over the val trailers) wins, the
first in grid order on a tie (no smoothing before median before Viterbi, shorter minimums
first). A genre with no labelled segment in val keeps the config's ``timeline:`` rule.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from pipeline import GENRES
from pipeline.core.config import Config, RuleGridConfig
from pipeline.core.timeline import SegmentRule, candidate_runs, segment_times, tidied_runs
from pipeline.evaluate.metrics import Segment, match_segments, true_segments
from pipeline.evaluate.report import ScoredTrailer, segment_labelled


def smoothings(grid: RuleGridConfig) -> Iterator[dict]:
    """The smoothing choices tried, as :class:`SegmentRule` fields."""
    yield {"smoothing": "none"}
    for window in grid.median_window_s:
        yield {"smoothing": "median", "median_window_s": window}
    for cost in grid.switch_cost:
        yield {"smoothing": "viterbi", "switch_cost": cost}


def thresholds(grid: RuleGridConfig, viterbi: bool) -> Iterator[tuple[float, float]]:
    """``(onset, offset)`` pairs tried; Viterbi has no offset (its switch cost holds a state)."""
    for onset in grid.onsets:
        for width in (0.0,) if viterbi else grid.hysteresis:
            offset = round(onset - width, 6)
            if offset > 0:
                yield onset, offset


def tune_genre(
    val: Sequence[ScoredTrailer], model: str, index: int, grid: RuleGridConfig, min_iou: float
) -> tuple[SegmentRule, float] | None:
    """The best rule of one genre on ``val`` and its segment F1; None with no true segment."""
    truths = [true_segments(t.labels[:, index], t.fps, t.duration_s) for t in val]
    actual = sum(len(truth) for truth in truths)
    if actual == 0:
        return None
    best: tuple[SegmentRule, float] | None = None
    for smoothing in smoothings(grid):
        for onset, offset in thresholds(grid, smoothing["smoothing"] == "viterbi"):
            rule = SegmentRule(onset=onset, offset=offset, **smoothing)
            found = [candidate_runs(t.probabilities[model][:, index], rule, t.fps) for t in val]
            for min_gap_s in grid.min_gap_s:
                for min_segment_s in grid.min_segment_s:
                    tried = SegmentRule(
                        onset=onset,
                        offset=offset,
                        min_segment_s=min_segment_s,
                        min_gap_s=min_gap_s,
                        **smoothing,
                    )
                    f1 = pooled_f1(val, found, truths, tried, min_iou, actual)
                    if best is None or f1 > best[1]:
                        best = (tried, f1)
    return best


def pooled_f1(
    val: Sequence[ScoredTrailer],
    found: Sequence[list[tuple[int, int]]],
    truths: Sequence[list[Segment]],
    rule: SegmentRule,
    min_iou: float,
    actual: int,
) -> float:
    matched = predicted = 0
    for trailer, runs, truth in zip(val, found, truths, strict=True):
        segments = [
            segment_times(first, stop, trailer.fps, trailer.duration_s)
            for first, stop in tidied_runs(runs, rule, trailer.fps, trailer.duration_s)
        ]
        matched += match_segments(segments, truth, min_iou)
        predicted += len(segments)
    return 2 * matched / (predicted + actual)


def tune_rules(
    val: Sequence[ScoredTrailer], model: str, config: Config
) -> tuple[dict[str, SegmentRule], dict[str, dict]]:
    """Each genre's rule for ``model`` and where it came from (``{"from": "val",
    "val_segment_f1": ...}`` or ``{"from": "timeline"}``), from ``val``'s segment-labelled
    trailers only."""
    val = segment_labelled(val)
    fallback = SegmentRule.from_config(config.timeline)
    rules, sources = {}, {}
    for index, genre in enumerate(GENRES):
        tuned = tune_genre(
            val, model, index, config.evaluate.tune_rules, config.evaluate.segment_iou
        )
        if tuned is None:
            rules[genre], sources[genre] = fallback, {"from": "timeline"}
        else:
            rules[genre], sources[genre] = tuned[0], {"from": "val", "val_segment_f1": tuned[1]}
    return rules, sources
