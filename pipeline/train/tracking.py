"""MLflow for the train stage: what each run records, and the model as a pyfunc.

With :mod:`pipeline.train.pyfunc_model` (the wrapper the logged model carries) it builds on the
shared :mod:`pipeline.tracking` (reachability, the run, git state, data version, artifacts),
whose names it re-exports. A run records every resolved config value as a param,
per-epoch metrics, tags naming the code, data and machine, system metrics, the dataset as an
input, the model and the validate report. MLflow 3 refuses the file store, so the local default
is an SQLite store at an absolute path (``dvc exp run --temp`` works in a copy of the repo).
"""

from __future__ import annotations

import platform
import warnings
from collections.abc import Mapping, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import keras
import mlflow
import mlflow.data
import numpy as np
import pandas as pd
import tensorflow as tf
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec

from pipeline import GENRES
from pipeline.config import PROJECT_ROOT, tracking_uri
from pipeline.manifest import ShardRow
from pipeline.tracking import (
    flatten_params,
    git_state,
    log_artifacts,
    manifest_digest,
    require_reachable,
    start_run,
)
from pipeline.train import pyfunc_model
from pipeline.train.pyfunc_model import KERAS_ARTIFACT

__all__ = [
    "MODEL_NAME",
    "EpochMetricsLogger",
    "cpu_model",
    "flatten_params",
    "git_state",
    "log_artifacts",
    "log_dataset",
    "log_model",
    "manifest_digest",
    "model_requirements",
    "model_signature",
    "require_reachable",
    "run_tags",
    "start_run",
    "tracking_uri",
]

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


class EpochMetricsLogger(keras.callbacks.Callback):
    """Logs every number Keras reports at the end of an epoch (train and ``val_`` metrics, per
    genre and macro, as Keras names them) with ``step=epoch``.

    Not ``mlflow.keras.MlflowCallback``: in MLflow 3.17 it logs the ``validation_*`` metrics at
    step 0 every epoch.
    """

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        metrics = {
            name: float(value) for name, value in (logs or {}).items() if np.ndim(value) == 0
        }
        if metrics:
            mlflow.log_metrics(metrics, step=epoch)


def model_signature(frame_shape: tuple[int, int, int]) -> ModelSignature:
    """uint8 ``(-1, -1, *frame_shape)`` frames in; float32 ``(-1, -1)`` per genre out."""
    frames = TensorSpec(np.dtype(np.uint8), (-1, -1, *frame_shape))
    timelines = [TensorSpec(np.dtype(np.float32), (-1, -1), name=genre) for genre in GENRES]
    return ModelSignature(inputs=Schema([frames]), outputs=Schema(timelines))


def model_requirements() -> list[str]:
    """The pinned packages a loaded model needs (not inferred: MLflow would import the model);
    pydantic and PyYAML because the model's layers import :mod:`pipeline.config`."""
    packages = ("tensorflow", "keras", "numpy", "mlflow", "pydantic", "pyyaml")
    return [f"{name}=={version(name)}" for name in packages]


def log_model(
    model_path: Path,
    frame_shape: tuple[int, int, int],
    decode_settings: Mapping[str, Any],
    input_example: np.ndarray,
    *,
    name: str = MODEL_NAME,
) -> str:
    """Log the ``.keras`` file at ``model_path`` as the run's pyfunc ``name``; returns its
    model URI. ``input_example``: a short uint8 clip (a few frames; it is stored as JSON).

    ``decode_settings`` (fps, height, width, aspect) go into the model's metadata, which
    ``mlflow.models.get_model_info(uri).metadata["decode"]`` reads without loading the model.
    """
    info = mlflow.pyfunc.log_model(
        name=name,
        python_model=pyfunc_model.__file__,
        artifacts={KERAS_ARTIFACT: str(model_path)},
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
