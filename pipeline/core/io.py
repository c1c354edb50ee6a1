"""Atomic file writes: an output appears whole or not at all, so a killed stage reruns cleanly.

A write that fills the disk stops the stage with :class:`DiskFull`: one line naming the file,
the size it needed (or had written when the disk filled) and the space free; its temporary file
is gone, so a rerun once space is freed finishes.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Any

import numpy as np

from pipeline.core.errors import StageError

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
"""What a write that finds no room fails with: the disk is full, or the user's quota is."""
NO_SPACE = "no space left on device"
"""How :class:`DiskFull` says it (a decoder process's error comes back as this text)."""


class DiskFull(StageError):
    """A write found no room; the message names the file and the space needed and free."""


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS


def free_bytes(folder: str | Path) -> int:
    """Bytes an unprivileged writer may still put on ``folder``'s filesystem."""
    stats = os.statvfs(folder)
    return stats.f_bavail * stats.f_frsize


def _size(count: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError  # unreachable: the loop returns at GiB


def disk_full(path: str | Path, needed: int | None = None, written: int = 0) -> DiskFull:
    """The one line a write that filled the disk stops with: ``needed`` bytes when the writer
    knows its size (an array's data: its ``.npy`` header adds a few dozen bytes), else the
    ``written`` ones it managed (the file needs more)."""
    path = Path(path)
    space = [f"{_size(free_bytes(path.parent))} free"]
    if needed is not None:
        space.insert(0, f"needs {_size(needed)}")
    elif written:
        space.insert(0, f"needs over {_size(written)}")
    return DiskFull(f"{path}: {NO_SPACE} ({', '.join(space)}); free space and rerun")


@contextlib.contextmanager
def naming_disk_full(path: str | Path) -> Iterator[None]:
    """A full disk met in the block, by a writer that appends to ``path`` in place (a log), is
    :class:`DiskFull` naming it."""
    try:
        yield
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        _release(exc)
        raise disk_full(path) from None


@contextlib.contextmanager
def _unraisable_dropped() -> Iterator[None]:
    """Errors raised while objects are freed are dropped, not printed (h5py's file objects,
    freed after a write failed, print a traceback per buffer they could not flush, through
    both hooks). For the moment of a ``gc.collect``: the hooks are the process's."""
    hooks = sys.unraisablehook, sys.excepthook
    sys.unraisablehook, sys.excepthook = lambda unraisable: None, lambda *exc_info: None
    try:
        yield
    finally:
        sys.unraisablehook, sys.excepthook = hooks


def _clear_frames(tb: TracebackType | None) -> None:
    """Drop the locals of the finished frames ``tb`` passes through and of their callers, up
    to the first still running: a library that trims tracebacks (Keras) leaves its own frames
    out of ``tb``, still reachable as the callers of those in it."""
    while tb is not None:
        frame: FrameType | None = tb.tb_frame
        while frame is not None:
            try:
                frame.clear()
            except RuntimeError:  # a frame still running: this one's callers are too
                break
            frame = frame.f_back
        tb = tb.tb_next


def _release(exc: BaseException) -> None:
    """Free the failed writer's objects now, quietly: the frames of ``exc``'s traceback hold
    them (an open HDF5 file, whose space the disk gets back only once it is closed)."""
    with _unraisable_dropped():
        seen: BaseException | None = exc
        while seen is not None:  # the errors raised while this one unwound hold frames too
            _clear_frames(seen.__traceback__)
            seen = seen.__context__
        gc.collect()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def remove_leftovers(folder: Path, name: str = "", recursive: bool = False) -> None:
    """Delete the temporary files of atomic writes (to ``name*`` in ``folder``) that a killed
    run left behind; a finished write never leaves one."""
    pattern = f".{name}*.tmp*"
    for leftover in folder.rglob(pattern) if recursive else folder.glob(pattern):
        leftover.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(
    path: str | Path, keep_suffix: bool = False, size: int | None = None
) -> Iterator[Path]:
    """Yield a temporary path beside ``path``, renamed onto it only if the block succeeds.

    ``keep_suffix`` ends the temporary name with ``path``'s suffixes too, for writers that
    insist on them (Keras saves only to names ending in ``.keras`` or ``.weights.h5``).
    A full disk raises :class:`DiskFull` (``size``: the bytes the file takes, when known).
    """
    path = Path(path)
    suffix = ".tmp" + ("".join(path.suffixes) if keep_suffix else "")
    tmp_path = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        tmp_path.chmod(0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual mode
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        written = tmp_path.stat().st_size if tmp_path and tmp_path.exists() else 0
        _release(exc)
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)
        raise disk_full(path, size, written) from None
    finally:
        if tmp_path is not None:
            tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """``open`` for writing that renames into place on success and leaves nothing on failure."""
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as handle:
        yield handle


def read_json(path: str | Path) -> Any | None:
    """A JSON file's content, or None if it is missing or not (yet) valid JSON."""
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def file_sha256(path: str | Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def write_json(path: str | Path, data: Any) -> None:
    with atomic_open(path) as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")


class _HashingWriter:
    """A binary file that also feeds every byte written to a SHA-256 digest."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle, self.digest = handle, hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return self.handle.write(data)


def save_npy(path: str | Path, array: np.ndarray) -> str:
    """``np.save`` to exactly ``path`` (no ``.npy`` appended), atomically; returns its SHA-256.

    The digest is taken from the bytes as they are written, so the file is not read back.
    """
    with atomic_path(path, size=array.nbytes) as tmp, open(tmp, "wb") as handle:
        writer = _HashingWriter(handle)
        np.save(writer, array, allow_pickle=False)
    return writer.digest.hexdigest()
