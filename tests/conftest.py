"""Shared fixtures: the smoke corpus, generated once per test run by the real stages.

Under ``pytest -n`` (``make test``) each xdist worker is a process with its own session, so the
corpora are built once per *run* instead (:func:`built_once`): the first worker to ask builds,
the others wait on a file lock and read the same folder. Tests read them, or copy them first.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

# Before any test imports TensorFlow: on CPUs without AVX-512 TensorFlow leaves oneDNN off and
# then has no NCHW convolution, which the model tests force (subprocesses inherit it).
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
# Each xdist worker's share of the cores for TensorFlow's per-op threads, inherited by the stages
# it runs: two workers with a pool the size of the machine each (and their subprocesses) slowed
# one another's model tests severalfold (tests/README.md, session 11).
os.environ.setdefault(
    "TF_NUM_INTRAOP_THREADS",
    str(len(os.sched_getaffinity(0)) // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", 1)) or 1),
)

import pytest  # noqa: E402
from dask_cluster import dask_cluster
from filelock import FileLock
from helpers import (
    REPRO_LOG,
    SmallDisk,
    dvc,
    small_disk,
    smoke_config,
    smoke_project,
    trailers,
)

from pipeline.core.config import Config

BUILT = ".built"
"""The file :func:`built_once` leaves in a finished folder."""


def built_once(factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """``<run's temp root>/name``, made by ``build(folder)`` once per test run, whichever xdist
    worker (or the one process) asks first; the others block on a file lock until it is done."""
    root = factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the workers' basetemps share this folder, unique to the run
    folder = root / name
    with FileLock(f"{folder}.lock"):
        if not (folder / BUILT).is_file():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            (folder / BUILT).touch()
    return folder


def run_stages(root: Path, *stages: tuple[str, ...]) -> None:
    for stage, *args in stages:
        result = trailers(stage, *args, cwd=root)
        assert result.returncode == 0, result.stderr[-3000:]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The collection order, module by module (so module fixtures are built once): modules with
    slow tests and no trained model first, then the modules that read the session's trained
    models, then the quick ones; within each, the modules whose tests declare the longest timeout
    first. xdist's ``loadgroup`` hands out the groups of several tests first, largest first, and
    then the single tests (ungrouped ones) in this order, so the quick ones even out the workers'
    ends."""

    def rank(tests: list[pytest.Item]) -> tuple[int, float]:
        longest = max(  # a test that needs more than pytest's default timeout says so
            (mark.args[0] for test in tests for mark in test.iter_markers("timeout")), default=0
        )
        if any("trained_corpus" in test.fixturenames for test in tests):
            return 1, -longest
        return (0 if any(test.get_closest_marker("slow") for test in tests) else 2), -longest

    modules: dict[Path, list[pytest.Item]] = {}
    for item in items:
        modules.setdefault(item.path, []).append(item)
    items[:] = [item for tests in sorted(modules.values(), key=rank) for item in tests]


@pytest.fixture(autouse=True)
def forget_mlflow_tracking_uri() -> Iterator[None]:
    """After each test, MLflow's process-wide tracking URI is unset again, so the next test (in
    this xdist worker, in any order) reads ``MLFLOW_TRACKING_URI`` as a new process would. Stages
    run in-process call ``mlflow.set_tracking_uri``; MLflow has no public way to unset it."""
    yield
    utils = sys.modules.get("mlflow.tracking._tracking_service.utils")
    if utils is not None:
        utils._tracking_uri = None


@pytest.fixture(scope="session")
def smoke_corpus(tmp_path_factory: pytest.TempPathFactory) -> Config:
    """``trailers synth`` on configs/smoke.yaml; the corpus lies under ``config.paths.data``.

    Shared by every test of the run: read it, or copy ``config.paths.data`` before changing
    anything in it.
    """

    def build(root: Path) -> None:  # through the CLI, as `trailers synth` runs for users and DVC
        run_stages(root, ("synth", f"paths.data_dir={smoke_config(root).paths.data}"))

    return smoke_config(built_once(tmp_path_factory, "smoke", build))


