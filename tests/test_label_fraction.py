"""docs/label_fraction.py's report (``make label-fraction``) from hand-made results: no training."""

from __future__ import annotations

import sys

import pytest
from helpers import ROOT
from PIL import Image

from pipeline import GENRES

sys.path.insert(0, str(ROOT / "docs"))
import label_fraction  # noqa: E402


def hand_made_run(fraction: float, method: str, test_ap: float) -> dict:
    def figures(frame_ap: float) -> dict:
        return {
            "frame_ap": frame_ap,
            "segment_f1": frame_ap * 0.4,
            "trailer_ap": 0.9,
            "genre_ap": {genre: round(0.1 * (i + 1), 2) for i, genre in enumerate(GENRES)},
        }

    segment = round(80 * fraction)
    return {
        "fraction": fraction,
        "method": method,
        "segment_trailers": segment,
        "trailer_trailers": 80 - segment,
        "epochs": 6,
        "best_epoch": 5,
        "val": figures(test_ap + 0.05),
        "test": figures(test_ap),
    }


@pytest.fixture
def results() -> dict:
    runs = [
        hand_made_run(1.0, "mil, mean", 0.9),
        hand_made_run(0.0, "mil, top-k", 0.2),
        hand_made_run(0.25, "broadcast", 0.7),
        hand_made_run(0.0, "broadcast", 0.6),
    ]
    runs = {label_fraction.run_key(run["fraction"], run["method"]): run for run in runs}
    return {"config": "configs/weak.yaml", "overrides": ["train.epochs=6"], "runs": runs}


def test_the_table_has_a_row_per_run_by_fraction_then_method(results):
    page = label_fraction.table(results["runs"], "CAPTION")
    rows = [line for line in page.splitlines() if line.startswith("| ") and "%" in line]
    assert rows[:4] == [
        "| 0% (0 of 80) | broadcast | 0.65 | 0.26 | 0.60 | 0.24 | 0.90 | 6 (5) |",
        "| 0% (0 of 80) | mil, top-k | 0.25 | 0.10 | 0.20 | 0.08 | 0.90 | 6 (5) |",
        "| 25% (20 of 80) | broadcast | 0.75 | 0.30 | 0.70 | 0.28 | 0.90 | 6 (5) |",
        "| 100% (80 of 80) | mil, mean | 0.95 | 0.38 | 0.90 | 0.36 | 0.90 | 6 (5) |",
    ]
    assert rows[4] == "| 0% | broadcast | 0.10 | 0.20 | 0.30 | 0.40 | 0.50 | 0.60 |"
    assert "CAPTION" in page and "images/label_fraction.png" in page


def test_the_report_writes_the_page_and_the_plot(results, tmp_path, monkeypatch):
    monkeypatch.setattr(label_fraction, "TABLE", tmp_path / "label_fraction.md")
    monkeypatch.setattr(label_fraction, "PLOT", tmp_path / "images" / "label_fraction.png")
    label_fraction.write_report(results, "CAPTION")
    assert "| 25% (20 of 80) | broadcast |" in (tmp_path / "label_fraction.md").read_text()
    with Image.open(tmp_path / "images" / "label_fraction.png") as image:
        assert image.format == "PNG" and image.width > image.height


def test_results_of_other_settings_are_not_mixed(results, tmp_path):
    """A results file of another budget is refused before anything runs (every path points
    under tmp_path, so a broken check fails here without touching the project's corpus)."""
    paths = [f"paths.{key}={tmp_path / key}" for key in ("data_dir", "outputs_dir", "models_dir")]
    results["overrides"] = [*paths, "train.epochs=6"]
    path = tmp_path / "results.json"
    label_fraction.write_json(path, results)
    with pytest.raises(SystemExit, match="holds runs of other settings"):
        label_fraction.sweep(
            ROOT / "configs" / "weak.yaml", [*paths, "train.epochs=3"], [0.5], path
        )
