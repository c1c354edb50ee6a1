"""ConvLSTM layers: a cell from ``cells.py`` run over time by a TensorFlow ``while_loop``.

Each layer is a ``keras.layers.RNN`` (which owns ``return_sequences``, ``return_state``,
``initial_state``, ``stateful`` and ``reset_state``) whose ``inner_loop`` differs from Keras' in
two deliberate ways, both for speed:

* the input-to-gate convolution of every step runs first, as one convolution over
  ``batch * time`` frames (the cell's ``project_inputs``); only the recurrent part (the cell's
  ``step``) stays inside the loop. The cell's own ``call``, one complete step, is what a stock
  ``keras.layers.RNN`` would run instead, with the same weights and numbers;
* the sequence is transposed once per call into the cell's compute layout (channels_last on a
  CPU-only host, the data's own layout with a GPU) and time-major order, and the outputs and
  states once back; nothing is transposed per step.

The loop is ``tf.while_loop`` over ``tf.TensorArray``: these layers need the TensorFlow
backend. Masks and ``unroll`` are not supported; dropout is Keras' (see the cells).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from pipeline.model.cells import (
    PACKAGE,
    ConvLSTMCell,
    FrameDifferenceCell,
    PeepholeConvLSTMCell,
    STConvLSTMCell,
    frame_perm,
    relayout,
)

__all__ = [
    "ConvLSTM",
    "ConvRNN2D",
    "FrameDifference",
    "FrameStandardization",
    "PeepholeConvLSTM",
    "STConvLSTM",
]


def _swap_time(sequences, source: str, target: str):
    """``(a, b, frame)`` to ``(b, a, frame')``: batch- and time-major swap, with relayout."""
    return tf.transpose(sequences, (1, 0, *(axis + 2 for axis in frame_perm(source, target))))


def _any_batch(tensor) -> tf.TensorShape:
    return tf.TensorShape([None, *tensor.shape[1:]])


def _run_steps(step, gates, states, output, keep_outputs: bool):
    """Fold ``step`` over time-major ``gates``: ``(last output, all outputs or None, states)``.

    The batch dimension is declared free in the loop, so a batch known statically (one trailer
    in ``predict``) and one known only at run time give the same graph.
    """
    steps = tf.shape(gates)[0]
    inputs = tf.TensorArray(gates.dtype, size=steps, element_shape=gates.shape[1:]).unstack(gates)
    collected = (
        [tf.TensorArray(output.dtype, size=steps, element_shape=output.shape)]
        if keep_outputs
        else []
    )

    def body(t, output, states, *collected):
        output, states = step(inputs.read(t), states)
        return (t + 1, output, states, *(outputs.write(t, output) for outputs in collected))

    _, output, states, *collected = tf.while_loop(
        lambda t, *_: t < steps,
        body,
        (tf.constant(0), output, list(states), *collected),
        shape_invariants=(
            tf.TensorShape([]),
            _any_batch(output),
            [_any_batch(state) for state in states],
            *(tf.TensorShape(None) for _ in collected),
        ),
        maximum_iterations=steps,
    )
    return output, (collected[0].stack() if keep_outputs else None), states


def _cell_attribute(name: str) -> property:
    return property(lambda self: getattr(self.cell, name), doc=f"The cell's ``{name}``.")


class ConvRNN2D(keras.layers.RNN):
    """A recurrent layer over ``(batch, time, frame)`` built from flat arguments for ``cell_class``.

    Args:
        filters, kernel_size: of the cell.
        return_sequences, return_state, go_backwards, stateful: as ``keras.layers.RNN``.
        name, dtype, trainable: as ``keras.layers.Layer``.
        **cell_kwargs: every other argument of ``cell_class`` (``data_format``,
            ``compute_format``, ``padding``, activations, initializers...).

    Call arguments: ``sequences`` ``(batch, time, channels, rows, cols)`` in channels_first,
    ``(batch, time, rows, cols, channels)`` in channels_last; ``initial_state`` ``[h, c]`` in
    ``data_format``; ``training``.
    """

    cell_class: type[ConvLSTMCell]
    """Set by each concrete layer."""

    filters = _cell_attribute("filters")
    kernel_size = _cell_attribute("kernel_size")
    strides = _cell_attribute("strides")
    padding = _cell_attribute("padding")
    data_format = _cell_attribute("data_format")
    compute_format = _cell_attribute("compute_format")
    compute_layout = _cell_attribute("compute_layout")
    dilation_rate = _cell_attribute("dilation_rate")
    activation = _cell_attribute("activation")
    recurrent_activation = _cell_attribute("recurrent_activation")
    use_bias = _cell_attribute("use_bias")
    kernel_regularizer = _cell_attribute("kernel_regularizer")
    recurrent_regularizer = _cell_attribute("recurrent_regularizer")
    bias_regularizer = _cell_attribute("bias_regularizer")
    kernel_constraint = _cell_attribute("kernel_constraint")
    recurrent_constraint = _cell_attribute("recurrent_constraint")
    bias_constraint = _cell_attribute("bias_constraint")
    dropout = _cell_attribute("dropout")
    recurrent_dropout = _cell_attribute("recurrent_dropout")
    seed = _cell_attribute("seed")

    def __init__(
        self,
        filters: int,
        kernel_size: int | tuple[int, int],
        return_sequences: bool = False,
        return_state: bool = False,
        go_backwards: bool = False,
        stateful: bool = False,
        name: str | None = None,
        dtype=None,
        trainable: bool = True,
        **cell_kwargs,
    ):
        if keras.backend.backend() != "tensorflow":
            raise ValueError(
                f"{type(self).__name__} runs its time loop in TensorFlow: it needs the "
                f"tensorflow Keras backend, running: {keras.backend.backend()}"
            )
        cell = self.cell_class(filters, kernel_size, dtype=dtype, name="cell", **cell_kwargs)
        super().__init__(
            cell,
            return_sequences=return_sequences,
            return_state=return_state,
            go_backwards=go_backwards,
            stateful=stateful,
            name=name,
            dtype=dtype,
            trainable=trainable,
        )
        self.input_spec = keras.layers.InputSpec(ndim=5)
        self.supports_masking = False

    def compute_output_shape(self, sequences_shape, initial_state_shape=None):
        batch, steps = sequences_shape[:2]
        if not self.cell.built:
            self.cell.build((batch, *sequences_shape[2:]))
        frame = self.cell.frame_shape(self.cell.output_filters)
        output = (batch, steps, *frame) if self.return_sequences else (batch, *frame)
        if not self.return_state:
            return output
        state = (batch, *self.cell.frame_shape(self.cell.filters))
        return output, *(state for _ in self.cell.state_size)

    def compute_mask(self, _, mask=None):
        return [None] * (1 + len(self.cell.state_size)) if self.return_state else None

    def inner_loop(self, sequences, initial_state, mask, training=False):
        """Project all steps' inputs at once, then loop the recurrent part (see module doc)."""
        if mask is not None:
            raise ValueError(f"{self.name}: masks are not supported, received a mask")
        cell = self.cell
        outside, inside = cell.data_format, cell.compute_layout
        frames = _swap_time(sequences, outside, inside)
        if self.go_backwards:
            frames = tf.reverse(frames, [0])
        steps, batch = tf.unstack(tf.shape(frames)[:2])
        masks = cell.input_masks(sequences[:, 0], training)
        if masks is not None:  # each sequence's masks at all its steps (time-major rows)
            masks = [tf.tile(mask, [steps, 1, 1, 1]) for mask in masks]
        recurrent_masks = cell.recurrent_masks(initial_state[0], training)
        gates = cell.project_inputs(tf.reshape(frames, (-1, *frames.shape[2:])), masks)
        gates = tf.reshape(gates, [steps, batch, *gates.shape[1:]])
        last, outputs, states = _run_steps(
            lambda inputs, states: cell.step(inputs, states, training, recurrent_masks),
            gates,
            [relayout(state, outside, inside) for state in initial_state],
            cell.zero_output(batch),
            keep_outputs=self.return_sequences,
        )
        last = relayout(last, inside, outside)
        outputs = last if outputs is None else _swap_time(outputs, inside, outside)
        return last, outputs, [relayout(state, inside, outside) for state in states]

    def get_config(self):
        config = super().get_config()
        for key in ("cell", "unroll", "zero_output_for_mask"):
            config.pop(key)
        cell_config = self.cell.get_config()
        for key in ("name", "trainable", "dtype"):
            cell_config.pop(key)
        return {**config, **cell_config}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package=PACKAGE)
