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
from pipeline.core.io import atomic_open, atomic_path, naming_disk_full, read_json, write_json
from pipeline.train.devices import ClusterTask

MONITOR = "val_macro_auc_pr"
"""What early stopping and the best-model checkpoint watch: mean per-genre AUC-PR on val."""
TRAILER_MONITOR = "val_macro_trailer_auc_pr"
"""What they watch instead when every val trailer is labelled at trailer level (frame labels
then say nothing about frames): mean per-genre trailer-level AUC-PR on val."""

log = logging.getLogger(__name__)


class MacroAucPr(keras.callbacks.Callback):
    """Adds ``macro_auc_pr`` and ``val_macro_auc_pr`` (the mean over genres) to the epoch logs.

    It must come before the callbacks that read them: Keras hands all callbacks one dict.
    """

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        for prefix in ("", "val_"):
            for metric in ("auc_pr", "trailer_auc_pr"):
                keys = [f"{prefix}{genre}_{metric}" for genre in GENRES]
                if logs is not None and all(key in logs for key in keys):
                    logs[f"{prefix}macro_{metric}"] = float(np.mean([logs[key] for key in keys]))


class EpochProgress(keras.callbacks.Callback):
    """A progress bar per epoch in a terminal, and one short line per epoch in any case."""

    def __init__(self, epochs: int, monitor: str = MONITOR) -> None:
        super().__init__()
        self.epochs, self.bar, self.monitor = epochs, None, monitor

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
            self.monitor,
            logs.get(self.monitor, float("nan")),
        )


class EpochMetricsLogger(keras.callbacks.Callback):
    """Hands every number Keras reports at the end of an epoch (train and ``val_`` metrics, per
    genre and macro, as Keras names them) to ``log_metrics`` with ``step=epoch``: the run's
    outbox (:class:`pipeline.infra.tracking.RecordedRun`), which never waits on the server.

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


CHECKPOINT_SUFFIX = ".keras"
"""Checkpoints are ``.keras`` files (the weights and the optimizer's state; ``load_weights``
reads them), not ``.weights.h5``: a ``.weights.h5`` write that fills the disk leaves HDF5 an
open dataset it cannot close, and the process segfaults at exit (HDF5 1.14 under h5py 3.16,
seen on a full tmpfs); a ``.keras`` file is a zip Python writes, whose full disk is a plain
``OSError``."""


def save_checkpoint(model: keras.Model, path: Path) -> None:
    """The model's weights and optimizer state at ``path`` (a ``.keras`` name), whole or not at
    all; :class:`pipeline.core.io.DiskFull` when the disk fills."""
    with atomic_path(path, keep_suffix=True) as tmp:
        model.save(tmp, overwrite=True)


class BestWeights(keras.callbacks.ModelCheckpoint):
    """``ModelCheckpoint`` of the best weights through :func:`save_checkpoint`: a full disk or
    a kill never leaves a half-written file for the end of ``fit`` to load."""

    def _save_model(self, epoch: int, batch: int | None, logs: dict | None) -> None:
        filepath = self._get_file_path(epoch, batch, logs)
        if self._should_save_model(epoch, batch, logs or {}, filepath):
            save_checkpoint(self.model, Path(filepath))


class HistoryCsv(keras.callbacks.CSVLogger):
    """``CSVLogger`` (a row per epoch, appended) whose full disk names the file. A row cut
    short goes when the run resumes: :func:`pipeline.train.run.prepare` keeps the rows of the
    epochs its backup holds."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        with naming_disk_full(self.filename):
            super().on_epoch_end(epoch, logs)


