"""Streaming inference: a video of any length through the model chunk by chunk.

Frames are decoded in a background thread into a queue of at most ``QUEUE_CHUNKS`` chunks, so
decoding overlaps the model's work, and memory holds a few chunks whatever the video's length.
A ConvLSTM runs as its stateful twin (state carried from chunk to chunk, reset between videos),
which gives the whole-sequence outputs; the per-frame baseline has no state and runs as it is.
The model gets ready (twin and tracing: seconds) in another thread while the first
video's chunks decode.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import keras
import numpy as np

from pipeline import GENRES
from pipeline.model import GenreClassifier, frame_probabilities, reset_states, streaming_twin

QUEUE_CHUNKS = 8
"""Decoded chunks waiting for the model. Enough for the decoder to run on while the model gets
ready: 8 chunks of 64 frames are 64 s of 720p video at 8 fps, about 5 s of decoding on 2 cores
(the model's start-up, measured: 4-5 s); a few MB at 32x32, 77 MB at 224x224."""
POLL_S = 0.1
"""How often a decoder blocked on a full queue checks whether the consumer has gone."""

Item = TypeVar("Item")
Probabilities = Callable[[np.ndarray], np.ndarray]


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

    Chunks go through one ``tf.function`` traced once for any chunk length
    (:func:`pipeline.model.frame_probabilities`). The twin is built and traced in a
    background thread from construction on; :meth:`timeline` waits for it only after its
    first chunk has been asked for, so decoding starts meanwhile.
    """

    def __init__(self, network: GenreClassifier) -> None:
        self.frames_shape = network.frames_shape
        builder = ThreadPoolExecutor(1, thread_name_prefix="predict-model")
        self._ready = builder.submit(self._prepare, network)
        builder.shutdown(wait=False)

    def _prepare(self, network: GenreClassifier) -> tuple[keras.Model, Probabilities]:
        # No eager self-check of the twin at every start (a second of 2 cores): the tests hold
        # twins of every cell to their whole-sequence models.
        model = network if network.frame_baseline else streaming_twin(network, check_frames=0)
        probabilities = frame_probabilities(model)
        probabilities(np.zeros((1, *self.frames_shape), np.uint8))  # traced now, not on frame 1
        reset_states(model)
        return model, probabilities

    def timeline(
        self, chunks: Iterable[np.ndarray], progress: Callable[[int], object] = lambda n: None
    ) -> np.ndarray:
        """Each frame's genre probabilities, float32 ``(frames, 6)``, from channels_first
        uint8 chunks ``(n, 3, H, W)`` fed in order; ``progress(n)`` after each chunk."""
        chunks = iter(chunks)
        first = next(chunks, None)
        model, probabilities = self._ready.result()
        parts = []
        try:
            for chunk in itertools.chain([first] if first is not None else [], chunks):
                parts.append(probabilities(chunk))
                progress(len(chunk))
        finally:
            reset_states(model)
        return np.concatenate(parts) if parts else np.zeros((0, len(GENRES)), np.float32)
