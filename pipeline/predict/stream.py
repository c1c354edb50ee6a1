"""Streaming inference: a video of any length through the model chunk by chunk.

Frames are decoded in a background thread into a queue of at most ``QUEUE_CHUNKS`` chunks, so
decoding the next chunk overlaps the model's work on this one, and memory holds a few chunks
whatever the video's length. A ConvLSTM runs as its stateful twin (state carried from chunk to
chunk, reset between videos), which gives the whole-sequence outputs; the per-frame baseline
has no state and runs as it is.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import numpy as np
import tensorflow as tf

from pipeline import GENRES
from pipeline.model import GenreClassifier, reset_states, stacked_outputs, streaming_twin

QUEUE_CHUNKS = 2
"""Decoded chunks waiting for the model: one being decoded while the model runs on another."""
POLL_S = 0.1
"""How often a decoder blocked on a full queue checks whether the consumer has gone."""

Item = TypeVar("Item")


def prefetched(items: Iterable[Item], depth: int = QUEUE_CHUNKS) -> Iterator[Item]:
    """``items``, produced in a background thread at most ``depth`` ahead of the consumer.

    An exception in the producer is raised in the consumer, at the item where it happened.
    A consumer that stops early (an error, Ctrl-C) stops the producer, which closes ``items``.
    """
    handoff: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def offer(entry: tuple) -> bool:
        while not stop.is_set():
            try:
                handoff.put(entry, timeout=POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        iterator = iter(items)
        try:
            for item in iterator:
                if not offer((item, None)):
                    return
            offer((done, None))
        except BaseException as exc:  # noqa: BLE001  handed to the consumer, raised there
            offer((done, exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    producer = threading.Thread(target=produce, name="predict-decoder", daemon=True)
    producer.start()
    try:
        while True:
            item, error = handoff.get()
            if error is not None:
                raise error
            if item is done:
                return
            yield item
    finally:
        stop.set()
        producer.join()


class StreamingModel:
    """A trained classifier ready for videos of any length, one video at a time.

    Chunks go through one ``tf.function`` traced once for any chunk length: called eagerly,
    the recurrent layers' time loop ran op by op, 9-12x slower per 64-frame chunk (demo
    model, 64x64, 2 CPU cores: ~10 s eager, ~0.8-1.1 s traced).
    """

    def __init__(self, network: GenreClassifier) -> None:
        self.model = network if network.frame_baseline else streaming_twin(network)
        frames = tf.TensorSpec((1, None, *network.frames_shape), tf.uint8)
        self.step = tf.function(
            lambda chunk: self.model(chunk, training=False), input_signature=[frames]
        )

    def timeline(
        self, chunks: Iterable[np.ndarray], progress: Callable[[int], object] = lambda n: None
    ) -> np.ndarray:
        """Each frame's genre probabilities, float32 ``(frames, 6)``, from channels_first
        uint8 chunks ``(n, 3, H, W)`` fed in order; ``progress(n)`` after each chunk."""
        reset_states(self.model)
        parts = []
        try:
            for chunk in chunks:
                outputs = self.step(chunk[None])
                parts.append(stacked_outputs(outputs)[0].astype(np.float32))
                progress(len(chunk))
        finally:
            reset_states(self.model)
        return np.concatenate(parts) if parts else np.zeros((0, len(GENRES)), np.float32)
