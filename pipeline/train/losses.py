"""What training minimises and reports: a binary cross-entropy per genre head (balanced by
the train split's positive frequencies when ``train.positive_weights``) and per-genre AUC-PR,
precision and recall.

With ``train.weak_labels: mil`` each head's loss is :class:`BagLoss`: frames labelled 0 or 1
(segment labels, and the absent genres of a trailer-level-labelled trailer) keep their per-frame
cross-entropy, while the frames of a bag labelled :data:`~pipeline.train.dataset.WEAK` give none:
the bag's pooled score (:func:`pool`) is compared with its label instead, so the gradient
reaches those frames only through the pooling. Frames labelled
:data:`~pipeline.train.dataset.PAD` count for nothing. A batch may mix both kinds of trailer.
Whenever trailer-level labels are in play the heads also report ``trailer_auc_pr``
(:class:`TrailerAucPr`), what early stopping watches when the val split has nothing finer.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from pipeline import GENRES
from pipeline.core.config import TrainConfig
from pipeline.train.dataset import PAD, WEAK

EPSILON = 1e-7
"""Probabilities are clipped to ``[EPSILON, 1 - EPSILON]`` before a logarithm, as Keras does."""


def genre_loss(positive_frequency: float | None) -> keras.losses.Loss:
    """Binary cross-entropy; with a frequency, positives and negatives weigh equally overall.

    Focal cross-entropy with ``gamma=0`` and class balancing is exactly BCE with weight
    ``alpha`` on positives and ``1 - alpha`` on negatives: Keras' own pos_weight.
    """
    if positive_frequency is None:
        return keras.losses.BinaryCrossentropy()
    alpha = float(np.clip(1 - positive_frequency, 0.05, 0.95))
    return keras.losses.BinaryFocalCrossentropy(apply_class_balancing=True, alpha=alpha, gamma=0)


def pool(scores, valid, top_fraction: float):
    """Per row, the mean of the top ``ceil(top_fraction * n)`` of its ``n`` valid frames'
    scores; ``scores`` and ``valid`` (bool) are ``(batch, time)``. A fraction of 1 is the mean."""
    count = ops.sum(ops.cast(valid, scores.dtype), axis=1, keepdims=True)
    top = ops.maximum(ops.ceil(top_fraction * count), 1.0)
    ranked = ops.flip(ops.sort(ops.where(valid, scores, -1.0), axis=1), axis=1)
    rank = ops.cast(ops.arange(ops.shape(scores)[1]), scores.dtype)[None, :]
    kept = ops.cast(rank < top, scores.dtype) * ops.cast(ranked >= 0, scores.dtype)
    return ops.sum(ranked * kept, axis=1) / top[:, 0]


class BagLoss(keras.losses.Loss):
    """Per-frame cross-entropy on exact labels, bag cross-entropy on weak ones (``WEAK``).

    Returns ``(batch, time)`` like Keras' cross-entropy: an exact frame's own term, and on each
    weak frame its bag's term (so a row all of one bag weighs one bag), 0 on padding.
    """

    def __init__(self, top_fraction: float, name: str = "bag_loss") -> None:
        super().__init__(name=name)
        self.top_fraction = top_fraction

    def call(self, y_true, y_pred):
        labels = ops.cast(y_true[..., 0], "float32")
        scores = ops.clip(ops.cast(y_pred[..., 0], "float32"), EPSILON, 1 - EPSILON)
        exact = (labels == 0.0) | (labels == 1.0)
        weak = labels == WEAK
        target = ops.where(exact, labels, 0.0)
        frame = -(target * ops.log(scores) + (1 - target) * ops.log(1 - scores))
        pooled = ops.clip(pool(scores, labels != PAD, self.top_fraction), EPSILON, 1 - EPSILON)
        bag = -ops.log(pooled)[:, None]
        return ops.where(exact, frame, ops.where(weak, bag, 0.0))

    def get_config(self) -> dict:
        return {"top_fraction": self.top_fraction, "name": self.name}


class TrailerAucPr(keras.metrics.AUC):
    """AUC-PR over trailers (rows): a row's label is whether any frame has the genre (exact or
    :data:`WEAK`), its score the mean of its top ``top_fraction`` frames, as evaluate scores a
    trailer. Meaningful on whole trailers (``train.eval_window: 0``)."""

    def __init__(self, top_fraction: float, name: str = "trailer_auc_pr") -> None:
        super().__init__(curve="PR", name=name)
        self.top_fraction = top_fraction

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels = ops.cast(y_true[..., 0], "float32")
        valid = labels != PAD
        if sample_weight is not None:
            valid = valid & (ops.reshape(sample_weight, ops.shape(labels)) > 0)
        scores = ops.cast(y_pred[..., 0], "float32")
        present = ops.cast(ops.max(ops.where(valid, labels, 0.0), axis=1) > 0, "float32")
        weight = ops.cast(ops.any(valid, axis=1), "float32")
        pooled = pool(scores, valid, self.top_fraction)
        return super().update_state(present[:, None], pooled[:, None], weight[:, None])

    def get_config(self) -> dict:
        return {"top_fraction": self.top_fraction, "name": self.name}


def compile_model(
    net: keras.Model,
    train: TrainConfig,
    frequencies: np.ndarray | None,
    trailer_top_fraction: float | None = None,
) -> None:
    """Compile with the config's loss; ``trailer_top_fraction`` (how evaluate scores a trailer)
    adds :class:`TrailerAucPr` to every head."""

    def loss(index: int) -> keras.losses.Loss:
        if train.weak_labels == "mil":
            top = 1.0 if train.mil_pooling == "mean" else train.mil_top_fraction
            return BagLoss(top)
        return genre_loss(None if frequencies is None else frequencies[index])

    def metrics() -> list:
        found = [
            keras.metrics.AUC(curve="PR", name="auc_pr"),
            keras.metrics.Precision(name="precision"),
            keras.metrics.Recall(name="recall"),
        ]
        if trailer_top_fraction is not None:
            found.append(TrailerAucPr(trailer_top_fraction))
        return found

    net.compile(
        optimizer=keras.optimizers.Adam(train.learning_rate),
        loss={genre: loss(index) for index, genre in enumerate(GENRES)},
        # Weighted: the padding that splits a batch evenly between replicas weighs nothing.
        weighted_metrics={genre: metrics() for genre in GENRES},
        jit_compile=train.jit_compile,
    )
