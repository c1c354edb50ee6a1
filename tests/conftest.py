"""Shared fixtures: the smoke corpus, generated once per test session by the real synth stage."""

from __future__ import annotations

import pytest
from helpers import smoke_config, trailers

from pipeline.config import Config


@pytest.fixture(scope="session")
def smoke_corpus(tmp_path_factory: pytest.TempPathFactory) -> Config:
    """``trailers synth`` on configs/smoke.yaml; the corpus lies under ``config.paths.data``.

    Shared by every test of the session: read it, or copy ``config.paths.data`` before
    changing anything in it.
    """
    root = tmp_path_factory.mktemp("smoke")
    config = smoke_config(root)
    # Through the CLI in its own process, as `trailers synth` runs for users and DVC.
    result = trailers("synth", f"paths.data_dir={config.paths.data}", cwd=root)
    assert result.returncode == 0, result.stderr[-3000:]
    return config
