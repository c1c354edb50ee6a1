"""ConvLSTM cells: one time step's maths, Keras 3 style (the loop lives in ``layers.py``).

Three cells share one layout of weights, the one of ``keras.layers.ConvLSTM2D``: a fused input
``kernel`` ``(kh, kw, channels, gates)``, a fused ``recurrent_kernel`` ``(kh, kw, filters, gates)``
and one ``bias``, gates concatenated on the last axis in the order i, f, c, o, with a unit forget
bias. No weight depends on the layout the maths runs in.

A cell's ``call(inputs, states)`` is one complete step on raw inputs, inputs and states in
``data_format``, so a cell also runs inside a stock ``keras.layers.RNN``. It is made of two
parts that our layers call separately: :meth:`ConvLSTMCell.project_inputs` (the input
convolution, which the layer runs once on every step at once) and :meth:`ConvLSTMCell.step`
(the recurrent part of one step). Both work in ``compute_layout``, resolved when the cell is
built (see :func:`resolve_compute_format`), never stored.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
from collections.abc import Iterator

import keras
import tensorflow as tf
from keras import activations, constraints, initializers, ops, regularizers

# Not public in Keras 3, but the only way to the dropout Keras' own ConvLSTM2D has: keras.layers.RNN
# draws a DropoutRNNCell's masks once per call (one per gate, the same at every step) and clears
# them after, which is what lets a cell run with dropout in a stock RNN.
from keras.src.layers.rnn.dropout_rnn_cell import DropoutRNNCell

__all__ = [
    "ConvLSTMCell",
    "PeepholeConvLSTMCell",
    "RefineNet",
    "STConvLSTMCell",
    "forced_layout",
    "relayout",
    "resolve_compute_format",
    "standardize_format",
]

PACKAGE = "trailers"
"""The one registration package of the project's Keras objects (``trailers>ClassName``)."""

FORMATS = ("channels_first", "channels_last")


def standardize_format(value: str | None, name: str, default: str | None = None) -> str | None:
    """Check a data format argument: one of ``FORMATS`` or ``None`` (then ``default``)."""
    if value is None:
        return default
    if value not in FORMATS:
        raise ValueError(f"{name} must be one of {FORMATS} or None, received: {name}={value!r}")
    return value


_FORCED_LAYOUT: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "forced_layout", default=None
)


@contextlib.contextmanager
def forced_layout(layout: str | None) -> Iterator[None]:
    """Within the block, cells and classifiers built with no ``compute_format`` use ``layout``.

    For loading a saved model in a layout other than the host's (``None``: the host's choice).
    """
    token = _FORCED_LAYOUT.set(standardize_format(layout, "layout"))
    try:
        yield
    finally:
        _FORCED_LAYOUT.reset(token)


def resolve_compute_format(compute_format: str | None, data_format: str) -> str:
    """The layout the maths runs in: as asked, else NHWC on a CPU-only host, else ``data_format``.

    TensorFlow's CPU convolutions are fast in channels_last and several times slower in
    channels_first; on a GPU cuDNN runs both, so the data's own layout saves the transposes.
    The host is read from the visible physical devices, which does not start the TensorFlow
    runtime: devices can still be configured afterwards.
    """
    if compute_format is not None:
        return compute_format
    if _FORCED_LAYOUT.get() is not None:
        return _FORCED_LAYOUT.get()
    if tf.config.get_visible_devices("GPU"):
        return data_format
    return "channels_last"


def frame_perm(source: str, target: str) -> tuple[int, int, int]:
    """Permutation of a frame's three axes from layout ``source`` to ``target``."""
    if source == target:
        return (0, 1, 2)
    return (1, 2, 0) if source == "channels_first" else (2, 0, 1)


def relayout(frames, source: str, target: str, leading: int = 1):
    """A tensor of frames after ``leading`` axes, from layout ``source`` to ``target``."""
    if source == target:
        return frames
    perm = tuple(range(leading)) + tuple(a + leading for a in frame_perm(source, target))
    return tf.transpose(frames, perm)


def _standardize_pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v >= 1 for v in pair):
        raise ValueError(f"{name} must be a positive int or a pair of them, received: {value!r}")
    return pair


