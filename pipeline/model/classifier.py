"""The per-frame genre classifier: a shared ConvLSTM trunk and one branch per genre.

``frames`` uint8 ``(batch, time, 3, rows, cols)`` -> ``{genre: (batch, time, 1)}`` sigmoid
probabilities, one per frame, for every genre of :data:`pipeline.GENRES`. The uint8 frames
cross to the device and are scaled to [0, 1] inside the model. Any batch size and any number
of frames.

One set of weights runs on any host. The network computes in a layout chosen when it is built
or loaded on a host (channels_last on a CPU-only host, channels_first with a GPU; on CPU the
channels_first frames are transposed once, at the model's edge, while still uint8), and the
saved file holds none of it: :class:`GenreClassifier` saves its ``model:`` config and frame
shape, and rebuilds its graph for the loading host. No weight depends on the layout: each
genre head puts a frame's features in channels_first order before its first Dense layer.

A long trailer streams through :func:`streaming_twin` (stateful, fixed batch, same weights),
with :func:`reset_states` between trailers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from pipeline import GENRES
from pipeline.core.config import ModelConfig
from pipeline.core.errors import StageError
from pipeline.model.cells import PACKAGE, resolve_compute_format, standardize_format
from pipeline.model.layers import (
    ConvLSTM,
    ConvRNN2D,
    FrameDifference,
    FrameStandardization,
    PeepholeConvLSTM,
    STConvLSTM,
)

__all__ = [
    "CELLS",
    "GenreClassifier",
    "build_classifier",
    "build_frame_baseline",
    "build_network",
    "frame_probabilities",
    "reset_states",
    "stacked_outputs",
    "streaming_twin",
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

    Trunk: ``block`` + BatchNormalization (``model.batch_norm``) + spatial max pooling per
    entry of ``trunk_filters``. Each genre: ``block`` (``branch_filters``), pooling, a
    per-frame flatten in channels_first order whatever ``data_format`` (so the Dense weights
    mean the same in both layouts), two ReLU Dense layers, dropout and a float32 1-unit
    sigmoid Dense named after the genre.
    """
    channel_axis = 2 if data_format == "channels_first" else -1
    pool = (1, model_config.pool_size, model_config.pool_size)
    synchronized = model_config.batch_norm == "synchronized"
    for index, filters in enumerate(model_config.trunk_filters, start=1):
        x = block(filters, f"trunk_{index}")(x)
        x = keras.layers.BatchNormalization(
            axis=channel_axis, synchronized=synchronized, name=f"trunk_{index}_bn"
        )(x)
        x = keras.layers.MaxPooling3D(pool, data_format=data_format, name=f"trunk_{index}_pool")(x)
    outputs = {}
    for genre in GENRES:
        y = block(model_config.branch_filters, f"{genre}_branch")(x)
        y = keras.layers.MaxPooling3D(pool, data_format=data_format, name=f"{genre}_pool")(y)
        if data_format == "channels_last":
            y = keras.layers.Permute((1, 4, 2, 3), name=f"{genre}_to_channels_first")(y)
        y = keras.layers.Reshape((-1, _frame_size(y)), name=f"{genre}_flatten")(y)
        for index, units in enumerate(model_config.dense_units, start=1):
            y = keras.layers.Dense(units, activation="relu", name=f"{genre}_dense_{index}")(y)
        y = keras.layers.Dropout(model_config.dropout, name=f"{genre}_dropout")(y)
        outputs[genre] = keras.layers.Dense(1, activation="sigmoid", dtype="float32", name=genre)(y)
    return outputs


def _frame_size(sequence) -> int:
    return math.prod(sequence.shape[2:])


def _frames_input(frames_shape, batch_size: int | None, compute_format: str, frame_norm: str):
    """The uint8 channels_first input and the float frames in ``compute_format``."""
    channels, rows, cols = frames_shape[-3:]
    frames = keras.Input((None, channels, rows, cols), batch_size, dtype="uint8", name="frames")
    x = frames
    if compute_format == "channels_last":
        x = keras.layers.Permute((1, 3, 4, 2), name="to_channels_last")(x)
    if frame_norm == "standardize":
        return frames, FrameStandardization(name="standardize")(x)
    return frames, keras.layers.Rescaling(1 / 255, name="scale")(x)


