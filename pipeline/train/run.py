"""``trailers train``: fit the ConvLSTM classifier, or the per-frame baseline, on the shards.

Reads the manifest and shards (train and val splits) and validate's verdict; writes the model's
folder ``models/<model>/`` (:mod:`pipeline.core.model_card`: the float32 network, which loads on
any host, and its card with the decode settings it was trained on),
``metrics/train_<model>.json`` (DVC metrics) and ``outputs/train/<model>/history.csv`` (one row
per epoch, DVC plots). Every run is an MLflow run; training never waits on its server: what
the server misses waits in ``outputs/train/<model>/mlflow-outbox/`` and is sent when it answers,
or by ``trailers train --sync`` (:mod:`pipeline.infra.tracking`). Exit 75: the outputs are
written, the MLflow run is not complete yet.

A killed run resumes from its last finished epoch, in the same MLflow run:
``outputs/train/<model>/checkpoints/`` holds it while the model trains and is removed once the
model and its records are written. A full disk stops the stage with one line naming the file;
the rerun resumes (a failed model write: with nothing left to train).

With ``train.strategy: multi_worker`` each worker is a process of the ``TF_CONFIG`` cluster and
reads its own shard of every batch; only the chief writes the outputs above and records the
MLflow run, the other workers keep their checkpoints in a temporary folder, deleted at the end.
A killed multi-worker run starts over.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from pipeline import GENRES
from pipeline.core import model_card
from pipeline.core.config import Config, ModelConfig, PathsConfig, TrainConfig, tracking_uri
from pipeline.core.errors import StageError
from pipeline.core.io import atomic_open, read_json, write_json
from pipeline.core.manifest import ManifestError, ShardRow, read_manifest
from pipeline.core.model_card import DecodeSettings, ModelCard, TrainingData
from pipeline.infra import tracking
from pipeline.model import build_classifier, build_frame_baseline, pyfunc
from pipeline.train import dataset
from pipeline.train.callbacks import (
    MONITOR,
    TRAILER_MONITOR,
    WholeBackup,
    read_history,
    training_callbacks,
)
from pipeline.train.devices import (
    ClusterTask,
    cluster_task,
    finish_together,
    make_strategy,
    use_mixed_precision,
)
from pipeline.train.losses import compile_model

log = logging.getLogger(__name__)

TRAINED_LEVELS = ("segment", "trailer")
"""The label levels of labelled trailers (a manifest row's ``label_level``; rows written before
it have none and were segment-labelled)."""

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


def decode_settings(config: Config, rows: list[ShardRow]) -> DecodeSettings:
    """The sampling the model is trained on; predict must decode videos exactly so."""
    settings = DecodeSettings.from_config(config.decode)
    settings.check_rows(rows, "the config says", "rerun decode")
    return settings


def export_model(config: Config, weights: list, card: ModelCard) -> None:
    """Write the model's folder: the weights in a fresh float32 build of the card's model and
    frame shape, so the file loads the same on any host, the training split's statistics
    (validate's) and the card."""
    keras.mixed_precision.set_global_policy("float32")
    model = BUILDERS[card.model](config.model, card.frame_shape)
    model.set_weights(weights)
    statistics = config.paths.statistics("train")
    model_card.write(
        config.paths.model(card.model),
        card,
        model.save,
        statistics if statistics.is_file() else None,
    )


def training_data(config: Config) -> TrainingData:
    """What the model is trained on: the corpus (the demo's when decode found every train video
    to be one ``trailers synth`` wrote, whatever the config says), the manifest's hash as its
    data version, and every split's trailers and hours."""
    manifest = config.paths.manifest
    corpus = str(config.decode.input_dir or config.paths.videos)
    version = tracking.manifest_digest(manifest)
    return TrainingData.from_rows(read_manifest(manifest), corpus, version)


def summary(history: list[dict[str, float]], monitor: str = MONITOR) -> dict[str, float]:
    """The numbers ``dvc metrics show`` prints: the best epoch's, by ``monitor``."""
    best = max(history, key=lambda epoch: epoch[monitor])
    return {
        "epochs": len(history),
        "best_epoch": int(best["epoch"]) + 1,
        monitor: round(best[monitor], 4),
        "val_loss": round(best["val_loss"], 4),
    }


def label_levels(rows: list[ShardRow]) -> dict[str, int]:
    """Trailers per label level (``segment``, ``trailer``) among ``rows``."""
    levels = {row.trailer_id: row.label_level or "segment" for row in rows}
    return {level: sum(1 for v in levels.values() if v == level) for level in TRAINED_LEVELS}


def monitored(val_rows: list[ShardRow]) -> str:
    """What early stopping watches: frame AUC-PR, or trailer AUC-PR when every val trailer is
    labelled at trailer level (its frame labels are then copies of the trailer's)."""
    return TRAILER_MONITOR if label_levels(val_rows)["segment"] == 0 else MONITOR


def labels_card(train: TrainConfig, train_rows: list[ShardRow]) -> dict[str, Any]:
    """The model card's and MLflow's record of how the labels were read."""
    return {
        "weak_labels": train.weak_labels,
        "mil_pooling": train.mil_pooling,
        "mil_top_fraction": train.mil_top_fraction,
        "train_trailers": label_levels(train_rows),
    }


def read_rows(config: Config) -> tuple[list[ShardRow], list[ShardRow]]:
    """The manifest's train and val rows."""
    manifest = config.paths.manifest
    try:
        rows = read_manifest(manifest)
    except (FileNotFoundError, ManifestError) as exc:
        raise StageError(f"{manifest}: {exc} (run `trailers decode`)") from None
    return split_rows(rows, "train", manifest), split_rows(rows, "val", manifest)


RESUMABLE_CHANGES = frozenset({"train.epochs", "train.parallel_reads", "train.eval_batch_size"})
"""Settings a killed run may be resumed with changed: how long it trains, how it reads."""


def backup_settings(config: Config) -> dict[str, str]:
    """What a killed run's backup holds only for: the seed, the model and training settings
    (but :data:`RESUMABLE_CHANGES`) and the shards (the manifest's hash), as strings."""
    settings = tracking.flatten_params(
        {
            "seed": config.seed,
            "model": config.model.model_dump(mode="json"),
            "train": config.train.model_dump(mode="json"),
        }
    )
    settings["shards"] = tracking.manifest_digest(config.paths.manifest)
    return {key: value for key, value in settings.items() if key not in RESUMABLE_CHANGES}


def check_backup(out: Path, settings: dict[str, str]) -> None:
    """Stop, naming what differs, if a killed run's backup in ``out`` was made with other
    ``settings`` (:func:`backup_settings`): its weights belong to another training."""
    backup = out / "checkpoints" / "backup"
    made_with = WholeBackup.settings_of(backup)
    if not made_with:  # no backup, or one from before backups recorded their settings
        return
    changed = sorted(
        key for key in made_with.keys() | settings.keys() if made_with.get(key) != settings.get(key)
    )
    if changed:
        named = "; ".join(
            f"{key}: {made_with.get(key, 'absent')} there, {settings.get(key, 'absent')} now"
            for key in changed[:3]
        )
        more = f" (+{len(changed) - 3} more)" if len(changed) > 3 else ""
        raise StageError(
            f"{backup}: the killed run's backup was made with other settings ({named}{more}); "
            f"restore them to resume it, or delete {out / 'checkpoints'} to start over"
        )


def resumed_epoch(out: Path) -> int:
    """The epoch a killed run resumes at: its last whole backup's (0: there is none)."""
    return WholeBackup.epoch(out / "checkpoints" / "backup")


def prepare(out: Path, resumable: bool = True) -> bool:
    """Whether a killed run left an epoch to resume from; if not (or not ``resumable``), clear
    its leftovers. The history keeps the epochs before it: one may have been written after
    the backup the run resumes from."""
    epoch = resumed_epoch(out) if resumable else 0
    if not epoch:
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
        (out / "history.csv").unlink(missing_ok=True)
    elif (out / "history.csv").is_file():
        lines = (out / "history.csv").read_bytes().splitlines(keepends=True)
        with atomic_open(out / "history.csv", "wb") as handle:
            handle.writelines(lines[: 1 + epoch])  # the header, then one row per epoch
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    return bool(epoch)


def input_data(
    strategy: tf.distribute.Strategy,
    config: Config,
    rows: tuple[list[ShardRow], list[ShardRow]],
    task: ClusterTask | None,
    first_epoch: int = 0,
) -> tuple:
    """The train and val input of ``fit``: whole batches split between the replicas of this
    process, or, on a cluster, each worker's own shard of every batch. ``first_epoch``: the
    epoch a killed run resumes at."""
    paths, train = config.paths, config.train
    train_rows, val_rows = rows
    if task is None:
        replicas = strategy.num_replicas_in_sync
        return (
            dataset.train_dataset(
                train_rows,
                paths.shards,
                train,
                config.seed,
                replicas=replicas,
                first_epoch=first_epoch,
            ),
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


def run(config: Config, model: str = "classifier", sync: bool = False) -> None:
    """Train ``model`` (classifier or baseline) and record the run in MLflow (``sync``: only
    send what earlier runs could not)."""
    if sync:
        return send_waiting_records(config, model)
    paths, train = config.paths, config.train
    require_validated(paths)
    rows = read_rows(config)
    settings = decode_settings(config, rows[0] + rows[1])
    task = cluster_task() if train.strategy == "multi_worker" else None
    if task is None:
        check_backup(paths.train_outputs(model), backup_settings(config))
    if task is None or task.is_chief:
        tracking.require_reachable(tracking_uri(config.tracking))

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
    weak = any(row.label_level == "trailer" for row in rows[0] + rows[1])
    with strategy.scope():
        net = BUILDERS[model](config.model, frame_shape)
        compile_model(
            net, train, frequencies, config.timeline.trailer_top_fraction if weak else None
        )
    first_epoch = resumed_epoch(paths.train_outputs(model)) if task is None else 0
    data = input_data(strategy, config, rows, task, first_epoch)
    if task is None or task.is_chief:
        tags = {
            **tracking.run_tags(strategy, mixed, config),
            "model": model,
            "workers": str(task.workers if task else 1),
        }
        train_and_record(config, model, net, (data, rows), tags, settings, task)
    else:
        log.info(
            "worker %d of %d: global batch %d; the chief writes the model and the MLflow run",
            task.index,
            task.workers,
            train.batch_size * task.workers,
        )
        with tempfile.TemporaryDirectory(prefix="trailers-worker-") as scratch:
            callbacks = training_callbacks(train, Path(scratch), False, task, monitored(rows[1]))
            fit(net, train, data, callbacks)
    if task is not None:
        finish_together(strategy)


def epoch_steps(data: tf.data.Dataset | tf.distribute.DistributedDataset) -> int:
    """Batches per epoch of a training dataset (its known length)."""
    cardinality = data.cardinality  # a method of a Dataset, a number of a distributed one
    return int(cardinality() if callable(cardinality) else cardinality)


def fit(net: keras.Model, train: TrainConfig, data: tuple, callbacks: list) -> None:
    """``net.fit`` on ``data`` (train, val), then the best epoch's weights back into ``net``.

    ``steps_per_epoch`` given, Keras opens the training dataset once per epoch; without it,
    Keras 3 opens it twice (the second opening, at each epoch's end, unused), and every
    opening draws the next epoch's plan (:func:`pipeline.train.dataset.train_dataset`): epoch
    ``k`` would read the plan of opening ``2k``, where a run resumed at ``k`` skips ``k``.
    """
    net.fit(
        data[0],
        validation_data=data[1],
        epochs=train.epochs,
        steps_per_epoch=epoch_steps(data[0]),
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
    inputs: tuple[tuple, tuple[list[ShardRow], list[ShardRow]]],
    tags: dict[str, str],
    settings: DecodeSettings,
    task: ClusterTask | None,
) -> None:
    """Fit in an MLflow run, then write the model, its card, the metrics and the history.

    ``inputs``: ``fit``'s (train, val) data and the (train, val) rows they read.
    """
    paths, train = config.paths, config.train
    data, (train_rows, val_rows) = inputs
    monitor = monitored(val_rows)
    frame_shape = (train_rows[0].channels, train_rows[0].height, train_rows[0].width)
    out = paths.train_outputs(model)
    resuming = prepare(out, resumable=task is None)
    run_id_file = out / "checkpoints" / "mlflow_run_id"
    resume = run_id_file.read_text().strip() if resuming and run_id_file.is_file() else None
    levels = label_levels(train_rows)
    tags |= {"monitor": monitor, "train_trailers": ", ".join(f"{n} {k}" for k, n in levels.items())}
    with tracking.recorded_run(
        config, run_name=model, tags=tags, folder=out / tracking.OUTBOX, resume=resume
    ) as record:
        run_id_file.write_text(record.run_id)
        if resume is None:
            record.log_dataset(paths.manifest, train_rows, "train")
        callbacks = training_callbacks(
            train, out, resuming, task, monitor, record.log_metrics, backup_settings(config)
        )
        fit(net, train, data, callbacks)
        card = ModelCard(
            model=model,
            cell=config.model.cell if model == "classifier" else None,
            genres=GENRES,
            frame_shape=frame_shape,
            decode=settings,
            mlflow_run_id=record.run_id,
            labels=labels_card(train, train_rows),
            trained_on=training_data(config),
        )
        export_model(config, net.get_weights(), card)
        history = read_history(out / "history.csv")
        write_json(paths.metrics(f"train_{model}"), summary(history, monitor))
        record.log_model(
            model_card.network_file(paths.model(model)),
            example_clip(train_rows, paths.shards),
            card_files=model_card.card_files(paths.model(model)),
            frame_shape=frame_shape,
            decode_settings=dataclasses.asdict(settings),
            python_model=pyfunc.__file__,
            keras_artifact=pyfunc.KERAS_ARTIFACT,
        )
        record.log_artifacts([paths.validate_report, paths.schema], "validate")
    shutil.rmtree(out / "checkpoints")
    tracking.report_complete(
        [record], "model and outputs written", f"trailers train --model {model} --sync"
    )


def send_waiting_records(config: Config, model: str) -> None:
    """``--sync``: send what the model's earlier runs could not."""
    lines = tracking.sync(config.paths.train_outputs(model) / tracking.OUTBOX, config.tracking)
    for line in lines or [f"MLflow: nothing of the {model}'s runs waits to be sent"]:
        log.info("%s", line)


def example_clip(rows: list[ShardRow], shards_dir: Path) -> np.ndarray:
    """A few frames of the first train shard: the MLflow model's input example."""
    frames = np.load(shards_dir / rows[0].shard, mmap_mode="r", allow_pickle=False)
    return np.ascontiguousarray(frames[None, :4])
