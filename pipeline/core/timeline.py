"""A genre timeline: each sampled frame's probability of every genre, and what is read from it.

One contract for predict (a user's video) and evaluate (test trailers against their labels):
frame ``k`` stands for time ``k / fps`` (the decode stage's sampling rule,
``pipeline/core/video.py``)
and lasts ``1 / fps``; ``probabilities`` is float ``(frames, 6)`` in :data:`pipeline.GENRES`
order. Segments have the shape of ``annotations.csv`` rows, so a prediction can be read, and
scored, like a label file.
"""

from __future__ import annotations

import math

import numpy as np

from pipeline import GENRES
from pipeline.core.config import TimelineConfig


def runs(active: np.ndarray) -> list[tuple[int, int]]:
    """``(first, stop)`` frame indices of each run of True in a 1-D boolean array."""
    padded = np.concatenate([[False], np.asarray(active, dtype=bool), [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return [(int(first), int(stop)) for first, stop in zip(edges[::2], edges[1::2], strict=True)]


def segment_times(first: int, stop: int, fps: float, duration_s: float) -> tuple[float, float]:
    """Start and end (seconds) of frames ``first`` to ``stop``, the last ending with the video."""
    return first / fps, min(stop / fps, duration_s)


def genre_segments(
    probabilities: np.ndarray,
    fps: float,
    duration_s: float,
    timeline: TimelineConfig,
    trailer_id: str = "",
) -> list[dict]:
    """Contiguous runs above ``timeline.threshold``, per genre, as annotation rows.

    Each row: ``trailer_id, start_s, end_s, genre, mean_probability``, sorted by start then genre
    order; runs shorter than ``timeline.min_segment_s`` are left out.
    """
    rows = []
    for index, genre in enumerate(GENRES):
        column = probabilities[:, index]
        for first, stop in runs(column > timeline.threshold):
            start_s, end_s = segment_times(first, stop, fps, duration_s)
            if end_s - start_s < timeline.min_segment_s:
                continue
            rows.append(
                {
                    "trailer_id": trailer_id,
                    "start_s": round(start_s, 3),
                    "end_s": round(end_s, 3),
                    "genre": genre,
                    "mean_probability": round(float(column[first:stop].mean()), 4),
                }
            )
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
