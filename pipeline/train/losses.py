"""What training minimises and reports: a binary cross-entropy per genre head (balanced by
the train split's positive frequencies when ``train.positive_weights``) and per-genre AUC-PR,
precision and recall."""

from __future__ import annotations

import keras
import numpy as np

from pipeline import GENRES
from pipeline.core.config import TrainConfig


def genre_loss(positive_frequency: float | None) -> keras.losses.Loss:
    """Binary cross-entropy; with a frequency, positives and negatives weigh equally overall.

    Focal cross-entropy with ``gamma=0`` and class balancing is exactly BCE with weight
    ``alpha`` on positives and ``1 - alpha`` on negatives: Keras' own pos_weight.
    """
    if positive_frequency is None:
        return keras.losses.BinaryCrossentropy()
    alpha = float(np.clip(1 - positive_frequency, 0.05, 0.95))
    return keras.losses.BinaryFocalCrossentropy(apply_class_balancing=True, alpha=alpha, gamma=0)


def compile_model(net: keras.Model, train: TrainConfig, frequencies: np.ndarray | None) -> None:
    net.compile(
        optimizer=keras.optimizers.Adam(train.learning_rate),
        loss={
            genre: genre_loss(None if frequencies is None else frequencies[index])
            for index, genre in enumerate(GENRES)
        },
        # Weighted: the padding that splits a batch evenly between replicas weighs nothing.
        weighted_metrics={
            genre: [
                keras.metrics.AUC(curve="PR", name="auc_pr"),
                keras.metrics.Precision(name="precision"),
                keras.metrics.Recall(name="recall"),
            ]
            for genre in GENRES
        },
        jit_compile=train.jit_compile,
    )
