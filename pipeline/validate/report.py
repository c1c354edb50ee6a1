"""The stage's outputs: the markdown report for people, anomalies.json for machines,
shards.jsonl (each shard's scalar features) and the summary metrics."""

from __future__ import annotations

import json
from typing import Any

from pipeline.core.config import PathsConfig
from pipeline.core.io import atomic_open, write_json
from pipeline.validate.anomalies import Anomaly
from pipeline.validate.features import FEATURES, LIST_FEATURES
from pipeline.validate.integrity import SPLIT_ORDER

LISTED_SHARDS = 5
"""How many offending shards the markdown report names per anomaly (anomalies.json has all)."""


def render_report(
    anomalies: list[Anomaly],
    measurements: list[dict[str, Any]],
    shard_counts: dict[str, int],
    schema_note: str,
) -> str:
    """The human report: verdict, each anomaly (check, split, feature, expected, found, shards)."""
    errors = sum(anomaly.severity == "ERROR" for anomaly in anomalies)
    verdict = f"FAILED: {errors} of {len(anomalies)} anomalies are errors" if errors else "PASSED"
    lines = [
        "# Validate report",
        "",
        f"**{verdict}**" + ("" if errors or not anomalies else f" ({len(anomalies)} warnings)"),
        "",
        "Shards per split: "
        + ", ".join(f"{split} {count}" for split, count in shard_counts.items())
        + f". Schema: {schema_note}.",
        "",
        "## Anomalies",
        "",
    ]
    if anomalies:
        lines += [
            "| severity | check | split | feature | expected | found | shards |",
            "|---|---|---|---|---|---|---|",
        ]
        for anomaly in anomalies:
            shards = ", ".join(anomaly.shards[:LISTED_SHARDS])
            if len(anomaly.shards) > LISTED_SHARDS:
                shards += f" (+{len(anomaly.shards) - LISTED_SHARDS} more)"
            cells = [
                anomaly.severity,
                anomaly.check,
                anomaly.split,
                anomaly.feature,
                anomaly.expected,
                anomaly.found,
                shards,
            ]
            lines.append("| " + " | ".join(_cell(cell) for cell in cells) + " |")
    else:
        lines.append("None.")
    features = sorted({a.feature for a in anomalies if a.feature in FEATURES})
    if features:
        lines += ["", "What these features mean:", ""]
        lines += [f"- `{name}`: {FEATURES[name][1]}" for name in features]
    if measurements:
        lines += [
            "",
            "## Drift and skew against train (all measured, flagged or not)",
            "",
            "| check | split | feature | measure | value | threshold |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {m['check']} | {m['split']} | {m['feature']} | {m['measure']} "
            f"| {m['value']:.3f} | {m['threshold']:g} |"
            for m in measurements
        ]
    lines += [
        "",
        "Checks: *integrity* compares each shard with the manifest (exists, checksum, shape) "
        "and names trailers whose video file is cut short (`missing_s`: a warning unless "
        "`validate.fail_on_truncated`); "
        "*schema* compares each split's statistics with the committed schema; *drift* and "
        "*skew* compare a split's distribution with train's. An intentional change is accepted "
        "with `trailers validate --update-schema` (schema) or in the `validate:` config "
        "section (thresholds); see docs/stages/validate.md.",
        "",
    ]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def write_outputs(
    paths: PathsConfig,
    reports: list[dict[str, Any]],
    anomalies: list[Anomaly],
    measurements: list[dict[str, Any]],
    schema_note: str,
) -> None:
    """shards.jsonl, anomalies.json, report.md and the metrics (summary numbers), atomically."""
    with atomic_open(paths.shard_features) as handle:
        for report in reports:
            scalars = {
                name: values[0]
                for name, values in (report["example"] or {}).items()
                if name not in LIST_FEATURES and values
            }
            handle.write(
                json.dumps({"shard": report["shard"], "split": report["split"], **scalars})
            )
            handle.write("\n")
    errors = sum(anomaly.severity == "ERROR" for anomaly in anomalies)
    write_json(
        paths.anomalies,
        {
            "passed": errors == 0,
            "errors": errors,
            "anomalies": [anomaly.to_json() for anomaly in anomalies],
            "drift_skew": measurements,
        },
    )
    shard_counts = {
        split: count
        for split in SPLIT_ORDER
        if (count := sum(report["split"] == split for report in reports))
    }
    with atomic_open(paths.validate_report) as handle:
        handle.write(render_report(anomalies, measurements, shard_counts, schema_note))
    write_json(
        paths.metrics("validate"),
        {
            "shards": len(reports),
            "errors": errors,
            "warnings": len(anomalies) - errors,
            "drift_skew_flagged": sum(m["value"] > m["threshold"] for m in measurements),
        },
    )
