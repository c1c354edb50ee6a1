"""The recurrent layers: parity with keras.layers.ConvLSTM2D, carried state, shapes, saving."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from pipeline.model import (
    ConvLSTM,
    FrameDifference,
    FrameDifferenceCell,
    PeepholeConvLSTM,
    STConvLSTM,
)

FILTERS, CHANNELS, SIZE, STEPS, BATCH = 4, 3, 8, 6, 2
TOLERANCE = 1e-5
LAYERS = [ConvLSTM, PeepholeConvLSTM, STConvLSTM]


def sequences(data_format: str = "channels_first", steps: int = STEPS, seed: int = 0):
    rng = np.random.default_rng(seed)
    frame = (CHANNELS, SIZE, SIZE) if data_format == "channels_first" else (SIZE, SIZE, CHANNELS)
    return rng.normal(size=(BATCH, steps, *frame)).astype("float32")


def max_diff(actual, expected) -> float:
    return float(np.abs(np.asarray(actual) - np.asarray(expected)).max())


def keras_twin(data_format: str, compute_format: str | None = None, **kwargs):
    """A Keras ConvLSTM2D and our ConvLSTM with the same arguments and weights."""
    x = sequences(data_format)
    reference = keras.layers.ConvLSTM2D(FILTERS, 3, data_format=data_format, **kwargs)
    reference(x)
    ours = ConvLSTM(FILTERS, 3, data_format=data_format, compute_format=compute_format, **kwargs)
    ours.build(x.shape)
    ours.set_weights(reference.get_weights())
    return x, reference, ours


@pytest.mark.parametrize("compute_format", [None, "channels_first", "channels_last"])
@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_convlstm_matches_keras(data_format, compute_format):
    x, reference, ours = keras_twin(
        data_format, compute_format, padding="same", return_sequences=True
    )
    assert max_diff(ours(x), reference(x)) <= TOLERANCE


@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_convlstm_matches_keras_states_strides_and_valid_padding(data_format):
    x, reference, ours = keras_twin(data_format, strides=2, return_state=True)
    for actual, expected in zip(ours(x), reference(x), strict=True):
        assert actual.shape == expected.shape
        assert max_diff(actual, expected) <= TOLERANCE


def test_convlstm_matches_keras_backwards():
    x, reference, ours = keras_twin("channels_first", padding="same", go_backwards=True)
    assert max_diff(ours(x), reference(x)) <= TOLERANCE


@pytest.mark.parametrize("compute_format", ["channels_first", "channels_last"])
@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_dropout_draws_keras_masks_from_the_same_seed(data_format, compute_format):
    """Keras' variational dropout: one mask per gate for the inputs and one for the hidden
    state, drawn once per call; the same seed gives Keras' masks, so the same outputs."""
    rates = {"dropout": 0.3, "recurrent_dropout": 0.4, "seed": 7}
    x, reference, ours = keras_twin(
        data_format, compute_format, padding="same", return_sequences=True, **rates
    )
    ours(x)  # keras_twin called the reference once, and every call draws masks: so must ours
    trained = ours(x, training=True)
    assert max_diff(trained, reference(x, training=True)) <= TOLERANCE
    assert max_diff(ours(x), reference(x)) <= TOLERANCE  # inference: no dropout
    assert max_diff(trained, ours(x)) > 0.01
    assert max_diff(ours(x, training=True), trained) > 0.01  # new masks every call


@pytest.mark.parametrize("layer_class", LAYERS)
def test_dropout_in_our_layer_equals_the_cell_in_a_stock_rnn(layer_class):
    rates = {"dropout": 0.25, "recurrent_dropout": 0.25, "seed": 3, "padding": "same"}
    x = sequences()
    ours = layer_class(FILTERS, 3, return_sequences=True, **rates)
    ours.build(x.shape)
    stock = keras.layers.RNN(layer_class.cell_class(FILTERS, 3, **rates), return_sequences=True)
    stock.build(x.shape)
    stock.set_weights(ours.get_weights())
    assert max_diff(ours(x, training=True), stock(x, training=True)) <= TOLERANCE