class WholeBackup(keras.callbacks.BackupAndRestore):
    """``BackupAndRestore`` whose backup is always whole, wherever a ``kill -9`` lands.

    Keras writes the weights, then the epoch, over the last ones: killed between the two, a
    rerun resumes an epoch early with the later weights; killed while writing the epoch, it
    cannot read it. Here each epoch's weights get a file of their own, written under a
    temporary name and renamed; the metadata, renamed into place the same way, names them
    and is the commit; older weights go after it. A full disk stops training with
    :class:`pipeline.core.io.DiskFull` and leaves the last whole backup to resume from.
    """

    _METADATA = "training_metadata.json"

    def __init__(
        self, backup_dir: Path, settings: Mapping[str, str] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(backup_dir, **kwargs)
        self.settings = dict(settings or {})

    @classmethod
    def epoch(cls, backup_dir: Path) -> int:
        """The epoch the backup in ``backup_dir`` resumes at (0: none)."""
        metadata = read_json(Path(backup_dir) / cls._METADATA)
        return int(metadata["epoch"]) if metadata else 0

    @classmethod
    def settings_of(cls, backup_dir: Path) -> dict[str, str] | None:
        """The settings the backup in ``backup_dir`` was made with (None: no backup)."""
        metadata = read_json(Path(backup_dir) / cls._METADATA)
        return metadata.get("settings", {}) if metadata else None

    def _seed_states(self) -> list:
        """The layers' random number generators (dropout's): not in Keras' weights file, and
        a resumed run draws what the uninterrupted one would only if they resume too."""
        weights = {id(variable) for variable in self.model.weights}
        return [v for v in self.model.variables if id(v) not in weights]

    def _save_model(self) -> None:
        folder = Path(self.backup_dir)
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"epoch-{self._current_epoch}"
        weights, seeds = f"{stem}{CHECKPOINT_SUFFIX}", f"{stem}.seeds.npy"
        save_checkpoint(self.model, folder / weights)
        with atomic_open(folder / seeds, "wb") as handle:
            # np.array, not np.stack: a model without dropout has no seed state to keep
            np.save(handle, np.array([np.asarray(v) for v in self._seed_states()]))
        metadata = {
            "epoch": self._current_epoch,
            "batch": self._last_batch_seen,
            "stem": stem,
            "settings": self.settings,
        }
        write_json(folder / self._METADATA, metadata)
        for older in [*folder.glob("epoch-*"), *folder.glob(".epoch-*")]:  # and a kill's leftovers
            if not older.name.startswith(f"{stem}."):
                older.unlink(missing_ok=True)

    def _load_model(self) -> None:
        folder = Path(self.backup_dir)
        metadata = read_json(folder / self._METADATA)
        if metadata is None:
            return
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(folder / f"{metadata['stem']}{CHECKPOINT_SUFFIX}")
        seeds = np.load(folder / f"{metadata['stem']}.seeds.npy")
        for variable, value in zip(self._seed_states(), seeds, strict=True):
            variable.assign(value)
        self.model._initial_epoch = int(metadata["epoch"])


class ResumedEarlyStopping(keras.callbacks.EarlyStopping):
    """``EarlyStopping`` that goes on where a killed run's left off: its best value and its
    wait replayed from the epochs the history keeps (Keras starts both afresh in every
    ``fit``, so a resumed run would wait ``patience`` epochs more than the uninterrupted one).
    Had the run stopped already, nothing is left to train.

    It must come after :class:`WholeBackup`, whose start sets the epoch training resumes at.
    """

    def __init__(self, history: list[dict[str, float]], epochs: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.history, self.epochs = history, epochs

    def on_train_begin(self, logs: dict | None = None) -> None:
        super().on_train_begin(logs)
        for epoch, row in enumerate(self.history):
            self.on_epoch_end(epoch, row)
        if self.stopped_epoch:
            self.model._initial_epoch = self.epochs  # as BackupAndRestore sets where to start


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
    monitor: str = MONITOR,
    log_metrics: Callable[[dict[str, float], int], None] | None = None,
    settings: Mapping[str, str] | None = None,
) -> list:
    """Macro metric, early stopping and best weights (by ``monitor``), history, MLflow
    (``log_metrics``), and resume-on-rerun (its backup records ``settings``).

    A worker of a cluster (``task``) keeps no backup to resume from; one that is not the chief
    writes no history and logs nothing to MLflow either. Every worker checkpoints the best
    weights, the others into a folder of their own: saving runs on all of them alike.
    """
    history = read_history(out / "history.csv") if resuming else []
    best = max((epoch[monitor] for epoch in history), default=None)
    callbacks = [
        MacroAucPr(),
        EpochProgress(train.epochs, monitor),
        BestWeights(
            out / "checkpoints" / f"best{CHECKPOINT_SUFFIX}",
            monitor=monitor,
            mode="max",
            save_best_only=True,
            initial_value_threshold=best,
        ),
    ]
    if task is None or task.is_chief:
        callbacks += [
            HistoryCsv(out / "history.csv", append=resuming),
        ]
        if log_metrics is not None:
            callbacks.append(EpochMetricsLogger(log_metrics))
    if task is None:
        backup = out / "checkpoints" / "backup"
        # Kept after fit: a failure before the model is written (a full disk) resumes with
        # nothing left to train; the stage removes the checkpoints once everything is written.
        callbacks.append(WholeBackup(backup, settings, delete_checkpoint=False))
    if train.early_stopping_patience:
        callbacks.append(
            ResumedEarlyStopping(
                history,
                train.epochs,
                monitor=monitor,
                mode="max",
                patience=train.early_stopping_patience,
            )
        )
    return callbacks
