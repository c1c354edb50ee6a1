"""The config schema: both shipped configs load, and every kind of mistake stops with exit 2."""

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import GENRES, ConfigError, load_config

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = [ROOT / "configs" / "pipeline.yaml", ROOT / "configs" / "smoke.yaml"]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_configs_load(path):
    config = load_config(path)
    assert config.decode.fps > 0
    assert config.synth.n_trailers >= 3


def test_genre_order_is_fixed():
    assert GENRES == ("comedy", "action", "horror", "suspense", "musical", "other")


def test_override_changes_value_and_type_is_kept():
    config = load_config(SHIPPED[1], ["decode.fps=12", "decode.aspect=crop"])
    assert config.decode.fps == 12.0
    assert isinstance(config.decode.fps, float)
    assert config.decode.aspect == "crop"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("decode.fsp=12", "decode.fsp: unknown key"),
        ("nonsense.key=1", "nonsense: unknown key"),
        ("decode.fps=fast", "decode.fps: Input should be a valid number (got 'fast')"),
        ("synth.n_trailers=true", "synth.n_trailers: Input should be a valid integer"),
        ("decode.fps=-1", "decode.fps: Input should be greater than 0 (got -1)"),
        ("decode.aspect=stretch", "decode.aspect: Input should be 'letterbox' or 'crop'"),
        ("synth.duration_s=[5, 1]", "synth.duration_s: expected [min, max] with 0 < min <= max"),
    ],
)
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match="smoke.yaml") as info:
        load_config(SHIPPED[1], [override])
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_file_content_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("decode:\n  fps: 8\n  colour: red\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: decode\.colour: unknown key"):
        load_config(bad)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(bad)


def test_malformed_override():
    with pytest.raises(ConfigError, match="expected section.key=value"):
        load_config(SHIPPED[1], ["decode.fps"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("synth.colour=red", "synth.colour: unknown key"),
        ("synth.n_trailers=many", "synth.n_trailers: Input should be a valid integer"),
        ("synth.n_trailers=0", "synth.n_trailers: Input should be greater than or equal to 3"),
    ],
)
def test_cli_exits_2_with_one_line(tmp_path, override, message):
    """The installed `trailers` command stops before any work: exit 2, one line, nothing written."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "synth",
            "--config",
            str(SHIPPED[1]),
            "--set",
            f"paths.data_dir={tmp_path / 'data'}",
            "--set",
            override,
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "smoke.yaml" in lines[0]
    assert not (tmp_path / "data").exists()
