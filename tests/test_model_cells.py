"""The cells' maths and weights: Keras' layout, peepholes, and ST-CLSTM's published summary."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from pipeline.model import (
    ConvLSTM,
    ConvLSTMCell,
    PeepholeConvLSTM,
    PeepholeConvLSTMCell,
    STConvLSTM,
    STConvLSTMCell,
)

FILTERS, CHANNELS, SIZE, STEPS = 4, 3, 8, 5


def sequences(data_format: str = "channels_first", seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    frame = (CHANNELS, SIZE, SIZE) if data_format == "channels_first" else (SIZE, SIZE, CHANNELS)
    return rng.normal(size=(2, STEPS, *frame)).astype("float32")


def test_st_clstm_reproduces_the_published_summary():
    """The article: 8 filters, kernel 3 on (None, None, 256, 256, 3) -> 9,914 params."""
    frames = keras.Input((None, 256, 256, 3))
    layer = STConvLSTM(
        8,
        3,
        padding="same",
        data_format="channels_last",
        activation="tanh",
        recurrent_activation="hard_sigmoid",
        return_sequences=True,
    )
    model = keras.Model(frames, layer(frames))
    assert model.output_shape == (None, None, 256, 256, 1)
    assert model.count_params() == 9_914
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == 9_870
    assert model.count_params() - trainable == 44


@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
def test_weight_shapes_follow_keras_layout(data_format):
    x = sequences(data_format)
    plain = ConvLSTM(FILTERS, 3, padding="same", data_format=data_format)
    plain(x)
    kernel, recurrent, bias = plain.get_weights()
    assert kernel.shape == (3, 3, CHANNELS, 4 * FILTERS)
    assert recurrent.shape == (3, 3, FILTERS, 4 * FILTERS)
    expected_bias = np.r_[np.zeros(FILTERS), np.ones(FILTERS), np.zeros(2 * FILTERS)]
    np.testing.assert_array_equal(bias, expected_bias)

    peephole = PeepholeConvLSTM(FILTERS, 3, strides=2, padding="same", data_format=data_format)
    peephole(x)
    assert [w.shape for w in peephole.get_weights()[3:]] == [(SIZE // 2, SIZE // 2, FILTERS)] * 3

    st = STConvLSTM(FILTERS, 3, padding="same", data_format=data_format)
    st(x)
    gates = 3 * FILTERS + CHANNELS
    assert st.cell.kernel.shape == (3, 3, CHANNELS, gates)
    assert st.cell.recurrent_kernel.shape == (3, 3, FILTERS, gates)
    assert st.cell.bias.shape == (gates,)


def test_peephole_with_zero_peepholes_equals_convlstm():
    x = sequences()
    keras.utils.set_random_seed(1)
    plain = ConvLSTM(FILTERS, 3, padding="same", return_sequences=True)
    expected = plain(x)
    peephole = PeepholeConvLSTM(FILTERS, 3, padding="same", return_sequences=True)
    peephole.build(x.shape)
    peephole.set_weights(plain.get_weights() + [np.zeros((SIZE, SIZE, FILTERS))] * 3)
    np.testing.assert_allclose(peephole(x), expected, atol=1e-6)

    peephole.cell.forget_peephole.assign(np.full((SIZE, SIZE, FILTERS), 0.5))
    assert np.abs(np.asarray(peephole(x)) - np.asarray(expected)).max() > 1e-3


@pytest.mark.parametrize("compute_format", ["channels_first", "channels_last"])
def test_peephole_weights_mean_the_same_in_both_compute_layouts(compute_format):
    """Peephole weights are stored (rows, cols, filters) whatever layout the maths runs in."""
    x = sequences()
    keras.utils.set_random_seed(2)
    kwargs = {"padding": "same", "return_sequences": True, "peephole_initializer": "normal"}
    reference = PeepholeConvLSTM(FILTERS, 3, compute_format="channels_last", **kwargs)
    expected = reference(x)
    other = PeepholeConvLSTM(FILTERS, 3, compute_format=compute_format, **kwargs)
    other.build(x.shape)
    other.set_weights(reference.get_weights())
    np.testing.assert_allclose(other(x), expected, atol=1e-5)


CELL_LAYERS = [
    (ConvLSTMCell, ConvLSTM),
    (PeepholeConvLSTMCell, PeepholeConvLSTM),
    (STConvLSTMCell, STConvLSTM),
]


@pytest.mark.parametrize("compute_format", ["channels_first", "channels_last"])
@pytest.mark.parametrize("data_format", ["channels_first", "channels_last"])
@pytest.mark.parametrize(("cell_class", "layer_class"), CELL_LAYERS)
def test_a_cell_in_a_stock_keras_rnn_equals_our_layer(
    cell_class, layer_class, data_format, compute_format
):
    """The cell's call is a whole step on raw inputs: keras.layers.RNN runs it unchanged."""
    x = sequences(data_format)
    keras.utils.set_random_seed(3)
    kwargs = {"padding": "same", "data_format": data_format, "compute_format": compute_format}
    if cell_class is PeepholeConvLSTMCell:
        kwargs["peephole_initializer"] = "normal"
    ours = layer_class(FILTERS, 3, return_sequences=True, return_state=True, **kwargs)
    expected = ours(x)
    stock = keras.layers.RNN(
        cell_class(FILTERS, 3, **kwargs), return_sequences=True, return_state=True
    )
    stock.build(x.shape)
    stock.set_weights(ours.get_weights())
    actual = stock(x)
    assert len(actual) == len(expected) == 3
    for got, want in zip(actual, expected, strict=True):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_st_clstm_outputs_differ_from_its_states():
    x = sequences("channels_last")
    layer = STConvLSTM(
        FILTERS, 3, padding="same", data_format="channels_last", return_state=True, output_filters=2
    )
    output, state, carry = layer(x)
    assert output.shape == (2, SIZE, SIZE, 2)
    assert state.shape == carry.shape == (2, SIZE, SIZE, FILTERS)


