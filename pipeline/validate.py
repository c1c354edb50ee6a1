"""Stage ``validate``: TensorFlow Data Validation stops bad shards before training sees them.

Reads the decode manifest and, on Beam, every shard once (memory-mapped, in chunks): its
integrity against the manifest and one example of summary features (``pipeline/shard_stats.py``).
TFDV then computes statistics per split, checks every split against the curated schema
committed at ``paths.schema_file``, and compares val/test (and unlabelled serving data) with
train: drift on ``validate.drift_features`` and the genre mix, skew on ``validate.skew_features``.
Thresholds come from the config and are laid over the schema at run time, so the committed file
holds the data contract only.

Writes under ``outputs/validate/``: ``statistics/<split>.pb`` (TFDV's binary protobuf),
``shards.jsonl`` (each shard's scalar features), ``anomalies.json`` and ``report.md``. Any ERROR
anomaly stops the stage with exit 1, after the outputs are written.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import tensorflow_data_validation as tfdv
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2, statistics_pb2

from pipeline.config import GENRES, SPLITS, Config, ValidateConfig
from pipeline.decode import beam_options
from pipeline.errors import StageError
from pipeline.io import atomic_open, atomic_path, write_json
from pipeline.shard_stats import (
    CHANNELS,
    FEATURES,
    FLOAT,
    INT,
    LABEL_FEATURES,
    LIST_FEATURES,
    MANIFEST_KEYS,
    STRING,
    Anomaly,
    inspect_shard,
)
from pipeline.shards import UNLABELLED

log = logging.getLogger(__name__)

TRAINING, SERVING = "TRAINING", "SERVING"
"""Schema environments: labelled splits, and unlabelled shards decoded from a folder."""

SPLIT_ORDER = (*SPLITS, UNLABELLED)
LISTED_SHARDS = 5
"""How many offending shards the markdown report names per anomaly (anomalies.json has all)."""

_ARROW_TYPES = {INT: pa.int64(), FLOAT: pa.float64(), STRING: pa.string()}
_UINT8 = np.iinfo(np.uint8)
_COUNT_KEYS = ("frames", "channels", "height", "width")
_COMPARATOR_TYPES = frozenset(
    value
    for name, value in anomalies_pb2.AnomalyInfo.Type.items()
    if name.startswith("COMPARATOR_")
)
_SHAPE = anomalies_pb2.AnomalyInfo.INVALID_FEATURE_SHAPE
_MEASURES = {
    "JENSEN_SHANNON_DIVERGENCE": "Jensen-Shannon divergence of its histogram",
    "L_INFTY": "largest difference in a category's frequency (L-infinity)",
    "NORMALIZED_ABSOLUTE_DIFFERENCE": "normalised absolute difference",
}
_SCHEMA_HEADER = (
    "# The data contract of a shard, checked by `trailers validate` (pipeline/validate.py).\n"
    "# Inferred from the train split, then curated in code (curate_schema). Regenerate on\n"
    "# purpose with `trailers validate --update-schema`, review the diff, and commit it.\n"
)


def read_manifest(path: Path) -> tuple[list[dict[str, Any]], list[Anomaly]]:
    """The manifest's usable rows, and an anomaly for each row or pair of rows that is wrong."""
    try:
        lines = path.read_text().splitlines()
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
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            bad(number, "manifest", "one JSON object per line", f"not JSON ({exc.msg})")
            continue
        missing = [key for key in MANIFEST_KEYS if key not in row]
        if missing:
            bad(number, "manifest", "keys " + ", ".join(MANIFEST_KEYS), f"no {', '.join(missing)}")
            continue
        not_counts = [key for key in _COUNT_KEYS if type(row[key]) is not int or row[key] < 0]
        if not_counts or type(row["fps"]) not in (int, float) or row["fps"] <= 0:
            found = ", ".join(f"{key}={row[key]!r}" for key in (*_COUNT_KEYS, "fps"))
            bad(number, "manifest", "whole counts and a positive fps", found)
            continue
        if row["split"] not in SPLIT_ORDER:
            bad(number, "split", "one of " + ", ".join(SPLIT_ORDER), repr(row["split"]))
            continue
        if row["shard"] in seen_shards:
            bad(
                number,
                "shard",
                "each shard listed once",
                f"{row['shard']} again (first on line {seen_shards[row['shard']]})",
            )
            continue
        seen_shards[row["shard"]] = number
        trailer_splits.setdefault(row["trailer_id"], set()).add(row["split"])
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


