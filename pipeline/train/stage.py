"""``trailers train``: fit the ConvLSTM classifier, or the per-frame baseline, on the shards.

Reads the manifest and shards (train and val splits) and validate's verdict; writes
``models/<model>/model.keras`` (float32, loads on any host), ``models/<model>/model.json`` (the
decode settings the model was trained on, for predict), ``metrics/train_<model>.json`` (DVC
metrics) and ``outputs/train/<model>/history.csv`` (one row per epoch, DVC plots). Every run is
an MLflow run.

A killed run resumes from its last finished epoch: ``outputs/train/<model>/checkpoints/`` holds
it while the model trains and is removed when training ends.

With ``train.strategy: multi_worker`` each worker is a process of the ``TF_CONFIG`` cluster and
reads its own shard of every batch; only the chief writes the outputs above and records the
MLflow run, the other workers keep their checkpoints in a temporary folder, deleted at the end.
A killed multi-worker run starts over.
"""

from __future__ import annotations

import csv
import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from pipeline import GENRES
from pipeline.config import Config, ModelConfig, PathsConfig, TrainConfig
from pipeline.errors import StageError
from pipeline.io import atomic_path, read_json, write_json
from pipeline.manifest import ManifestError, ShardRow, read_manifest
from pipeline.model import build_classifier, build_frame_baseline
from pipeline.train import dataset, tracking
from pipeline.train.devices import ClusterTask, cluster_task, make_strategy, use_mixed_precision

MONITOR = "val_macro_auc_pr"
"""What early stopping and the best-model checkpoint watch: mean per-genre AUC-PR on val."""

log = logging.getLogger(__name__)

BUILDERS: dict[str, Callable[[ModelConfig, tuple[int, int, int]], keras.Model]] = {
    "classifier": build_classifier,
    "baseline": build_frame_baseline,
}
"""``--model`` -> how to build it: the ConvLSTM (``model.cell``) or the per-frame baseline."""


def require_validated(paths: PathsConfig) -> None:
    """Stop unless the last ``trailers validate`` passed."""
    verdict = read_json(paths.anomalies)
    if verdict is None:
        raise StageError(f"{paths.anomalies}: not found (run `trailers validate`)")
    if not verdict["passed"]:
        errors = [a for a in verdict["anomalies"] if a["severity"] == "ERROR"]
        named = "; ".join(f"{a['check']} {a['split']}/{a['feature']}" for a in errors[:3])
        more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
        raise StageError(f"the data failed validation ({named}{more}): see {paths.validate_report}")


def split_rows(rows: list[ShardRow], split: str, manifest: Path) -> list[ShardRow]:
    chosen = [row for row in rows if row.split == split]
    if not chosen:
        raise StageError(f"{manifest}: no {split} shards")
    return chosen


def decode_settings(config: Config, rows: list[ShardRow]) -> dict:
    """The sampling the model is trained on; predict must decode videos exactly so."""
    decode = config.decode
    settings = {
        "fps": decode.fps,
        "height": decode.height,
        "width": decode.width,
        "aspect": decode.aspect,
    }
    for row in rows:
        if (row.fps, row.height, row.width) != (decode.fps, decode.height, decode.width):
            raise StageError(
                f"{row.shard}: decoded at {row.fps} fps, {row.height}x{row.width}, but the "
                f"config says {decode.fps} fps, {decode.height}x{decode.width}: rerun decode"
            )
    return settings


def genre_loss(positive_frequency: float | None) -> keras.losses.Loss:
    """Binary cross-entropy; with a frequency, positives and negatives weigh equally overall.

    Focal cross-entropy with ``gamma=0`` and class balancing is exactly BCE with weight
    ``alpha`` on positives and ``1 - alpha`` on negatives: Keras' own pos_weight.
    """
    if positive_frequency is None:
        return keras.losses.BinaryCrossentropy()
    alpha = float(np.clip(1 - positive_frequency, 0.05, 0.95))
    return keras.losses.BinaryFocalCrossentropy(apply_class_balancing=True, alpha=alpha, gamma=0)


