"""MLflow pieces every stage that records runs shares (train, evaluate): is the store reachable,
a run with the resolved config as params, the code's git state, the data's version, artifacts.

Stages never import each other, so these live here rather than in the train stage. Where runs
go is :func:`pipeline.config.tracking_uri`.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import mlflow.system_metrics

from pipeline.config import PROJECT_ROOT, Config, tracking_uri
from pipeline.errors import StageError

__all__ = [
    "flatten_params",
    "git_state",
    "log_artifacts",
    "manifest_digest",
    "require_reachable",
    "start_run",
]


def require_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Raise StageError, naming ``uri``, when runs could not be recorded there.

    An ``http(s)`` server must answer its ``/health`` within ``timeout_s`` (MLflow's own client
    retries for minutes); an ``sqlite`` store's folder must be writable. Other stores are left
    to MLflow.
    """
    if uri.startswith(("http://", "https://")):
        _require_server(uri, timeout_s)
    elif uri.startswith("sqlite:///") and ":memory:" not in uri:
        _require_writable(uri, Path(uri.removeprefix("sqlite:///")).parent)


def _require_server(uri: str, timeout_s: float) -> None:
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s):
            return
    except urllib.error.HTTPError as error:
        if error.code < 500:  # it answered: an auth or routing question, not reachability
            return
        reason = f"HTTP {error.code}"
    except (urllib.error.URLError, OSError) as error:
        reason = str(getattr(error, "reason", error))
    raise StageError(f"MLflow tracking server {uri} cannot be reached: {reason}")


def _require_writable(uri: str, folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise StageError(f"MLflow store {uri}: cannot create {folder}: {error}") from None
    if not os.access(folder, os.W_OK):
        raise StageError(f"MLflow store {uri}: folder {folder} is not writable")


def flatten_params(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"train": {"window": 8}}`` -> ``{"train.window": "8"}``; values written as in YAML
    (``true``, ``null``, ``[16, 16]``), strings as they are."""
    params: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            params.update(flatten_params(value, f"{name}."))
        else:
            params[name] = value if isinstance(value, str) else json.dumps(value)
    return params


@contextmanager
def start_run(
    config: Config, *, run_name: str, tags: Mapping[str, str]
) -> Iterator[mlflow.ActiveRun]:
    """A run in ``config.tracking.experiment`` with system metrics sampled every
    ``system_metrics_interval_s`` and every resolved config value as a param.

    Call :func:`require_reachable` first: MLflow's client retries an absent server for minutes.
    """
    uri = tracking_uri(config.tracking)
    mlflow.set_tracking_uri(uri)
    _use_experiment(config.tracking.experiment, uri)
    with _sampling_interval(config.tracking.system_metrics_interval_s):
        run = mlflow.start_run(run_name=run_name, tags=dict(tags), log_system_metrics=True)
    with run:
        mlflow.log_params(flatten_params(config.model_dump(mode="json", by_alias=True)))
        yield run


def _use_experiment(name: str, uri: str) -> None:
    """Make ``name`` the active experiment. A new one in an SQLite store keeps its artifacts in
    ``mlruns`` beside the database: MLflow's default is ``./mlruns`` of whichever directory
    first creates it, which under ``dvc exp run --temp`` is a copy of the repo deleted after."""
    if uri.startswith("sqlite:///") and mlflow.get_experiment_by_name(name) is None:
        store = Path(uri.removeprefix("sqlite:///")).resolve().parent
        mlflow.create_experiment(name, artifact_location=(store / "mlruns").as_uri())
    mlflow.set_experiment(name)


@contextmanager
def _sampling_interval(seconds: float) -> Iterator[None]:
    """MLflow reads the interval from its environment variable when a run's monitor starts;
    set it for that moment only, so nothing else in the process sees it."""
    previous = os.environ.get("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL")
    mlflow.system_metrics.set_system_metrics_sampling_interval(seconds)
    try:
        yield
    finally:
        mlflow.system_metrics.set_system_metrics_sampling_interval(
            None if previous is None else float(previous)
        )


def git_state() -> tuple[str, str]:
    """The project's HEAD commit and whether tracked files differ from it (``true``/``false``);
    ``("unknown", "unknown")`` outside a git checkout."""
    try:
        commit = _git("rev-parse", "HEAD")
        changes = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown", "unknown"
    return commit, json.dumps(bool(changes))


def _git(*args: str) -> str:
    result = subprocess.run(
        ["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True, timeout=10
    )
    return result.stdout.strip()


def manifest_digest(manifest_path: Path) -> str:
    """The sha256 of the manifest's bytes: every shard's own sha256 is in it, so this names
    the data version."""
    return hashlib.sha256(Path(manifest_path).read_bytes()).hexdigest()


def log_artifacts(paths: Sequence[Path], artifact_path: str) -> None:
    """Copy files (or folders) into the run's artifacts under ``artifact_path``."""
    for path in map(Path, paths):
        if path.is_dir():
            mlflow.log_artifacts(str(path), f"{artifact_path}/{path.name}")
        elif path.is_file():
            mlflow.log_artifact(str(path), artifact_path)
        else:
            raise StageError(f"{path}: not found, so it cannot be logged to MLflow")