def to_record_batch(reports: list[dict[str, Any]]) -> pa.RecordBatch:
    """Examples as a columnar batch: one list column per feature, null where it is missing."""
    columns = [
        pa.array(
            [report["example"].get(name) for report in reports], type=pa.list_(_ARROW_TYPES[kind])
        )
        for name, (kind, _) in FEATURES.items()
    ]
    return pa.RecordBatch.from_arrays(columns, names=list(FEATURES))


def run_beam(rows: list[dict[str, Any]], splits: list[str], config: Config, workdir: Path) -> None:
    """Inspect every shard and compute TFDV statistics per split, on Beam.

    Writes ``workdir/shards.jsonl`` (one report per shard) and ``workdir/<split>.pb``.
    """
    settings = config.validate_
    mode = settings.direct_running_mode
    workers = 1 if mode == "in_memory" else config.decode.num_workers
    decode = config.decode.model_copy(update={"direct_running_mode": mode, "num_workers": workers})
    with beam.Pipeline(options=beam_options(decode)) as pipeline:
        reports = (
            pipeline
            | "Manifest" >> beam.Create(rows)
            | "Inspect"
            >> beam.Map(
                inspect_shard,
                shards_dir=str(config.paths.shards),
                black_level=settings.black_level,
                chunk_frames=settings.chunk_frames,
            )
        )
        _ = (
            reports
            | "ToJson" >> beam.Map(json.dumps)
            | "WriteReports"
            >> beam.io.WriteToText(str(workdir / "shards.jsonl"), shard_name_template="")
        )
        by_split = (
            reports
            | "Readable" >> beam.Filter(lambda report: report["example"] is not None)
            | "BySplit"
            >> beam.Partition(lambda report, _: splits.index(report["split"]), len(splits))
        )
        for split, examples in zip(splits, by_split, strict=True):
            _ = (
                examples
                | f"Batch[{split}]" >> beam.BatchElements()
                | f"ToArrow[{split}]" >> beam.Map(to_record_batch)
                | f"Statistics[{split}]" >> tfdv.GenerateStatistics(tfdv.StatsOptions())
                | f"Write[{split}]"
                >> tfdv.WriteStatisticsToBinaryFile(str(workdir / f"{split}.pb"))
            )


def curate_schema(schema: schema_pb2.Schema) -> schema_pb2.Schema:
    """The reviewed rules laid over an inferred schema: types, domains, ranges, presence.

    Only definitions go here (uint8 pixels, RGB, 0/1 labels, the six genres); thresholds that
    are a matter of judgement live in the config.
    """
    curated = schema_pb2.Schema()
    curated.CopyFrom(schema)
    inferred = {feature.name: feature for feature in schema.feature}
    curated.ClearField("feature")
    curated.ClearField("string_domain")
    curated.ClearField("default_environment")
    curated.default_environment.extend([TRAINING, SERVING])
    features = {}
    for name, (kind, meaning) in FEATURES.items():
        feature = features[name] = curated.feature.add()
        feature.CopyFrom(inferred.get(name, schema_pb2.Feature(name=name)))
        feature.type = {INT: schema_pb2.INT, FLOAT: schema_pb2.FLOAT}.get(kind, schema_pb2.BYTES)
        feature.presence.CopyFrom(schema_pb2.FeaturePresence(min_fraction=1.0, min_count=1))
        feature.annotation.CopyFrom(schema_pb2.Annotation(comment=[meaning]))
        feature.ClearField("not_in_environment")
        if name in LABEL_FEATURES:
            feature.not_in_environment.append(SERVING)
        feature.ClearField("shape")
        feature.ClearField("value_count")
        if name == "frame_brightness":
            feature.value_count.min = 1
        elif name not in LIST_FEATURES:
            feature.shape.CopyFrom(schema_pb2.FixedShape(dim=[schema_pb2.FixedShape.Dim(size=1)]))
    pixel = {"min": float(_UINT8.min), "max": float(_UINT8.max)}
    fraction = {"min": 0.0, "max": 1.0}
    float_ranges = {
        "fps": {"min": 0.0},
        "duration_s": {"min": 0.0},
        **{name: pixel for name in FEATURES if name.startswith("pixel_")},
        "frame_brightness": pixel,
        "motion": pixel,
        "black_fraction": fraction,
        "frozen_fraction": fraction,
        "label_min": fraction,
        "label_max": fraction,
        "labels_per_frame": {"min": 0.0, "max": float(len(GENRES))},
        **{f"label_fraction_{genre}": fraction for genre in GENRES},
    }
    int_ranges = {
        "frames": {"min": 1},
        "channels": {"min": len(CHANNELS), "max": len(CHANNELS)},
        "height": {"min": 1},
        "width": {"min": 1},
        "label_nan_count": {"min": 0, "max": 0},
    }
    strings = {"dtype": ["uint8"], "labels_dtype": ["uint8"], "frame_genre": list(GENRES)}
    for name, bounds in float_ranges.items():
        features[name].float_domain.CopyFrom(schema_pb2.FloatDomain(**bounds, disallow_nan=True))
    for name, bounds in int_ranges.items():
        features[name].int_domain.CopyFrom(schema_pb2.IntDomain(**bounds))
    for name, values in strings.items():
        features[name].string_domain.CopyFrom(schema_pb2.StringDomain(value=values))
    return curated