def compile_model(net: keras.Model, train: TrainConfig, frequencies: np.ndarray | None) -> None:
    net.compile(
        optimizer=keras.optimizers.Adam(train.learning_rate),
        loss={
            genre: genre_loss(None if frequencies is None else frequencies[index])
            for index, genre in enumerate(GENRES)
        },
        # Weighted: the padding that splits a batch evenly between replicas weighs nothing.
        weighted_metrics={
            genre: [
                keras.metrics.AUC(curve="PR", name="auc_pr"),
                keras.metrics.Precision(name="precision"),
                keras.metrics.Recall(name="recall"),
            ]
            for genre in GENRES
        },
        jit_compile=train.jit_compile,
    )


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


def read_history(path: Path) -> list[dict[str, float]]:
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return [{key: float(value) for key, value in row.items()} for row in csv.DictReader(handle)]


def training_callbacks(
    train: TrainConfig, out: Path, resuming: bool, task: ClusterTask | None = None
) -> list:
    """Macro metric, early stopping, best weights, history, MLflow, and resume-on-rerun.

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
            tracking.EpochMetricsLogger(),
        ]
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


def export_model(
    kind: str, config: Config, frame_shape: tuple[int, int, int], weights: list, path: Path
) -> None:
    """Save the weights in a fresh float32 build, so the file loads the same on any host."""
    keras.mixed_precision.set_global_policy("float32")
    model = BUILDERS[kind](config.model, frame_shape)
    model.set_weights(weights)
    with atomic_path(path, keep_suffix=True) as tmp:
        model.save(tmp)


def summary(history: list[dict[str, float]]) -> dict[str, float]:
    """The numbers ``dvc metrics show`` prints: the best epoch's, by :data:`MONITOR`."""
    best = max(history, key=lambda epoch: epoch[MONITOR])
    return {
        "epochs": len(history),
        "best_epoch": int(best["epoch"]) + 1,
        MONITOR: round(best[MONITOR], 4),
        "val_loss": round(best["val_loss"], 4),
    }


def read_rows(config: Config) -> tuple[list[ShardRow], list[ShardRow]]:
    """The manifest's train and val rows."""
    manifest = config.paths.manifest
    try:
        rows = read_manifest(manifest)
    except (FileNotFoundError, ManifestError) as exc:
        raise StageError(f"{manifest}: {exc} (run `trailers decode`)") from None
    return split_rows(rows, "train", manifest), split_rows(rows, "val", manifest)


def prepare(out: Path, resumable: bool = True) -> bool:
    """Whether a killed run left an epoch to resume from; if not (or not ``resumable``), clear
    its leftovers."""
    backup = out / "checkpoints" / "backup" / "training_metadata.json"
    resuming = resumable and backup.is_file()
    if not resuming:
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
        (out / "history.csv").unlink(missing_ok=True)
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    return resuming


def input_data(
    strategy: tf.distribute.Strategy,
    config: Config,
    rows: tuple[list[ShardRow], list[ShardRow]],
    task: ClusterTask | None,
) -> tuple:
    """The train and val input of ``fit``: whole batches split between the replicas of this
    process, or, on a cluster, each worker's own shard of every batch."""
    paths, train = config.paths, config.train
    train_rows, val_rows = rows
    if task is None:
        replicas = strategy.num_replicas_in_sync
        return (
            dataset.train_dataset(train_rows, paths.shards, train, config.seed, replicas=replicas),
            dataset.eval_dataset(val_rows, paths.shards, train, replicas=replicas),
        )

    def sharded(make: Callable[[dataset.Shard], tf.data.Dataset]):
        return strategy.distribute_datasets_from_function(
            lambda context: make(
                dataset.Shard(context.input_pipeline_id, context.num_input_pipelines)
            )
        )

    return (
        sharded(
            lambda shard: dataset.train_dataset(
                train_rows, paths.shards, train, config.seed, shard=shard
            )
        ),
        sharded(lambda shard: dataset.eval_dataset(val_rows, paths.shards, train, shard=shard)),
    )