class ConvLSTM(ConvRNN2D):
    """ConvLSTM (Shi et al. 2015, no peepholes): ``keras.layers.ConvLSTM2D``'s maths and weights.

    See :class:`ConvRNN2D` for the call and :class:`~pipeline.model.cells.ConvLSTMCell` for the
    arguments.
    """

    cell_class = ConvLSTMCell


@keras.saving.register_keras_serializable(package=PACKAGE)
class PeepholeConvLSTM(ConvRNN2D):
    """ConvLSTM with Hadamard peepholes (:class:`~pipeline.model.cells.PeepholeConvLSTMCell`)."""

    cell_class = PeepholeConvLSTMCell
    peephole_initializer = _cell_attribute("peephole_initializer")


@keras.saving.register_keras_serializable(package=PACKAGE)
class STConvLSTM(ConvRNN2D):
    """ST-CLSTM (Zhang et al. 2019, :class:`~pipeline.model.cells.STConvLSTMCell`).

    Its output (``output_filters`` channels) differs from its states (``filters`` channels).
    """

    cell_class = STConvLSTMCell
    output_filters = _cell_attribute("output_filters")
    refine_kernel_size = _cell_attribute("refine_kernel_size")
    refine_state_kernel_size = _cell_attribute("refine_state_kernel_size")


