"""Helpers shared by the test files (imported as ``helpers``; fixtures live in conftest.py)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from pipeline.core.config import Config, load_config

ROOT = Path(__file__).resolve().parent.parent
DEMO_CONFIG = ROOT / "configs" / "pipeline.yaml"
SMOKE_CONFIG = ROOT / "configs" / "smoke.yaml"
WEAK_CONFIG = ROOT / "configs" / "weak.yaml"
COMMITTED_SCHEMA = ROOT / "configs" / "schema.pbtxt"

TRAINED_EPOCHS = 4
"""The session's models train this long: enough for the loss to fall (test_train_run checks it),
not to learn the smoke corpus, which is too small to (see test_evaluate's learning test)."""


def smoke_config(root: Path, *overrides: str) -> Config:
    """The smoke config with data, outputs and metrics under ``root`` (the committed schema
    stays)."""
    return load_config(SMOKE_CONFIG, [*path_overrides(root), *overrides])


def path_overrides(root: Path, schema_file: Path = COMMITTED_SCHEMA) -> list[str]:
    """``--set`` overrides that put every path of a run under ``root``."""
    return [
        f"paths.data_dir={root / 'data'}",
        f"paths.outputs_dir={root / 'outputs'}",
        f"paths.metrics_dir={root / 'metrics'}",
        f"paths.models_dir={root / 'models'}",
        f"paths.schema_file={schema_file}",
    ]


def tracked_paths(root: Path) -> list[str]:
    """:func:`path_overrides` plus an MLflow store of its own at ``<root>/mlflow.db``."""
    return [*path_overrides(root), f"tracking.tracking_uri=sqlite:///{root / 'mlflow.db'}"]


def copy_corpus(source: Path, target: Path) -> Path:
    """A copy of a corpus's data and outputs (``source`` as laid out by :func:`path_overrides`)
    under ``target``, to change or train in; returns ``target``."""
    for name in ("data", "outputs"):
        if (source / name).exists():
            shutil.copytree(source / name, target / name)
    return target


def trailers_command(stage: str, *args: str, config: Path = SMOKE_CONFIG) -> list[str]:
    """``trailers <stage> --config <config> ...``, run as users and DVC run it: each of
    ``args`` is a flag (``-v``) or a ``section.key=value`` override (``--set`` is added)."""
    command = [sys.executable, "-m", "pipeline.cli", stage, "--config", str(config)]
    for arg in args:
        command += [arg] if arg.startswith("-") else ["--set", arg]
    return command


def trailers(
    stage: str, *args: str, cwd: Path, config: Path = SMOKE_CONFIG
) -> subprocess.CompletedProcess:
    """Run ``trailers <stage>`` in its own process; the result has text stdout and stderr."""
    return subprocess.run(
        trailers_command(stage, *args, config=config),
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
