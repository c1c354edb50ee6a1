"""The genre classifier: its contract (uint8 channels_first in, six per-frame probabilities out),
training, saving, mixed precision, and the frame baseline."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from pipeline.core.config import GENRES, load_config
from pipeline.model import CELLS, build_classifier, build_frame_baseline

pytestmark = pytest.mark.xdist_group("model_classifier")
"""Its module fixtures are built once: all its tests run in one xdist worker."""

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


MEMORY_MARGIN = 5e-4
"""How much changing the first frame must move the classifier's outputs two or more frames later
(measured: 1.8e-3 after the module's five training steps; exactly 0 for a ConvLSTM whose states
are zeroed before every step, the defect this catches)."""


def test_memory_what_time_adds_over_the_frame_baseline(trained):
    """Changing the first frame changes later outputs of the classifier, never the baseline's.

    From frame 2 on: with ``motion_input: difference`` frame 1's input holds frame 0 (its
    difference from it), so only the ConvLSTM's memory carries frame 0 further.
    """
    x = frames()
    changed = x.copy()
    changed[:, 0] = 255 - changed[:, 0]
    later = slice(2, None)
    recurrent = [stacked(trained.predict(v, verbose=0))[:, later] for v in (x, changed)]
    assert np.abs(recurrent[0] - recurrent[1]).max() > MEMORY_MARGIN
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


def test_frame_standardization_removes_brightness_and_contrast():
    """Each frame to zero mean and unit variance: a dimmed, low-contrast copy reads the same."""
    model = build_classifier(MODEL.model_copy(update={"frame_norm": "standardize"}), FRAME)
    standardize = keras.Model(model.input, model.get_layer("standardize").output)
    x = frames()
    dim = (x // 4 + 10).astype(np.uint8)
    dim[:, 0] = 7  # a uniform frame
    outputs = [np.asarray(standardize(v)) for v in (x, dim)]
    axes = tuple(range(2, outputs[0].ndim))
    np.testing.assert_allclose(outputs[0].mean(axis=axes), 0.0, atol=1e-5)
    np.testing.assert_allclose(outputs[0].std(axis=axes), 1.0, atol=1e-2)
    np.testing.assert_allclose(outputs[1][:, 1:], outputs[0][:, 1:], atol=0.05)
    np.testing.assert_array_equal(outputs[1][:, 0], 0.0)


def test_motion_input_difference_feeds_the_recurrent_model_only():
    config = MODEL.model_copy(update={"motion_input": "difference"})
    recurrent = build_classifier(config, FRAME)
    difference = recurrent.get_layer("frame_difference")
    assert difference.output.shape[difference.channel_axis] == 2 * FRAME[0]
    baseline = build_frame_baseline(config, FRAME)
    assert "frame_difference" not in [layer.name for layer in baseline.layers]


def test_cell_regularization_from_the_model_section_reaches_every_recurrent_layer():
    """The layers' own tests check what the rates do (tests/test_model_layers.py); here, that
    the ``model:`` keys reach every recurrent cell and a rebuilt model."""
    config = MODEL.model_copy(
        update={"cell_dropout": 0.2, "cell_recurrent_dropout": 0.3, "cell_l2": 1e-3}
    )
    model = build_classifier(config, FRAME)
    recurrent = [
        layer.cell
        for layer in model._flatten_layers()
        if hasattr(getattr(layer, "cell", None), "recurrent_kernel")
    ]
    assert len(recurrent) == len(MODEL.trunk_filters) + len(GENRES)
    for cell in recurrent:
        assert (cell.dropout, cell.recurrent_dropout) == (0.2, 0.3)
        assert cell.kernel_regularizer.get_config() == pytest.approx({"l2": 1e-3})
    assert len(model.losses) == 2 * len(recurrent)  # kernel and recurrent kernel, each
    assert type(model).from_config(model.get_config()).get_config() == model.get_config()
