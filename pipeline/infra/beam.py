"""Beam pipelines from the ``beam:`` config section, for every Beam stage.

Decode, validate (and the catalogue mode of predict) run on the same runner with the same
options; a stage only picks its own DirectRunner mode and, for Dask, how many partitions its
input is cut into. Beam's DirectRunner first tries Prism, a runner binary it downloads at run
time, which ignores ``direct_running_mode``; its fallback, the FnApiRunner, is the local runner
we mean, so "DirectRunner" runs on it directly, offline or not.

``runner: dask`` runs on a Dask cluster: the one at ``beam.scheduler_address``, or a local one
of ``beam.num_workers`` worker processes that ``new_pipeline`` starts and stops. Workers write
the stage's files themselves, so they must see the paths of the config (a shared folder).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.core.config import DASK_RUNNERS, BeamConfig
from pipeline.core.errors import StageError

log = logging.getLogger(__name__)

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
LOCAL_HOST = "127.0.0.1"
"""Where a local Dask cluster listens: this machine only."""
SCHEDULER_FLAGS = frozenset(("dask_client_address", "dask_scheduler_file"))
PARTITION_FLAGS = frozenset(("dask_npartitions", "dask_partition_size"))


def usable_cpus() -> int:
    """The cores this process may run on: its CPU affinity, capped by a cgroup v2 CPU quota."""
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = CGROUP_CPU_MAX.read_text().split()
    except (OSError, ValueError):
        return cpus
    if quota == "max":
        return cpus
    return max(1, min(cpus, math.ceil(int(quota) / int(period))))


def worker_count(config: BeamConfig) -> int:
    """Workers of the local runner or cluster: as configured, or (0) one per usable core."""
    return config.num_workers or usable_cpus()


def decoder_threads(configured: int, busy_workers: int) -> int:
    """Decoder threads per video, the one policy of decode's workers and predict: as
    configured, or (0) the usable cores shared by the workers decoding at once."""
    return configured or max(1, usable_cpus() // max(1, busy_workers))


def is_dask(config: BeamConfig) -> bool:
    return config.runner in DASK_RUNNERS


def pipeline_options(
    config: BeamConfig,
    direct_running_mode: str | None = None,
    scheduler_address: str | None = None,
    partitions: int | None = None,
) -> PipelineOptions:
    """Runner flags from the config; ``direct_running_mode`` overrides the section's own for
    one stage (``in_memory`` runs on one worker, in this process). On Dask,
    ``scheduler_address`` is the cluster's and ``partitions`` how many parts a ``beam.Create``
    is cut into (each part is one task), unless ``runner_options`` say otherwise."""
    flags = []
    if config.runner == "DirectRunner":
        mode = direct_running_mode or config.direct_running_mode
        workers = 1 if mode == "in_memory" else worker_count(config)
        flags += [
            "--runner=FnApiRunner",
            f"--direct_running_mode={mode}",
            f"--direct_num_workers={workers}",
        ]
    elif not is_dask(config):
        flags.append(f"--runner={config.runner}")
    if scheduler_address is not None:
        flags.append(f"--dask_client_address={scheduler_address}")
    if partitions and is_dask(config) and not PARTITION_FLAGS & config.runner_options.keys():
        flags.append(f"--dask_npartitions={partitions}")
    flags += [f"--{key}={value}" for key, value in config.runner_options.items()]
    return PipelineOptions(flags)


@contextlib.contextmanager
def new_pipeline(
    config: BeamConfig, direct_running_mode: str | None = None, partitions: int | None = None
) -> Iterator[beam.Pipeline]:
    """A pipeline on the configured runner, run when the block ends without an exception.

    On Dask with no scheduler address, a local cluster lives as long as the block;
    ``partitions`` (e.g. the number of elements) spreads the input over the workers there.
    StageError names ``beam.runner`` if Beam has no runner by that name, and the address's key
    if no scheduler answers there.
    """
    with _scheduler(config) as address:
        options = pipeline_options(config, direct_running_mode, address, partitions)
        runner = _dask_runner(config) if is_dask(config) else None
        try:
            pipeline = beam.Pipeline(runner=runner, options=options)
        except ValueError as exc:
            raise StageError(f"beam.runner {config.runner!r}: {str(exc).split('. ')[0]}") from None
        with pipeline:
            yield pipeline


@contextlib.contextmanager
def _scheduler(config: BeamConfig) -> Iterator[str | None]:
    """The Dask scheduler address to add to the flags: the configured one, a local cluster's
    (started for the block), or None when the runner is not Dask or the flags name one."""
    if not is_dask(config) or SCHEDULER_FLAGS & config.runner_options.keys():
        yield None
    elif config.scheduler_address is not None:
        yield config.scheduler_address
    else:
        workers = worker_count(config)
        log.info("starting a local Dask cluster of %d worker processes", workers)
        with local_cluster(workers) as address:
            yield address


@contextlib.contextmanager
def local_cluster(workers: int) -> Iterator[str]:
    """A Dask cluster of ``workers`` single-threaded worker processes on this machine only, for
    the block; yields the scheduler's address."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        host=LOCAL_HOST,
        dashboard_address=None,
        scheduler_kwargs={"dashboard_address": ":0"},  # its HTTP routes on a free port
    ) as cluster:
        yield cluster.scheduler_address


def _address_key(config: BeamConfig) -> str:
    if "dask_client_address" in config.runner_options:
        return "beam.runner_options.dask_client_address"
    if "dask_scheduler_file" in config.runner_options:
        return "beam.runner_options.dask_scheduler_file"
    return "beam.scheduler_address"


def _dask_runner(config: BeamConfig) -> beam.runners.runner.PipelineRunner:
    from pipeline.infra.beam_dask import DaskRunner

    return DaskRunner(_address_key(config))
