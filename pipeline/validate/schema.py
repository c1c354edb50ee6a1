"""The data contract: the committed schema, its curation rules, and the config's thresholds.

The schema is inferred by TFDV from the train split and curated here (``curate_schema``), so
rewriting it from any valid corpus gives the same file; drift and skew thresholds are laid over
it at run time from the ``validate:`` config section.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow_data_validation as tfdv
from google.protobuf import text_format
from tensorflow_metadata.proto.v0 import anomalies_pb2, schema_pb2, statistics_pb2

from pipeline import GENRES, UNLABELLED
from pipeline.core.config import ValidateConfig
from pipeline.core.errors import StageError
from pipeline.core.io import atomic_open
from pipeline.infra.drift import set_comparators
from pipeline.validate.features import CHANNELS, FEATURES, FLOAT, INT, LABEL_FEATURES, LIST_FEATURES

TRAINING, SERVING = "TRAINING", "SERVING"
"""Schema environments: labelled splits, and unlabelled shards decoded from a folder."""

_UINT8 = np.iinfo(np.uint8)
_SCHEMA_HEADER = (
    "# The data contract of a shard, checked by `trailers validate` (pipeline/validate/).\n"
    "# Inferred from the train split, then curated in code (curate_schema). Regenerate on\n"
    "# purpose with `trailers validate --update-schema`, review the diff, and commit it.\n"
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
        "frame_motion": pixel,
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
    set_comparators(result, drift, "drift_comparator")
    skew = {name: settings.skew_threshold for name in settings.skew_features}
    set_comparators(result, skew, "skew_comparator")
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