def _recurrent_block(model_config: ModelConfig, layout: str, stateful: bool) -> Block:
    layer = CELLS[model_config.cell]
    l2 = keras.regularizers.L2(model_config.cell_l2) if model_config.cell_l2 else None
    regularization = {
        "dropout": model_config.cell_dropout,
        "recurrent_dropout": model_config.cell_recurrent_dropout,
        "kernel_regularizer": l2,
        "recurrent_regularizer": l2,
    }

    def recurrent(filters: int, name: str) -> keras.layers.Layer:
        # ST-CLSTM's output head is as wide as its state here (1 channel in the article).
        extra = {"output_filters": filters} if layer is STConvLSTM else {}
        return layer(
            filters,
            model_config.kernel_size,
            padding="same",
            data_format=layout,
            compute_format=layout,
            return_sequences=True,
            stateful=stateful,
            name=name,
            **regularization,
            **extra,
        )

    return recurrent


def _per_frame_block(model_config: ModelConfig, layout: str) -> Block:
    kernel = (1, model_config.kernel_size, model_config.kernel_size)

    def per_frame(filters: int, name: str) -> keras.layers.Layer:
        return keras.layers.Conv3D(
            filters, kernel, padding="same", activation="relu", data_format=layout, name=name
        )

    return per_frame


@keras.saving.register_keras_serializable(package=PACKAGE)
class GenreClassifier(keras.Model):
    """The classifier as a functional model whose saved config is only what defines it.

    ``get_config`` holds the ``model:`` section, the frame shape, ``stateful``, the batch size
    and ``frame_baseline``; never the layout. Loading calls the constructor, which picks the
    layout of the loading host (or of :func:`~pipeline.model.cells.forced_layout`), and the
    weights, none of which depends on the layout, load into it.

    Args:
        model_config: the ``model:`` section (or its dict).
        frames_shape: ``(..., 3, rows, cols)`` of the uint8 channels_first frames.
        stateful: carry each recurrent layer's state from one call to the next (needs
            ``batch_size``).
        batch_size: fixed batch size, or ``None`` for any.
        frame_baseline: a per-frame 2D CNN in place of each recurrent layer (no memory).
        compute_format: the layout to compute in; ``None``, the host's. Not saved.
    """

    def __init__(
        self,
        model_config: ModelConfig | dict,
        frames_shape: tuple[int, ...],
        *,
        stateful: bool = False,
        batch_size: int | None = None,
        frame_baseline: bool = False,
        compute_format: str | None = None,
        name: str | None = None,
        **kwargs,
    ):
        if not isinstance(model_config, ModelConfig):  # a saved config: JSON types
            model_config = ModelConfig.model_validate_json(json.dumps(model_config))
        frames_shape = tuple(int(n) for n in frames_shape[-3:])
        if stateful and batch_size is None:
            raise ValueError("a stateful classifier needs a fixed batch_size, received None")
        layout = resolve_compute_format(
            standardize_format(compute_format, "compute_format"), "channels_first"
        )
        if frame_baseline:
            block = _per_frame_block(model_config, layout)
        else:
            block = _recurrent_block(model_config, layout, stateful)
        frames, x = _frames_input(frames_shape, batch_size, layout, model_config.frame_norm)
        if model_config.motion_input == "difference" and not frame_baseline:
            x = FrameDifference(layout, stateful=stateful, name="frame_difference")(x)
        outputs = build_network(x, model_config, block, layout)
        default_name = "frame_baseline" if frame_baseline else f"{model_config.cell}_classifier"
        super().__init__(frames, outputs, name=name or default_name, **kwargs)
        self.model_config = model_config
        self.frames_shape = frames_shape
        self.stateful = stateful
        self.batch_size = batch_size
        self.frame_baseline = frame_baseline
        self.compute_layout = layout

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "model_config": self.model_config.model_dump(mode="json"),
            "frames_shape": list(self.frames_shape),
            "stateful": self.stateful,
            "batch_size": self.batch_size,
            "frame_baseline": self.frame_baseline,
        }

    @classmethod
    def from_config(cls, config: dict, custom_objects=None) -> GenreClassifier:
        return cls(**config)


def build_classifier(
    model_config: ModelConfig,
    frames_shape: tuple[int, ...],
    *,
    stateful: bool = False,
    batch_size: int | None = None,
    compute_format: str | None = None,
) -> GenreClassifier:
    """The ConvLSTM classifier for frames of ``frames_shape`` (``(..., 3, rows, cols)``).

    ``stateful`` carries each layer's state from one call to the next (needs ``batch_size``;
    :func:`streaming_twin` makes one from a trained model). ``compute_format`` overrides the
    per-host choice of layout.
    """
    return GenreClassifier(
        model_config,
        frames_shape,
        stateful=stateful,
        batch_size=batch_size,
        compute_format=compute_format,
    )


