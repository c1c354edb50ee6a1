"""Run a function in a child process that may abort, segfault or hang without taking us along.

decord can end the whole process from its decoder thread, or loop forever in native code holding
the GIL (``shared/notes/decord.md``). So each decode runs in a long-lived child started with
``subprocess`` (which also works inside daemonic Beam/Dask workers, where ``multiprocessing``
children are not allowed). The child reports progress while it works; the parent kills it when
it dies or stays silent for ``timeout_s``, and starts a fresh one for the next call.

Protocol: length-prefixed pickles over the child's stdin/stdout. The child's own fd 1 is pointed
at its stderr, so native libraries that print cannot corrupt the channel.
"""

from __future__ import annotations

import collections
import gc
import importlib
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, BinaryIO

_HEADER = struct.Struct("!Q")
_STDERR_LINES = 20


class SandboxError(Exception):
    """The child died or hung; the message says how, with its last line on stderr."""


class CallFailed(Exception):
    """The function raised in the child; the message is the exception's."""


def _send(stream: BinaryIO, message: Any) -> None:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(payload)) + payload)
    stream.flush()


def _read_exactly(fd: int, size: int, deadline: float | None) -> bytes | None:
    chunks, remaining = [], size
    while remaining:
        if deadline is not None:
            wait = deadline - time.monotonic()
            if wait <= 0 or not select.select([fd], [], [], wait)[0]:
                raise TimeoutError
        chunk = os.read(fd, remaining)
        if not chunk:
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


class Sandbox:
    """A supervised child process that runs ``module:function`` calls one at a time.

    ``timeout_s`` is the longest the child may go without a progress report; ``max_calls``
    restarts the child after that many calls to bound native memory leaks. Each child imports
    the ``preload`` modules as it starts, so that ``start`` can overlap that work with the
    caller's; it runs in ``cwd`` (None: the caller's working directory).
    """

    def __init__(
        self,
        timeout_s: float,
        max_calls: int = 0,
        preload: tuple[str, ...] = (),
        cwd: str | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self.max_calls = max_calls
        self.preload = preload
        self.cwd = cwd
        self._process: subprocess.Popen | None = None
        self._stderr: collections.deque[str] = collections.deque(maxlen=_STDERR_LINES)
        self._drainer: threading.Thread | None = None
        self._calls = 0

    @property
    def pid(self) -> int | None:
        """The running child's process id, or None between children."""
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Start the child now rather than at the first call (a no-op if it is running)."""
        if self._process is None or self._process.poll() is not None:
            self._process = self._start()

    def _start(self) -> subprocess.Popen:
        self._stderr.clear()
        process = subprocess.Popen(
            [sys.executable, "-m", "pipeline.infra.sandbox", *self.preload],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=self.cwd,
        )
        self._drainer = threading.Thread(target=self._drain, args=(process.stderr,), daemon=True)
        self._drainer.start()
        self._calls = 0
        return process

    def _drain(self, stream: BinaryIO) -> None:
        for line in iter(stream.readline, b""):
            self._stderr.append(line.decode(errors="replace").rstrip())

    def call(
        self,
        target: str,
        kwargs: dict[str, Any],
        on_progress: Callable[[Any], None] | None = None,
    ) -> Any:
        """Run ``target(progress=..., **kwargs)`` in the child and return its result.

        Raises CallFailed when the function raised, SandboxError when the child died or hung
        (the child is then replaced before the next call).
        """
        self.start()
        process = self._process
        _send(process.stdin, (target, kwargs))
        self._calls += 1
        try:
            while True:
                kind, payload = self._receive(process)
                if kind == "progress":
                    if on_progress is not None:
                        on_progress(payload)
                elif kind == "done":
                    return payload
                else:
                    raise CallFailed(payload)
        except SandboxError:
            self.close()
            raise
        finally:
            if self.max_calls and self._calls >= self.max_calls:
                self.close()

    def _receive(self, process: subprocess.Popen) -> tuple[str, Any]:
        deadline = time.monotonic() + self.timeout_s
        fd = process.stdout.fileno()
        try:
            header = _read_exactly(fd, _HEADER.size, deadline)
            payload = header and _read_exactly(fd, _HEADER.unpack(header)[0], deadline)
        except TimeoutError:
            process.kill()
            raise SandboxError(
                f"no progress for {self.timeout_s:g} s, killed (hung decoder?)"
                + self._last_words(process)
            ) from None
        if not payload:
            code = process.wait()
            how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
            raise SandboxError(f"worker process died ({how})" + self._last_words(process))
        return pickle.loads(payload)

    def _last_words(self, process: subprocess.Popen) -> str:
        """The dead child's last line on stderr: read to its end once the child is gone."""
        process.wait()
        if self._drainer is not None:
            self._drainer.join(timeout=5)  # a grandchild could hold stderr open: do not hang
        lines = [line for line in self._stderr if line]
        return f": {lines[-1][:200]}" if lines else ""

    def close(self) -> None:
        """Stop the child (kill it if it does not leave at once)."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.kill()
        process.wait()
        for stream in (process.stdin, process.stdout, process.stderr):
            stream.close()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _serve(preload: list[str]) -> None:
    """The child's loop: read a call, run it, answer; progress reports go out as they come.

    The ``preload`` modules are imported first; everything alive then is frozen out of the
    garbage collector's reach, so that the collections decoding asks for stay cheap.
    """
    for module_name in preload:
        importlib.import_module(module_name)
    gc.freeze()
    channel = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    inbox = sys.stdin.buffer
    while True:
        header = inbox.read(_HEADER.size)
        if len(header) < _HEADER.size:
            return
        target, kwargs = pickle.loads(inbox.read(_HEADER.unpack(header)[0]))
        module_name, _, function_name = target.partition(":")
        function = getattr(importlib.import_module(module_name), function_name)
        try:
            result = function(progress=lambda info: _send(channel, ("progress", info)), **kwargs)
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the parent as text
            _send(channel, ("error", str(exc) or type(exc).__name__))
        else:
            _send(channel, ("done", result))


if __name__ == "__main__":
    _serve(sys.argv[1:])
