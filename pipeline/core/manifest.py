"""The shard manifest: one JSON line per shard, the contract between decode and every later stage.

Decode writes it (``data/shards/manifest.jsonl``); validate checks it; train, evaluate and predict
read it. Paths in a row are relative to the shards folder.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core.io import atomic_open


class ManifestError(ValueError):
    """A manifest line that is not a shard row; the message is one line."""


@dataclass(frozen=True)
class ShardRow:
    """One shard: uint8 frames ``(frames, channels, height, width)`` and, if labelled, its
    multi-hot labels ``(frames, len(GENRES))``; frame ``i`` is the trailer's sampled frame
    ``first_frame + i``, at ``(first_frame + i) / fps`` seconds.

    ``video`` is the source's path relative to the videos folder, as the user named it;
    ``label_level`` says how the trailer was labelled: ``segment`` (timed segments, at least
    one), ``trailer`` (only whole-trailer labels: every frame carries the trailer's genres, weak
    frame labels) or None (unlabelled); ``decoder`` names what read the video (``decord``, or
    ``pyav`` for what decord cannot open); ``missing_s`` the seconds a file cut short lacks
    (its readable frames are the shards); ``source_width`` and ``source_height`` the source's
    frame size as players show it (upright), which the model card records
    (:class:`pipeline.core.model_card.TrainingData`); ``synthetic`` whether the video is one
    ``trailers synth`` wrote (its receipt lists the file's bytes). These are optional on
    reading: manifests written before them lack them."""

    shard: str
    labels: str | None
    trailer_id: str
    split: str
    first_frame: int
    frames: int
    fps: float
    channels: int
    height: int
    width: int
    source: str
    source_duration_s: float
    sha256: str
    labels_sha256: str | None
    video: str | None = None
    label_level: str | None = None
    decoder: str | None = None
    missing_s: float = 0.0
    source_width: int | None = None
    source_height: int | None = None
    synthetic: bool = False

    @classmethod
    def from_dict(cls, data: Any) -> ShardRow:
        """A row from decoded JSON; ManifestError names what is missing or of the wrong type."""
        if not isinstance(data, dict):
            raise ManifestError(f"expected a JSON object, got {type(data).__name__}")
        missing = [key for key in KEYS if key not in data]
        if missing:
            raise ManifestError(f"no {', '.join(missing)}")
        unknown = sorted(set(data) - set(KEYS) - set(OPTIONAL_KEYS))
        if unknown:
            raise ManifestError(f"unknown key {', '.join(unknown)}")
        for field in dataclasses.fields(cls):
            if field.name not in data:  # an optional key a manifest predates: its default
                continue
            value = data[field.name]
            if not _fits(value, field.type):
                raise ManifestError(f"{field.name}: expected {field.type}, got {value!r}")
        if data["frames"] < 1 or data["first_frame"] < 0 or data["fps"] <= 0:
            raise ManifestError(
                f"expected frames >= 1, first_frame >= 0 and fps > 0, got frames "
                f"{data['frames']}, first_frame {data['first_frame']}, fps {data['fps']}"
            )
        if data.get("label_level") not in LABEL_LEVELS:
            raise ManifestError(
                f"label_level: expected one of {LABEL_LEVELS}, got {data['label_level']!r}"
            )
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def labelled(self) -> bool:
        return self.labels is not None


KEYS: tuple[str, ...] = tuple(
    field.name for field in dataclasses.fields(ShardRow) if field.default is dataclasses.MISSING
)
"""The keys every manifest row has, in declaration order."""
OPTIONAL_KEYS: tuple[str, ...] = tuple(
    field.name for field in dataclasses.fields(ShardRow) if field.name not in KEYS
)
"""Keys added later: a manifest written before them lacks them."""
LABEL_LEVELS = ("segment", "trailer", None)

_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "str | None": (str, type(None)),
    "int": (int,),
    "int | None": (int, type(None)),
    "float": (int, float),
    "bool": (bool,),
}


def _fits(value: Any, annotation: str) -> bool:
    if annotation == "bool":
        return isinstance(value, bool)
    return isinstance(value, _TYPES[annotation]) and not isinstance(value, bool)


def parse_line(line: str) -> ShardRow:
    """One manifest line as a row; ManifestError if it is not JSON or not a shard row."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"not JSON ({exc.msg})") from None
    return ShardRow.from_dict(data)


def read_manifest(path: str | Path) -> list[ShardRow]:
    """Every row of a manifest; ManifestError names the file and line of the first bad one."""
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                rows.append(parse_line(line))
            except ManifestError as exc:
                raise ManifestError(f"{path}: line {number}: {exc}") from None
    return rows


def write_manifest(path: str | Path, rows: Iterable[ShardRow]) -> int:
    """Write rows atomically, sorted by split, trailer and first frame; returns the count."""
    ordered = sorted(rows, key=lambda row: (row.split, row.trailer_id, row.first_frame))
    with atomic_open(path) as handle:
        handle.writelines(json.dumps(row.to_dict(), sort_keys=True) + "\n" for row in ordered)
    return len(ordered)
