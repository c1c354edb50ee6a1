"""Shared fixtures: the smoke corpus, generated once per test session by the real synth stage."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import Config, load_config

ROOT = Path(__file__).resolve().parent.parent
SMOKE_CONFIG = ROOT / "configs" / "smoke.yaml"


def smoke_config(root: Path, *overrides: str) -> Config:
    """The smoke config with data and outputs under ``root`` (the committed schema stays)."""
    return load_config(
        SMOKE_CONFIG,
        [
            f"paths.data_dir={root / 'data'}",
            f"paths.outputs_dir={root / 'outputs'}",
            f"paths.schema_file={ROOT / 'configs' / 'schema.pbtxt'}",
            *overrides,
        ],
    )


@pytest.fixture(scope="session")
def smoke_corpus(tmp_path_factory: pytest.TempPathFactory) -> Config:
    """``trailers synth`` on configs/smoke.yaml; the corpus lies under ``config.paths.data``.

    Shared by every test of the session: read it, or copy ``config.paths.data`` before
    changing anything in it.
    """
    config = smoke_config(tmp_path_factory.mktemp("smoke"))
    # Through the CLI in its own process, as `trailers synth` runs for users and DVC.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "synth",
            "--config",
            str(SMOKE_CONFIG),
            "--set",
            f"paths.data_dir={config.paths.data}",
        ],
        check=True,
        capture_output=True,
    )
    return config