def test_no_dropout_means_no_seed_generator_and_the_same_weights():
    """A model saved before dropout existed loads into today's layers: no extra variable."""
    plain = ConvLSTM(FILTERS, 3)
    plain.build(sequences().shape)
    assert not hasattr(plain.cell, "seed_generator")
    assert [v.path for v in plain.variables] == [v.path for v in plain.weights]


def test_regularizers_and_constraints_act_as_in_keras():
    """The same penalties in ``losses``, and after one SGD step the same constrained weights."""
    arguments = {
        "kernel_regularizer": keras.regularizers.L2(0.01),
        "recurrent_regularizer": keras.regularizers.L1(0.02),
        "bias_regularizer": keras.regularizers.L2(0.03),
        "kernel_constraint": keras.constraints.MaxNorm(0.5),
        "recurrent_constraint": keras.constraints.NonNeg(),
        "bias_constraint": keras.constraints.MinMaxNorm(0.0, 0.9),
    }
    x, reference, ours = keras_twin("channels_last", padding="same", **arguments)
    assert len(ours.losses) == len(reference.losses) == 3
    for actual, expected in zip(ours.losses, reference.losses, strict=True):
        assert max_diff(actual, expected) <= TOLERANCE
    for layer in (reference, ours):
        model = keras.Sequential([layer])
        model.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
        model.train_on_batch(x, np.ones_like(np.asarray(reference(x))))
    for actual, expected in zip(ours.get_weights(), reference.get_weights(), strict=True):
        assert max_diff(actual, expected) <= TOLERANCE
    assert (ours.get_weights()[1] >= 0).all()  # NonNeg held


@pytest.mark.parametrize("layer_class", LAYERS)
def test_chunks_with_initial_state_equal_the_whole_run(layer_class):
    x = sequences()
    layer = layer_class(FILTERS, 3, padding="same", return_sequences=True, return_state=True)
    whole, *_ = layer(x)
    first, *states = layer(x[:, :2])
    second, *_ = layer(x[:, 2:], initial_state=states)
    assert max_diff(np.concatenate([first, second], axis=1), whole) <= TOLERANCE


@pytest.mark.parametrize("layer_class", LAYERS)
def test_stateful_chunks_equal_the_whole_run_and_reset_restarts(layer_class):
    x = sequences()
    stateless = layer_class(FILTERS, 3, padding="same", return_sequences=True)
    whole = stateless(x)
    stateful = layer_class(FILTERS, 3, padding="same", return_sequences=True, stateful=True)
    stateful.build(x.shape)
    stateful.set_weights(stateless.get_weights())
    chunks = [stateful(x[:, start : start + 2]) for start in range(0, STEPS, 2)]
    assert max_diff(np.concatenate(chunks, axis=1), whole) <= TOLERANCE
    stateful.reset_state()
    assert max_diff(stateful(x[:, :2]), whole[:, :2]) <= TOLERANCE


@pytest.mark.parametrize("layer_class", LAYERS)
@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_output_shapes(layer_class, data_format):
    x = sequences(data_format)
    out_channels = 1 if layer_class is STConvLSTM else FILTERS
    frame = (
        (out_channels, SIZE, SIZE)
        if data_format == "channels_first"
        else (SIZE, SIZE, out_channels)
    )
    state = (FILTERS, SIZE, SIZE) if data_format == "channels_first" else (SIZE, SIZE, FILTERS)
    last = layer_class(FILTERS, 3, padding="same", data_format=data_format)
    assert last(x).shape == (BATCH, *frame)
    every = layer_class(FILTERS, 3, padding="same", data_format=data_format, return_sequences=True)
    assert every(x).shape == (BATCH, STEPS, *frame)
    with_state = layer_class(FILTERS, 3, padding="same", data_format=data_format, return_state=True)
    assert [t.shape for t in with_state(x)] == [(BATCH, *frame), (BATCH, *state), (BATCH, *state)]
    symbolic = every(keras.Input((None, *x.shape[2:])))
    assert symbolic.shape == (None, None, *frame)


