"""What predict writes per video, each file atomically: ``<name>.timeline.csv``, ``<name>.json``
and ``<name>.png`` (and the viewer page ``<name>.html``), ``<name>`` being the video's stem made
a safe, unique file name; and for a catalogue, one ``catalogue.csv`` row per video."""

from __future__ import annotations

import csv
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline import GENRES
from pipeline.core.config import TimelineConfig
from pipeline.core.io import atomic_open, write_json
from pipeline.core.timeline import (
    SegmentRules,
    genre_segments,
    genres_present,
    rules_to_dict,
    trailer_scores,
)

UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
"""Runs of characters left out of output names (path separators, spaces, shell specials)."""
DECIMALS = 6
"""Decimals of times and probabilities in the CSV (float32 carries about seven)."""
CATALOGUE_FILE = "catalogue.csv"
"""The catalogue summary, beside the videos' own outputs (no video's ``<name>.*`` is this)."""
CATALOGUE_COLUMNS = ("video", "name", *GENRES, "genres_present", "error")


def output_names(videos: Sequence[Path]) -> list[str]:
    """A safe file name per video, from its stem (accents dropped: ``Amélie`` -> ``Amelie``); a
    repeated stem gets ``-2``, ``-3``, ..."""
    names: list[str] = []
    taken: set[str] = set()
    for video in videos:
        stem = unicodedata.normalize("NFKD", video.stem).encode("ascii", "ignore").decode()
        base = UNSAFE.sub("_", stem).lstrip(".") or "video"
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
    decoder: str,
    missing_s: float,
    probabilities: np.ndarray,
    duration_s: float,
    timeline: TimelineConfig,
    rules: SegmentRules,
    trailer_id: str,
    trained_on: dict | None = None,
    evaluation: dict | None = None,
    drift: dict | None = None,
) -> None:
    """The video's trailer-level scores, the genres present, the segment rules and its segments
    (annotation rows) by them; what the model was trained on and its evaluate figures (from its
    folder), and how far the video is from its training data (``drift``; None where not
    measured)."""
    fps = decode["fps"]
    scores = trailer_scores(probabilities, timeline.trailer_top_fraction)
    write_json(
        path,
        {
            "video": str(video),
            "model": model,
            "decode": decode,
            "decoder": decoder,
            "missing_s": missing_s,
            "frames": len(probabilities),
            "duration_s": round(duration_s, DECIMALS),
            "trailer_scores": {
                genre: round(float(score), DECIMALS)
                for genre, score in zip(GENRES, scores, strict=True)
            },
            "genres_present": genres_present(scores, timeline.threshold),
            "segment_rules": rules_to_dict(rules),
            "segments": genre_segments(probabilities, fps, duration_s, rules, trailer_id),
            "trained_on": trained_on,
            "evaluation": evaluation,
            "drift": drift,
        },
    )


@dataclass(frozen=True)
class CatalogueRow:
    """One video of a catalogue: as the catalogue lists it, its output name, and either its
    ``<name>.json`` summary or why it failed."""

    video: str
    name: str
    summary: dict | None
    error: str | None = None


def write_catalogue(path: Path, rows: Iterable[CatalogueRow]) -> None:
    """``catalogue.csv``: per video its trailer-level score per genre and the genres present
    (space-separated), or empty scores and the ``error`` that stopped it."""
    with atomic_open(path, newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CATALOGUE_COLUMNS)
        for row in rows:
            if row.summary is None:
                writer.writerow([row.video, row.name, *[""] * len(GENRES), "", row.error])
                continue
            scores = row.summary["trailer_scores"]
            writer.writerow(
                [
                    row.video,
                    row.name,
                    *(f"{scores[genre]:.{DECIMALS}f}" for genre in GENRES),
                    " ".join(row.summary["genres_present"]),
                    "",
                ]
            )
