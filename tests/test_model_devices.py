"""Devices: configuring them after importing the model, and training on two replicas as on one.

Each test runs in its own Python process: TensorFlow's device setup happens once per process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent

CONFIGURE_AFTER_IMPORT = """
import json
import tensorflow as tf
import pipeline.model
from pipeline.model import ConvLSTM, PeepholeConvLSTM, STConvLSTM, resolve_compute_format

layers = [cls(4, 3, padding="same") for cls in (ConvLSTM, PeepholeConvLSTM, STConvLSTM)]
layout = resolve_compute_format(None, "channels_first")
for gpu in tf.config.list_physical_devices("GPU"):
    tf.config.experimental.set_memory_growth(gpu, True)
tf.config.set_visible_devices(tf.config.list_physical_devices())
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
outputs = layers[0](tf.zeros((1, 2, 3, 8, 8)))
result = {"layout": layout, "logical_cpus": len(tf.config.list_logical_devices("CPU"))}
try:  # the control: once the runtime runs, the same call must fail
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()])
    result["refused_after_start"] = False
except RuntimeError:
    result["refused_after_start"] = True
print(json.dumps(result))
"""

ONE_STEP_ON_ONE_AND_TWO_REPLICAS = """
import json
import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from pipeline import GENRES
from pipeline.core.config import load_config
from pipeline.model import build_classifier

smoke = load_config("configs/smoke.yaml").model
rng = np.random.default_rng(0)
frames = rng.integers(0, 256, (4, 2, 3, 8, 8), dtype=np.uint8)
labels = {genre: rng.integers(0, 2, (4, 2, 1)).astype("float32") for genre in GENRES}


def one_step(config, strategy, initial, eagerly):
    with strategy.scope():
        model = build_classifier(config, (3, 8, 8))
        model.compile(
            optimizer=keras.optimizers.SGD(0.5), loss="binary_crossentropy", run_eagerly=eagerly
        )
    model.set_weights(initial)
    model.fit(frames, labels, batch_size=4, epochs=1, shuffle=False, verbose=0)
    return model.get_weights()


result = {}
for batch_norm in ("synchronized", "per_replica"):
    config = smoke.model_copy(update={"dropout": 0.0, "batch_norm": batch_norm})
    keras.utils.set_random_seed(0)
    initial = build_classifier(config, (3, 8, 8)).get_weights()
    # The claim (synchronized) runs as fit runs for users, traced; the control that shows the
    # check bites (per_replica) runs eagerly: the same step's maths, a quarter of the time.
    eagerly = batch_norm == "per_replica"
    one = one_step(config, tf.distribute.OneDeviceStrategy("/cpu:0"), initial, eagerly)
    # ReductionToOneDevice: with the default collective all-reduce, two logical CPUs may launch
    # batch norm's and the gradients' all-reduces in different orders and abort.
    mirrored = tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice()
    )
    two = one_step(config, mirrored, initial, eagerly)
    result[batch_norm] = {
        "moved": min(float(np.abs(a - b).max()) for a, b in zip(one, initial) if a.ndim > 1),
        "difference": max(float(np.abs(a - b).max()) for a, b in zip(one, two)),
        "allclose": all(np.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(one, two)),
    }
print(json.dumps(result))
"""


def run_python(script: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONHASHSEED": "0"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_devices_can_be_configured_after_importing_the_model_and_making_layers():
    result = run_python(CONFIGURE_AFTER_IMPORT)
    assert result["layout"] in ("channels_first", "channels_last")
    assert result["logical_cpus"] == 2
    assert result["refused_after_start"]


@pytest.mark.slow
def test_one_sgd_step_on_two_replicas_equals_one_step_on_one_device():
    """From the same weights and global batch (dropout 0), MirroredStrategy over two logical
    CPUs lands on the single-device weights with synchronized batch norm; per-replica batch
    statistics (each replica normalising half the batch) do not, which shows the check bites."""
    result = run_python(ONE_STEP_ON_ONE_AND_TWO_REPLICAS)
    synchronized, per_replica = result["synchronized"], result["per_replica"]
    assert synchronized["moved"] > 0 and per_replica["moved"] > 0
    assert synchronized["allclose"], synchronized
    assert not per_replica["allclose"], per_replica
    assert per_replica["difference"] > 100 * synchronized["difference"]
    assert np.isfinite([synchronized["difference"], per_replica["difference"]]).all()
