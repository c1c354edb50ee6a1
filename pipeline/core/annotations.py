"""The corpus's labels: ``annotations.csv`` (genre segments) and ``splits.csv`` (trailer -> split).

Reading is forgiving per row and strict per file: a bad row becomes a Problem naming the file,
line and reason (its trailer is then left out), while a file that is missing, is not UTF-8 or
has the wrong header stops the stage. Files are read as spreadsheets save them: UTF-8 with or
without a byte order mark, any line endings, cells trimmed.

``annotations.csv`` may carry a ``video`` column: the trailer's file, relative to the videos
folder (``decode.input_dir``), so a catalogue is used in place. A row whose ``start_s`` and
``end_s`` are both empty labels the whole trailer (a trailer-level label, as public trailer
datasets give them).

Trailer ids name output files, so they are restricted to letters, digits, ``_`` and ``-``. Ids
given in the labels are used as given when safe; a video found in a folder gets one from its
name (:func:`trailer_id_for`).

``trailers synth`` also leaves its receipt (:func:`write_synth_receipt`: the size and SHA-256 of
every video it wrote), by which decode tells the demo's videos from a user's
(:class:`SynthVideos`), whatever folder or name they are found under.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from pipeline import GENRES, SPLITS
from pipeline.core.errors import StageError
from pipeline.core.io import file_sha256, read_json, write_json

ANNOTATION_COLUMNS = ("trailer_id", "start_s", "end_s", "genre")
VIDEO_COLUMN = "video"
"""Optional annotations column: the trailer's video, relative to the videos folder."""
SPLIT_COLUMNS = ("trailer_id", "split")
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_NOT_SLUG = re.compile(r"[^a-z0-9]+")
SLUG_CHARS = 40
"""Longest readable part of an id made from a file name (file names stay short)."""
ID_HASH_CHARS = 8
"""Hex digits of the relative path's hash in such an id: 32 bits, distinct in any catalogue
that is not millions of files large."""


@dataclass(frozen=True)
class Segment:
    """``genre`` is on screen from ``start_s`` (inclusive) to ``end_s`` (exclusive); a
    trailer-level label spans the whole trailer (``0`` to infinity)."""

    start_s: float
    end_s: float
    genre: str

    @property
    def whole_trailer(self) -> bool:
        return self.end_s == math.inf


@dataclass(frozen=True)
class Labels:
    """A trailer's split, segments and video (relative to the videos folder; None: the demo
    layout's ``trailer_<id>.mp4``)."""

    split: str
    segments: list[Segment]
    video: str | None


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


def trailer_id_for(relative_path: str) -> str:
    """A safe, stable id for a video from its path relative to the videos folder: a readable
    slug of its name (accents dropped) and a short hash of the whole path, so names that slug
    alike still get distinct ids; e.g. ``Amélie (2001) #2.mp4`` -> ``amelie-2001-2-<hash>``."""
    name = PurePosixPath(relative_path).stem.removeprefix("trailer_")
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = _NOT_SLUG.sub("-", ascii_name.lower()).strip("-")[:SLUG_CHARS].strip("-")
    digest = hashlib.sha256(relative_path.encode()).hexdigest()[:ID_HASH_CHARS]
    return f"{slug}-{digest}" if slug else digest


