"""The per-frame genre classifier: a shared ConvLSTM trunk and one branch per genre.

``frames`` uint8 ``(batch, time, 3, rows, cols)`` -> ``{genre: (batch, time, 1)}`` sigmoid
probabilities, one per frame, for every genre of :data:`pipeline.GENRES`. The uint8 frames
cross to the device and are scaled to [0, 1] inside the model. The time axis is free, so a
stateful model (``stateful=True``, fixed batch) can take a long trailer in chunks; call
:func:`reset_states` between trailers.

The network computes in one layout chosen when it is built (``compute_format``; by default
channels_last on a CPU-only host, channels_first with a GPU): on CPU the channels_first frames
are transposed once, at the model's edge, while still uint8.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import keras

from pipeline import GENRES
from pipeline.config import ModelConfig
from pipeline.model.cells import resolve_compute_format, standardize_format
from pipeline.model.layers import ConvLSTM, ConvRNN2D, PeepholeConvLSTM, STConvLSTM

__all__ = [
    "CELLS",
    "build_classifier",
    "build_frame_baseline",
    "build_network",
    "reset_states",
]

CELLS: dict[str, type[ConvRNN2D]] = {
    "convlstm": ConvLSTM,
    "peephole": PeepholeConvLSTM,
    "st_clstm": STConvLSTM,
}
"""``model.cell`` -> the recurrent layer it builds."""

Block = Callable[[int, str], keras.layers.Layer]
"""``block(filters, name)``: the layer that turns a ``(batch, time, frame)`` sequence into one
with ``filters`` channels per frame (a recurrent layer, or a per-frame convolution)."""


def build_network(
    x, model_config: ModelConfig, block: Block, data_format: str
) -> dict[str, keras.KerasTensor]:
    """The trunk and the genre branches on a float ``(batch, time, frame)`` tensor ``x``.

    Trunk: ``block`` + BatchNormalization + spatial max pooling per entry of
    ``trunk_filters``. Each genre: ``block`` (``branch_filters``), pooling, per-frame flatten,
    two ReLU Dense layers, dropout and a float32 1-unit sigmoid Dense named after the genre.
    """
    channel_axis = 2 if data_format == "channels_first" else -1
    pool = (1, model_config.pool_size, model_config.pool_size)
    for index, filters in enumerate(model_config.trunk_filters, start=1):
        x = block(filters, f"trunk_{index}")(x)
        x = keras.layers.BatchNormalization(axis=channel_axis, name=f"trunk_{index}_bn")(x)
        x = keras.layers.MaxPooling3D(pool, data_format=data_format, name=f"trunk_{index}_pool")(x)
    outputs = {}
    for genre in GENRES:
        y = block(model_config.branch_filters, f"{genre}_branch")(x)
        y = keras.layers.MaxPooling3D(pool, data_format=data_format, name=f"{genre}_pool")(y)
        y = keras.layers.Reshape((-1, _frame_size(y)), name=f"{genre}_flatten")(y)
        for index, units in enumerate(model_config.dense_units, start=1):
            y = keras.layers.Dense(units, activation="relu", name=f"{genre}_dense_{index}")(y)
        y = keras.layers.Dropout(model_config.dropout, name=f"{genre}_dropout")(y)
        outputs[genre] = keras.layers.Dense(1, activation="sigmoid", dtype="float32", name=genre)(y)
    return outputs


def _frame_size(sequence) -> int:
    return math.prod(sequence.shape[2:])


def _layout(compute_format: str | None) -> str:
    return resolve_compute_format(
        standardize_format(compute_format, "compute_format"), "channels_first"
    )


def _frames_input(frames_shape, batch_size: int | None, compute_format: str):
    """The uint8 channels_first input and the float frames in ``compute_format``."""
    channels, rows, cols = frames_shape[-3:]
    frames = keras.Input((None, channels, rows, cols), batch_size, dtype="uint8", name="frames")
    x = frames
    if compute_format == "channels_last":
        x = keras.layers.Permute((1, 3, 4, 2), name="to_channels_last")(x)
    return frames, keras.layers.Rescaling(1 / 255, name="scale")(x)


def build_classifier(
    model_config: ModelConfig,
    frames_shape: tuple[int, ...],
    *,
    stateful: bool = False,
    batch_size: int | None = None,
    compute_format: str | None = None,
) -> keras.Model:
    """The ConvLSTM classifier for frames of ``frames_shape`` (``(..., 3, rows, cols)``).

    ``stateful`` carries each layer's state from one call to the next (needs ``batch_size``).
    ``compute_format`` overrides the per-host choice of layout.
    """
    compute_format = _layout(compute_format)
    if stateful and batch_size is None:
        raise ValueError("a stateful classifier needs a fixed batch_size, received None")
    layer = CELLS[model_config.cell]

    def recurrent(filters: int, name: str) -> keras.layers.Layer:
        # ST-CLSTM's output head is as wide as its state here (1 channel in the article).
        extra = {"output_filters": filters} if layer is STConvLSTM else {}
        return layer(
            filters,
            model_config.kernel_size,
            padding="same",
            data_format=compute_format,
            compute_format=compute_format,
            return_sequences=True,
            stateful=stateful,
            name=name,
            **extra,
        )

    frames, x = _frames_input(frames_shape, batch_size, compute_format)
    outputs = build_network(x, model_config, recurrent, compute_format)
    return keras.Model(frames, outputs, name=f"{model_config.cell}_classifier")


def build_frame_baseline(
    model_config: ModelConfig,
    frames_shape: tuple[int, ...],
    *,
    compute_format: str | None = None,
) -> keras.Model:
    """The same trunk and heads on a 2D CNN applied to each frame alone (no memory of time).

    Each recurrent layer becomes a ReLU convolution with a ``(1, k, k)`` kernel over
    ``(time, rows, cols)``: the same filters and kernel, one frame at a time.
    """
    compute_format = _layout(compute_format)
    kernel = (1, model_config.kernel_size, model_config.kernel_size)

    def per_frame(filters: int, name: str) -> keras.layers.Layer:
        return keras.layers.Conv3D(
            filters,
            kernel,
            padding="same",
            activation="relu",
            data_format=compute_format,
            name=name,
        )

    frames, x = _frames_input(frames_shape, None, compute_format)
    outputs = build_network(x, model_config, per_frame, compute_format)
    return keras.Model(frames, outputs, name="frame_baseline")


def reset_states(model: keras.Model) -> None:
    """Zero the carried state of every stateful recurrent layer (between trailers)."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.RNN) and layer.stateful:
            layer.reset_state()
