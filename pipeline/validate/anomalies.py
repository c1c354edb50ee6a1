"""Anomalies: one problem found, phrased for someone who has never heard of TFDV, and the
translation of TFDV's result for one split into them."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2, statistics_pb2

from pipeline.infra.drift import measurements

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


@dataclass(frozen=True)
class Anomaly:
    """One problem found: which check, where, what was expected and what was found."""

    check: str
    split: str
    feature: str
    expected: str
    found: str
    shards: tuple[str, ...] = ()
    severity: str = "ERROR"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "shards": list(self.shards)}


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
    measured = measurements(result, split)
    for m in measured:
        if m["value"] > m["threshold"]:
            shift = describe_shift(m["feature"], statistics, baseline)
            anomalies.append(
                Anomaly(
                    m["check"],
                    split,
                    m["feature"],
                    f"{_MEASURES[m['measure']]} to train <= {m['threshold']:g}",
                    f"{m['value']:.3f} ({shift})",
                )
            )
    return anomalies, measured
