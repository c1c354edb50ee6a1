"""What `make run` prints last: the demo quality from the evaluate metrics, and where things are."""

import json
from pathlib import Path

from helpers import smoke_config

from pipeline.views.summary import main, summary


def test_the_summary_quotes_the_evaluate_metrics_and_the_outputs(tmp_path: Path):
    config = smoke_config(tmp_path)
    metrics = {
        "evaluated_trailers": 16,
        "classifier_macro_ap": 0.9123,
        "classifier_motion_only_ap": 0.85,
        "baseline_macro_ap": 0.7,
        "baseline_motion_only_ap": 0.55,
        "gain_macro_ap": 0.2123,
        "gain_motion_only_ap": 0.3,
        "classifier_segment_f1_iou30": 0.9,
        "classifier_segment_f1_iou50": 0.8,
        "classifier_segment_f1_iou70": 0.6,
        "classifier_segment_map": 0.55,
        "classifier_segment_f1_untuned": 0.56,
    }
    config.paths.metrics("evaluate").parent.mkdir(parents=True)
    config.paths.metrics("evaluate").write_text(json.dumps(metrics))

    text = summary(config)

    assert "test split (16 trailers" in text
    convlstm, segments = [line.split() for line in text.splitlines() if "ConvLSTM" in line]
    assert convlstm[1:] == ["0.91", "0.85", "-"]  # no trailer AP in these metrics
    assert segments[1:] == ["0.90", "0.80", "0.60", "0.55", "0.56"]
    gain = next(line for line in text.splitlines() if "gain from time" in line).split()
    assert gain[3:] == ["+0.21", "+0.30", "-"]
    assert str(config.paths.evaluate_viewer / "index.html") in text
    assert "make ui" in text


def test_without_evaluate_metrics_it_says_what_to_run(tmp_path: Path):
    assert "not found (run `make run`" in summary(smoke_config(tmp_path))


def test_a_missing_config_is_one_line_and_exit_2(tmp_path: Path, capsys):
    assert main(["--config", str(tmp_path / "nope.yaml")]) == 2
    assert capsys.readouterr().err.strip().endswith("config file not found")
