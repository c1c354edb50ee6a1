"""The DVC pipeline, for real: `dvc repro` on the smoke config runs every stage, then nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def dvc(project: Path, *args: str) -> subprocess.CompletedProcess:
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ["PATH"]}
    result = subprocess.run(
        [str(Path(bin_dir) / "dvc"), *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the project whose demo config is the smoke config, as a DVC repo without git."""
    for name in ("pipeline", "configs"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    shutil.copy(ROOT / "configs" / "smoke.yaml", tmp_path / "configs" / "pipeline.yaml")
    dvc(tmp_path, "init", "--no-scm", "-q")
    return tmp_path


@pytest.mark.slow
def test_dvc_repro_runs_every_stage_then_nothing(project: Path):
    stages = list(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])
    first = dvc(project, "repro")
    for stage in stages:
        assert f"Running stage '{stage}'" in first.stdout, stage
    assert (project / "data" / "shards" / "manifest.jsonl").stat().st_size > 0
    assert (project / "dvc.lock").is_file()

    again = dvc(project, "repro")
    assert "Running stage" not in again.stdout

    config = project / "configs" / "pipeline.yaml"
    config.write_text(config.read_text().replace("fps: 8.0", "fps: 4.0"))
    changed = dvc(project, "repro")
    assert "Running stage 'synth'" not in changed.stdout
    assert "Running stage 'decode'" in changed.stdout
