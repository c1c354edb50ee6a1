"""Functions the sandbox tests run in a child process (importable there through PYTHONPATH)."""

import ctypes
import os
import time


def count(progress, upto: int) -> int:
    for step in range(upto):
        progress(step)
    return upto


def fail(progress, message: str) -> None:
    raise ValueError(message)


def abort(progress) -> None:
    print("terminate called after throwing an instance of 'dmlc::Error'", flush=True)
    os.abort()


def segfault(progress) -> None:
    ctypes.string_at(0)


def hang_holding_the_gil(progress) -> None:
    """Like decord's get_batch loop (dmlc/decord#373): busy in one call, deaf to signals."""
    time.sleep(0.01)
    while True:
        pass


def imported(progress, module: str) -> bool:
    import sys

    return module in sys.modules
