"""One set of weights on any host, batch size and length: predict against an eager call, both
compute layouts, a file saved in one layout loaded in the other, and the streaming twin."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_model_classifier import FRAME, MODEL, stacked

from pipeline.model import (
    build_classifier,
    build_frame_baseline,
    forced_layout,
    reset_states,
    streaming_twin,
)

pytestmark = pytest.mark.xdist_group("model_portability")
"""Its module fixtures are built once: all its tests run in one xdist worker."""

TOLERANCE = 1e-5
LAYOUTS = ["channels_first", "channels_last"]


def clip(batch: int, steps: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (batch, steps, *FRAME), dtype=np.uint8)


def perturbed(model: keras.Model, seed: int = 0) -> keras.Model:
    """``model`` with noise on every kernel, so no output sits at its initial ~0.5."""
    rng = np.random.default_rng(seed)
    model.set_weights(
        [w + rng.normal(0, 0.1, w.shape) if w.ndim > 1 else w for w in model.get_weights()]
    )
    return model


def classifier(cell: str = "convlstm", motion_input: str | None = None, **kwargs) -> keras.Model:
    """The smoke config's classifier (its ``motion_input`` unless given), weights perturbed."""
    keras.utils.set_random_seed(0)
    config = MODEL.model_copy(
        update={"cell": cell, "motion_input": motion_input or MODEL.motion_input}
    )
    return perturbed(build_classifier(config, FRAME, **kwargs))


@pytest.fixture(scope="module")
def model() -> keras.Model:
    return classifier()


def eager(model: keras.Model, x: np.ndarray) -> np.ndarray:
    return stacked(model(x, training=False))


@pytest.mark.parametrize("steps", [1, 7, 64])
@pytest.mark.parametrize("batch", [1, 2, 3])
def test_predict_equals_an_eager_call_for_any_batch_and_length(model, batch, steps):
    x = clip(batch, steps)
    expected = eager(model, x)
    assert expected.shape == (batch, steps, 6)
    np.testing.assert_allclose(stacked(model.predict(x, verbose=0)), expected, atol=TOLERANCE)


@pytest.mark.parametrize("steps", [1, 7])
def test_predict_on_batch_and_tf_function_take_one_trailer(model, steps):
    x = clip(1, steps)
    expected = eager(model, x)
    np.testing.assert_allclose(stacked(model.predict_on_batch(x)), expected, atol=TOLERANCE)
    traced = tf.function(lambda frames: model(frames, training=False))
    np.testing.assert_allclose(stacked(traced(tf.constant(x))), expected, atol=TOLERANCE)
    relaxed = tf.function(
        lambda frames: model(frames, training=False),
        input_signature=[tf.TensorSpec((None, None, *FRAME), tf.uint8)],
    )
    np.testing.assert_allclose(stacked(relaxed(x)), expected, atol=TOLERANCE)


@pytest.mark.parametrize("cell", ["convlstm", "peephole", "st_clstm"])
def test_weights_mean_the_same_in_both_layouts(cell):
    """Weights copied between a channels_first- and a channels_last-built model: same outputs."""
    first = classifier(cell, compute_format="channels_first")
    last = build_classifier(MODEL.model_copy(update={"cell": cell}), FRAME, compute_format=None)
    assert (first.compute_layout, last.compute_layout) == tuple(LAYOUTS)
    assert last.get_layer("trunk_1").compute_layout == "channels_last"
    x = clip(2, 5)
    untrained = eager(last, x)
    last.set_weights(first.get_weights())
    expected = eager(first, x)
    assert np.abs(untrained - expected).max() > 1e-3  # the copy is what makes them equal
    np.testing.assert_allclose(eager(last, x), expected, atol=TOLERANCE)


@pytest.mark.parametrize(("saved_in", "loaded_in"), [LAYOUTS, LAYOUTS[::-1]])
def test_a_file_saved_in_one_layout_loads_and_runs_in_the_other(saved_in, loaded_in, tmp_path):
    original = classifier(compute_format=saved_in)
    path = tmp_path / "classifier.keras"
    original.save(path)
    with forced_layout(loaded_in):
        loaded = keras.saving.load_model(path)
    assert loaded.compute_layout == loaded_in
    assert loaded.get_layer("trunk_2").cell.compute_layout == loaded_in
    x = clip(1, 7)
    np.testing.assert_allclose(eager(loaded, x), eager(original, x), atol=TOLERANCE)
    assert "channels_" not in str(loaded.get_config())


@pytest.mark.slow
@pytest.mark.parametrize(
    ("cell", "motion_input"),
    [("convlstm", "none"), ("st_clstm", "none"), ("convlstm", "difference")],
)
def test_the_streaming_twin_fed_chunks_of_5_equals_the_whole_trailer(cell, motion_input):
    original = classifier(cell, motion_input=motion_input)
    trailer = clip(1, 23, seed=4)
    whole = stacked(original.predict(trailer, verbose=0))
    twin = streaming_twin(original, batch_size=1)
    assert twin.get_layer("trunk_1").stateful and twin.input.shape[0] == 1
    for _ in range(2):  # a second trailer after reset_states starts afresh
        chunks = [
            stacked(twin.predict(trailer[:, start : start + 5], verbose=0))
            for start in range(0, trailer.shape[1], 5)
        ]
        np.testing.assert_allclose(np.concatenate(chunks, axis=1), whole, atol=TOLERANCE)
        reset_states(twin)


def test_the_streaming_twin_of_a_frame_baseline_is_refused():
    with pytest.raises(TypeError, match="needs a recurrent GenreClassifier"):
        streaming_twin(build_frame_baseline(MODEL, FRAME))
