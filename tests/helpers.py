"""Helpers shared by the test files (imported as ``helpers``; fixtures live in conftest.py)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from pipeline.core.config import Config, load_config

ROOT = Path(__file__).resolve().parent.parent
DEMO_CONFIG = ROOT / "configs" / "pipeline.yaml"
SMOKE_CONFIG = ROOT / "configs" / "smoke.yaml"
WEAK_CONFIG = ROOT / "configs" / "weak.yaml"
COMMITTED_SCHEMA = ROOT / "configs" / "schema.pbtxt"

TRAINED_EPOCHS = load_config(SMOKE_CONFIG).train.epochs
"""The session's models (``dvc repro`` of the smoke pipeline) train this long: enough for the
loss to fall and the ConvLSTM to beat label frequencies on val on average over the genres
(test_train_stage checks both; tests/README.md has the measurements)."""

REPRO_LOG = "repro.log"
"""What the first ``dvc repro`` of the session's smoke project printed, in that project."""


def smoke_config(root: Path, *overrides: str) -> Config:
    """The smoke config with data, outputs and metrics under ``root`` (the committed schema
    stays)."""
    return load_config(SMOKE_CONFIG, [*path_overrides(root), *overrides])


def path_overrides(root: Path, schema_file: Path = COMMITTED_SCHEMA) -> list[str]:
    """``--set`` overrides that put every path of a run under ``root``."""
    return [
        f"paths.data_dir={root / 'data'}",
        f"paths.outputs_dir={root / 'outputs'}",
        f"paths.metrics_dir={root / 'metrics'}",
        f"paths.models_dir={root / 'models'}",
        f"paths.schema_file={schema_file}",
    ]


def tracked_paths(root: Path) -> list[str]:
    """:func:`path_overrides` plus an MLflow store of its own at ``<root>/mlflow.db``."""
    return [*path_overrides(root), f"tracking.tracking_uri=sqlite:///{root / 'mlflow.db'}"]


def copy_corpus(source: Path, target: Path) -> Path:
    """A copy of a corpus's data and outputs (``source`` as laid out by :func:`path_overrides`)
    under ``target``, to change or train in; returns ``target``."""
    for name in ("data", "outputs"):
        if (source / name).exists():
            shutil.copytree(source / name, target / name)
    return target


def trailers_command(stage: str, *args: str, config: Path = SMOKE_CONFIG) -> list[str]:
    """``trailers <stage> --config <config> ...``, run as users and DVC run it: each of
    ``args`` is a flag (``-v``) or a ``section.key=value`` override (``--set`` is added)."""
    command = [sys.executable, "-m", "pipeline.cli", stage, "--config", str(config)]
    for arg in args:
        command += [arg] if arg.startswith("-") else ["--set", arg]
    return command


def trailers(
    stage: str, *args: str, cwd: Path, config: Path = SMOKE_CONFIG
) -> subprocess.CompletedProcess:
    """Run ``trailers <stage>`` in its own process; the result has text stdout and stderr."""
    return subprocess.run(
        trailers_command(stage, *args, config=config),
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )


def dvc(project: Path, *args: str) -> subprocess.CompletedProcess:
    """``dvc <args>`` in ``project`` with this venv's ``trailers`` first on the path and
    MLflow's store at ``<project>/mlflow.db``; fails the test unless it exits 0."""
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": str(bin_dir) + os.pathsep + os.environ["PATH"],
        "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlflow.db'}",
    }
    result = subprocess.run(
        [str(bin_dir / "dvc"), *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def smoke_project(folder: Path) -> Path:
    """A copy of the project in ``folder`` whose demo config is the smoke config, as a DVC repo
    without git: ``dvc repro`` there runs the whole smoke pipeline, laid out as
    :func:`path_overrides` lays out a corpus."""
    for name in ("pipeline", "configs"):
        shutil.copytree(ROOT / name, folder / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, folder / name)
    shutil.copy(SMOKE_CONFIG, folder / "configs" / "pipeline.yaml")
    dvc(folder, "init", "--no-scm", "-q")
    return folder


class SmallDisk:
    """A real filesystem of its own, a few MiB (a tmpfs), and ways to fill it and free it.

    It is mounted in a mount namespace of its own (``unshare --user --mount``, no root needed
    where user namespaces are allowed), by a process that holds it until the test ends; this
    process and every child reach it through that process's root, ``/proc/<pid>/root``.
    """

    FILLER = "filler"

    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def free_bytes(self) -> int:
        stats = os.statvfs(self.path)
        return stats.f_bavail * stats.f_frsize

    def fill(self, leave: int) -> None:
        """Fill the disk until about ``leave`` bytes are free (tmpfs counts whole pages)."""
        with (self.path / self.FILLER).open("ab") as handle:
            handle.write(b"\0" * max(self.free_bytes - leave, 0))

    def free(self) -> None:
        (self.path / self.FILLER).unlink()

    def leftovers(self) -> list[Path]:
        """Temporary files of atomic writes (``pipeline.core.io``) left on the disk."""
        return sorted(self.path.rglob(".*.tmp*"))


@contextlib.contextmanager
def small_disk(mount_point: Path, size: str) -> Iterator[SmallDisk | None]:
    """A :class:`SmallDisk` of ``size`` (tmpfs's ``size=``, e.g. ``4m``) at ``mount_point``
    (an empty folder), or None where this machine allows no mount namespace."""
    holder = subprocess.Popen(
        [
            "unshare",
            "--user",
            "--map-root-user",
            "--mount",
            "sh",
            "-c",
            f'mount -t tmpfs -o size={size} tmpfs "$1" && echo mounted && read _',
            "sh",
            str(mount_point),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        mounted = holder.stdout.readline().strip() == "mounted"
        yield SmallDisk(Path(f"/proc/{holder.pid}/root{mount_point}")) if mounted else None
    finally:
        holder.stdin.close()  # its `read` returns: the process ends, the filesystem goes
        holder.wait(timeout=10)
