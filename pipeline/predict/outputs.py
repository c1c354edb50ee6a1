"""What predict writes per video, each file atomically: ``<name>.timeline.csv``, ``<name>.json``
and ``<name>.png`` (and the viewer page ``<name>.html``), ``<name>`` being the video's stem made
a safe, unique file name."""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline import GENRES
from pipeline.config import TimelineConfig
from pipeline.io import atomic_open, write_json
from pipeline.timeline import genre_segments, genres_present, trailer_scores

UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
"""Runs of characters left out of output names (path separators, spaces, shell specials)."""
DECIMALS = 6
"""Decimals of times and probabilities in the CSV (float32 carries about seven)."""


def output_names(videos: Sequence[Path]) -> list[str]:
    """A safe file name per video, from its stem; a repeated stem gets ``-2``, ``-3``, ..."""
    names: list[str] = []
    taken: set[str] = set()
    for video in videos:
        base = UNSAFE.sub("_", video.stem).lstrip(".") or "video"
        name, copy = base, 1
        while name in taken:
            copy += 1
            name = f"{base}-{copy}"
        taken.add(name)
        names.append(name)
    return names


def write_timeline_csv(path: Path, probabilities: np.ndarray, fps: float) -> None:
    """One row per sampled frame: ``time_s`` (``k / fps``) and each genre's probability."""
    with atomic_open(path, newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["time_s", *GENRES])
        for index, row in enumerate(probabilities):
            writer.writerow(
                [f"{index / fps:.{DECIMALS}f}", *(f"{value:.{DECIMALS}f}" for value in row)]
            )


def write_summary(
    path: Path,
    *,
    video: Path,
    model: str,
    decode: dict,
    probabilities: np.ndarray,
    duration_s: float,
    timeline: TimelineConfig,
    trailer_id: str,
) -> None:
    """The video's trailer-level scores, the genres present and its segments (annotation rows)."""
    fps = decode["fps"]
    scores = trailer_scores(probabilities, timeline.trailer_top_fraction)
    write_json(
        path,
        {
            "video": str(video),
            "model": model,
            "decode": decode,
            "frames": len(probabilities),
            "duration_s": round(duration_s, DECIMALS),
            "trailer_scores": {
                genre: round(float(score), DECIMALS)
                for genre, score in zip(GENRES, scores, strict=True)
            },
            "genres_present": genres_present(scores, timeline.threshold),
            "segments": genre_segments(probabilities, fps, duration_s, timeline, trailer_id),
        },
    )