def with_thresholds(schema: schema_pb2.Schema, settings: ValidateConfig) -> schema_pb2.Schema:
    """A copy of ``schema`` with the config's drift and skew comparators on its features.

    Numeric features are compared by Jensen-Shannon divergence of their histograms, the genre
    mix (``frame_genre``) by the L-infinity distance between genre frequencies.
    """
    result = schema_pb2.Schema()
    result.CopyFrom(schema)
    drift = {name: settings.drift_threshold for name in settings.drift_features}
    drift["frame_genre"] = settings.genre_drift_threshold
    skew = {name: settings.skew_threshold for name in settings.skew_features}
    for feature in result.feature:
        for comparators, field in ((drift, "drift_comparator"), (skew, "skew_comparator")):
            if feature.name in comparators:
                comparator = getattr(feature, field)
                if feature.type == schema_pb2.BYTES:
                    comparator.infinity_norm.threshold = comparators[feature.name]
                else:
                    comparator.jensen_shannon_divergence.threshold = comparators[feature.name]
    return result


def check_comparator_features(settings: ValidateConfig) -> None:
    """Stop before any work if the config names a drift or skew feature that does not exist."""
    for key in ("drift_features", "skew_features"):
        for name in getattr(settings, key):
            if name not in FEATURES:
                raise StageError(
                    f"validate.{key}: unknown feature {name!r}; known: {', '.join(FEATURES)}"
                )


def load_schema(path: Path) -> schema_pb2.Schema:
    try:
        return text_format.Parse(path.read_text(), schema_pb2.Schema())
    except FileNotFoundError:
        raise StageError(
            f"{path}: no schema; create it with `trailers validate --update-schema`, review it "
            "and commit it"
        ) from None
    except text_format.ParseError as exc:
        raise StageError(f"{path}: not a valid schema ({exc})") from None


def write_schema(path: Path, schema: schema_pb2.Schema) -> None:
    with atomic_open(path) as handle:
        handle.write(_SCHEMA_HEADER + text_format.MessageToString(schema))


def validate_split(
    split: str,
    statistics: statistics_pb2.DatasetFeatureStatisticsList,
    schema: schema_pb2.Schema,
    baseline: statistics_pb2.DatasetFeatureStatisticsList | None,
) -> anomalies_pb2.Anomalies:
    """TFDV's check of one split against the schema and, unless it is train, against train."""
    environment = SERVING if split == UNLABELLED else TRAINING
    if split == "train" or baseline is None:
        return tfdv.validate_statistics(statistics, schema, environment=environment)
    return tfdv.validate_statistics(
        statistics,
        schema,
        environment=environment,
        previous_statistics=baseline,
        serving_statistics=baseline,
    )


def describe_feature(feature: schema_pb2.Feature) -> str:
    """What the schema expects of a feature, in words."""
    parts = []
    domain = feature.WhichOneof("domain_info")
    if domain in ("int_domain", "float_domain"):
        bounds = getattr(feature, domain)
        low = f"{bounds.min:g}" if bounds.HasField("min") else "-inf"
        high = f"{bounds.max:g}" if bounds.HasField("max") else "+inf"
        parts.append(f"exactly {low}" if low == high else f"in [{low}, {high}]")
        if domain == "float_domain" and bounds.disallow_nan:
            parts.append("never NaN")
    elif domain == "string_domain":
        parts.append("one of " + ", ".join(feature.string_domain.value))
    if feature.presence.min_fraction == 1:
        parts.append("present in every shard")
    if feature.HasField("shape"):
        parts.append("one value")
    elif feature.value_count.min:
        parts.append(f"at least {feature.value_count.min} value(s)")
    return ", ".join(parts) or "as in the schema"