@keras.saving.register_keras_serializable(package=PACKAGE)
class FrameStandardization(keras.layers.Layer):
    """Each frame of ``(batch, time, frame)`` to zero mean and unit variance over its pixels.

    Statistics are per frame, over all its channels and pixels, in either layout: brightness
    and contrast go, colour relations and shapes stay. Dark, low-contrast frames get the same
    dynamic range as bright ones, so small movements in them are as visible. ``epsilon`` keeps
    a uniform frame (black, one colour) finite: it becomes zeros (variance of [0, 1] values).
    """

    def __init__(self, epsilon: float = 1e-4, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def call(self, frames):
        frames = keras.ops.cast(frames, self.compute_dtype) / 255.0
        mean = keras.ops.mean(frames, axis=(-3, -2, -1), keepdims=True)
        variance = keras.ops.var(frames, axis=(-3, -2, -1), keepdims=True)
        return (frames - mean) / keras.ops.sqrt(variance + self.epsilon)

    def get_config(self) -> dict:
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package=PACKAGE)
class FrameDifference(keras.layers.RNN):
    """Motion made visible: each frame of ``(batch, time, frame)`` with its difference from the
    previous frame stacked on its channels (:class:`~pipeline.model.cells.FrameDifferenceCell`).

    A stock ``keras.layers.RNN`` runs the cell step by step with the same numbers; this layer
    takes all steps at once (a difference needs no loop). ``stateful`` carries the last frame
    to the next call, so a stream fed chunk by chunk gives the whole sequence's outputs.
    """

    def __init__(
        self,
        data_format: str = "channels_first",
        stateful: bool = False,
        name: str | None = None,
        dtype=None,
        **kwargs,
    ):
        cell = FrameDifferenceCell(data_format, dtype=dtype, name="cell")
        super().__init__(
            cell, return_sequences=True, stateful=stateful, name=name, dtype=dtype, **kwargs
        )
        self.input_spec = keras.layers.InputSpec(ndim=5)
        self.supports_masking = False

    @property
    def channel_axis(self) -> int:
        return 2 if self.cell.data_format == "channels_first" else -1

    def compute_output_shape(self, sequences_shape, initial_state_shape=None):
        shape = list(sequences_shape)
        channels = shape[self.channel_axis]
        shape[self.channel_axis] = None if channels is None else 2 * channels
        return tuple(shape)

    def compute_mask(self, _, mask=None):
        return None

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if mask is not None:
            raise ValueError(f"{self.name}: masks are not supported, received a mask")
        previous, seen = initial_state
        before = tf.concat([previous[:, None], sequences[:, :-1]], axis=1)
        later = tf.ones_like(sequences[:, 1:, :1, :1, :1])
        counted = tf.concat([tf.reshape(seen, (-1, 1, 1, 1, 1)), later], axis=1)
        outputs = tf.concat([sequences, (sequences - before) * counted], axis=self.channel_axis)
        return outputs[:, -1], outputs, [sequences[:, -1], tf.ones_like(seen)]

    def get_config(self):
        config = super().get_config()
        fixed = ("cell", "unroll", "zero_output_for_mask", "return_sequences", "return_state")
        for key in (*fixed, "go_backwards"):
            config.pop(key)
        return {**config, "data_format": self.cell.data_format}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
