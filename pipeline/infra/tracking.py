"""MLflow for the stages that record runs (train, evaluate): one module, so a run is recorded one
way. Where runs go is :func:`pipeline.core.config.tracking_uri`.

- Every run: is the store reachable (:func:`require_reachable`), a run with the resolved config as
  params and system metrics (:func:`start_run`), the code's git state, the data's version,
  artifacts.
- Training runs: tags naming the code, libraries and machine (:func:`run_tags`), the dataset as
  an input (:func:`log_dataset`), the model as a pyfunc (:func:`log_model`; the pyfunc itself is
  :mod:`pipeline.model.pyfunc`). MLflow 3 refuses the file store, so the local default is an
  SQLite store at an absolute path (``dvc exp run --temp`` works in a copy of the repo).
- Evaluation runs: each model's evaluation is a run of its own, ``evaluate-<model>``, in the
  training runs' experiment (not nested: a training run is finished, and an evaluation may be
  rerun on other data or code), linked both ways MLflow offers: tagged ``training_run_id`` with
  the run that trained the model (its model card), and its metrics logged against that run's
  logged model, so the model's page lists them. With ``evaluate.register_model`` the
  classifier's logged model becomes a version of ``evaluate.registered_model_name`` and gets
  ``evaluate.alias`` (MLflow 3: aliases, not the deprecated stages).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from typing import Any

import keras
import mlflow
import mlflow.data
import mlflow.system_metrics
import numpy as np
import pandas as pd
import tensorflow as tf
from mlflow.entities import LoggedModel
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec

from pipeline import GENRES
from pipeline.core.config import PROJECT_ROOT, Config, tracking_uri
from pipeline.core.errors import StageError
from pipeline.core.manifest import ShardRow


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


MODEL_NAME = "model"
"""The name of the pyfunc in each run's logged models."""

_MAX_DIGEST = 36
"""MLflow stores a dataset digest in 36 characters at most (``MAX_DATASET_DIGEST_SIZE``)."""


def run_tags(strategy: Any, mixed_precision: bool) -> dict[str, str]:
    """Tags naming the code, libraries and machine of a run (``strategy``: a tf.distribute
    strategy). Lists the physical devices, which initialises TensorFlow's runtime."""
    gpus = [_gpu_name(gpu) for gpu in tf.config.list_physical_devices("GPU")]
    cpu = cpu_model()
    commit, dirty = git_state()
    source = {"mlflow.source.git.commit": commit} if commit != "unknown" else {}
    return {
        **source,
        "git_commit": commit,
        "git_dirty": dirty,
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "cpu": cpu,
        "gpus": ", ".join(gpus) or "none",
        "gpu_count": str(len(gpus)),
        "device": f"{len(gpus)} x {gpus[0]}" if gpus else f"CPU: {cpu}",
        "strategy": type(strategy).__name__,
        "replicas": str(strategy.num_replicas_in_sync),
        "mixed_precision": "on" if mixed_precision else "off",
    }


def _gpu_name(device: tf.config.PhysicalDevice) -> str:
    return tf.config.experimental.get_device_details(device).get("device_name", device.name)


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else what ``platform`` says)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def log_dataset(
    manifest_path: Path, rows: Sequence[ShardRow], split: str, *, digest: str | None = None
) -> None:
    """Record the ``split``'s shard rows as the run's input (context ``split``) and tag the
    run's ``data_version`` with ``digest`` (by default :func:`manifest_digest`).

    The dataset is the manifest's rows, not the frames: MLflow's TensorFlow dataset would read
    every frame to compute its own digest.
    """
    digest = digest or manifest_digest(manifest_path)
    table = pd.DataFrame([row.to_dict() for row in rows if row.split == split])
    # Silences two UserWarnings that say nothing here: a local path "can be interpreted" as
    # either of MLflow's two local sources, and integer columns "cannot represent missing values".
    with warnings.catch_warnings(action="ignore", category=UserWarning):
        dataset = mlflow.data.from_pandas(
            table,
            source=str(Path(manifest_path).resolve()),
            name=f"shards-{split}",
            digest=digest[:_MAX_DIGEST],
        )
        mlflow.log_input(dataset, context=split)  # infers the schema: the second warning
    mlflow.set_tag("data_version", digest)


