"""Atomic file writes: an output appears whole or not at all, so a killed stage reruns cleanly."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np


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
def atomic_path(path: str | Path, keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``, renamed onto it only if the block succeeds.

    ``keep_suffix`` ends the temporary name with ``path``'s suffix too, for writers that
    insist on it (Keras saves only to a name ending in ``.keras``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".tmp" + (path.suffix if keep_suffix else "")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    tmp_path.chmod(0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual mode
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
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
    with atomic_open(path, "wb") as handle:
        writer = _HashingWriter(handle)
        np.save(writer, array, allow_pickle=False)
    return writer.digest.hexdigest()