def _conv_length(size: int, kernel: int, stride: int, dilation: int, padding: str) -> int:
    if padding == "same":
        return -(-size // stride)
    return (size - dilation * (kernel - 1) - 1) // stride + 1


@keras.saving.register_keras_serializable(package=PACKAGE)
class ConvLSTMCell(keras.layers.Layer, DropoutRNNCell):
    """The ConvLSTM cell of Shi et al. 2015 without peepholes: ``keras.layers.ConvLSTM2D``'s maths.

    ``i, f, o = recurrent_activation(.)``, ``c_t = f * c_{t-1} + i * activation(.)``,
    ``h_t = o * activation(c_t)``; output ``h_t``, states ``[h_t, c_t]``.

    Args:
        filters: channels of the hidden and cell states.
        kernel_size: window of both convolutions (int or pair).
        strides, padding, dilation_rate: of the input convolution; the recurrent one is always
            stride 1, ``"same"``, as in Keras.
        data_format: layout of the layer's inputs, outputs and states: ``"channels_first"``
            ``(batch, time, channels, rows, cols)`` (the default: the product's data) or
            ``"channels_last"``.
        compute_format: layout the maths runs in; ``None`` (the default, and what a saved
            model should hold) picks per host when the cell is built
            (:func:`resolve_compute_format`).
        activation, recurrent_activation, use_bias, kernel_initializer, recurrent_initializer,
        bias_initializer, unit_forget_bias, kernel_regularizer, recurrent_regularizer,
        bias_regularizer, kernel_constraint, recurrent_constraint, bias_constraint: as in
            ``keras.layers.ConvLSTM2D``.
        dropout, recurrent_dropout, seed: as in ``keras.layers.ConvLSTM2D``: in training, each
            gate's input (``dropout``) and previous hidden state (``recurrent_dropout``) is
            multiplied by a mask of its own, drawn once per sequence from ``seed``, in the same
            order and shapes as Keras draws them (so the same seed gives Keras' masks). The seed
            generator exists only when a rate is above 0: a cell without dropout has exactly the
            weights it had before these arguments existed.
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int | tuple[int, int],
        strides: int | tuple[int, int] = 1,
        padding: str = "valid",
        data_format: str | None = "channels_first",
        dilation_rate: int | tuple[int, int] = 1,
        activation="tanh",
        recurrent_activation="sigmoid",
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        unit_forget_bias: bool = True,
        kernel_regularizer=None,
        recurrent_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        recurrent_constraint=None,
        bias_constraint=None,
        dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        seed: int | None = None,
        compute_format: str | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(filters, int) or filters < 1:
            raise ValueError(f"filters must be a positive int, received: filters={filters!r}")
        self.filters = filters
        self.kernel_size = _standardize_pair(kernel_size, "kernel_size")
        self.strides = _standardize_pair(strides, "strides")
        self.dilation_rate = _standardize_pair(dilation_rate, "dilation_rate")
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(
                "strides > 1 is not compatible with dilation_rate > 1, received: "
                f"strides={self.strides}, dilation_rate={self.dilation_rate}"
            )
        self.padding = str(padding).lower()
        if self.padding not in ("valid", "same"):
            raise ValueError(f"padding must be 'valid' or 'same', received: padding={padding!r}")
        self.data_format = standardize_format(
            data_format, "data_format", keras.config.image_data_format()
        )
        self.compute_format = standardize_format(compute_format, "compute_format")
        self._compute_layout = None
        self.activation = activations.get(activation)
        self.recurrent_activation = activations.get(recurrent_activation)
        self.use_bias = use_bias
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.recurrent_initializer = initializers.get(recurrent_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.unit_forget_bias = unit_forget_bias
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.recurrent_regularizer = regularizers.get(recurrent_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.kernel_constraint = constraints.get(kernel_constraint)
        self.recurrent_constraint = constraints.get(recurrent_constraint)
        self.bias_constraint = constraints.get(bias_constraint)
        for name, rate in (("dropout", dropout), ("recurrent_dropout", recurrent_dropout)):
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"{name} must be in [0, 1), received: {name}={rate!r}")
        self.dropout = float(dropout)
        self.recurrent_dropout = float(recurrent_dropout)
        self.seed = seed
        if self.dropout or self.recurrent_dropout:
            self.seed_generator = keras.random.SeedGenerator(seed)
        self.dropout_mask_count = 4  # one mask per gate: i, f, c, o
        self.state_size = [filters, filters]

    @property
    def output_filters(self) -> int:
        """Channels of the cell's output (the hidden state here)."""
        return self.filters

    @property
    def compute_layout(self) -> str:
        """The layout the maths runs in, resolved on first use (by ``build`` at the latest)."""
        if self._compute_layout is None:
            self._compute_layout = resolve_compute_format(self.compute_format, self.data_format)
        return self._compute_layout

    def gate_sizes(self) -> tuple[int, ...]:
        """Channels of the i, f, c and o gates, in the order they sit in the fused kernels."""
        return (self.filters,) * 4

    def build(self, input_shape):
        """Create the weights from one step's shape ``(batch,) + frame`` in ``data_format``."""
        if self.data_format == "channels_first":
            channels, spatial = input_shape[1], tuple(input_shape[2:])
        else:
            channels, spatial = input_shape[-1], tuple(input_shape[1:-1])
        if channels is None or len(spatial) != 2 or None in spatial:
            raise ValueError(
                f"{type(self).__name__} needs a known channel count and static 2D frames in "
                f"{self.data_format}, received: input_shape={tuple(input_shape)}"
            )
        self.input_dim = channels
        self._compute_layout = resolve_compute_format(self.compute_format, self.data_format)
        self.output_spatial = tuple(
            _conv_length(n, k, s, d, self.padding)
            for n, k, s, d in zip(
                spatial, self.kernel_size, self.strides, self.dilation_rate, strict=True
            )
        )
        gates = sum(self.gate_sizes())
        self.kernel = self.add_weight(
            shape=self.kernel_size + (channels, gates),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
            name="kernel",
        )
        self.recurrent_kernel = self.add_weight(
            shape=self.kernel_size + (self.filters, gates),
            initializer=self.recurrent_initializer,
            regularizer=self.recurrent_regularizer,
            constraint=self.recurrent_constraint,
            name="recurrent_kernel",
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                shape=(gates,),
                initializer=self._gate_bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
                name="bias",
            )

    def _gate_bias_initializer(self, shape, dtype=None):
        if not self.unit_forget_bias:
            return self.bias_initializer(shape, dtype=dtype)
        i, f, *rest = self.gate_sizes()
        return ops.concatenate(
            [
                self.bias_initializer((i,), dtype=dtype),
                ops.ones((f,), dtype=dtype),
                self.bias_initializer((sum(rest),), dtype=dtype),
            ]
        )

    @property
    def channel_axis(self) -> int:
        """Channel axis of a ``(batch, ...)`` frame tensor in the compute layout."""
        return 1 if self.compute_layout == "channels_first" else -1

    def gate_split(self) -> list[int]:
        """Where the fused kernels' last axis splits into the i, f, c and o gates."""
        return list(itertools.accumulate(self.gate_sizes()))[:-1]

    def project_inputs(self, frames, masks=None):
        """Input-to-gate maps plus bias for many frames at once, ``(n, ...)`` in the compute layout.

        The layer passes every step of every sequence as one batch: this is the one big
        convolution that Keras' cell instead runs once per step. With dropout ``masks`` (one per
        gate, each broadcastable to ``frames``), each gate convolves its own masked frames.
        """

        def conv(inputs, kernel):
            return ops.conv(
                inputs,
                kernel,
                strides=self.strides,
                padding=self.padding,
                data_format=self.compute_layout,
                dilation_rate=self.dilation_rate,
            )

        if masks is None:
            gates = conv(frames, self.kernel)
        else:
            kernels = ops.split(self.kernel, self.gate_split(), axis=-1)
            gates = ops.concatenate(
                [conv(frames * mask, kernel) for mask, kernel in zip(masks, kernels, strict=True)],
                axis=self.channel_axis,
            )
        if self.bias is None:
            return gates
        # bias_add, not "+": its gradient fuses into the filter gradient (one pass, not two).
        layout = "NCHW" if self.compute_layout == "channels_first" else "NHWC"
        return tf.nn.bias_add(gates, self.bias, data_format=layout)

    def recurrent_conv(self, hidden, masks=None):
        """The hidden state's maps to the gates; with dropout ``masks``, one masked copy of the
        state per gate."""
        if masks is None:
            return ops.conv(
                hidden, self.recurrent_kernel, padding="same", data_format=self.compute_layout
            )
        kernels = ops.split(self.recurrent_kernel, self.gate_split(), axis=-1)
        return ops.concatenate(
            [
                ops.conv(hidden * mask, kernel, padding="same", data_format=self.compute_layout)
                for mask, kernel in zip(masks, kernels, strict=True)
            ],
            axis=self.channel_axis,
        )

    def input_masks(self, step_input, training: bool):
        """This sequence's input dropout masks in the compute layout, or None (``step_input``: a
        step's inputs in ``data_format``, the shape Keras draws them in)."""
        if not (training and self.dropout):
            return None
        masks = self.get_dropout_mask(step_input)
        return [relayout(mask, self.data_format, self.compute_layout) for mask in masks]

    def recurrent_masks(self, hidden, training: bool):
        """This sequence's recurrent dropout masks in the compute layout, or None (``hidden``:
        the hidden state in ``data_format``)."""
        if not (training and self.recurrent_dropout):
            return None
        masks = self.get_recurrent_dropout_mask(hidden)
        return [relayout(mask, self.data_format, self.compute_layout) for mask in masks]

    def peephole(self, gate_input, cell_state, weight):
        """Hook for peephole cells: the plain ConvLSTM has none."""
        return gate_input

    def lstm_update(self, gate_inputs, states, recurrent_masks=None):
        """One step's gates: ``(o_t, c_t)`` from input-to-gate maps and ``[h_{t-1}, c_{t-1}]``."""
        hidden, carry = states
        z = gate_inputs + self.recurrent_conv(hidden, recurrent_masks)
        z_i, z_f, z_c, z_o = ops.split(z, self.gate_split(), axis=self.channel_axis)
        i = self.recurrent_activation(self.peephole(z_i, carry, "input_peephole"))
        f = self.recurrent_activation(self.peephole(z_f, carry, "forget_peephole"))
        carry = f * carry + i * self.activation(z_c)
        o = self.recurrent_activation(self.peephole(z_o, carry, "output_peephole"))
        return o, carry

    def step(self, gate_inputs, states, training=False, recurrent_masks=None):
        """The recurrent part of one step, all in the compute layout: ``(h_t, [h_t, c_t])``.

        ``gate_inputs`` is this step's slice of :meth:`project_inputs`; ``recurrent_masks``,
        :meth:`recurrent_masks`' for the sequence.
        """
        o, carry = self.lstm_update(gate_inputs, states, recurrent_masks)
        hidden = o * self.activation(carry)
        return hidden, [hidden, carry]

    def call(self, inputs, states, training=False):
        """One complete step on raw ``inputs`` ``(batch, ...)``, inputs and states in
        ``data_format``, as ``keras.layers.RNN`` calls a cell: ``(output, new_states)``."""
        outside, inside = self.data_format, self.compute_layout
        masks = self.input_masks(inputs, training)
        recurrent_masks = self.recurrent_masks(states[0], training)
        gates = self.project_inputs(relayout(inputs, outside, inside), masks)
        states = [relayout(state, outside, inside) for state in states]
        output, states = self.step(gates, states, training, recurrent_masks)
        return relayout(output, inside, outside), [
            relayout(state, inside, outside) for state in states
        ]

    def frame_shape(self, channels: int, layout: str | None = None) -> tuple[int, int, int]:
        """Shape of one output-sized frame with ``channels`` channels in ``layout``."""
        if (layout or self.data_format) == "channels_first":
            return (channels, *self.output_spatial)
        return (*self.output_spatial, channels)

    def get_initial_state(self, batch_size=None):
        """Zero ``[h, c]`` in ``data_format`` (the layout outside the layer), for Keras' RNN."""
        shape = (batch_size, *self.frame_shape(self.filters))
        return [ops.zeros(shape, dtype=self.compute_dtype) for _ in self.state_size]

    def zero_output(self, batch_size):
        """Zero output in the compute layout: the loop's value before the first step."""
        shape = (batch_size, *self.frame_shape(self.output_filters, self.compute_layout))
        return ops.zeros(shape, dtype=self.compute_dtype)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "data_format": self.data_format,
            "dilation_rate": self.dilation_rate,
            "activation": activations.serialize(self.activation),
            "recurrent_activation": activations.serialize(self.recurrent_activation),
            "use_bias": self.use_bias,
            "kernel_initializer": initializers.serialize(self.kernel_initializer),
            "recurrent_initializer": initializers.serialize(self.recurrent_initializer),
            "bias_initializer": initializers.serialize(self.bias_initializer),
            "unit_forget_bias": self.unit_forget_bias,
            "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
            "recurrent_regularizer": regularizers.serialize(self.recurrent_regularizer),
            "bias_regularizer": regularizers.serialize(self.bias_regularizer),
            "kernel_constraint": constraints.serialize(self.kernel_constraint),
            "recurrent_constraint": constraints.serialize(self.recurrent_constraint),
            "bias_constraint": constraints.serialize(self.bias_constraint),
            "dropout": self.dropout,
            "recurrent_dropout": self.recurrent_dropout,
            "seed": self.seed,
            "compute_format": self.compute_format,
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class PeepholeConvLSTMCell(ConvLSTMCell):
    """Shi et al. 2015's own cell: :class:`ConvLSTMCell` plus Hadamard peepholes on the cell state.

    ``i = σ(W_xi * x + W_hi * h + W_ci ∘ c_{t-1} + b_i)``, ``f`` likewise with ``W_cf``, and
    ``o = σ(... + W_co ∘ c_t)``. Each peephole weight has the state's full shape
    ``(rows, cols, filters)`` whatever the data format, so it needs static frame sizes.

    Args:
        peephole_initializer: initializer of the three peephole weights; the default, zeros,
            starts training from the plain ConvLSTM.
        **kwargs: as :class:`ConvLSTMCell`.
    """

    def __init__(self, filters, kernel_size, peephole_initializer="zeros", **kwargs):
        super().__init__(filters, kernel_size, **kwargs)
        self.peephole_initializer = initializers.get(peephole_initializer)

    def build(self, input_shape):
        super().build(input_shape)
        shape = (*self.output_spatial, self.filters)
        for name in ("input_peephole", "forget_peephole", "output_peephole"):
            weight = self.add_weight(shape=shape, initializer=self.peephole_initializer, name=name)
            setattr(self, name, weight)

    def peephole(self, gate_input, cell_state, weight):
        weight = getattr(self, weight)
        if self.compute_layout == "channels_first":
            weight = ops.transpose(weight, (2, 0, 1))
        return gate_input + weight * cell_state

    def get_config(self):
        return {
            **super().get_config(),
            "peephole_initializer": initializers.serialize(self.peephole_initializer),
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class RefineNet(keras.layers.Layer):
    """ST-CLSTM's refinement CNN R: two conv + BatchNorm + ReLU blocks, then two heads.

    ``x -> relu(bn(conv_k(x))) -> relu(bn(conv_k(.))) -> (conv_s(.) [state], conv_k(.) [output])``;
    the two inner convolutions keep ``x``'s channels and have no bias (BatchNorm follows), the
    heads have biases. With the article's kernels (5 inner and output, 3 state) this is the
    layout that gives its published weight counts.
    """

    def __init__(
        self,
        state_filters: int,
        output_filters: int,
        kernel_size: int = 5,
        state_kernel_size: int = 3,
        data_format: str = "channels_last",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.state_filters = state_filters
        self.output_filters = output_filters
        self.kernel_size = kernel_size
        self.state_kernel_size = state_kernel_size
        self.data_format = standardize_format(data_format, "data_format")

    def build(self, input_shape):
        axis = 1 if self.data_format == "channels_first" else -1
        channels = input_shape[axis]

        def conv(filters, kernel_size, name, use_bias=True):
            return keras.layers.Conv2D(
                filters,
                kernel_size,
                padding="same",
                data_format=self.data_format,
                use_bias=use_bias,
                dtype=self.dtype_policy,
                name=name,
            )

        def norm(name):
            return keras.layers.BatchNormalization(axis=axis, dtype=self.dtype_policy, name=name)

        self.blocks = [
            (conv(channels, self.kernel_size, "refine_1", use_bias=False), norm("refine_1_bn")),
            (conv(channels, self.kernel_size, "refine_2", use_bias=False), norm("refine_2_bn")),
        ]
        self.state_head = conv(self.state_filters, self.state_kernel_size, "refine_state")
        self.output_head = conv(self.output_filters, self.kernel_size, "refine_output")
        for convolution, batch_norm in self.blocks:
            convolution.build(input_shape)
            batch_norm.build(input_shape)
        self.state_head.build(input_shape)
        self.output_head.build(input_shape)

    def call(self, inputs, training=False):
        x = inputs
        for convolution, batch_norm in self.blocks:
            x = ops.relu(batch_norm(convolution(x), training=training))
        return self.state_head(x), self.output_head(x)

    def get_config(self):
        return {
            **super().get_config(),
            "state_filters": self.state_filters,
            "output_filters": self.output_filters,
            "kernel_size": self.kernel_size,
            "state_kernel_size": self.state_kernel_size,
            "data_format": self.data_format,
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class STConvLSTMCell(ConvLSTMCell):
    """The ST-CLSTM cell of Zhang et al. 2019 (ICCV): what it outputs differs from what it carries.

    Gates i, f, c have ``filters`` channels and o has the input's channel count;
    ``[state, output] = RefineNet(concat(o, activation(c_t)))``; the cell outputs ``output``
    (``output_filters`` channels, 1 in the article: a depth map) and carries
    ``[state (filters channels), c_t]``.

    Args:
        output_filters: channels of the output head.
        refine_kernel_size, refine_state_kernel_size: RefineNet's kernels (article: 5 and 3).
        **kwargs: as :class:`ConvLSTMCell`.
    """

    def __init__(
        self,
        filters,
        kernel_size,
        output_filters: int = 1,
        refine_kernel_size: int = 5,
        refine_state_kernel_size: int = 3,
        **kwargs,
    ):
        super().__init__(filters, kernel_size, **kwargs)
        self._output_filters = output_filters
        self.refine_kernel_size = refine_kernel_size
        self.refine_state_kernel_size = refine_state_kernel_size

    @property
    def output_filters(self) -> int:
        return self._output_filters

    def gate_sizes(self) -> tuple[int, ...]:
        return (self.filters,) * 3 + (self.input_dim,)

    def build(self, input_shape):
        super().build(input_shape)
        self.refine = RefineNet(
            state_filters=self.filters,
            output_filters=self.output_filters,
            kernel_size=self.refine_kernel_size,
            state_kernel_size=self.refine_state_kernel_size,
            data_format=self.compute_layout,
            dtype=self.dtype_policy,
            name="refine_net",
        )
        channels = self.input_dim + self.filters
        self.refine.build((None, *self.frame_shape(channels, self.compute_layout)))

    def step(self, gate_inputs, states, training=False, recurrent_masks=None):
        o, carry = self.lstm_update(gate_inputs, states, recurrent_masks)
        joined = ops.concatenate([o, self.activation(carry)], axis=self.channel_axis)
        state, output = self.refine(joined, training=training)
        return output, [state, carry]

    def get_config(self):
        return {
            **super().get_config(),
            "output_filters": self.output_filters,
            "refine_kernel_size": self.refine_kernel_size,
            "refine_state_kernel_size": self.refine_state_kernel_size,
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class FrameDifferenceCell(keras.layers.Layer):
    """One step of the motion input: a frame -> the frame and its difference from the previous
    frame, stacked on the channel axis (twice the channels).

    States ``[previous frame, seen]``: ``seen`` is 0 before a sequence's first frame, whose
    difference is then zero rather than the frame itself, so a window cut from the middle of a
    trailer starts like the trailer does. No weights.

    Args:
        data_format: layout of the frames, ``"channels_first"`` or ``"channels_last"``.
    """

    state_size = [1, 1]  # nominal: get_initial_state gives the real, frame-shaped, states

    def __init__(self, data_format: str = "channels_first", **kwargs):
        super().__init__(**kwargs)
        self.data_format = standardize_format(data_format, "data_format")

    @property
    def channel_axis(self) -> int:
        return 1 if self.data_format == "channels_first" else -1

    def build(self, input_shape):
        self.frame = tuple(input_shape[1:])

    def call(self, inputs, states):
        """``(output, [inputs, ones])``: output ``[inputs, (inputs - previous) * seen]``."""
        previous, seen = states
        difference = (inputs - previous) * ops.reshape(seen, (-1, 1, 1, 1))
        output = ops.concatenate([inputs, difference], axis=self.channel_axis)
        return output, [inputs, ops.ones_like(seen)]

    def get_initial_state(self, batch_size=None):
        return [
            ops.zeros((batch_size, *self.frame), dtype=self.compute_dtype),
            ops.zeros((batch_size, 1), dtype=self.compute_dtype),
        ]

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format}
