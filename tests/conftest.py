"""Shared fixtures: the smoke corpus, generated once per test session by the real synth stage."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

# Before any test imports TensorFlow: on CPUs without AVX-512 TensorFlow leaves oneDNN off and
# then has no NCHW convolution, which the model tests force (subprocesses inherit it).
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import pytest  # noqa: E402
from dask_cluster import dask_cluster
from helpers import copy_corpus, path_overrides, smoke_config, tracked_paths, trailers

from pipeline.core.config import Config


@pytest.fixture(scope="session")
def smoke_corpus(tmp_path_factory: pytest.TempPathFactory) -> Config:
    """``trailers synth`` on configs/smoke.yaml; the corpus lies under ``config.paths.data``.

    Shared by every test of the session: read it, or copy ``config.paths.data`` before
    changing anything in it.
    """
    root = tmp_path_factory.mktemp("smoke")
    config = smoke_config(root)
    # Through the CLI in its own process, as `trailers synth` runs for users and DVC.
    result = trailers("synth", f"paths.data_dir={config.paths.data}", cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    return config


@pytest.fixture(scope="session")
def validated_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The smoke corpus through ``trailers synth``, ``decode`` and ``validate``, all under the
    returned folder (``data/``, ``outputs/``). Shared: train in a ``copy_corpus`` of it."""
    root = tmp_path_factory.mktemp("validated")
    for stage in ("synth", "decode", "validate"):
        result = trailers(stage, *path_overrides(root), cwd=root)
        assert result.returncode == 0, result.stderr[-3000:]
    return root


@pytest.fixture(scope="session")
def trained_corpus(validated_corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the validated corpus with both models trained by ``trailers train`` (2 smoke
    epochs each), MLflow's store at ``<root>/mlflow.db``. Shared: read it, or copy it."""
    root = copy_corpus(validated_corpus, tmp_path_factory.mktemp("trained"))
    for model in ("classifier", "baseline"):
        result = trailers("train", f"--model={model}", *tracked_paths(root), cwd=root)
        assert result.returncode == 0, result.stderr[-3000:]
    return root


@pytest.fixture(scope="session")
def dask_scheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The address of a Dask cluster of real processes on 127.0.0.1 for the session: ``dask
    scheduler`` and two ``dask worker --nworkers 1 --nthreads 1``, stopped at the end. Which
    worker ran what: ``dask_cluster.tasks_by_worker``."""
    with dask_cluster(tmp_path_factory.mktemp("dask")) as address:
        yield address
