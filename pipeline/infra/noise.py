"""Quiet by default, loud when asked: library chatter that is not about the user's data.

Each line is dropped by its exact message, never by a blanket filter, and only when the user
did not ask for ``-v``; a noise line that has a source fix is fixed there instead (Beam's
"crcmod package not found": the ``tfrecord`` extra installs crcmod).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
import warnings
from collections.abc import Iterator
from typing import TextIO

FUTURE_WARNINGS = (
    # google.api_core, imported by Beam's GCP modules, on every run under Python 3.11.
    r"You are using a Python version \S+ which Google will stop supporting",
)
CHILD_FUTURE_WARNINGS = ("You are using a Python version",)
"""The start of each of :data:`FUTURE_WARNINGS`, as child processes' PYTHONWARNINGS takes it."""
STDERR_LINES = (
    # TFDV writes this to sys.stderr when it is imported; its visualisation is not used here.
    re.compile(r"Unable to import IPython: No module named 'IPython'\. \nTFDV visualization APIs"),
)


def configure(verbosity: int) -> None:
    """Logging and library noise for ``-q`` (-1), the default (0) and ``-v`` (1).

    By default the product logs at INFO and libraries at WARNING; TensorFlow's C++ start-up
    messages (its "Unable to register cuFFT/cuDNN/cuBLAS factory" ERROR lines among them) are
    off through ``TF_CPP_MIN_LOG_LEVEL=3`` unless the caller set it. ``-q`` keeps warnings and
    errors only; ``-v`` shows everything, the product's debug lines included.
    """
    level = {-1: logging.WARNING, 0: logging.INFO, 1: logging.DEBUG}[verbosity]
    logging.basicConfig(
        level=logging.INFO if verbosity > 0 else logging.WARNING,
        format="%(asctime)s %(name)s: %(message)s",
    )
    logging.getLogger("pipeline").setLevel(level)
    if verbosity > 0:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # MLflow configures its own loggers at INFO (store migrations, experiment creation, the
    # system metrics monitor starting and stopping) and draws a bar per artifact download.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # A local Dask cluster's scheduler (here) and workers (child processes, which inherit the
    # environment) log every start, connection and stop at INFO; dask reads this on import.
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    # ...and each of their workers quiets its own stderr as this process does (dask_setup).
    os.environ.setdefault("DASK_DISTRIBUTED__WORKER__PRELOAD", f"['{__name__}']")
    for message in FUTURE_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=FutureWarning)
    # The same warnings in child processes (Dask workers, benchmark children): PYTHONWARNINGS
    # takes a message's literal start, not a pattern.
    os.environ.setdefault(
        "PYTHONWARNINGS",
        ",".join(f"ignore:{start}:FutureWarning" for start in CHILD_FUTURE_WARNINGS),
    )


class _FilteredStream:
    """A text stream that drops writes matching one of ``patterns`` and passes the rest on."""

    def __init__(self, stream: TextIO, patterns: tuple[re.Pattern[str], ...]) -> None:
        self._stream, self._patterns = stream, patterns

    def write(self, text: str) -> int:
        if any(pattern.match(text) for pattern in self._patterns):
            return len(text)
        return self._stream.write(text)

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)


@contextlib.contextmanager
def quiet_stderr(verbosity: int) -> Iterator[None]:
    """Within the block, drop the known noise lines libraries write to ``sys.stderr``."""
    if verbosity > 0:
        yield
        return
    real = sys.stderr
    sys.stderr = _FilteredStream(real, STDERR_LINES)
    try:
        yield
    finally:
        sys.stderr = real


def _quiet_unraisable(unraisable: object) -> None:
    """``sys.unraisablehook`` without TensorFlow's ``AtomicFunction.__del__`` failing at
    interpreter exit (its module globals already gone); anything else as Python reports it."""
    finalizer = getattr(getattr(unraisable, "object", None), "__qualname__", "")
    if finalizer == "AtomicFunction.__del__" and unraisable.exc_type is TypeError:
        return
    sys.__unraisablehook__(unraisable)


def dask_setup(worker: object) -> None:
    """Run by each local Dask worker as it starts (Dask's ``distributed.worker.preload``, which
    :func:`configure` points here): the worker's stderr drops the known noise lines, as the
    stages' own stderr does, and TensorFlow's finalisers stay quiet at the worker's exit."""
    sys.stderr = _FilteredStream(sys.stderr, STDERR_LINES)
    sys.unraisablehook = _quiet_unraisable


class _MainThreadOnly:
    """A text stream that passes on only what the main thread writes."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        if threading.current_thread() is threading.main_thread():
            return self._stream.write(text)
        return len(text)

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream, name)


def silence_workers() -> None:
    """After Ctrl-C: hide what Beam's worker threads log and print about their stopped
    decoders and torn-down bundles (consequences of the interrupt, not news), while the main
    thread unwinds and says it was interrupted."""
    logging.disable(logging.CRITICAL)
    sys.stderr = _MainThreadOnly(sys.stderr)