def conforms(values: list | None, feature: schema_pb2.Feature) -> bool:
    """Whether one example's values of ``feature`` satisfy its domain and presence."""
    if values is None:
        return feature.presence.min_fraction < 1
    domain = feature.WhichOneof("domain_info")
    if domain in ("int_domain", "float_domain"):
        bounds = getattr(feature, domain)
        return all(
            not (isinstance(v, float) and math.isnan(v))
            and (not bounds.HasField("min") or v >= bounds.min)
            and (not bounds.HasField("max") or v <= bounds.max)
            for v in values
        )
    if domain == "string_domain":
        return set(values) <= set(feature.string_domain.value)
    return True


def describe_shift(
    name: str,
    current: statistics_pb2.DatasetFeatureStatisticsList,
    baseline: statistics_pb2.DatasetFeatureStatisticsList,
) -> str:
    """How a feature moved against train, in its own units: its mean, or its top mover."""
    here, there = _feature_stats(current, name), _feature_stats(baseline, name)
    if here.HasField("num_stats"):
        return f"mean {here.num_stats.mean:.4g} here, {there.num_stats.mean:.4g} in train"
    shares = [_shares(stats) for stats in (here, there)]
    label = max(
        set(shares[0]) | set(shares[1]),
        key=lambda k: abs(shares[0].get(k, 0) - shares[1].get(k, 0)),
    )
    return f"{label}: {shares[0].get(label, 0):.0%} here, {shares[1].get(label, 0):.0%} in train"


def _feature_stats(
    statistics: statistics_pb2.DatasetFeatureStatisticsList, name: str
) -> statistics_pb2.FeatureNameStatistics:
    return next(
        (f for f in statistics.datasets[0].features if list(f.path.step) == [name]),
        statistics_pb2.FeatureNameStatistics(),
    )


def _shares(stats: statistics_pb2.FeatureNameStatistics) -> dict[str, float]:
    buckets = stats.string_stats.rank_histogram.buckets
    total = sum(bucket.sample_count for bucket in buckets) or 1.0
    return {bucket.label: bucket.sample_count / total for bucket in buckets}


def _in_words(description: str) -> str:
    """TFDV's wording with our unit: an example is a shard."""
    return description.strip().replace("Examples", "Shards").replace("examples", "shards")


def to_anomalies(
    split: str,
    result: anomalies_pb2.Anomalies,
    schema: schema_pb2.Schema,
    examples: list[tuple[str, dict[str, list]]],
    statistics: statistics_pb2.DatasetFeatureStatisticsList,
    baseline: statistics_pb2.DatasetFeatureStatisticsList | None,
) -> tuple[list[Anomaly], list[dict[str, Any]]]:
    """TFDV's result for one split as plain anomalies, and every drift/skew measurement.

    ``examples`` are the split's (shard, example) pairs, to name the shards behind an anomaly;
    ``statistics`` and ``baseline`` (train's) describe how a drifted feature moved.
    """
    if result.data_missing:
        missing = Anomaly("schema", split, "(all)", "at least one readable shard", "none")
        return [missing], []
    features = {feature.name: feature for feature in schema.feature}
    anomalies = []
    infos = [*result.anomaly_info.items(), *(("(dataset)", result.dataset_anomaly_info),)]
    for name, info in infos:
        reasons = [r for r in info.reason if r.type not in _COMPARATOR_TYPES]
        if len(reasons) > 1:  # "not always present" repeats the presence reason
            reasons = [r for r in reasons if r.type != _SHAPE] or reasons
        if not reasons:
            continue
        feature = features.get(name)
        anomalies.append(
            Anomaly(
                "schema",
                split,
                name,
                describe_feature(feature) if feature else "a feature the schema lists",
                " ".join(_in_words(reason.description) for reason in reasons),
                tuple(s for s, ex in examples if feature and not conforms(ex.get(name), feature)),
                anomalies_pb2.AnomalyInfo.Severity.Name(info.severity),
            )
        )
    measurements = []
    for info in result.drift_skew_info:
        name = ".".join(info.path.step)
        for check, values in (("drift", info.drift_measurements), ("skew", info.skew_measurements)):
            for measured in values:
                measure = anomalies_pb2.DriftSkewInfo.Measurement.Type.Name(measured.type)
                measurements.append(
                    {
                        "check": check,
                        "split": split,
                        "feature": name,
                        "measure": measure,
                        "value": measured.value,
                        "threshold": measured.threshold,
                    }
                )
                if measured.value > measured.threshold:
                    anomalies.append(
                        Anomaly(
                            check,
                            split,
                            name,
                            f"{_MEASURES[measure]} to train <= {measured.threshold:g}",
                            f"{measured.value:.3f} ({describe_shift(name, statistics, baseline)})",
                        )
                    )
    return anomalies, measurements


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
        "Checks: *integrity* compares each shard with the manifest (exists, checksum, shape); "
        "*schema* compares each split's statistics with the committed schema; *drift* and "
        "*skew* compare a split's distribution with train's. An intentional change is accepted "
        "with `trailers validate --update-schema` (schema) or in the `validate:` config "
        "section (thresholds); see the README.",
        "",
    ]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def collect_statistics(
    rows: list[dict[str, Any]], config: Config, out: Path
) -> tuple[list[dict[str, Any]], dict[str, statistics_pb2.DatasetFeatureStatisticsList]]:
    """Run the Beam pipeline; return the shard reports and each split's statistics.

    The statistics are also written to ``out/statistics/<split>.pb``.
    """
    splits = [split for split in SPLIT_ORDER if any(row["split"] == split for row in rows)]
    if not splits:
        return [], {}
    log.info("validating %d shards in %s", len(rows), ", ".join(splits))
    statistics = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        run_beam(rows, splits, config, workdir)
        reports = [json.loads(line) for line in (workdir / "shards.jsonl").open()]
        for split in splits:
            statistics[split] = tfdv.load_stats_binary(str(workdir / f"{split}.pb"))
            with atomic_path(out / "statistics" / f"{split}.pb") as target:
                shutil.copyfile(workdir / f"{split}.pb", target)
    return sorted(reports, key=lambda report: report["shard"]), statistics


