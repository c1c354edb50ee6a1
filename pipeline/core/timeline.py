"""A genre timeline: each sampled frame's probability of every genre, and what is read from it.

One contract for predict (a user's video) and evaluate (test trailers against their labels):
frame ``k`` stands for time ``k / fps`` (the decode stage's sampling rule,
``pipeline/core/video.py``)
and lasts ``1 / fps``; ``probabilities`` is float ``(frames, 6)`` in :data:`pipeline.GENRES`
order. Segments have the shape of ``annotations.csv`` rows, so a prediction can be read, and
scored, like a label file.

Segments are decoded from the probabilities by one genre's :class:`SegmentRule` (pyannote's
``Binarize``, with optional smoothing), in this order:

1. smoothing: ``none``; ``median`` over ``median_window_s`` (an odd count of frames, the edges
   repeated); or ``viterbi``, the best two-state path, each frame scored ``log(p / onset)`` on
   and ``log((1 - p) / (1 - onset))`` off, each change of state costing ``switch_cost`` nats;
2. hysteresis (not after ``viterbi``, which decides on and off itself): a segment is a run of
   frames above ``offset`` holding at least one frame above ``onset``;
3. gaps between two segments shorter than ``min_gap_s`` are bridged;
4. segments shorter than ``min_segment_s`` are dropped.

Every step is linear in the frames. ``pipeline/views/assets/viewer.js`` repeats these steps for
the page's segment list (``tests/test_viewer.py`` checks that both agree).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from pipeline import GENRES
from pipeline.core.config import TimelineConfig
from pipeline.core.errors import StageError

Smoothing = Literal["none", "median", "viterbi"]
PROBABILITY_FLOOR = 1e-6
"""Viterbi's probabilities are clipped to [floor, 1 - floor]: a 0 or 1 would cost infinity."""


