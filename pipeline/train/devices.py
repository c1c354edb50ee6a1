"""Where training runs: the distribution strategy and the float policy, chosen from the config.

Nothing here runs at import: TensorFlow's runtime starts only when a strategy is made, after the
stage has read its config, so users (and tests) can configure devices first.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import keras
import tensorflow as tf
from tensorflow.python.eager import context
from tensorflow.tsl.protobuf.coordination_config_pb2 import CoordinatedJob

from pipeline.core.config import TrainConfig
from pipeline.core.errors import StageError

TRAINING_JOBS = ("chief", "worker")
"""The ``TF_CONFIG`` jobs that train; MultiWorkerMirroredStrategy has no parameter servers."""


def make_strategy(train: TrainConfig) -> tf.distribute.Strategy:
    """``train.strategy`` as a tf.distribute strategy.

    ``auto``: MirroredStrategy when more than one GPU is visible, else the default strategy.
    ``mirrored``: every GPU, or every logical CPU device on a host without a GPU.
    ``multi_worker``: MultiWorkerMirroredStrategy over the cluster that ``TF_CONFIG`` describes.
    """
    if train.strategy == "multi_worker":
        return multi_worker_strategy(train.cluster_heartbeat_s)
    gpus = tf.config.list_logical_devices("GPU")
    choice = train.strategy
    if choice == "auto":
        choice = "mirrored" if len(gpus) > 1 else "default"
    if choice == "default":
        return tf.distribute.get_strategy()
    if choice == "mirrored":
        if gpus:
            return tf.distribute.MirroredStrategy([gpu.name for gpu in gpus])
        # Collective all-reduce between logical CPUs can pair synchronized batch norm's
        # reductions with the gradients' and abort; reducing on one device keeps them apart.
        cpus = tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy(
            [cpu.name for cpu in cpus], cross_device_ops=tf.distribute.ReductionToOneDevice()
        )
    raise ValueError(f"unknown train.strategy {choice!r}")


def multi_worker_strategy(heartbeat_s: float) -> tf.distribute.Strategy:
    """The cluster of ``TF_CONFIG``, one replica per worker, whose coordination service gives a
    silent worker ``heartbeat_s`` seconds. Made before anything starts TensorFlow's runtime:
    collective ops and the coordination service can only be configured before it runs."""
    task = cluster_task()
    if task is None:
        raise StageError(
            "train.strategy: multi_worker needs TF_CONFIG (the cluster and this worker's task)"
        )
    context.context().configure_coordination_service(**coordination_service(task, heartbeat_s))
    strategy = KerasMultiWorkerStrategy()
    if strategy.num_replicas_in_sync != task.workers:
        raise StageError(
            f"train.strategy: multi_worker trains one replica per worker process, but "
            f"{task.workers} workers have {strategy.num_replicas_in_sync} devices: start one "
            "process per GPU (CUDA_VISIBLE_DEVICES)"
        )
    return strategy


@dataclass(frozen=True)
class ClusterTask:
    """This process's place in the ``TF_CONFIG`` cluster: its task, the number of workers (a
    ``chief`` task counts as one) and whether the cluster has a ``chief`` task."""

    task_type: str
    index: int
    workers: int
    has_chief: bool = False

    @property
    def is_chief(self) -> bool:
        """The one process that writes the model, the metrics and the MLflow run: the
        ``chief`` task, or worker 0 of a cluster without one."""
        if self.has_chief:
            return self.task_type == "chief"
        return self.index == 0


def cluster_task(environ: Mapping[str, str] = os.environ) -> ClusterTask | None:
    """``TF_CONFIG`` read and checked; None when it is not set. Stops with one line naming the
    key at fault, before TensorFlow would fail on it (or wait for a worker that never comes)."""
    if "TF_CONFIG" not in environ:
        return None
    try:
        spec = json.loads(environ["TF_CONFIG"])
    except json.JSONDecodeError as exc:
        raise StageError(f"TF_CONFIG is not valid JSON: {exc.msg}") from None
    cluster = spec.get("cluster") if isinstance(spec, dict) else None
    task = spec.get("task") if isinstance(spec, dict) else None
    if not isinstance(cluster, dict) or not cluster:
        raise StageError('TF_CONFIG: no "cluster" (e.g. {"worker": ["host:port", ...]})')
    for job, addresses in cluster.items():
        if not isinstance(addresses, list) or not all(isinstance(a, str) for a in addresses):
            raise StageError(f"TF_CONFIG: cluster.{job} must be a list of host:port addresses")
    unknown = sorted(set(cluster) - set(TRAINING_JOBS))
    if unknown:
        raise StageError(
            f"TF_CONFIG: cluster.{unknown[0]}: only {' and '.join(TRAINING_JOBS)} tasks train"
        )
    if len(cluster.get("chief", [])) > 1:
        raise StageError("TF_CONFIG: cluster.chief holds one address at most")
    if not isinstance(task, dict) or task.get("type") not in cluster:
        raise StageError(
            f"TF_CONFIG: task.type must be one of the cluster's jobs ({', '.join(cluster)}), "
            f"got {task.get('type') if isinstance(task, dict) else task!r}"
        )
    index = task.get("index", 0)
    if not isinstance(index, int) or not 0 <= index < len(cluster[task["type"]]):
        raise StageError(
            f"TF_CONFIG: task.index {index!r} is out of range for cluster.{task['type']} "
            f"({len(cluster[task['type']])} addresses)"
        )
    workers = sum(len(cluster.get(job, [])) for job in TRAINING_JOBS)
    return ClusterTask(task["type"], index, workers, has_chief=bool(cluster.get("chief")))


def coordination_service(task: ClusterTask, heartbeat_s: float) -> dict[str, Any]:
    """The coordination service MultiWorkerMirroredStrategy would configure by itself, but
    with ``heartbeat_s``: TensorFlow's default of 10 s fails a whole run when one busy host
    (say, two workers tracing on two cores) misses a heartbeat. No public API sets it, so this
    configures the eager context the way the strategy does; the strategy keeps a service it
    finds configured."""
    jobs = {"chief": int(task.has_chief), "worker": task.workers - int(task.has_chief)}
    return {
        "service_type": "standalone",
        "service_leader": f"/job:{'chief' if task.has_chief else 'worker'}/replica:0/task:0",
        "heartbeat_timeout_in_ms": round(heartbeat_s * 1000),
        "coordinated_jobs": [
            CoordinatedJob(name=job, num_tasks=count) for job, count in jobs.items() if count
        ],
    }


class KerasMultiWorkerStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """MultiWorkerMirroredStrategy with the two calls Keras 3's ``fit`` makes that it rejects.

    With the plain strategy TensorFlow 2.16 and Keras 3 fail in both (keras-team/keras#20585,
    open; tensorflow/tensorflow#72388, closed unfixed; ``tests/test_train_multiworker.py``
    checks that the first still fails, to say when this class can go):

    - before the first step Keras averages a whole input batch (a nest) across replicas only to
      read its shapes; the strategy cannot reduce a nest ("Attempt to convert a value
      (PerReplica ...) with an unsupported type"). This replica's batch has the shapes.
    - it averages each scalar log (loss, metrics) over ``axis=0`` ("Invalid reduction
      dimension 0 for input with 0 dimensions"); a scalar is averaged over the replicas only.

    Gradients, batch statistics and metric states are all-reduced by the strategy itself,
    untouched: both workers end with the same weights (the test checks it).
    """

    def reduce(self, reduce_op: str | tf.distribute.ReduceOp, value: Any, axis: int | None) -> Any:
        if tf.nest.is_nested(value):
            return tf.nest.map_structure(
                lambda part: self.experimental_local_results(part)[0], value
            )
        if axis is not None and self.experimental_local_results(value)[0].shape.rank == 0:
            axis = None
        return super().reduce(reduce_op, value, axis)


def use_mixed_precision(train: TrainConfig) -> bool:
    """Set Keras' global float policy from ``train.mixed_precision``; True if mixed_float16.

    ``auto`` turns it on only with a GPU; ``on`` without one is an error, because on CPU the
    channels_first convolution backprop has no float16 kernel.
    """
    has_gpu = bool(tf.config.list_physical_devices("GPU"))
    mixed = train.mixed_precision == "on" or (train.mixed_precision == "auto" and has_gpu)
    if mixed and not has_gpu:
        raise StageError("train.mixed_precision: on needs a GPU (use auto or off on a CPU host)")
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    return mixed


def finish_together(strategy: tf.distribute.Strategy) -> None:
    """Every worker's last step, an all-reduce: no worker exits while the chief still writes
    the model and logs it, which the chief's coordination service would report as a task
    failed by "heartbeat timeout". A chief that fails first leaves the others with an error."""
    strategy.reduce("SUM", strategy.run(lambda: tf.constant(1)), axis=None)