@pytest.mark.parametrize("layer_class", LAYERS)
def test_save_and_load_round_trip(layer_class, tmp_path):
    """A .keras file loads with no custom_objects and gives the same outputs."""
    x = sequences(steps=3)
    frames = keras.Input((None, CHANNELS, SIZE, SIZE))
    layer = layer_class(FILTERS, (3, 3), padding="same", return_sequences=True, name="recurrent")
    model = keras.Model(frames, layer(frames))
    model.layers[-1].set_weights([w + 0.1 for w in model.layers[-1].get_weights()])
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.get_layer("recurrent")) is layer_class
    assert loaded.get_layer("recurrent").get_config() == layer.get_config()
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_config_holds_every_argument():
    layer = PeepholeConvLSTM(
        FILTERS,
        (3, 5),
        strides=2,
        padding="same",
        data_format="channels_last",
        dilation_rate=1,
        activation="relu",
        recurrent_activation="hard_sigmoid",
        use_bias=False,
        unit_forget_bias=False,
        kernel_regularizer="l2",
        recurrent_regularizer=keras.regularizers.L1(0.1),
        bias_regularizer="l1",
        kernel_constraint="max_norm",
        recurrent_constraint="non_neg",
        bias_constraint=keras.constraints.MinMaxNorm(0.0, 2.0),
        dropout=0.1,
        recurrent_dropout=0.2,
        seed=5,
        compute_format="channels_first",
        peephole_initializer="ones",
        return_sequences=True,
        return_state=True,
        go_backwards=True,
        stateful=True,
        name="peepholes",
    )
    config = layer.get_config()
    rebuilt = PeepholeConvLSTM.from_config(config)
    assert rebuilt.get_config() == config
    assert (rebuilt.strides, rebuilt.data_format, rebuilt.compute_layout) == (
        (2, 2),
        "channels_last",
        "channels_first",
    )
    assert (rebuilt.dropout, rebuilt.recurrent_dropout, rebuilt.seed) == (0.1, 0.2, 5)
    assert isinstance(rebuilt.recurrent_constraint, keras.constraints.NonNeg)
    assert rebuilt.recurrent_regularizer.get_config() == pytest.approx({"l1": 0.1})
    assert not ({"cell", "unroll"} & config.keys())


def test_masks_are_refused():
    layer = ConvLSTM(FILTERS, 3, padding="same")
    with pytest.raises(ValueError, match="masks are not supported"):
        layer(sequences(), mask=np.ones((BATCH, STEPS), dtype=bool))


@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_frame_difference_is_the_frame_and_its_change_in_one_pass_or_step_by_step(data_format):
    x = sequences(data_format)
    ours = np.asarray(FrameDifference(data_format)(x))
    stock = keras.layers.RNN(FrameDifferenceCell(data_format), return_sequences=True)(x)
    assert max_diff(ours, stock) == 0.0
    axis = 2 if data_format == "channels_first" else -1
    frames, change = np.split(ours, 2, axis=axis)
    np.testing.assert_array_equal(frames, x)
    np.testing.assert_array_equal(change[:, 0], 0.0)  # no frame before the first: no change
    assert max_diff(change[:, 1:], x[:, 1:] - x[:, :-1]) <= TOLERANCE


def test_frame_difference_carries_the_last_frame_between_stateful_chunks():
    x = sequences()
    whole = FrameDifference()(x)
    stateful = FrameDifference(stateful=True)
    chunks = [stateful(x[:, start : start + 4]) for start in range(0, STEPS, 4)]
    assert max_diff(np.concatenate(chunks, axis=1), whole) <= TOLERANCE
    stateful.reset_state()
    assert max_diff(stateful(x[:, 3:]), FrameDifference()(x[:, 3:])) == 0.0
    restored = FrameDifference.from_config(stateful.get_config())
    assert restored.stateful and restored.cell.data_format == "channels_first"