def run(config: Config, model: str = "classifier") -> None:
    """Train ``model`` (classifier or baseline) and record the run in MLflow."""
    paths, train = config.paths, config.train
    require_validated(paths)
    rows = read_rows(config)
    settings = decode_settings(config, rows[0] + rows[1])
    task = cluster_task() if train.strategy == "multi_worker" else None
    if task is None or task.is_chief:
        tracking.require_reachable(tracking.tracking_uri(config.tracking))

    keras.utils.set_random_seed(config.seed)
    strategy = make_strategy(train)
    mixed = use_mixed_precision(train)
    log.info(
        "training the %s on %d replicas (%s), %s",
        model,
        strategy.num_replicas_in_sync,
        type(strategy).__name__,
        "mixed_float16" if mixed else "float32",
    )
    frame_shape = (rows[0][0].channels, rows[0][0].height, rows[0][0].width)
    frequencies = (
        dataset.positive_frequencies(rows[0], paths.shards) if train.positive_weights else None
    )
    with strategy.scope():
        net = BUILDERS[model](config.model, frame_shape)
        compile_model(net, train, frequencies)
    data = input_data(strategy, config, rows, task)
    if task is None or task.is_chief:
        tags = {
            **tracking.run_tags(strategy, mixed),
            "model": model,
            "workers": str(task.workers if task else 1),
        }
        train_and_record(config, model, net, (data, rows[0]), tags, settings, task)
    else:
        log.info(
            "worker %d of %d: global batch %d; the chief writes the model and the MLflow run",
            task.index,
            task.workers,
            train.batch_size * task.workers,
        )
        with tempfile.TemporaryDirectory(prefix="trailers-worker-") as scratch:
            fit(net, train, data, training_callbacks(train, Path(scratch), False, task))
    if task is not None:
        finish_together(strategy)


def finish_together(strategy: tf.distribute.Strategy) -> None:
    """Every worker's last step, an all-reduce: no worker exits while the chief still writes
    the model and logs it, which the chief's coordination service would report as a task
    failed by "heartbeat timeout". A chief that fails first leaves the others with an error."""
    strategy.reduce("SUM", strategy.run(lambda: tf.constant(1)), axis=None)


def fit(net: keras.Model, train: TrainConfig, data: tuple, callbacks: list) -> None:
    """``net.fit`` on ``data`` (train, val), then the best epoch's weights back into ``net``."""
    net.fit(
        data[0],
        validation_data=data[1],
        epochs=train.epochs,
        callbacks=callbacks,
        shuffle=False,  # the dataset shuffles, by seed
        verbose=0,
    )
    best = next(c for c in callbacks if isinstance(c, keras.callbacks.ModelCheckpoint))
    net.load_weights(best.filepath)


def train_and_record(
    config: Config,
    model: str,
    net: keras.Model,
    inputs: tuple[tuple, list[ShardRow]],
    tags: dict[str, str],
    settings: dict,
    task: ClusterTask | None,
) -> None:
    """Fit in an MLflow run, then write the model, its card, the metrics and the history.

    ``inputs``: ``fit``'s (train, val) data and the train rows they read.
    """
    paths, train = config.paths, config.train
    data, train_rows = inputs
    frame_shape = (train_rows[0].channels, train_rows[0].height, train_rows[0].width)
    out = paths.train_outputs(model)
    resuming = prepare(out, resumable=task is None)
    run_id_file = out / "checkpoints" / "mlflow_run_id"
    if resuming and run_id_file.is_file():
        tags["resumed_from"] = run_id_file.read_text().strip()
    with tracking.start_run(config, run_name=model, tags=tags) as mlflow_run:
        run_id_file.write_text(mlflow_run.info.run_id)
        tracking.log_dataset(paths.manifest, train_rows, "train")
        fit(net, train, data, training_callbacks(train, out, resuming, task))
        folder = paths.model(model)
        folder.mkdir(parents=True, exist_ok=True)
        export_model(model, config, frame_shape, net.get_weights(), folder / "model.keras")
        card = {
            "model": model,
            "cell": config.model.cell if model == "classifier" else None,
            "genres": list(GENRES),
            "frame_shape": list(frame_shape),
            "decode": settings,
            "mlflow_run_id": mlflow_run.info.run_id,
        }
        write_json(folder / "model.json", card)
        write_json(paths.metrics(f"train_{model}"), summary(read_history(out / "history.csv")))
        example = example_clip(train_rows, paths.shards)
        tracking.log_model(folder / "model.keras", frame_shape, settings, example)
        tracking.log_artifacts([paths.validate_report, paths.schema], "validate")
    shutil.rmtree(out / "checkpoints")


def example_clip(rows: list[ShardRow], shards_dir: Path) -> np.ndarray:
    """A few frames of the first train shard: the MLflow model's input example."""
    frames = np.load(shards_dir / rows[0].shard, mmap_mode="r", allow_pickle=False)
    return np.ascontiguousarray(frames[None, :4])
