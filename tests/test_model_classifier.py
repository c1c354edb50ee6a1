"""The genre classifier: its contract (uint8 channels_first in, six per-frame probabilities out),
training, streaming a trailer in chunks, saving, mixed precision, and several replicas."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from pipeline.config import GENRES, load_config
from pipeline.model import CELLS, build_classifier, build_frame_baseline, reset_states

ROOT = Path(__file__).resolve().parent.parent
MODEL = load_config(ROOT / "configs" / "smoke.yaml").model
FRAME = (3, 16, 16)
BATCH, STEPS = 2, 6


def frames(steps: int = STEPS, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (BATCH, steps, *FRAME), dtype=np.uint8)


def labels(steps: int = STEPS, seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {genre: rng.integers(0, 2, (BATCH, steps, 1)).astype("float32") for genre in GENRES}


def stacked(outputs: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([outputs[genre] for genre in GENRES], axis=-1)


@pytest.fixture(scope="module")
def training() -> tuple[keras.Model, list[float]]:
    """The smoke-config ConvLSTM classifier after five steps on one batch, and its losses."""
    keras.utils.set_random_seed(0)
    model = build_classifier(MODEL, FRAME)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="binary_crossentropy")
    losses = [model.train_on_batch(frames(), labels())[0] for _ in range(5)]
    return model, losses


@pytest.fixture(scope="module")
def trained(training) -> keras.Model:
    return training[0]


def test_contract_uint8_frames_in_six_float32_probabilities_per_frame_out(trained):
    assert trained.input.dtype == "uint8"
    assert trained.input.shape == (None, None, *FRAME)
    assert list(trained.output) == list(GENRES)
    for steps in (3, 7):
        outputs = trained.predict(frames(steps), verbose=0)
        assert list(outputs) == list(GENRES)
        for probabilities in outputs.values():
            assert probabilities.shape == (BATCH, steps, 1)
            assert probabilities.dtype == np.float32
            assert ((probabilities >= 0) & (probabilities <= 1)).all()


def test_training_lowers_the_loss_on_a_batch(training):
    _, losses = training
    assert np.isfinite(losses).all()
    assert losses[-1] < losses[0]


def test_streaming_a_trailer_in_chunks_equals_one_pass(trained):
    whole = stacked(trained.predict(frames(), verbose=0))
    streaming = build_classifier(MODEL, FRAME, stateful=True, batch_size=BATCH)
    streaming.set_weights(trained.get_weights())
    chunks = [
        stacked(streaming.predict(frames()[:, start : start + 2], verbose=0))
        for start in range(0, STEPS, 2)
    ]
    np.testing.assert_allclose(np.concatenate(chunks, axis=1), whole, atol=1e-5)
    reset_states(streaming)
    again = stacked(streaming.predict(frames()[:, :2], verbose=0))
    np.testing.assert_allclose(again, whole[:, :2], atol=1e-5)


def test_save_and_load_round_trip(trained, tmp_path):
    path = tmp_path / "classifier.keras"
    trained.save(path)
    loaded = keras.saving.load_model(path)
    x = frames(4)
    np.testing.assert_array_equal(
        stacked(loaded.predict(x, verbose=0)), stacked(trained.predict(x, verbose=0))
    )


@pytest.mark.parametrize("cell", ["peephole", "st_clstm"])
def test_every_cell_builds_the_same_heads(cell):
    model = build_classifier(MODEL.model_copy(update={"cell": cell}), FRAME)
    assert type(model.get_layer("trunk_1")) is CELLS[cell]
    assert model.get_layer("comedy_branch").output.shape[-1] == MODEL.branch_filters
    outputs = model.predict(frames(3), verbose=0)
    assert [o.shape for o in outputs.values()] == [(BATCH, 3, 1)] * len(GENRES)


def test_channels_first_compute_gives_the_same_shapes():
    model = build_classifier(MODEL, FRAME, compute_format="channels_first")
    assert model.get_layer("trunk_1").data_format == "channels_first"
    assert all(layer.name != "to_channels_last" for layer in model.layers)
    outputs = model.predict(frames(3), verbose=0)
    assert [o.shape for o in outputs.values()] == [(BATCH, 3, 1)] * len(GENRES)


def test_memory_what_time_adds_over_the_frame_baseline(trained):
    """Changing the first frame changes later outputs of the classifier, never the baseline's."""
    x = frames()
    changed = x.copy()
    changed[:, 0] = 255 - changed[:, 0]
    later = slice(1, None)
    recurrent = [stacked(trained.predict(v, verbose=0))[:, later] for v in (x, changed)]
    assert np.abs(recurrent[0] - recurrent[1]).max() > 1e-6
    baseline = build_frame_baseline(MODEL, FRAME)
    per_frame = [stacked(baseline.predict(v, verbose=0))[:, later] for v in (x, changed)]
    np.testing.assert_array_equal(per_frame[0], per_frame[1])
    assert list(baseline.output) == list(GENRES)


def test_mixed_precision_keeps_outputs_float32():
    """On CPU the mixed policy is bfloat16 (TF has no float16 MaxPool3D kernel on CPU)."""
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_classifier(MODEL, FRAME)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.get_layer("trunk_1").compute_dtype == "bfloat16"
    assert model.get_layer("trunk_1").cell.kernel.dtype == "float32"
    for genre, probabilities in model.predict(frames(3), verbose=0).items():
        assert model.get_layer(genre).compute_dtype == "float32"
        assert probabilities.dtype == np.float32


def test_stateful_needs_a_batch_size():
    with pytest.raises(ValueError, match="stateful classifier needs a fixed batch_size"):
        build_classifier(MODEL, FRAME, stateful=True)


MIRRORED = """
import json
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from pipeline import GENRES
from pipeline.config import load_config
from pipeline.model import build_classifier
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    model = build_classifier(load_config("configs/smoke.yaml").model, (3, 16, 16))
    model.compile(optimizer="adam", loss="binary_crossentropy")
rng = np.random.default_rng(0)
frames = rng.integers(0, 256, (4, 3, 3, 16, 16), dtype=np.uint8)
labels = {g: rng.integers(0, 2, (4, 3, 1)).astype("float32") for g in GENRES}
before = [np.array(w) for w in model.trainable_weights]
loss = model.fit(frames, labels, batch_size=4, verbose=0).history["loss"][0]
moved = sum(not np.array_equal(b, np.array(w)) for b, w in zip(before, model.trainable_weights))
print(json.dumps({"replicas": strategy.num_replicas_in_sync, "loss": loss, "moved": moved,
                  "trainable": len(before)}))
"""


@pytest.mark.slow
def test_trains_with_mirrored_strategy_over_two_devices():
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(
        [sys.executable, "-c", MIRRORED],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["replicas"] == 2
    assert np.isfinite(result["loss"])
    assert result["moved"] == result["trainable"]
