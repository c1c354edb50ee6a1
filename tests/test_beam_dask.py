"""The Beam stages on a Dask cluster of real processes give what the DirectRunner gives, with
the work spread over the workers (as the cluster's scheduler recorded it)."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
from pathlib import Path

import apache_beam as beam
import pytest
from dask_cluster import HOST, tasks_by_worker
from helpers import COMMITTED_SCHEMA, trailers

from pipeline.core.config import BeamConfig
from pipeline.infra.beam import new_pipeline

pytestmark = pytest.mark.xdist_group("dask")
"""One Dask cluster per run: every test that needs one runs in one xdist worker."""

SCHEMA = "paths.schema_file=configs/schema.pbtxt"
"""The schema where the reference corpus's project keeps it (its report names the path)."""
INPUTS = ("videos", "synth_receipt.json", "annotations.csv", "splits.csv")  # what synth wrote


def fresh_inputs(corpus: Path, root: Path) -> Path:
    """``root`` with what synth wrote for ``corpus`` (videos, their receipt, labels, splits),
    the committed schema, and nothing decoded yet."""
    (root / "configs").mkdir(parents=True)
    shutil.copyfile(COMMITTED_SCHEMA, root / "configs" / "schema.pbtxt")
    for name in INPUTS:
        source, target = corpus / "data" / name, root / "data" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copyfile)(source, target)
    return root


def files(folder: Path, root: Path) -> dict[str, bytes]:
    """Every file under ``folder`` but decode's receipts, paths under ``root`` made relative
    to it (the reference corpus was made with absolute paths, these runs use relative ones)."""
    return {
        str(path.relative_to(folder)): path.read_bytes().replace(f"{root}/".encode(), b"")
        for path in sorted(folder.rglob("*"))
        if path.is_file() and "receipts" not in path.parts
    }


def run(stage: str, root: Path, *overrides: str) -> subprocess.CompletedProcess:
    result = trailers(stage, SCHEMA, *overrides, cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


@pytest.mark.slow
@pytest.mark.timeout(900)  # validate's first run imports TensorFlow in every worker
def test_decode_and_validate_on_a_dask_cluster_match_the_direct_runner(
    validated_corpus: Path, dask_scheduler: str, tmp_path: Path
):
    root = fresh_inputs(validated_corpus, tmp_path)
    on_cluster = ("beam.runner=dask", f"beam.scheduler_address={dask_scheduler}")
    with tasks_by_worker(dask_scheduler) as decoded_by:
        run("decode", root, *on_cluster)
    with tasks_by_worker(dask_scheduler) as validated_by:
        run("validate", root, *on_cluster)

    assert len(decoded_by) == 2 and len(validated_by) == 2, (decoded_by, validated_by)
    for folder in ("data/shards", "outputs/validate"):
        assert files(root / folder, root) == files(validated_corpus / folder, validated_corpus)
    for metrics in ("metrics/decode.json", "metrics/validate.json"):
        assert (root / metrics).read_bytes() == (validated_corpus / metrics).read_bytes()


@pytest.mark.slow
def test_a_local_cluster_decodes_the_same_shards_and_a_dead_address_is_one_line(
    validated_corpus: Path, tmp_path: Path
):
    root = fresh_inputs(validated_corpus, tmp_path)
    dead = f"tcp://{HOST}:{free_port()}"
    result = trailers(
        "decode",
        "beam.runner=dask",
        f"beam.scheduler_address={dead}",
        "beam.runner_options={dask_connection_timeout: '2'}",
        cwd=root,
    )
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(f"trailers decode: beam.scheduler_address '{dead}': no Dask scheduler (")
    )
    assert "Traceback" not in result.stderr

    local = run("decode", root, "beam.runner=apache_beam.runners.dask.dask_runner.DaskRunner")
    # Quiet as the DirectRunner: the cluster's INFO lines and its workers' warnings stay hidden.
    assert not re.search(r"distributed\.\w+: |FutureWarning", local.stderr), local.stderr
    shards = Path("data") / "shards"
    assert files(root / shards, root) == files(validated_corpus / shards, validated_corpus)


@pytest.mark.slow  # the session's Dask cluster starts for it (4 s) and it runs 8 s there
def test_every_branch_and_output_runs_on_the_cluster(dask_scheduler: str, tmp_path: Path):
    """What upstream's DaskRunner loses: all branches but the last, the outputs of a
    multi-output ParDo by tag, and what a DoFn emits in ``finish_bundle``."""
    config = BeamConfig(runner="dask", scheduler_address=dask_scheduler)

    def write(values: list, name: str) -> None:
        (tmp_path / name).write_text(json.dumps(sorted(values)))

    with new_pipeline(config, partitions=3) as pipeline:
        numbers = pipeline | beam.Create(range(12))
        evens, odds = numbers | beam.Partition(lambda number, _: number % 2, 2)
        _ = evens | "Evens" >> beam.combiners.ToList() | "WriteEvens" >> beam.Map(write, "even")
        _ = odds | "Odds" >> beam.combiners.ToList() | "WriteOdds" >> beam.Map(write, "odd")
        _ = (
            numbers
            | beam.BatchElements(min_batch_size=5, max_batch_size=5)
            | beam.Map(len)
            | "Sizes" >> beam.combiners.ToList()
            | "WriteSizes" >> beam.Map(write, "batch_sizes")
        )
    read = {name: json.loads((tmp_path / name).read_text()) for name in ("odd", "even")}
    assert read == {"even": list(range(0, 12, 2)), "odd": list(range(1, 12, 2))}
    assert sum(json.loads((tmp_path / "batch_sizes").read_text())) == 12


def test_two_scheduler_addresses_are_one_config_error(tmp_path: Path):
    result = trailers(
        "decode",
        "beam.runner=dask",
        "beam.scheduler_address=tcp://127.0.0.1:8786",
        "beam.runner_options={dask_client_address: 'tcp://127.0.0.1:8787'}",
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert result.stderr.strip().endswith(
        "beam: scheduler_address and runner_options.dask_client_address both name a "
        "scheduler: keep one"
    )
