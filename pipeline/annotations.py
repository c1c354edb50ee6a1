"""The corpus's labels: ``annotations.csv`` (genre segments) and ``splits.csv`` (trailer -> split).

Reading is forgiving per row and strict per file: a bad row becomes a Problem naming the file,
line and reason (its trailer is then left out), while a file that is missing or has the wrong
header stops the stage.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path

from pipeline import GENRES, SPLITS
from pipeline.errors import StageError

ANNOTATION_COLUMNS = ("trailer_id", "start_s", "end_s", "genre")
SPLIT_COLUMNS = ("trailer_id", "split")
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


@dataclass(frozen=True)
class Segment:
    """``genre`` is on screen from ``start_s`` (inclusive) to ``end_s`` (exclusive)."""

    start_s: float
    end_s: float
    genre: str


@dataclass(frozen=True)
class Problem:
    """One bad row or trailer; ``trailer_id`` is None when the row cannot be attributed."""

    trailer_id: str | None
    reason: str


def check_trailer_id(trailer_id: str) -> str | None:
    """Why ``trailer_id`` cannot name files (path separators, ``..``, odd characters), or None."""
    if not trailer_id:
        return "empty trailer id"
    if not _SAFE_ID.fullmatch(trailer_id):
        return f"unsafe trailer id {trailer_id!r} (allowed: letters, digits, '_' and '-')"
    return None


def _rows(path: Path, columns: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    if not path.is_file():
        raise StageError(f"{path}: file not found")
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != columns:
            raise StageError(
                f"{path}: header is {','.join(reader.fieldnames or [])!r}, expected "
                f"{','.join(columns)!r}"
            )
        return [(reader.line_num, row) for row in reader]


def _segment(row: dict[str, str]) -> Segment:
    try:
        start, end = float(row["start_s"]), float(row["end_s"])
    except (TypeError, ValueError):
        raise ValueError(
            f"start_s/end_s are not numbers ({row['start_s']!r}, {row['end_s']!r})"
        ) from None
    if not (math.isfinite(start) and math.isfinite(end)):
        raise ValueError(f"start_s/end_s must be finite, got {start}, {end}")
    if start < 0:
        raise ValueError(f"start_s is negative ({start})")
    if end <= start:
        raise ValueError(f"end_s {end} is not after start_s {start}")
    if row["genre"] not in GENRES:
        raise ValueError(f"unknown genre {row['genre']!r} (known: {', '.join(GENRES)})")
    return Segment(start, end, row["genre"])


def read_annotations(path: Path) -> tuple[dict[str, list[Segment]], list[Problem]]:
    """Segments per trailer id, and the problems of rows that were left out."""
    segments: dict[str, list[Segment]] = {}
    problems: list[Problem] = []
    for line, row in _rows(path, ANNOTATION_COLUMNS):
        trailer_id = row["trailer_id"] or ""
        bad_id = check_trailer_id(trailer_id)
        if bad_id:
            problems.append(Problem(None, f"{path} line {line}: {bad_id}"))
            continue
        try:
            segments.setdefault(trailer_id, []).append(_segment(row))
        except ValueError as exc:
            problems.append(Problem(trailer_id, f"{path} line {line}: {exc}"))
    return segments, problems


def read_splits(path: Path) -> tuple[dict[str, str], list[Problem]]:
    """Split per trailer id, and the problems of rows that were left out."""
    splits: dict[str, str] = {}
    problems: list[Problem] = []
    for line, row in _rows(path, SPLIT_COLUMNS):
        trailer_id, split = row["trailer_id"] or "", row["split"]
        bad_id = check_trailer_id(trailer_id)
        if bad_id:
            problems.append(Problem(None, f"{path} line {line}: {bad_id}"))
        elif split not in SPLITS:
            problems.append(
                Problem(trailer_id, f"{path} line {line}: unknown split {split!r} ({SPLITS})")
            )
        elif trailer_id in splits:
            problems.append(Problem(trailer_id, f"{path} line {line}: duplicate trailer id"))
        else:
            splits[trailer_id] = split
    return splits, problems


def labelled_trailers(
    annotations_path: Path, splits_path: Path
) -> tuple[dict[str, tuple[str, list[Segment]]], list[Problem]]:
    """Trailers with a split and at least one good segment; problems for everything else.

    A trailer with any bad row is left out whole: decoding it with part of its labels would
    teach the model that the missing genre is absent.
    """
    segments, problems = read_annotations(annotations_path)
    splits, split_problems = read_splits(splits_path)
    problems += split_problems
    excluded = {problem.trailer_id for problem in problems}
    trailers: dict[str, tuple[str, list[Segment]]] = {}
    for trailer_id in sorted(segments.keys() | splits.keys()):
        if trailer_id in excluded:
            continue
        if trailer_id not in splits:
            problems.append(
                Problem(trailer_id, f"{splits_path}: no split for trailer {trailer_id}")
            )
        elif trailer_id not in segments:
            problems.append(
                Problem(trailer_id, f"{annotations_path}: no segments for trailer {trailer_id}")
            )
        else:
            trailers[trailer_id] = (splits[trailer_id], segments[trailer_id])
    return trailers, problems