@dataclass(frozen=True)
class SegmentRule:
    """How one genre's probabilities are read as segments (the module's docstring)."""

    onset: float
    offset: float
    min_segment_s: float = 0.0
    min_gap_s: float = 0.0
    smoothing: Smoothing = "none"
    median_window_s: float = 0.5
    switch_cost: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.offset <= self.onset < 1:
            raise ValueError(f"expected 0 < offset <= onset < 1, got {self}")
        if self.smoothing not in ("none", "median", "viterbi"):
            raise ValueError(f"unknown smoothing {self.smoothing!r}")
        if min(self.min_segment_s, self.min_gap_s, self.switch_cost) < 0:
            raise ValueError(f"expected durations and switch cost >= 0, got {self}")
        if not self.median_window_s > 0:
            raise ValueError(f"expected median_window_s > 0, got {self}")

    @classmethod
    def from_config(cls, timeline: TimelineConfig) -> SegmentRule:
        offset = timeline.offset_threshold
        return cls(
            onset=timeline.threshold,
            offset=timeline.threshold if offset is None else offset,
            min_segment_s=timeline.min_segment_s,
            min_gap_s=timeline.min_gap_s,
            smoothing=timeline.smoothing,
            median_window_s=timeline.median_window_s,
            switch_cost=timeline.switch_cost,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def shifted(self, delta: float) -> SegmentRule:
        """Onset and offset moved by ``delta`` (the page's slider), kept inside (0, 1)."""
        return dataclasses.replace(
            self, onset=nudged(self.onset, delta), offset=nudged(self.offset, delta)
        )


DURATION_TOLERANCE_S = 1e-6
"""A gap or segment this close to its minimum is not shorter: ``7 / 10 - 5 / 10`` is
0.19999999999999996, two frames at 10 fps are 0.2 s."""

SLIDER_LIMITS = (0.01, 0.99)
"""The page's threshold slider's range: a shifted onset or offset stays inside it."""


def nudged(threshold: float, delta: float) -> float:
    """``threshold + delta`` within :data:`SLIDER_LIMITS` (viewer.js ``nudged``, line for line)."""
    low, high = SLIDER_LIMITS
    return min(max(threshold + delta, low), high)


SegmentRules = Mapping[str, SegmentRule]
"""One rule per genre of :data:`pipeline.GENRES`."""


def config_rules(timeline: TimelineConfig) -> dict[str, SegmentRule]:
    """The config's ``timeline:`` rule for every genre."""
    rule = SegmentRule.from_config(timeline)
    return {genre: rule for genre in GENRES}


def chosen_rules(timeline: TimelineConfig, tuned: SegmentRules | None) -> SegmentRules:
    """The rules a timeline is read by: the model's ``tuned`` ones, unless there are none or
    ``timeline.rules`` is ``config``; then the config's for every genre."""
    if tuned is not None and timeline.rules == "tuned":
        return tuned
    return config_rules(timeline)


def rules_to_dict(rules: SegmentRules) -> dict[str, dict]:
    return {genre: rules[genre].to_dict() for genre in GENRES}


def rules_from_dict(values: Mapping[str, Any], source: str) -> dict[str, SegmentRule]:
    """Rules as :func:`rules_to_dict` wrote them; StageError, one line naming ``source``."""
    try:
        return {genre: SegmentRule(**values[genre]) for genre in GENRES}
    except (KeyError, TypeError, ValueError) as exc:
        raise StageError(f"{source}: not a segment rule per genre ({exc})") from None


def runs(active: np.ndarray) -> list[tuple[int, int]]:
    """``(first, stop)`` frame indices of each run of True in a 1-D boolean array."""
    padded = np.concatenate([[False], np.asarray(active, dtype=bool), [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return [(int(first), int(stop)) for first, stop in zip(edges[::2], edges[1::2], strict=True)]


def segment_times(first: int, stop: int, fps: float, duration_s: float) -> tuple[float, float]:
    """Start and end (seconds) of frames ``first`` to ``stop``, the last ending with the video."""
    return first / fps, min(stop / fps, duration_s)


def frames_of(seconds: float, fps: float) -> int:
    """The whole frames ``seconds`` spans, to the nearest, a half up (as JavaScript rounds)."""
    return math.floor(seconds * fps + 0.5)


def median_smoothed(column: np.ndarray, window_s: float, fps: float) -> np.ndarray:
    """The running median over an odd count of frames nearest ``window_s``, the edge frames
    repeated beyond the ends; O(frames x window)."""
    half = frames_of(window_s, fps) // 2
    if half == 0 or len(column) == 0:
        return column
    padded = np.concatenate([np.repeat(column[:1], half), column, np.repeat(column[-1:], half)])
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1)
    return np.sort(windows, axis=1)[:, half]


def viterbi_path(column: np.ndarray, onset: float, switch_cost: float) -> np.ndarray:
    """The best on/off path (boolean per frame) of the two-state model in the module's
    docstring; a tie keeps the state, and off wins at the end. One pass forward, one back."""
    frames = len(column)
    if frames == 0:
        return np.zeros(0, dtype=bool)
    p = np.clip(column.astype(np.float64), PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)
    on = (np.log(p) - math.log(onset)).tolist()
    off = (np.log(1 - p) - math.log(1 - onset)).tolist()
    stayed_on = [True] * frames  # the best path into "on" at k was on at k - 1
    stayed_off = [True] * frames
    best_on, best_off = on[0], off[0]
    for k in range(1, frames):
        switch_on, switch_off = best_off - switch_cost, best_on - switch_cost
        stayed_on[k] = best_on >= switch_on
        stayed_off[k] = best_off >= switch_off
        best_on, best_off = (
            (best_on if stayed_on[k] else switch_on) + on[k],
            (best_off if stayed_off[k] else switch_off) + off[k],
        )
    path = np.zeros(frames, dtype=bool)
    state = best_on > best_off
    for k in range(frames - 1, -1, -1):
        path[k] = state
        if not (stayed_on[k] if state else stayed_off[k]):
            state = not state
    return path


def hysteresis_runs(column: np.ndarray, onset: float, offset: float) -> list[tuple[int, int]]:
    """Runs above ``offset`` that hold a frame above ``onset``."""
    candidates = runs(column > offset)
    if not candidates:
        return []
    # Each run's peak: the frames from its start to the next run's are its own and, below the
    # offset, frames that cannot pass the onset.
    peaks = np.maximum.reduceat(column, [first for first, _ in candidates])
    return [run for run, peak in zip(candidates, peaks, strict=True) if peak > onset]


def candidate_runs(column: np.ndarray, rule: SegmentRule, fps: float) -> list[tuple[int, int]]:
    """Steps 1 and 2 of the module's docstring: smoothing, then hysteresis (or Viterbi's path)."""
    if rule.smoothing == "viterbi":
        return runs(viterbi_path(column, rule.onset, rule.switch_cost))
    if rule.smoothing == "median":
        column = median_smoothed(column, rule.median_window_s, fps)
    return hysteresis_runs(column, rule.onset, rule.offset)


def tidied_runs(
    found: list[tuple[int, int]], rule: SegmentRule, fps: float, duration_s: float
) -> list[tuple[int, int]]:
    """Steps 3 and 4: gaps under ``min_gap_s`` bridged, then segments under ``min_segment_s``
    dropped."""
    bridged: list[tuple[int, int]] = []
    for first, stop in found:
        if bridged and first / fps - bridged[-1][1] / fps < rule.min_gap_s - DURATION_TOLERANCE_S:
            bridged[-1] = (bridged[-1][0], stop)
        else:
            bridged.append((first, stop))
    kept = []
    for first, stop in bridged:
        start_s, end_s = segment_times(first, stop, fps, duration_s)
        if end_s - start_s >= rule.min_segment_s - DURATION_TOLERANCE_S:
            kept.append((first, stop))
    return kept


def decode_runs(
    column: np.ndarray, rule: SegmentRule, fps: float, duration_s: float
) -> list[tuple[int, int]]:
    """``(first, stop)`` frames of each segment of one genre's probabilities under ``rule``."""
    return tidied_runs(candidate_runs(column, rule, fps), rule, fps, duration_s)


TIME_DECIMALS = 3
PROBABILITY_DECIMALS = 4
"""Decimals of a segment row's times and mean probability."""


def column_segments(
    column: np.ndarray, rule: SegmentRule, fps: float, duration_s: float
) -> list[tuple[float, float, float]]:
    """One genre's segments under ``rule`` as ``(start_s, end_s, mean_probability)`` (of the
    unsmoothed probabilities), rounded as :func:`genre_segments` rows are."""
    segments = []
    for first, stop in decode_runs(column, rule, fps, duration_s):
        start_s, end_s = segment_times(first, stop, fps, duration_s)
        mean = float(column[first:stop].mean())
        segments.append(
            (
                round(start_s, TIME_DECIMALS),
                round(end_s, TIME_DECIMALS),
                round(mean, PROBABILITY_DECIMALS),
            )
        )
    return segments


def genre_segments(
    probabilities: np.ndarray,
    fps: float,
    duration_s: float,
    rules: SegmentRules,
    trailer_id: str = "",
) -> list[dict]:
    """Each genre's segments under its rule (:func:`column_segments`) as annotation rows:
    ``trailer_id, start_s, end_s, genre, mean_probability``, sorted by start then genre order.
    """
    rows = [
        {
            "trailer_id": trailer_id,
            "start_s": start_s,
            "end_s": end_s,
            "genre": genre,
            "mean_probability": mean,
        }
        for index, genre in enumerate(GENRES)
        for start_s, end_s, mean in column_segments(
            probabilities[:, index], rules[genre], fps, duration_s
        )
    ]
    return sorted(rows, key=lambda row: (row["start_s"], GENRES.index(row["genre"])))


def trailer_scores(probabilities: np.ndarray, top_fraction: float) -> np.ndarray:
    """Each genre's trailer-level score: the mean of its ``top_fraction`` highest frames.

    Between the mean (which a genre on screen for a few seconds cannot lift) and the maximum
    (which one noisy frame decides). Returns float ``(6,)``.
    """
    frames = len(probabilities)
    if frames == 0:
        raise ValueError("a timeline of zero frames has no trailer-level score")
    top = max(1, math.ceil(top_fraction * frames))
    highest = np.sort(probabilities, axis=0)[-top:]
    return highest.mean(axis=0)


def genres_present(scores: np.ndarray, threshold: float) -> list[str]:
    """The genres whose trailer-level score is above ``threshold``, in GENRES order."""
    return [genre for genre, score in zip(GENRES, scores, strict=True) if score > threshold]
