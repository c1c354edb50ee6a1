"""The Beam pipeline of the stage: read every shard once, then TFDV statistics per split."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow as pa
import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import statistics_pb2

from pipeline.core.config import Config
from pipeline.core.io import atomic_open, atomic_path
from pipeline.core.manifest import ShardRow
from pipeline.infra.beam import new_pipeline, worker_count
from pipeline.validate.features import FEATURES, FLOAT, INT, STRING, inspect_shard
from pipeline.validate.integrity import SPLIT_ORDER

log = logging.getLogger(__name__)

WORKDIR_PREFIX = ".beam-"
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


def gather() -> beam.PTransform:
    """All elements as one list. Without the default for an empty input, which Beam adds as a
    side input: the Dask runner recomputes every side input's whole upstream for its reader."""
    return beam.CombineGlobally(beam.combiners.ToListCombineFn()).without_defaults()


def split_batch(reports: list[dict[str, Any]]) -> pa.RecordBatch:
    """A split's examples as one batch in shard order: its statistics are then the same to the
    last bit whichever runner and workers read the shards (TFDV's sums depend on the order)."""
    return to_record_batch(sorted(reports, key=lambda report: report["shard"]))


def run_beam(rows: list[ShardRow], splits: list[str], config: Config, workdir: Path) -> None:
    """Inspect every shard and compute TFDV statistics per split, on Beam.

    Writes ``workdir/shards.jsonl`` (one report per shard) and ``workdir/<split>.pb``. The
    writes are plain DoFns rather than Beam's file sinks, which run more than once, at the same
    time, on Beam's Dask runner (their side inputs are recomputed for every reader).
    """
    settings = config.validate_
    partitions = min(len(rows), worker_count(config.beam))
    with new_pipeline(config.beam, settings.direct_running_mode, partitions) as pipeline:
        reports = (
            pipeline
            | "Manifest" >> beam.Create(rows)
            | "Inspect"
            >> beam.Map(
                inspect_shard,
                shards_dir=str(config.paths.shards.absolute()),  # workers have their own cwd
                black_level=settings.black_level,
                chunk_frames=settings.chunk_frames,
            )
        )
        _ = (
            reports
            | "AllReports" >> gather()
            | "WriteReports" >> beam.Map(write_reports, str(workdir / "shards.jsonl"))
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
                | f"Gather[{split}]" >> gather()
                | f"ToArrow[{split}]" >> beam.Map(split_batch)
                | f"Statistics[{split}]" >> tfdv.GenerateStatistics(tfdv.StatsOptions())
                | f"Write[{split}]" >> beam.Map(write_statistics, str(workdir / f"{split}.pb"))
            )


def write_reports(reports: list[dict[str, Any]], path: str) -> None:
    """One JSON line per shard report, in shard order."""
    with atomic_open(path) as lines:
        for report in sorted(reports, key=lambda report: report["shard"]):
            lines.write(json.dumps(report) + "\n")


def write_statistics(statistics: statistics_pb2.DatasetFeatureStatisticsList, path: str) -> None:
    """TFDV's binary statistics file, as ``tfdv.WriteStatisticsToBinaryFile`` writes it, but
    with the features in path order: TFDV lists them in the order its partial results were
    merged, which differs between runners and runs."""
    for dataset in statistics.datasets:
        ordered = []
        for feature in sorted(dataset.features, key=lambda feature: list(feature.path.step)):
            copy = statistics_pb2.FeatureNameStatistics()
            copy.CopyFrom(feature)
            ordered.append(copy)
        del dataset.features[:]
        dataset.features.extend(ordered)
    with atomic_path(path) as target:
        target.write_bytes(statistics.SerializePartialToString(deterministic=True))


@contextlib.contextmanager
def beam_workdir(config: Config) -> Iterator[Path]:
    """A fresh folder for the pipeline's own outputs, under the stage's outputs folder rather
    than a temporary folder of this machine, as Beam workers elsewhere write there too;
    removed afterwards, with what a killed run left there."""
    outputs = config.paths.stage_outputs("validate").absolute()
    outputs.mkdir(parents=True, exist_ok=True)
    for leftover in outputs.glob(f"{WORKDIR_PREFIX}*"):
        shutil.rmtree(leftover, ignore_errors=True)
    workdir = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX, dir=outputs))
    try:
        yield workdir
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


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
    with beam_workdir(config) as workdir:
        run_beam(rows, splits, config, workdir)
        reports = [json.loads(line) for line in (workdir / "shards.jsonl").open()]
        for split in splits:
            statistics[split] = tfdv.load_stats_binary(str(workdir / f"{split}.pb"))
            with atomic_path(config.paths.statistics(split)) as target:
                shutil.copyfile(workdir / f"{split}.pb", target)
    return sorted(reports, key=lambda report: report["shard"]), statistics
