"""The Beam pipeline of the stage: read every shard once, then TFDV statistics per split."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow as pa
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import statistics_pb2

from pipeline.beam import new_pipeline
from pipeline.config import Config
from pipeline.io import atomic_path
from pipeline.manifest import ShardRow
from pipeline.validate.features import FEATURES, FLOAT, INT, STRING, inspect_shard
from pipeline.validate.integrity import SPLIT_ORDER

log = logging.getLogger(__name__)

_ARROW_TYPES = {INT: pa.int64(), FLOAT: pa.float64(), STRING: pa.string()}


def to_record_batch(reports: list[dict[str, Any]]) -> pa.RecordBatch:
    """Examples as a columnar batch: one list column per feature, null where it is missing."""
    columns = [
        pa.array(
            [report["example"].get(name) for report in reports], type=pa.list_(_ARROW_TYPES[kind])
        )
        for name, (kind, _) in FEATURES.items()
    ]
    return pa.RecordBatch.from_arrays(columns, names=list(FEATURES))


def run_beam(rows: list[ShardRow], splits: list[str], config: Config, workdir: Path) -> None:
    """Inspect every shard and compute TFDV statistics per split, on Beam.

    Writes ``workdir/shards.jsonl`` (one report per shard) and ``workdir/<split>.pb``.
    """
    settings = config.validate_
    with new_pipeline(config.beam, settings.direct_running_mode) as pipeline:
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


def collect_statistics(
    rows: list[ShardRow], config: Config
) -> tuple[list[dict[str, Any]], dict[str, statistics_pb2.DatasetFeatureStatisticsList]]:
    """Run the Beam pipeline; return the shard reports and each split's statistics.

    The statistics are also written to ``paths.statistics(split)``.
    """
    splits = [split for split in SPLIT_ORDER if any(row.split == split for row in rows)]
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
            with atomic_path(config.paths.statistics(split)) as target:
                shutil.copyfile(workdir / f"{split}.pb", target)
    return sorted(reports, key=lambda report: report["shard"]), statistics
