"""Part receipts: which shards of a trailer are done, so a rerun decodes only what is missing.

A part's receipt (``receipts/trailer_<id>/<fingerprint>-<first shard>.json`` under the shards
folder) is written after its shards and lists their manifest rows with each file's sha256; beside
it, ``<fingerprint>-<first shard>.stat`` keeps each file's size and modification time. A receipt
counts only while its files are intact: present and, if the ``.stat`` file still records their
size and modification time (and ``decode.verify`` is not ``sha256``), those; otherwise the
recorded sha256. A trailer is done when counting receipts with the current fingerprint chain
from shard 0 to the video's end; the gaps between them are what a rerun decodes, and nothing
else. Modification times differ from one machine to the next, so the fingerprints hash the
sources' bytes and the ``.stat`` files are in ``.dvcignore``: the shards folder's DVC hash is
the same wherever it is decoded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pipeline.core.io import file_sha256, read_json, write_json
from pipeline.core.manifest import ShardRow

Verify = Literal["size_mtime", "sha256"]


def receipts_dir(shards_dir: Path, trailer_id: str) -> Path:
    return shards_dir / "receipts" / f"trailer_{trailer_id}"


def part_receipt_path(
    shards_dir: Path, trailer_id: str, fingerprint: str, first_shard: int
) -> Path:
    return receipts_dir(shards_dir, trailer_id) / f"{fingerprint}-{first_shard}.json"


def source_digests(shards_dir: Path, sources: list[str]) -> dict[str, str]:
    """Each source video's sha256 (for the fingerprints: the same file gives the same one on any
    machine), hashed only when its size or modification time moved since the last run: those
    are kept in ``receipts/sources.stat``, beside the receipts and out of DVC's hash."""
    known_path = shards_dir / "receipts" / "sources.stat"
    known = read_json(known_path) or {}
    digests, seen = {}, {}
    for source in sources:
        stat = _stat(Path(source))
        if known.get(source, [])[:2] == stat:
            digests[source] = known[source][2]
        else:
            digests[source] = file_sha256(Path(source))
        seen[source] = [*stat, digests[source]]
    write_json(known_path, seen)
    return digests


def stats_path(receipt_path: Path) -> Path:
    """Where the sizes and modification times of a receipt's files are kept."""
    return receipt_path.with_suffix(".stat")


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


def _intact(shards_dir: Path, receipt: dict[str, Any], stats: dict | None, verify: Verify) -> bool:
    for name, digest in _hashes(receipt).items():
        path = shards_dir / name
        if not path.is_file():
            return False
        moved = verify == "sha256" or (stats or {}).get(name) != _stat(path)
        if moved and file_sha256(path) != digest:
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
    receipts = [(read_json(path), path) for path in folder.glob(f"{fingerprint}-*.json")]
    coverage, next_shard = Coverage(), 0
    for receipt, path in sorted(
        ((receipt, path) for receipt, path in receipts if receipt),
        key=lambda pair: pair[0]["first_shard"],
    ):
        stats = read_json(stats_path(path))
        if receipt["first_shard"] < next_shard or not _intact(shards_dir, receipt, stats, verify):
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
    kept_receipts = [
        part_receipt_path(shards_dir, trailer_id, r["fingerprint"], r["first_shard"]) for r in keep
    ]
    kept_names = {path.name for path in kept_receipts} | {
        stats_path(path).name for path in kept_receipts
    }
    folder = receipts_dir(shards_dir, trailer_id)
    for path in sorted(folder.glob("*")) if folder.is_dir() else ():
        if path.name in kept_names:
            continue
        receipt = read_json(path) if path.suffix == ".json" else None
        for name in _hashes(receipt).keys() - kept_files if receipt else ():
            (shards_dir / name).unlink(missing_ok=True)
        path.unlink(missing_ok=True)
