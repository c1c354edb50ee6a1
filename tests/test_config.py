"""The config schema: both shipped configs load, and every kind of mistake stops with exit 2."""

import subprocess

import pytest
from helpers import DEMO_CONFIG, SMOKE_CONFIG, WEAK_CONFIG, trailers

from pipeline import GENRES
from pipeline.core.config import ConfigError, load_config

SHIPPED = [DEMO_CONFIG, SMOKE_CONFIG, WEAK_CONFIG]


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
        ("synth.genres_per_trailer=[0, 3]", "synth.genres_per_trailer: expected [min, max] with 1"),
        ("synth.genres_per_trailer=[2, 7]", "synth.genres_per_trailer: expected [min, max] with 1"),
        ("train.weak_labels=both", "train.weak_labels: Input should be 'broadcast' or 'mil'"),
        ("train.mil_top_fraction=0", "train.mil_top_fraction: Input should be greater than 0"),
        (
            "weaken.segment_fraction=1.5",
            "weaken.segment_fraction: Input should be less than or equal to 1 (got 1.5)",
        ),
        (
            "weaken.segment_fraction=-0.1",
            "weaken.segment_fraction: Input should be greater than or equal to 0",
        ),
        (
            "timeline.offset_threshold=0.6",
            "timeline: offset_threshold (0.6) must not exceed threshold",
        ),
        ("timeline.smoothing=mean", "timeline.smoothing: Input should be 'none', 'median' or"),
        (
            "evaluate.tune_rules.onsets=[0.5, 1.2]",
            "evaluate.tune_rules.onsets: expected a non-empty list in (0, 1)",
        ),
        (
            "evaluate.tune_rules.min_gap_s=[]",
            "evaluate.tune_rules.min_gap_s: expected a non-empty list",
        ),
        (
            "predict.drift_thresholds={frame_brightness: 1.5}",
            "predict.drift_thresholds: expected divergences in (0, 1]",
        ),
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


def test_mil_refuses_positive_weights_naming_the_key():
    with pytest.raises(ConfigError, match="positive_weights: the frame frequencies") as info:
        load_config(SHIPPED[1], ["train.weak_labels=mil", "train.positive_weights=true"])
    assert "train" in str(info.value) and "\n" not in str(info.value)


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
    result = trailers("synth", f"paths.data_dir={tmp_path / 'data'}", override, cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "smoke.yaml" in lines[0]
    assert not (tmp_path / "data").exists()


def exits_2_with(result: subprocess.CompletedProcess, *parts: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines  # no traceback
    assert lines[0].startswith("trailers synth: config error: "), lines[0]
    for part in parts:
        assert part in lines[0], (part, lines[0])


@pytest.mark.parametrize(
    ("text", "key", "found"),
    [
        ("decode:\n  input_dir: 2020-01-01\n", "decode.input_dir", "got date 2020-01-01"),
        ("seed: 2020-01-01 10:00:00\n", "seed", "got datetime"),
        ("decode:\n  input_dir: !!binary aGVsbG8=\n", "decode.input_dir", "got bytes"),
        ("synth:\n  fps_choices: !!set {24, 25}\n", "synth.fps_choices", "got set"),
    ],
    ids=["date", "datetime", "binary", "set"],
)
def test_a_value_that_is_not_plain_data_names_file_and_key(tmp_path, text, key, found):
    config = tmp_path / "odd.yaml"
    config.write_text(text)
    result = trailers("synth", config=config, cwd=tmp_path)
    exits_2_with(result, f"{config}: {key}: expected text, a number", found)


def test_a_date_given_with_set_names_the_key(tmp_path):
    result = trailers("synth", "decode.input_dir=2020-01-01", cwd=tmp_path)
    exits_2_with(
        result, "smoke.yaml (with --set overrides): decode.input_dir:", "(quote it to mean text)"
    )


def test_a_config_path_that_is_a_folder(tmp_path):
    exits_2_with(
        trailers("synth", config=tmp_path, cwd=tmp_path), f"{tmp_path}: is a folder, not a config"
    )


def test_a_config_that_is_not_utf8(tmp_path):
    config = tmp_path / "latin1.yaml"
    config.write_bytes("decode:\n  input_dir: vid\xe9os\n".encode("latin-1"))
    exits_2_with(trailers("synth", config=config, cwd=tmp_path), f"{config}: not UTF-8 text")


def test_a_data_folder_that_cannot_be_created(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    result = trailers("synth", f"paths.data_dir={blocker / 'data'}", cwd=tmp_path)
    exits_2_with(result, f"paths.data_dir: cannot create {blocker / 'data'} (Not a directory)")