def run(config: Config, update_schema: bool = False) -> None:
    """Validate the decoded corpus; raise StageError naming the report if anything is wrong."""
    settings, paths = config.validate_, config.paths
    schema_file = Path(paths.schema_file)
    check_comparator_features(settings)
    schema = None if update_schema else load_schema(schema_file)
    rows, anomalies = read_manifest(paths.manifest)
    out = paths.outputs / "validate"
    reports, statistics = collect_statistics(rows, config, out)
    for report in reports:
        anomalies += [Anomaly(**{**a, "shards": tuple(a["shards"])}) for a in report["anomalies"]]

    schema_note = f"{schema_file}, as committed"
    if schema is None:
        if "train" not in statistics:
            raise StageError(f"{paths.manifest}: no train shards to infer the schema from")
        schema = curate_schema(tfdv.infer_schema(statistics["train"]))
        write_schema(schema_file, schema)
        schema_note = f"{schema_file}, updated from the train split in this run"
        log.info("wrote %s: review the diff and commit it", schema_file)
    schema = with_thresholds(schema, settings)

    measurements = []
    for split, split_statistics in statistics.items():
        examples = [
            (report["shard"], report["example"])
            for report in reports
            if report["split"] == split and report["example"] is not None
        ]
        result = validate_split(split, split_statistics, schema, statistics.get("train"))
        found, measured = to_anomalies(
            split, result, schema, examples, split_statistics, statistics.get("train")
        )
        anomalies += found
        measurements += measured

    write_outputs(out, reports, anomalies, measurements, schema_note)
    for anomaly in anomalies:
        log.warning(
            "%s %s %s: found %s", anomaly.check, anomaly.split, anomaly.feature, anomaly.found
        )
    errors = [anomaly for anomaly in anomalies if anomaly.severity == "ERROR"]
    if errors:
        checks = ", ".join(sorted({anomaly.check for anomaly in errors}))
        raise StageError(f"{len(errors)} ERROR anomalies ({checks}); see {out / 'report.md'}")


def write_outputs(
    out: Path,
    reports: list[dict[str, Any]],
    anomalies: list[Anomaly],
    measurements: list[dict[str, Any]],
    schema_note: str,
) -> None:
    """shards.jsonl (scalar features per shard), anomalies.json and report.md, atomically."""
    with atomic_open(out / "shards.jsonl") as handle:
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
        out / "anomalies.json",
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
    with atomic_open(out / "report.md") as handle:
        handle.write(render_report(anomalies, measurements, shard_counts, schema_note))
