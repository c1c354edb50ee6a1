"""What training minimises: the per-frame cross-entropy, and the bag loss of trailer-level
labels (``train.weak_labels: mil``), on hand-made tensors."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipeline import GENRES
from pipeline.core.config import TrainConfig
from pipeline.train.dataset import PAD, WEAK
from pipeline.train.losses import BagLoss, TrailerAucPr, compile_model, pool

FRAMES = 8


def bce(label: float, score: np.ndarray) -> np.ndarray:
    return -(label * np.log(score) + (1 - label) * np.log(1 - score))


def gradient(loss: keras.losses.Loss, labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """d loss / d scores, for ``(batch, time)`` labels and scores."""
    scores = tf.Variable(scores[..., None], dtype=tf.float32)
    with tf.GradientTape() as tape:
        value = loss(tf.constant(labels[..., None], tf.float32), scores)
    return tape.gradient(value, scores).numpy()[..., 0]


def test_pool_is_the_mean_of_the_top_valid_frames():
    scores = np.array([[0.1, 0.9, 0.5, 0.7, 0.3, 0.2, 0.95, 0.4]], np.float32)
    valid = np.ones_like(scores, bool)
    assert float(pool(scores, valid, 0.25)[0]) == pytest.approx((0.95 + 0.9) / 2)
    assert float(pool(scores, valid, 1.0)[0]) == pytest.approx(scores.mean())
    valid[0, [1, 6]] = False  # padding is never pooled, even where it scores highest
    assert float(pool(scores, valid, 0.25)[0]) == pytest.approx((0.7 + 0.5) / 2)


def test_a_weak_trailer_reaches_its_frames_only_through_the_pooling():
    """A genre present only in the trailer's first half, labelled at trailer level: the model
    scores the first half higher. The bag loss pushes up only its top frames (in the first
    half) and leaves the second half alone; broadcast labels would push up every frame."""
    scores = np.array([[0.6, 0.7, 0.5, 0.4, 0.2, 0.1, 0.3, 0.2]], np.float32)
    weak = np.full((1, FRAMES), WEAK, np.float32)
    bag = gradient(BagLoss(top_fraction=0.25), weak, scores)
    assert (bag[0, :2] < 0).all()  # the top two frames (0.6, 0.7) are pushed up...
    np.testing.assert_array_equal(bag[0, 2:], 0)  # ...and no other frame gets any term
    value = BagLoss(0.25)(weak[..., None], scores[..., None])
    assert float(value) == pytest.approx(-np.log((0.6 + 0.7) / 2), rel=1e-5)

    broadcast = gradient(keras.losses.BinaryCrossentropy(), np.ones((1, FRAMES)), scores)
    assert (broadcast[0, 4:] < 0).all()  # what a weak label must not do: second half up too


def test_exact_frames_keep_their_per_frame_loss_in_a_mixed_batch():
    """Row 0 segment-labelled, row 1 a weak trailer lacking the genre (exact 0s), row 2 a weak
    trailer that has it, padded after four frames: one batch, each row its own kind of term."""
    rng = np.random.default_rng(0)
    scores = rng.uniform(0.05, 0.95, (3, FRAMES)).astype(np.float32)
    labels = np.zeros((3, FRAMES), np.float32)
    labels[0, 2:5] = 1
    labels[2, :4], labels[2, 4:] = WEAK, PAD
    terms = BagLoss(0.5).call(labels[..., None], scores[..., None]).numpy()
    np.testing.assert_allclose(terms[0], bce(labels[0], scores[0]), rtol=1e-5)
    np.testing.assert_allclose(terms[1], bce(0.0, scores[1]), rtol=1e-5)
    top_two = np.sort(scores[2, :4])[-2:].mean()
    np.testing.assert_allclose(terms[2, :4], -np.log(top_two), rtol=1e-5)
    np.testing.assert_array_equal(terms[2, 4:], 0)
    frame_gradient = gradient(BagLoss(0.5), labels, scores)
    np.testing.assert_array_equal(frame_gradient[2, 4:], 0)  # padding learns nothing


def test_trailer_auc_pr_scores_rows_by_their_top_frames():
    """Two trailers with the genre (one weak, one segment-labelled) outscore the one without."""
    labels = np.zeros((3, FRAMES, 1), np.float32)
    labels[0], labels[1, 3:5] = WEAK, 1
    scores = np.full((3, FRAMES, 1), 0.1, np.float32)
    scores[0, 0], scores[1, 3:5] = 0.9, 0.8  # the third trailer's frames are all lower
    metric = TrailerAucPr(top_fraction=0.25)
    metric.update_state(labels, scores)
    assert float(metric.result()) == pytest.approx(1.0)
    metric.reset_state()
    scores[2] = 0.95  # now the trailer without the genre ranks first
    metric.update_state(labels, scores)
    assert float(metric.result()) < 0.9


def tiny_net() -> keras.Model:
    """Per-frame sigmoid heads named after the genres over a one-number frame."""
    inputs = keras.Input((None, 1))
    return keras.Model(
        inputs, {g: keras.layers.Dense(1, activation="sigmoid", name=g)(inputs) for g in GENRES}
    )


@pytest.mark.slow
def test_mixed_batches_train_with_the_bag_loss():
    """Segment-labelled and weak rows in every batch: the loss falls, every head is a bag loss
    (the trailer metric beside it: test_train_tracking's run)."""
    keras.utils.set_random_seed(0)
    net = tiny_net()
    compile_model(net, TrainConfig(weak_labels="mil", learning_rate=0.05), None)
    assert all(isinstance(net.loss[g], BagLoss) for g in GENRES)
    frames = np.linspace(-1, 1, 4 * FRAMES, dtype=np.float32).reshape(4, FRAMES, 1)
    labels = {g: (frames > 0).astype(np.float32) for g in GENRES}
    for g in GENRES:
        labels[g][2:] *= WEAK  # rows 2 and 3 are weak trailers
    losses = [net.train_on_batch(frames, labels, return_dict=True) for _ in range(5)]
    assert np.isfinite(losses[-1]["loss"]) and losses[-1]["loss"] < losses[0]["loss"]


def test_broadcast_keeps_the_per_frame_cross_entropy():
    net = tiny_net()
    compile_model(net, TrainConfig(), None)
    assert all(isinstance(net.loss[g], keras.losses.BinaryCrossentropy) for g in GENRES)
