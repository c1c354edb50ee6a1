"""The `trailers` command: quiet by default, loud with -v, only problems with -q, a version, and
help that says what each stage reads and writes."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import trailers

from pipeline import __version__
from pipeline.cli import STAGES
from pipeline.core.config import PathsConfig


def test_version():
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stdout.strip() == f"trailers {__version__}"


@pytest.mark.parametrize("stage", list(STAGES))
def test_help_says_what_a_stage_reads_and_writes(stage):
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", stage, "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0
    paths = PathsConfig()
    assert f"reads:  {STAGES[stage].reads(paths)}" in result.stdout
    assert f"writes: {STAGES[stage].writes(paths)}" in result.stdout
    if STAGES[stage].dvc:  # the pipeline's stages; predict reads the user's videos
        assert str(paths.data) in result.stdout


@pytest.mark.slow
def test_library_noise_is_dropped_by_default_and_shown_with_v(tmp_path):
    """Validate imports TensorFlow, TFDV and Beam, then stops: no schema. By default its one
    line is all there is; -v brings back what the libraries say on import."""
    missing = f"paths.schema_file={tmp_path / 'none.pbtxt'}"
    quiet = trailers("validate", missing, cwd=tmp_path)
    assert quiet.returncode == 1
    assert quiet.stderr.splitlines() == [
        f"trailers validate: {tmp_path / 'none.pbtxt'}: no schema; create it with "
        "`trailers validate --update-schema`, review it and commit it"
    ]
    loud = trailers("validate", missing, "-v", cwd=tmp_path)
    assert loud.returncode == 1
    assert "Unable to import IPython" in loud.stderr  # TFDV, written to stderr on import
    assert "which Google will stop supporting" in loud.stderr  # google.api_core's FutureWarning
    assert loud.stderr.splitlines()[-1] == quiet.stderr.splitlines()[-1]


def test_q_shows_only_warnings_and_errors(tmp_path):
    data = f"paths.data_dir={tmp_path / 'data'}"
    assert "pipeline.synth.run: wrote 6 trailers" in trailers("synth", data, cwd=tmp_path).stderr
    quiet = trailers("synth", data, "-q", cwd=tmp_path)
    assert quiet.returncode == 0 and quiet.stderr == "" and quiet.stdout == ""