def validated(factory: pytest.TempPathFactory) -> Path:
    """``dvc repro validate`` in a :func:`smoke_project`: synth, decode and validate, laid out
    under the returned folder as :func:`path_overrides` lays out a corpus (``data/``,
    ``outputs/``); what the repro printed at ``<root>/<REPRO_LOG>``."""

    def build(root: Path) -> None:
        reproduced = dvc(smoke_project(root), "repro", "validate")
        (root / REPRO_LOG).write_text(reproduced.stdout + reproduced.stderr)

    return built_once(factory, "validated", build)


def trained(factory: pytest.TempPathFactory) -> Path:
    """The whole smoke pipeline through ``dvc repro``: a copy of the validated corpus's project,
    where ``dvc repro`` finds synth, decode and validate done and runs the rest, both models
    trained (:data:`TRAINED_EPOCHS` epochs each) and evaluate; MLflow's store at
    ``<root>/mlflow.db``, what the two repros printed at ``<root>/<REPRO_LOG>``."""

    def build(root: Path) -> None:
        shutil.copytree(validated(factory), root, dirs_exist_ok=True, ignore=ignore_built)
        reproduced = dvc(root, "repro")
        with (root / REPRO_LOG).open("a") as log:
            log.write(reproduced.stdout + reproduced.stderr)

    return built_once(factory, "trained", build)


@pytest.fixture(scope="session")
def validated_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:func:`validated`, shared by every test of the run: train in a ``copy_corpus`` of it."""
    return validated(tmp_path_factory)


@pytest.fixture(scope="session")
def trained_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:func:`trained`: one run of the stages serves the DVC test and every test that needs
    trained models. Shared: read it, or copy it."""
    return trained(tmp_path_factory)


@pytest.fixture(scope="session", autouse=True)
def trained_in_the_background(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    """When any collected test reads the trained models, their build (the run's longest chain,
    about 80 s, mostly in ``dvc repro``'s processes) starts with the first test, in a thread,
    instead of when a test first asks: whichever worker then asks waits only for what is left.
    A build that fails here is tried again, and reported, by the fixture."""
    if not any("trained_corpus" in item.fixturenames for item in request.session.items):
        yield
        return

    def build() -> None:
        with contextlib.suppress(Exception):  # the fixture tries again and says why
            trained(tmp_path_factory)

    thread = threading.Thread(target=build, name="trained corpus")
    thread.start()
    yield
    thread.join()


def ignore_built(folder: str, names: list[str]) -> list[str]:
    """What :func:`built_once` adds beside a corpus: not part of the project."""
    return [name for name in names if name == BUILT]


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[SmallDisk]:
    """A real 4 MiB filesystem (:class:`helpers.SmallDisk`) to fill, for the full-disk tests;
    they are skipped where the machine allows no mount namespace (``unshare --user --mount``)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    with small_disk(mount_point, "4m") as mounted:
        if mounted is None:
            pytest.skip("no small filesystem: `unshare --user --mount` is not allowed here")
        yield mounted


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """Debian's chromium, headless, driven by Playwright (the viewer's pages, the MLflow UI);
    the tests that use it skip, saying so, where it is missing (``make browser`` installs it),
    but not under CI."""
    chromium = shutil.which("chromium")
    if chromium is None:
        missing = "no chromium on PATH: `make browser` installs it (apt-get, as root)"
        if os.environ.get("CI") == "true":  # CI must run the page, never skip it
            pytest.fail(missing)
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium)
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def dask_scheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The address of a Dask cluster of real processes on 127.0.0.1 for the session: ``dask
    scheduler`` and two ``dask worker --nworkers 1 --nthreads 1``, stopped at the end. Which
    worker ran what: ``dask_cluster.tasks_by_worker``."""
    with dask_cluster(tmp_path_factory.mktemp("dask")) as address:
        yield address
