"""The Keras callbacks of a training run: the macro metric early stopping and the best-model
checkpoint watch, progress, the history CSV (DVC plots), per-epoch MLflow metrics, and the backup a
killed run resumes from."""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np
from tqdm import tqdm

from pipeline import GENRES
from pipeline.core.config import TrainConfig
from pipeline.train.devices import ClusterTask

MONITOR = "val_macro_auc_pr"
"""What early stopping and the best-model checkpoint watch: mean per-genre AUC-PR on val."""

log = logging.getLogger(__name__)


class MacroAucPr(keras.callbacks.Callback):
    """Adds ``macro_auc_pr`` and ``val_macro_auc_pr`` (the mean over genres) to the epoch logs.

    It must come before the callbacks that read them: Keras hands all callbacks one dict.
    """

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        for prefix in ("", "val_"):
            keys = [f"{prefix}{genre}_auc_pr" for genre in GENRES]
            if logs is not None and all(key in logs for key in keys):
                logs[f"{prefix}macro_auc_pr"] = float(np.mean([logs[key] for key in keys]))


class EpochProgress(keras.callbacks.Callback):
    """A progress bar per epoch in a terminal, and one short line per epoch in any case."""

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.epochs, self.bar = epochs, None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.bar = tqdm(
            total=self.params.get("steps"),
            desc=f"epoch {epoch + 1}/{self.epochs}",
            unit="batch",
            leave=False,
            disable=None,  # off when stderr is not a terminal
        )

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.bar.update()
        self.bar.set_postfix(loss=f"{(logs or {}).get('loss', float('nan')):.3f}")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.bar.close()
        logs = logs or {}
        log.info(
            "epoch %d/%d: loss %.4f, val_loss %.4f, %s %.4f",
            epoch + 1,
            self.epochs,
            logs.get("loss", float("nan")),
            logs.get("val_loss", float("nan")),
            MONITOR,
            logs.get(MONITOR, float("nan")),
        )


class EpochMetricsLogger(keras.callbacks.Callback):
    """Hands every number Keras reports at the end of an epoch (train and ``val_`` metrics, per
    genre and macro, as Keras names them) to ``log_metrics`` with ``step=epoch``: the run's
    outbox (:class:`pipeline.infra.tracking.TrainingRun`), which never waits on the server.

    Not ``mlflow.keras.MlflowCallback``: in MLflow 3.17 it logs the ``validation_*`` metrics at
    step 0 every epoch, and it calls the server from the training loop.
    """

    def __init__(self, log_metrics: Callable[[dict[str, float], int], None]) -> None:
        super().__init__()
        self.log_metrics = log_metrics

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        metrics = {
            name: float(value) for name, value in (logs or {}).items() if np.ndim(value) == 0
        }
        if metrics:
            self.log_metrics(metrics, epoch)


def read_history(path: Path) -> list[dict[str, float]]:
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(handle)]


def training_callbacks(
    train: TrainConfig,
    out: Path,
    resuming: bool,
    task: ClusterTask | None = None,
    log_metrics: Callable[[dict[str, float], int], None] | None = None,
) -> list:
    """Macro metric, early stopping, best weights, history, MLflow (``log_metrics``), and
    resume-on-rerun.

    A worker of a cluster (``task``) keeps no backup to resume from; one that is not the chief
    writes no history and logs nothing to MLflow either. Every worker checkpoints the best
    weights, the others into a folder of their own: saving runs on all of them alike.
    """
    history = read_history(out / "history.csv") if resuming else []
    best = max((epoch[MONITOR] for epoch in history), default=None)
    callbacks = [
        MacroAucPr(),
        EpochProgress(train.epochs),
        keras.callbacks.ModelCheckpoint(
            out / "checkpoints" / "best.weights.h5",
            monitor=MONITOR,
            mode="max",
            save_best_only=True,
            save_weights_only=True,
            initial_value_threshold=best,
        ),
    ]
    if task is None or task.is_chief:
        callbacks += [
            keras.callbacks.CSVLogger(out / "history.csv", append=resuming),
        ]
        if log_metrics is not None:
            callbacks.append(EpochMetricsLogger(log_metrics))
    if task is None:
        backup = out / "checkpoints" / "backup"
        callbacks.append(keras.callbacks.BackupAndRestore(backup, double_checkpoint=True))
    if train.early_stopping_patience:
        callbacks.insert(
            1,
            keras.callbacks.EarlyStopping(
                monitor=MONITOR, mode="max", patience=train.early_stopping_patience
            ),
        )
    return callbacks
