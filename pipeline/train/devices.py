"""Where training runs: the distribution strategy and the float policy, chosen from the config.

Nothing here runs at import: TensorFlow's runtime starts only when a strategy is made, after the
stage has read its config, so users (and tests) can configure devices first.
"""

from __future__ import annotations

import json
import os

import keras
import tensorflow as tf

from pipeline.config import TrainConfig
from pipeline.errors import StageError


def make_strategy(train: TrainConfig) -> tf.distribute.Strategy:
    """``train.strategy`` as a tf.distribute strategy.

    ``auto``: MirroredStrategy when more than one GPU is visible, else the default strategy.
    ``mirrored``: every GPU, or every logical CPU device on a host without a GPU.
    ``multi_worker``: MultiWorkerMirroredStrategy over the cluster that ``TF_CONFIG`` describes.
    """
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
    if "TF_CONFIG" not in os.environ:
        raise StageError(
            "train.strategy: multi_worker needs TF_CONFIG (the cluster and this worker's task)"
        )
    try:
        json.loads(os.environ["TF_CONFIG"])
    except json.JSONDecodeError as exc:
        raise StageError(f"TF_CONFIG is not valid JSON: {exc.msg}") from None
    return tf.distribute.MultiWorkerMirroredStrategy()


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
