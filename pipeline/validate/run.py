"""Stage ``validate``: TensorFlow Data Validation stops bad shards before training sees them.

Reads the decode manifest (``integrity``: its rows, and trailers whose file is cut short, a
warning unless ``validate.fail_on_truncated``) and, on Beam, every shard once (memory-mapped, in
chunks): its integrity against its row and one example of summary features (``features``).
TFDV then computes statistics per split (``statistics``), checks every split against the
curated schema committed at ``paths.schema_file`` (``schema``), and compares val/test (and
unlabelled serving data) with train: drift on ``validate.drift_features`` and the genre mix,
skew on ``validate.skew_features`` (``anomalies``). Thresholds come from the config and are laid
over the schema at run time, so the committed file holds the data contract only.

Writes (``report``) under ``outputs/validate/``: ``statistics/<split>.pb`` (TFDV's binary
protobuf), ``shards.jsonl`` (each shard's scalar features), ``anomalies.json`` and
``report.md``, and ``metrics/validate.json``. Any ERROR anomaly stops the stage with exit 1,
after the outputs are written.
"""

from __future__ import annotations

import logging

import tensorflow_data_validation as tfdv

from pipeline.core.config import Config
from pipeline.core.errors import StageError
from pipeline.validate.anomalies import Anomaly, to_anomalies
from pipeline.validate.integrity import check_manifest, truncated_trailers
from pipeline.validate.report import write_outputs
from pipeline.validate.schema import (
    check_comparator_features,
    curate_schema,
    load_schema,
    validate_split,
    with_thresholds,
    write_schema,
)
from pipeline.validate.statistics import collect_statistics

log = logging.getLogger(__name__)


def run(config: Config, update_schema: bool = False) -> None:
    """Validate the decoded corpus; raise StageError naming the report if anything is wrong."""
    settings, paths = config.validate_, config.paths
    schema_file = paths.schema
    check_comparator_features(settings)
    schema = None if update_schema else load_schema(schema_file)
    rows, anomalies = check_manifest(paths.manifest)
    anomalies += truncated_trailers(rows, settings.fail_on_truncated)
    reports, statistics = collect_statistics(rows, config)
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

    write_outputs(paths, reports, anomalies, measurements, schema_note)
    for anomaly in anomalies:
        log.warning(
            "%s %s %s: found %s", anomaly.check, anomaly.split, anomaly.feature, anomaly.found
        )
    errors = [anomaly for anomaly in anomalies if anomaly.severity == "ERROR"]
    if errors:
        checks = ", ".join(sorted({anomaly.check for anomaly in errors}))
        raise StageError(f"{len(errors)} ERROR anomalies ({checks}); see {paths.validate_report}")
