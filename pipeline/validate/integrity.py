"""Manifest integrity: every line a shard row, each shard listed once, each trailer in one split.

The shards' own integrity (files, checksums, shapes) is checked as they are read
(``features.inspect_shard``).
"""

from __future__ import annotations

from pathlib import Path

from pipeline import SPLITS, UNLABELLED
from pipeline.core.errors import StageError
from pipeline.core.manifest import ManifestError, ShardRow, parse_line
from pipeline.core.video import cut_short_message
from pipeline.validate.anomalies import Anomaly

SPLIT_ORDER = (*SPLITS, UNLABELLED)
"""Every split a shard may be in, in report order."""


def check_manifest(path: Path) -> tuple[list[ShardRow], list[Anomaly]]:
    """The manifest's usable rows, and an anomaly for each line or pair of lines that is wrong."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise StageError(f"{path}: manifest not found (run `trailers decode` first)") from None
    rows, anomalies = [], []
    seen_shards: dict[str, int] = {}
    trailer_splits: dict[str, set[str]] = {}

    def bad(number: int, feature: str, expected: str, found: str) -> None:
        anomalies.append(
            Anomaly("integrity", "manifest", feature, expected, f"line {number}: {found}")
        )

    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = parse_line(line)
        except ManifestError as exc:
            bad(number, "manifest", "a shard row (pipeline/core/manifest.py)", str(exc))
            continue
        if row.split not in SPLIT_ORDER:
            bad(number, "split", "one of " + ", ".join(SPLIT_ORDER), repr(row.split))
            continue
        if row.shard in seen_shards:
            bad(
                number,
                "shard",
                "each shard listed once",
                f"{row.shard} again (first on line {seen_shards[row.shard]})",
            )
            continue
        seen_shards[row.shard] = number
        trailer_splits.setdefault(row.trailer_id, set()).add(row.split)
        rows.append(row)
    for trailer_id, splits in sorted(trailer_splits.items()):
        if len(splits) > 1:
            anomalies.append(
                Anomaly(
                    "integrity",
                    "manifest",
                    "split",
                    "each trailer in one split (frames of one trailer leak across splits)",
                    f"trailer {trailer_id} in " + ", ".join(sorted(splits)),
                )
            )
    if not rows and not anomalies:
        raise StageError(f"{path}: the manifest lists no shards")
    return rows, anomalies


def truncated_trailers(rows: list[ShardRow], gate: bool) -> list[Anomaly]:
    """An anomaly per trailer whose video file is cut short (its rows' ``missing_s`` > 0: decode
    kept the readable frames), naming its shards: a WARNING, or an ERROR when ``gate``
    (``validate.fail_on_truncated``)."""
    trailers: dict[str, list[ShardRow]] = {}
    for row in rows:
        if row.missing_s > 0:
            trailers.setdefault(row.trailer_id, []).append(row)
    return [
        Anomaly(
            "integrity",
            shards[0].split,
            "missing_s",
            "the whole video decoded (missing_s 0)",
            f"trailer {trailer_id}, {shards[0].source}: "
            + cut_short_message(shards[0].source_duration_s, shards[0].missing_s),
            tuple(row.shard for row in shards),
            "ERROR" if gate else "WARNING",
        )
        for trailer_id, shards in sorted(trailers.items())
    ]
