"""The model: ConvLSTM cells and layers (Keras 3, TensorFlow backend) and the genre classifier.

Importing this package registers every layer under the ``trailers`` package, so that
``keras.saving.load_model`` reads a saved classifier with no ``custom_objects``.
"""

from pipeline.model.cells import (
    ConvLSTMCell,
    PeepholeConvLSTMCell,
    RefineNet,
    STConvLSTMCell,
    resolve_compute_format,
)
from pipeline.model.classifier import (
    CELLS,
    build_classifier,
    build_frame_baseline,
    build_network,
    reset_states,
)
from pipeline.model.layers import ConvLSTM, ConvRNN2D, PeepholeConvLSTM, STConvLSTM

__all__ = [
    "CELLS",
    "ConvLSTM",
    "ConvLSTMCell",
    "ConvRNN2D",
    "PeepholeConvLSTM",
    "PeepholeConvLSTMCell",
    "RefineNet",
    "STConvLSTM",
    "STConvLSTMCell",
    "build_classifier",
    "build_frame_baseline",
    "build_network",
    "reset_states",
    "resolve_compute_format",
]
