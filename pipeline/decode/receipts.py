"""Part receipts: which shards of a trailer are done, so a rerun decodes only what is missing.

A part's receipt (``receipts/trailer_<id>/<fingerprint>-<first shard>.json`` under the shards
folder) is written after its shards and lists their manifest rows and each file's size and
modification time. A receipt counts only while its files are intact: present, the recorded
size, and either the recorded modification time or (when that moved, or always with
``decode.verify: sha256``) the recorded sha256. A trailer is done when counting receipts with
the current fingerprint chain from shard 0 to the video's end; the gaps between them are what a
rerun decodes, and nothing else.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pipeline.core.io import read_json
from pipeline.core.manifest import ShardRow

Verify = Literal["size_mtime", "sha256"]


def receipts_dir(shards_dir: Path, trailer_id: str) -> Path:
    return shards_dir / "receipts" / f"trailer_{trailer_id}"


def part_receipt_path(
    shards_dir: Path, trailer_id: str, fingerprint: str, first_shard: int
) -> Path:
    return receipts_dir(shards_dir, trailer_id) / f"{fingerprint}-{first_shard}.json"


def shard_rows(receipt: dict[str, Any] | None) -> list[ShardRow]:
    """The manifest rows a receipt lists (none for a missing receipt)."""
    return [ShardRow.from_dict(row) for row in receipt["shards"]] if receipt else []


def _hashes(receipt: dict[str, Any]) -> dict[str, str]:
    """Every file a receipt lists, with its sha256."""
    pairs = (("shard", "sha256"), ("labels", "labels_sha256"))
    return {
        row[name]: row[digest] for row in receipt["shards"] for name, digest in pairs if row[name]
    }


def file_stats(shards_dir: Path, rows: list[dict[str, Any]]) -> dict[str, list[int]]:
    """``{file: [size, mtime_ns]}`` of the files ``rows`` list, for a receipt."""
    names = _hashes({"shards": rows})
    return {name: _stat(shards_dir / name) for name in names}


def _stat(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def _intact(shards_dir: Path, receipt: dict[str, Any], verify: Verify) -> bool:
    stats = receipt.get("files", {})
    for name, digest in _hashes(receipt).items():
        path = shards_dir / name
        if not path.is_file() or name not in stats:
            return False
        size, mtime_ns = _stat(path)
        if size != stats[name][0]:
            return False
        if verify == "sha256" or mtime_ns != stats[name][1]:
            with open(path, "rb") as handle:
                if hashlib.file_digest(handle, "sha256").hexdigest() != digest:
                    return False
    return True


@dataclass
class Coverage:
    """A trailer's intact receipts that chain from shard 0 (``parts``, with gaps between them),
    the shard ranges not covered (``gaps``: first, stop or None for "to the end"), and whether
    the parts reach the video's end."""

    parts: list[dict] = field(default_factory=list)
    gaps: list[tuple[int, int | None]] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.gaps


def decoded_parts(
    shards_dir: Path, trailer_id: str, fingerprint: str, verify: Verify = "size_mtime"
) -> Coverage:
    """What the trailer's intact receipts with this fingerprint cover, and what they do not."""
    folder = receipts_dir(shards_dir, trailer_id)
    receipts = [read_json(path) for path in folder.glob(f"{fingerprint}-*.json")]
    coverage, next_shard = Coverage(), 0
    for receipt in sorted(filter(None, receipts), key=lambda r: r["first_shard"]):
        if receipt["first_shard"] < next_shard or not _intact(shards_dir, receipt, verify):
            continue
        if receipt["first_shard"] > next_shard:
            coverage.gaps.append((next_shard, receipt["first_shard"]))
        coverage.parts.append(receipt)
        next_shard = receipt["stop_shard"]
        if receipt["end"]:
            return coverage
    coverage.gaps.append((next_shard, None))
    return coverage


def tidy_receipts(shards_dir: Path, trailer_id: str, keep: list[dict]) -> None:
    """Delete the trailer's other receipts and failure notes, and the files only they list."""
    kept_files = set().union(*(_hashes(receipt).keys() for receipt in keep))
    kept_names = {
        part_receipt_path(shards_dir, trailer_id, r["fingerprint"], r["first_shard"]).name
        for r in keep
    }
    folder = receipts_dir(shards_dir, trailer_id)
    for path in sorted(folder.glob("*")) if folder.is_dir() else ():
        if path.name in kept_names:
            continue
        receipt = read_json(path) if path.suffix == ".json" else None
        for name in _hashes(receipt).keys() - kept_files if receipt else ():
            (shards_dir / name).unlink(missing_ok=True)
        path.unlink(missing_ok=True)
