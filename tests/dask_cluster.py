"""A Dask cluster of real processes for the tests, and what its scheduler saw the workers run.

The cluster is what users start by hand (``dask scheduler``, ``dask worker``), on 127.0.0.1 and
free ports; the fixture in conftest.py shares one per test session.
"""

from __future__ import annotations

import collections
import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from distributed import Client, get_task_stream
from distributed.utils import key_split

DASK = Path(sys.executable).parent / "dask"
HOST = "127.0.0.1"
WORKERS = 2
START_TIMEOUT_S = 120
STOP_TIMEOUT_S = 20


def cluster_commands(scheduler_file: Path) -> tuple[list[str], list[str]]:
    """The ``dask scheduler`` command, then the command of one ``dask worker``."""
    quiet = ["--dashboard-address", f"{HOST}:0", "--no-dashboard"]
    scheduler = [str(DASK), "scheduler", "--host", HOST, "--port", "0", *quiet]
    worker = [str(DASK), "worker", "--nworkers", "1", "--nthreads", "1", "--host", HOST, *quiet]
    return (
        [*scheduler, "--scheduler-file", str(scheduler_file)],
        [*worker, "--scheduler-file", str(scheduler_file)],
    )


@contextlib.contextmanager
def dask_cluster(folder: Path, workers: int = WORKERS) -> Iterator[str]:
    """Start a scheduler and ``workers`` single-threaded workers as processes (their logs in
    ``folder``); yield the scheduler's address once every worker has joined."""
    scheduler_file = folder / "scheduler.json"
    scheduler_command, worker_command = cluster_commands(scheduler_file)
    processes: list[subprocess.Popen] = []
    try:
        with contextlib.ExitStack() as logs:
            for name, command in [("scheduler", scheduler_command)] + [
                (f"worker-{index}", worker_command) for index in range(workers)
            ]:
                log = logs.enter_context((folder / f"{name}.log").open("w"))
                processes.append(
                    subprocess.Popen(command, cwd=folder, stdout=log, stderr=subprocess.STDOUT)
                )
            with Client(scheduler_file=str(scheduler_file), timeout=START_TIMEOUT_S) as client:
                client.wait_for_workers(workers, timeout=START_TIMEOUT_S)
                address = client.scheduler.address
            yield address
    finally:
        for process in reversed(processes):  # workers first, so none outlives its scheduler
            process.terminate()
        for process in reversed(processes):
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextlib.contextmanager
def tasks_by_worker(address: str) -> Iterator[collections.Counter]:
    """Count, per worker address, the tasks the cluster ran while the block ran (but Dask's own
    ``finalize``, which only gathers results), from the scheduler's task stream: any client's
    tasks count, a stage run as a CLI subprocess included. Filled when the block ends."""
    counts: collections.Counter = collections.Counter()
    with Client(address) as client, get_task_stream(client) as stream:
        yield counts
    counts.update(
        task["worker"] for task in stream.data if not key_split(task["key"]).startswith("finalize")
    )
