"""Beam pipeline options from the ``beam:`` config section, for every Beam stage.

Decode, validate (and later the catalogue mode of predict) run on the same runner with the same
options; a stage only picks its own DirectRunner mode. Beam's DirectRunner first tries Prism, a
runner binary it downloads at run time, which ignores ``direct_running_mode``; its fallback, the
FnApiRunner, is the local runner we mean, so "DirectRunner" runs on it directly, offline or not.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.config import BeamConfig
from pipeline.errors import StageError

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


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
    """Workers of the local runner: as configured, or (0) one per usable core."""
    return config.num_workers or usable_cpus()


def pipeline_options(config: BeamConfig, direct_running_mode: str | None = None) -> PipelineOptions:
    """Runner and flags from the config; ``direct_running_mode`` overrides the section's own
    for one stage (``in_memory`` runs on one worker, in this process)."""
    local = config.runner == "DirectRunner"
    flags = [f"--runner={'FnApiRunner' if local else config.runner}"]
    if local:
        mode = direct_running_mode or config.direct_running_mode
        workers = 1 if mode == "in_memory" else worker_count(config)
        flags += [f"--direct_running_mode={mode}", f"--direct_num_workers={workers}"]
    flags += [f"--{key}={value}" for key, value in config.runner_options.items()]
    return PipelineOptions(flags)


def new_pipeline(config: BeamConfig, direct_running_mode: str | None = None) -> beam.Pipeline:
    """A pipeline on the configured runner; StageError names ``beam.runner`` if Beam has none
    by that name."""
    try:
        return beam.Pipeline(options=pipeline_options(config, direct_running_mode))
    except ValueError as exc:
        raise StageError(f"beam.runner {config.runner!r}: {str(exc).split('. ')[0]}") from None