def test_st_clstm_batch_norm_learns_inside_the_time_loop():
    x = sequences("channels_last")
    layer = STConvLSTM(FILTERS, 3, padding="same", data_format="channels_last")
    layer(x)
    norm = layer.cell.refine.blocks[0][1]
    before = np.asarray(norm.moving_mean).copy()
    layer(x, training=True)
    assert np.abs(np.asarray(norm.moving_mean) - before).max() > 0


@pytest.mark.parametrize("cell_class", [ConvLSTMCell, PeepholeConvLSTMCell, STConvLSTMCell])
def test_cell_config_round_trips(cell_class):
    cell = cell_class(FILTERS, (3, 5), padding="same", recurrent_activation="hard_sigmoid")
    config = cell.get_config()
    assert cell_class.from_config(config).get_config() == config
    assert config["kernel_size"] == (3, 5)
    assert config["compute_format"] is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"data_format": "NCHW"}, "data_format='NCHW'"),
        ({"compute_format": "nhwc"}, "compute_format='nhwc'"),
        ({"padding": "causal"}, "padding='causal'"),
        ({"kernel_size": 0}, "kernel_size must be a positive int"),
        ({"strides": 2, "dilation_rate": 2}, "strides=(2, 2), dilation_rate=(2, 2)"),
        ({"dropout": 1.0}, "dropout=1.0"),
        ({"recurrent_dropout": -0.1}, "recurrent_dropout=-0.1"),
    ],
)
def test_bad_arguments_quote_the_value(kwargs, message):
    arguments = {"filters": FILTERS, "kernel_size": 3, **kwargs}
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ConvLSTMCell(**arguments)


def test_unknown_frame_size_fails_at_build():
    with pytest.raises(ValueError, match=r"static 2D frames .* input_shape=\(None, 3, None, 8\)"):
        ConvLSTM(FILTERS, 3)(keras.Input((None, 3, None, 8)))