def check_video_path(video: str) -> str | None:
    """Why ``video`` cannot name a file inside the videos folder (absolute, ``..``), or None."""
    path = PurePosixPath(video.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or re.match(r"[A-Za-z]:", video):
        return f"video {video!r} must be a path inside the videos folder (no '..', not absolute)"
    return None


def spreadsheet_text(path: Path) -> str:
    """The file as text: UTF-8, a byte order mark dropped; anything else stops the stage."""
    if not path.is_file():
        raise StageError(f"{path}: file not found")
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise StageError(
            f"{path} line {line}: not UTF-8 (byte 0x{data[exc.start]:02x}); save it as UTF-8 "
            f"(in Excel: 'CSV UTF-8')"
        ) from None


def _rows(
    path: Path, columns: tuple[str, ...], optional: tuple[str, ...] = ()
) -> list[tuple[int, dict[str, str | None]]]:
    """``(line, row)`` per data row, cells trimmed; a missing cell is None."""
    reader = csv.DictReader(io.StringIO(spreadsheet_text(path), newline=""))
    header = [name.strip() for name in reader.fieldnames or ()]
    if header[: len(columns)] != list(columns) or not set(header[len(columns) :]) <= set(optional):
        allowed = f" (and optionally {','.join(optional)})" if optional else ""
        raise StageError(
            f"{path}: header is {','.join(header)!r}, expected {','.join(columns)!r}{allowed}"
        )
    reader.fieldnames = header
    rows = []
    for row in reader:
        if not any(row.values()):
            continue  # a blank line, as spreadsheets leave at the end
        cells = {key: None if row.get(key) is None else row[key].strip() for key in header}
        rows.append((reader.line_num, cells))
    return rows


def _missing(row: dict[str, str | None], columns: tuple[str, ...]) -> str | None:
    """Why a required cell of ``row`` is absent, naming its column, or None."""
    for column in columns:
        if row[column] is None:
            return f"no {column} cell (the row is short)"
        if not row[column]:
            return f"empty {column}"
    return None


def _segment(row: dict[str, str | None]) -> Segment:
    missing = _missing(row, ("genre",))
    if missing:
        raise ValueError(missing)
    if row["genre"] not in GENRES:
        raise ValueError(f"unknown genre {row['genre']!r} (known: {', '.join(GENRES)})")
    if not row["start_s"] and not row["end_s"]:
        return Segment(0.0, math.inf, row["genre"])
    if not row["start_s"] or not row["end_s"]:
        raise ValueError(
            "only one of start_s/end_s is given (leave both empty to label the whole trailer)"
        )
    try:
        start, end = float(row["start_s"]), float(row["end_s"])
    except ValueError:
        raise ValueError(
            f"start_s/end_s are not numbers ({row['start_s']!r}, {row['end_s']!r})"
        ) from None
    if not (math.isfinite(start) and math.isfinite(end)):
        raise ValueError(f"start_s/end_s must be finite, got {start}, {end}")
    if start < 0:
        raise ValueError(f"start_s is negative ({start})")
    if end <= start:
        raise ValueError(f"end_s {end} is not after start_s {start}")
    return Segment(start, end, row["genre"])


def _row_video(row: dict[str, str | None]) -> str | None:
    video = row.get(VIDEO_COLUMN) or None
    bad = video and check_video_path(video)
    if bad:
        raise ValueError(bad)
    return video


def read_annotations(
    path: Path,
) -> tuple[dict[str, list[Segment]], dict[str, str], list[Problem]]:
    """Segments per trailer id, the video named per trailer id (if any), and the problems of
    rows that were left out."""
    segments: dict[str, list[Segment]] = {}
    videos: dict[str, str] = {}
    problems: list[Problem] = []
    for line, row in _rows(path, ANNOTATION_COLUMNS, (VIDEO_COLUMN,)):
        trailer_id = row["trailer_id"] or ""
        bad_id = check_trailer_id(trailer_id)
        if bad_id:
            problems.append(Problem(None, f"{path} line {line}: {bad_id}"))
            continue
        try:
            video = _row_video(row)
            if video and videos.setdefault(trailer_id, video) != video:
                raise ValueError(f"video {video!r} differs from {videos[trailer_id]!r}")
            segments.setdefault(trailer_id, []).append(_segment(row))
        except ValueError as exc:
            problems.append(Problem(trailer_id, f"{path} line {line}: {exc}"))
    return segments, videos, problems


def read_splits(path: Path) -> tuple[dict[str, str], list[Problem]]:
    """Split per trailer id, and the problems of rows that were left out."""
    splits: dict[str, str] = {}
    problems: list[Problem] = []
    for line, row in _rows(path, SPLIT_COLUMNS):
        trailer_id, split = row["trailer_id"] or "", row["split"]
        bad_id = check_trailer_id(trailer_id)
        missing = _missing(row, ("split",))
        if bad_id:
            problems.append(Problem(None, f"{path} line {line}: {bad_id}"))
        elif missing:
            problems.append(Problem(trailer_id, f"{path} line {line}: {missing}"))
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
) -> tuple[dict[str, Labels], list[Problem]]:
    """Trailers with a split and at least one good segment; problems for everything else.

    A trailer with any bad row is left out whole: decoding it with part of its labels would
    teach the model that the missing genre is absent.
    """
    segments, videos, problems = read_annotations(annotations_path)
    splits, split_problems = read_splits(splits_path)
    problems += split_problems
    excluded = {problem.trailer_id for problem in problems}
    trailers: dict[str, Labels] = {}
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
            trailers[trailer_id] = Labels(
                splits[trailer_id], segments[trailer_id], videos.get(trailer_id)
            )
    return trailers, problems


def write_synth_receipt(path: Path, videos: Iterable[Path]) -> None:
    """``{"videos": {sha256: size}}`` of the videos ``trailers synth`` wrote."""
    write_json(path, {"videos": {file_sha256(video): video.stat().st_size for video in videos}})


@dataclass(frozen=True)
class SynthVideos:
    """The videos a synth receipt lists; ``video in SynthVideos`` when its bytes are one of
    them (hashed only when its size matches one)."""

    hashes: frozenset[str] = frozenset()
    sizes: frozenset[int] = field(default_factory=frozenset)

    @classmethod
    def read(cls, path: Path) -> SynthVideos:
        """The receipt at ``path``; none listed when there is none (a user's corpus)."""
        receipt = read_json(path)
        videos = receipt.get("videos", {}) if isinstance(receipt, dict) else {}
        return cls(frozenset(videos), frozenset(videos.values()))

    def __contains__(self, video: object) -> bool:
        path = Path(str(video))
        return path.stat().st_size in self.sizes and file_sha256(path) in self.hashes