def build_frame_baseline(
    model_config: ModelConfig,
    frames_shape: tuple[int, ...],
    *,
    compute_format: str | None = None,
) -> GenreClassifier:
    """The same trunk and heads on a 2D CNN applied to each frame alone (no memory of time).

    Each recurrent layer becomes a ReLU convolution with a ``(1, k, k)`` kernel over
    ``(time, rows, cols)``: the same filters and kernel, one frame at a time.
    """
    return GenreClassifier(
        model_config, frames_shape, frame_baseline=True, compute_format=compute_format
    )


def reset_states(model: keras.Model) -> None:
    """Zero the carried state of every stateful recurrent layer (between trailers)."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.RNN) and layer.stateful:
            layer.reset_state()


def streaming_twin(
    model: GenreClassifier,
    batch_size: int = 1,
    *,
    check_frames: int = 6,
    chunk_frames: int = 2,
    tolerance: float = 1e-4,
) -> GenreClassifier:
    """The stateful twin of a trained classifier: fixed ``batch_size``, the same weights.

    Feed it a trailer chunk by chunk (any chunk lengths, through ``predict`` or a call) and call
    :func:`reset_states` between trailers. Before returning it, checks that a seeded random clip
    of ``check_frames`` frames fed in chunks of ``chunk_frames`` gives ``model``'s
    whole-sequence outputs within ``tolerance``, and leaves the twin reset; ``check_frames=0``
    skips that check (it runs both models eagerly: about a second on 2 cores).

    Raises:
        TypeError: ``model`` is not a :class:`GenreClassifier` with recurrent layers.
        RuntimeError: the twin's outputs differ from the model's.
    """
    if not isinstance(model, GenreClassifier) or model.frame_baseline:
        raise TypeError(
            "streaming_twin needs a recurrent GenreClassifier (build_classifier or a loaded one), "
            f"received: {type(model).__name__} {model.name!r}"
        )
    twin = GenreClassifier(
        model.model_config,
        model.frames_shape,
        stateful=True,
        batch_size=batch_size,
        compute_format=model.compute_layout,
        name=f"{model.name}_streaming",
    )
    twin.set_weights(model.get_weights())
    if check_frames:
        _check_twin(model, twin, check_frames, chunk_frames, tolerance)
    return twin


def _check_twin(
    model: GenreClassifier,
    twin: GenreClassifier,
    check_frames: int,
    chunk_frames: int,
    tolerance: float,
) -> None:
    rng = np.random.default_rng(0)
    clip = rng.integers(0, 256, (twin.batch_size, check_frames, *model.frames_shape), np.uint8)
    whole = stacked_outputs(model(clip, training=False))
    chunks = [
        stacked_outputs(twin(clip[:, start : start + chunk_frames], training=False))
        for start in range(0, check_frames, chunk_frames)
    ]
    reset_states(twin)
    difference = float(np.abs(np.concatenate(chunks, axis=1) - whole).max())
    if difference > tolerance:
        raise RuntimeError(
            f"the streaming twin of {model.name!r} differs from it by {difference:.3g} "
            f"(> {tolerance:g}) on a clip of {check_frames} frames in chunks of {chunk_frames}"
        )


def frame_probabilities(model: keras.Model) -> Callable[[np.ndarray], np.ndarray]:
    """``model`` as a function of one trailer's uint8 frames ``(frames, 3, rows, cols)`` ->
    float32 ``(frames, 6)``, traced once for any number of frames: called eagerly, a recurrent
    layer's time loop runs op by op, 9-12x slower (demo model, 64 frames at 64x64, 2 cores).
    A stateful twin keeps its state from call to call."""
    frames_spec = tf.TensorSpec((1, None, *model.input_shape[2:]), tf.uint8)

    @tf.function(input_signature=[frames_spec])
    def outputs(frames: tf.Tensor) -> dict[str, tf.Tensor]:
        return model(frames, training=False)

    return lambda frames: stacked_outputs(outputs(frames[None]))[0].astype(np.float32)


def stacked_outputs(outputs: dict) -> np.ndarray:
    """The model's ``{genre: (batch, time, 1)}`` as one ``(batch, time, 6)`` array (GENRES)."""
    return np.concatenate([np.asarray(outputs[genre]) for genre in GENRES], axis=-1)


def load_network(path: Path) -> keras.Model:
    """A saved network (a model folder's ``.keras`` file), uncompiled: evaluate and predict only
    run it. StageError, naming the file, when Keras cannot load it."""
    try:
        return keras.saving.load_model(path, compile=False)
    except (OSError, ValueError) as exc:
        raise StageError(f"{path}: not a loadable Keras model ({exc})") from None
