"""Part receipts: which shards of a trailer are done, so a rerun decodes only what is missing.

A part's receipt (``receipts/trailer_<id>/<fingerprint>-<first shard>.json`` under the shards
folder) is written after its shards and lists their manifest rows. A trailer is done when its
receipts with the current fingerprint chain from shard 0 to the video's end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline.io import read_json
from pipeline.manifest import ShardRow


def receipts_dir(shards_dir: Path, trailer_id: str) -> Path:
    return shards_dir / "receipts" / f"trailer_{trailer_id}"


def part_receipt_path(
    shards_dir: Path, trailer_id: str, fingerprint: str, first_shard: int
) -> Path:
    return receipts_dir(shards_dir, trailer_id) / f"{fingerprint}-{first_shard}.json"


def shard_rows(receipt: dict[str, Any] | None) -> list[ShardRow]:
    """The manifest rows a receipt lists (none for a missing receipt)."""
    return [ShardRow.from_dict(row) for row in receipt["shards"]] if receipt else []


def _files(receipt: dict[str, Any]) -> set[str]:
    return {row[key] for row in receipt["shards"] for key in ("shard", "labels") if row[key]}


def decoded_parts(shards_dir: Path, trailer_id: str, fingerprint: str) -> tuple[list[dict], bool]:
    """The trailer's current receipts that chain from shard 0, and whether they reach its end.

    A receipt counts only if every file it lists exists.
    """
    chain: list[dict] = []
    next_shard = 0
    while True:
        receipt = read_json(part_receipt_path(shards_dir, trailer_id, fingerprint, next_shard))
        if receipt is None or not all((shards_dir / name).is_file() for name in _files(receipt)):
            return chain, False
        chain.append(receipt)
        if receipt["end"]:
            return chain, True
        next_shard = receipt["stop_shard"]


def tidy_receipts(shards_dir: Path, trailer_id: str, keep: list[dict]) -> None:
    """Delete the trailer's other receipts and failure notes, and the files only they list."""
    kept_files = set().union(*map(_files, keep))
    kept_names = {
        part_receipt_path(shards_dir, trailer_id, r["fingerprint"], r["first_shard"]).name
        for r in keep
    }
    folder = receipts_dir(shards_dir, trailer_id)
    for path in sorted(folder.glob("*")) if folder.is_dir() else ():
        if path.name in kept_names:
            continue
        receipt = read_json(path) if path.suffix == ".json" else None
        for name in _files(receipt) - kept_files if receipt else ():
            (shards_dir / name).unlink(missing_ok=True)
        path.unlink(missing_ok=True)