def model_signature(frame_shape: tuple[int, int, int]) -> ModelSignature:
    """uint8 ``(-1, -1, *frame_shape)`` frames in; float32 ``(-1, -1)`` per genre out."""
    frames = TensorSpec(np.dtype(np.uint8), (-1, -1, *frame_shape))
    timelines = [TensorSpec(np.dtype(np.float32), (-1, -1), name=genre) for genre in GENRES]
    return ModelSignature(inputs=Schema([frames]), outputs=Schema(timelines))


def model_requirements() -> list[str]:
    """The pinned packages a loaded model needs (not inferred: MLflow would import the model);
    pydantic and PyYAML because the model's layers import :mod:`pipeline.core.config`."""
    packages = ("tensorflow", "keras", "numpy", "mlflow", "pydantic", "pyyaml")
    return [f"{name}=={version(name)}" for name in packages]


def log_model(
    model_path: Path,
    frame_shape: tuple[int, int, int],
    decode_settings: Mapping[str, Any],
    input_example: np.ndarray,
    *,
    python_model: str,
    keras_artifact: str,
    name: str = MODEL_NAME,
) -> str:
    """Log the ``.keras`` file at ``model_path`` as the run's pyfunc ``name``; returns its
    model URI. ``input_example``: a short uint8 clip (a few frames; it is stored as JSON);
    ``python_model``: the file that is the pyfunc (:mod:`pipeline.model.pyfunc`), which finds the
    ``.keras`` file under its ``keras_artifact`` key.

    ``decode_settings`` (fps, height, width, aspect) go into the model's metadata, which
    ``mlflow.models.get_model_info(uri).metadata["decode"]`` reads without loading the model.
    """
    info = mlflow.pyfunc.log_model(
        name=name,
        python_model=python_model,
        artifacts={keras_artifact: str(model_path)},
        code_paths=[str(PROJECT_ROOT / "pipeline")],
        pip_requirements=model_requirements(),
        signature=model_signature(frame_shape),
        input_example=np.asarray(input_example, dtype=np.uint8),
        metadata={
            "decode": dict(decode_settings),
            "genres": list(GENRES),
            "frame_shape": list(frame_shape),
        },
    )
    return info.model_uri


def logged_model(training_run_id: str) -> LoggedModel | None:
    """The model the training run logged (its latest, if it logged several), or None when the
    store does not hold that run or it logged none."""
    try:
        run = mlflow.get_run(training_run_id)
    except mlflow.exceptions.MlflowException:
        return None
    models = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{training_run_id}'",
        order_by=[{"field_name": "creation_timestamp", "ascending": False}],
        output_format="list",
    )
    return models[0] if models else None


@contextmanager
def evaluation_run(
    config: Config, model: str, training_run_id: str | None
) -> Iterator[LoggedModel | None]:
    """An active run ``evaluate-<model>`` tagged with the training run, the evaluated split,
    the data version and the code; yields the training run's logged model (None if unknown)."""
    commit, dirty = git_state()
    tags = {
        "model": model,
        "stage": "evaluate",
        "split": config.evaluate.split,
        "training_run_id": training_run_id or "unknown",
        "data_version": manifest_digest(config.paths.manifest),
        "git_commit": commit,
        "git_dirty": dirty,
    }
    with start_run(config, run_name=f"evaluate-{model}", tags=tags):
        yield logged_model(training_run_id) if training_run_id else None


def log_evaluation(
    metrics: Mapping[str, float],
    model: LoggedModel | None,
    artifacts: Sequence[Path],
    params: Mapping[str, str] | None = None,
) -> None:
    """Log metrics to the active run (and against the logged model, when known), ``params``
    (e.g. the tuned segment rules) and copy the ``artifacts`` (files or folders) under
    ``evaluate/``."""
    mlflow.log_metrics(dict(metrics), model_id=model.model_id if model else None)
    if params:
        mlflow.log_params(dict(params))
    log_artifacts(artifacts, "evaluate")


def register(model: LoggedModel | None, training_run_id: str | None, config: Config) -> str:
    """Register ``model`` as a new version of ``evaluate.registered_model_name``, point
    ``evaluate.alias`` at it, and return the version (MLflow prints what it registered)."""
    if model is None:
        raise StageError(
            f"evaluate.register_model: the store {tracking_uri(config.tracking)} holds no model "
            f"logged by training run {training_run_id} (train the classifier against this store)"
        )
    name, alias = config.evaluate.registered_model_name, config.evaluate.alias
    version = mlflow.register_model(f"models:/{model.model_id}", name)
    mlflow.MlflowClient().set_registered_model_alias(name, alias, version.version)
    return str(version.version)
