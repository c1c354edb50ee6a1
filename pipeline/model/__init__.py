"""The model: ConvLSTM cells and layers (Keras 3, TensorFlow backend) and the genre classifier.

Importing this package registers every layer under the ``trailers`` package, so that
``keras.saving.load_model`` reads a saved classifier with no ``custom_objects``. Importing it,
or constructing a layer, does not start the TensorFlow runtime: devices and distribution
strategies can still be configured until weights are created.
"""

from pipeline.model.cells import (
    ConvLSTMCell,
    FrameDifferenceCell,
    PeepholeConvLSTMCell,
    RefineNet,
    STConvLSTMCell,
    forced_layout,
    resolve_compute_format,
)
from pipeline.model.classifier import (
    CELLS,
    GenreClassifier,
    build_classifier,
    build_frame_baseline,
    build_network,
    frame_probabilities,
    load_network,
    reset_states,
    stacked_outputs,
    streaming_twin,
)
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
    "ConvLSTM",
    "ConvLSTMCell",
    "FrameDifferenceCell",
    "ConvRNN2D",
    "FrameDifference",
    "FrameStandardization",
    "GenreClassifier",
    "PeepholeConvLSTM",
    "PeepholeConvLSTMCell",
    "RefineNet",
    "STConvLSTM",
    "STConvLSTMCell",
    "build_classifier",
    "build_frame_baseline",
    "build_network",
    "forced_layout",
    "frame_probabilities",
    "load_network",
    "reset_states",
    "resolve_compute_format",
    "stacked_outputs",
    "streaming_twin",
]
