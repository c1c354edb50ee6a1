"""Atomic writes on a real full disk (a 4 MiB tmpfs, :class:`helpers.SmallDisk`): one line naming
the file and the space, nothing half-written, and the same write works once space is freed."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import SmallDisk

from pipeline.core.io import DiskFull, save_npy

SHARD = np.arange(8 * 3 * 32 * 32, dtype=np.uint8).reshape(8, 3, 32, 32)
"""A shard as decode writes them at the smoke settings: 24 KiB of frames."""


def test_a_full_disk_names_the_file_and_the_space_and_leaves_the_old_file(disk: SmallDisk):
    path = disk.path / "train" / "trailer_000-0.npy"
    save_npy(path, SHARD[:1])
    disk.fill(leave=8 * 1024)
    with pytest.raises(DiskFull) as failed:
        save_npy(path, SHARD)
    message = str(failed.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: no space left on device (needs 24.0 KiB, ")
    assert message.endswith(" KiB free); free space and rerun")
    assert disk.leftovers() == []
    assert np.array_equal(np.load(path), SHARD[:1])  # the file before the write, whole

    disk.free()
    save_npy(path, SHARD)
    assert np.array_equal(np.load(path), SHARD)
    assert disk.leftovers() == []
