"""trailers evaluate: the metric functions on hand-made predictions whose scores are known, and
the real stage on the trained smoke corpus (metrics, plots, pictures, MLflow runs, registry)."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
from helpers import REPRO_LOG, copy_corpus, path_overrides, smoke_config, trailers

from pipeline import GENRES
from pipeline.core import model_card
from pipeline.core.manifest import read_manifest
from pipeline.core.timeline import SegmentRule, config_rules, rules_to_dict
from pipeline.evaluate.metrics import (
    RECALL_GRID,
    at_threshold,
    average_precision,
    interpolated_precision,
    iou,
    macro,
    match_segments,
    mean_average_precision,
    roc_auc,
    segment_average_precision,
    true_segments,
    tuned_threshold,
)
from pipeline.evaluate.report import ScoredTrailer, gain, model_report, summary
from pipeline.evaluate.rules import tune_rules

pytestmark = pytest.mark.xdist_group("evaluate")
"""Its module fixtures are built once: all its tests run in one xdist worker."""

MODELS = ("classifier", "baseline")


def test_average_precision_of_a_known_ranking():
    # Positives ranked 1st and 3rd: precision 1 at the first, 2/3 at the second.
    labels, scores = np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.7, 0.6])
    assert average_precision(labels, scores) == pytest.approx((1 + 2 / 3) / 2)
    assert roc_auc(labels, scores) == pytest.approx(3 / 4)  # 3 of the 4 pairs ordered right


def test_a_split_without_positives_leaves_the_metric_undefined():
    labels, scores = np.zeros(4, dtype=int), np.array([0.9, 0.8, 0.7, 0.6])
    assert average_precision(labels, scores) is None
    assert roc_auc(labels, scores) is None
    assert roc_auc(np.ones(4, dtype=int), scores) is None  # one class only
    assert tuned_threshold(labels, scores) is None
    assert macro([0.5, None, 1.0]) == pytest.approx(0.75)
    assert macro([None, None]) is None


def test_the_tuned_threshold_has_the_best_f1():
    labels, scores = np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])
    # >= 0.8: F1 2/3; >= 0.4: 1/2; >= 0.35: P 2/3, R 1, F1 0.8 (the best); >= 0.1: 2/3.
    assert tuned_threshold(labels, scores) == pytest.approx(0.35)
    assert at_threshold(labels, scores, 0.35) == pytest.approx(
        {"precision": 2 / 3, "recall": 1.0, "f1": 0.8}
    )
    assert at_threshold(labels, scores, 0.9) == {"precision": None, "recall": 0.0, "f1": 0.0}


def test_interpolated_precision_is_the_best_precision_at_that_recall_or_more():
    labels, scores = np.array([1, 0, 1, 0]), np.array([0.9, 0.8, 0.7, 0.6])
    from sklearn.metrics import precision_recall_curve

    precision, recall, _ = precision_recall_curve(labels, scores)
    curve = interpolated_precision(recall, precision)
    assert len(curve) == len(RECALL_GRID)
    assert curve[RECALL_GRID <= 0.5] == pytest.approx(1.0)
    assert curve[RECALL_GRID > 0.5] == pytest.approx(2 / 3)


def test_segments_match_one_to_one_at_the_iou_threshold():
    assert iou((0.0, 2.0), (1.0, 3.0)) == pytest.approx(1 / 3)
    assert iou((0.0, 1.0), (1.0, 2.0)) == 0.0
    truth = [(0.0, 2.0), (5.0, 6.0)]
    # Two predictions overlap the first true segment well: only one may take it.
    predicted = [(0.0, 1.9), (0.1, 2.0), (5.5, 6.5), (9.0, 10.0)]
    assert match_segments(predicted, truth, 0.5) == 1  # (5.5, 6.5) has IoU 1/3 with (5, 6)
    assert match_segments(predicted, truth, 0.3) == 2
    assert match_segments([], truth, 0.5) == 0


def test_segment_map_of_a_known_ranking():
    truth = [[(0.0, 4.0), (10.0, 14.0)], [(0.0, 4.0)]]
    predicted = [
        [((0.0, 4.0), 0.9), ((0.0, 3.0), 0.8), ((10.0, 14.0), 0.6)],  # 0.8: a duplicate
        [((1.0, 4.0), 0.7)],  # IoU 0.75: a hit up to IoU 0.75, a miss from 0.8
    ]
    # Up to 0.75 (6 IoUs): hit, miss, hit, hit; interpolated precision 1 then 3/4 and 3/4 at
    # recall 1/3, 2/3, 1: AP 5/6. From 0.8 (4 IoUs): hit, miss, miss, hit: 1 at 1/3, then 1/2
    # at 2/3, never recall 1: AP 1/2. Their mean: (6 * 5/6 + 4 * 1/2) / 10 = 0.7.
    assert segment_average_precision(predicted, truth, 0.5) == pytest.approx(5 / 6)
    assert segment_average_precision(predicted, truth, 0.75) == pytest.approx(5 / 6)
    assert segment_average_precision(predicted, truth, 0.8) == pytest.approx(1 / 2)
    assert mean_average_precision(predicted, truth) == pytest.approx(0.7)
    assert mean_average_precision([[], []], truth) == 0.0
    assert mean_average_precision(predicted, [[], []]) is None


def flickering(trailer_id: str) -> ScoredTrailer:
    """20 frames at 4 fps, comedy in frames 4 to 16 (3 s); the classifier dips under every
    threshold for one frame in its middle."""
    labels = np.zeros((20, len(GENRES)), dtype=np.uint8)
    labels[4:16, 0] = 1
    probabilities = np.where(labels, 0.9, 0.05).astype(np.float32)
    probabilities[10, 0] = 0.2
    return ScoredTrailer(
        trailer_id, 4.0, 5.0, f"{trailer_id}.mp4", labels, {"classifier": probabilities}
    )


def test_rules_tuned_on_val_bridge_the_flicker_that_splits_a_segment():
    val = [flickering("a"), flickering("b")]
    config = smoke_config(Path("unused"))
    rules, sources = tune_rules(val, "classifier", config)
    # The first of the best in grid order: no smoothing, onset 0.4, the 0.5 s minimum gap.
    assert rules["comedy"] == SegmentRule(onset=0.4, offset=0.4, min_gap_s=0.5)
    assert sources["comedy"] == {"from": "val", "val_segment_f1": 1.0}
    assert sources["horror"] == {"from": "timeline"}  # no horror segment in val
    assert rules["horror"] == config_rules(config.timeline)["horror"]
    report = model_report(val, val, "classifier", config, rules)
    assert report["genres"]["comedy"]["segments"]["iou50"]["f1"] == pytest.approx(1.0)
    # Split in two halves of IoU 1/2 each: one match in two predictions, F1 2/3.
    untuned = report["genres"]["comedy"]["segments_untuned"]["iou50"]
    assert (untuned["matched"], untuned["predicted"], untuned["f1"]) == (2, 4, pytest.approx(2 / 3))


def test_true_segments_are_the_runs_of_the_labels():
    labels = np.array([0, 1, 1, 0, 0, 1, 1, 1])
    assert true_segments(labels, fps=2.0, duration_s=3.9) == [(0.5, 1.5), (2.5, 3.9)]


def scored(trailer_id: str, labels: list[list[int]], baseline: float) -> ScoredTrailer:
    """A trailer the classifier scores perfectly and the baseline with one constant."""
    truth = np.array(labels, dtype=np.uint8)
    return ScoredTrailer(
        trailer_id=trailer_id,
        fps=1.0,
        duration_s=float(len(truth)),
        source=f"{trailer_id}.mp4",
        labels=truth,
        probabilities={
            "classifier": truth * 0.9 + 0.05,
            "baseline": np.full(truth.shape, baseline),
        },
    )


def test_the_report_of_a_perfect_classifier_against_a_constant_baseline():
    comedy, action, none = [1, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0], [0] * 6
    trailers = [
        scored("a", [comedy, comedy, none, action], 0.5),
        scored("b", [none, action, action, action], 0.5),
    ]
    config = smoke_config(Path("unused"))
    rules = config_rules(config.timeline)
    reports = {model: model_report(trailers, trailers, model, config, rules) for model in MODELS}
    classifier, baseline = reports["classifier"], reports["baseline"]
    # Only comedy and action have positive frames: the other four are undefined, left out.
    assert classifier["undefined"]["frames.average_precision"] == [
        g for g in GENRES if g not in ("comedy", "action")
    ]
    assert classifier["macro"]["average_precision"] == pytest.approx(1.0)
    assert classifier["macro"]["f1"] == pytest.approx(1.0)
    # A constant ranks nothing: its AP is the share of positive frames (2/8, 4/8).
    assert baseline["genres"]["comedy"]["frames"]["average_precision"] == pytest.approx(0.25)
    assert baseline["genres"]["action"]["frames"]["average_precision"] == pytest.approx(0.5)
    assert baseline["macro"]["average_precision"] == pytest.approx(0.375)
    # Segments: the classifier's timeline (threshold 0.5) is exactly the labels' runs.
    for level in ("iou30", "iou50", "iou70"):
        assert classifier["genres"]["action"]["segments"][level] == pytest.approx(
            {"matched": 2, "predicted": 2, "true": 2, "precision": 1.0, "recall": 1.0, "f1": 1.0}
        )
    assert classifier["macro"]["segment_map"] == pytest.approx(1.0)
    assert classifier["undefined"]["segments.map"] == [
        g for g in GENRES if g not in ("comedy", "action")
    ]
    # Trailer level: comedy in a only, action in both (AP 1 for any ranking).
    assert classifier["genres"]["comedy"]["trailers"] == {"positives": 1, "average_precision": 1.0}
    assert baseline["genres"]["comedy"]["trailers"]["average_precision"] == pytest.approx(0.5)
    gains = gain(classifier, baseline)
    assert gains["macro_average_precision"] == pytest.approx(0.625)
    assert gains["motion_only_average_precision"] == pytest.approx(0.75)  # comedy alone
    numbers = summary(reports, gains)
    assert numbers["gain_macro_ap"] == pytest.approx(0.625)
    assert all(type(value) is float for value in numbers.values())


def test_frames_are_scored_against_segment_labels_only():
    """A trailer labelled at trailer level (every frame carries its genres) counts at the
    trailer level only; a split of nothing else has trailer figures and says why no others."""
    comedy, action, none = [1, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0], [0] * 6
    exact = [
        scored("a", [comedy, comedy, none, action], 0.5),
        scored("b", [none, action, action, action], 0.5),
    ]
    weak = dataclasses.replace(scored("w", [comedy] * 4, 0.5), label_level="trailer")
    weak = dataclasses.replace(weak, probabilities={m: np.full((4, 6), 0.01) for m in MODELS})
    config = smoke_config(Path("unused"))
    rules = config_rules(config.timeline)
    alone = model_report(exact, exact, "classifier", config, rules)
    mixed = model_report([*exact, weak], [*exact, weak], "classifier", config, rules)
    assert mixed["label_levels"] == {"segment": 2, "trailer": 1}
    for genre in GENRES:  # the weak trailer's broadcast frames change no frame figure
        assert mixed["genres"][genre]["frames"] == alone["genres"][genre]["frames"]
        assert mixed["genres"][genre]["segments"] == alone["genres"][genre]["segments"]
    assert mixed["genres"]["comedy"]["trailers"]["positives"] == 2  # ...but count as a trailer

    only_weak = model_report([weak], [weak], "classifier", config, rules)
    assert only_weak["label_levels"] == {"segment": 0, "trailer": 1}
    assert "trailer level" in only_weak["no_frame_scores"]
    assert only_weak["macro"]["average_precision"] is None
    assert only_weak["macro"]["trailer_average_precision"] == pytest.approx(1.0)
    assert set(only_weak["genres"]["comedy"]) == {"trailers"}
    numbers = summary({"classifier": only_weak, "baseline": only_weak}, gain(only_weak, only_weak))
    assert "classifier_macro_ap" not in numbers and numbers["classifier_trailer_ap"] == 1.0


def report_rules(paths) -> dict:
    return json.loads(paths.evaluate_report.read_text())["rules"]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_the_stage_writes_metrics_plots_pictures_and_pages(trained_corpus: Path):
    """``trailers evaluate`` as the session's ``dvc repro`` ran it (smoke config: registration
    on)."""
    root = trained_corpus
    assert "Traceback" not in (root / REPRO_LOG).read_text()
    config = smoke_config(root)
    paths = config.paths
    metrics = json.loads(paths.metrics("evaluate").read_text())
    for model in MODELS:
        assert {f"{model}_macro_ap", f"{model}_trailer_ap"} <= set(metrics)
        assert {f"{model}_segment_f1_iou{level}" for level in (30, 50, 70)} <= set(metrics)
        assert {f"{model}_segment_map", f"{model}_segment_f1_untuned"} <= set(metrics)
        stored = model_card.read(paths.model(model)).rules
        assert stored["tuned_on"] == "val" and set(stored["rules"]) == set(GENRES)
        assert rules_to_dict(stored["rules"]) == {
            genre: {key: rule[key] for key in stored["rules"][genre].to_dict()}
            for genre, rule in report_rules(paths)[model].items()
        }
    assert "gain_macro_ap" in metrics
    assert all(type(value) in (int, float) for value in metrics.values())
    report = json.loads(paths.evaluate_report.read_text())
    assert report["models"]["classifier"]["macro"]["average_precision"] == pytest.approx(
        metrics["classifier_macro_ap"]
    )
    for genre in GENRES:
        with paths.pr_curve(genre).open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert list(rows[0]) == ["recall", *MODELS] and len(rows) == len(RECALL_GRID)
        assert (paths.evaluate_figures / f"pr_{genre}.png").stat().st_size > 0
    tested = sorted(report["trailers"])
    shown = tested[: config.evaluate.example_timelines]
    assert sorted(p.name for p in paths.evaluate_figures.glob("timeline_*.png")) == sorted(
        f"timeline_{trailer}_{model}.png" for trailer in shown for model in MODELS
    )
    pages = {p.name for p in paths.evaluate_viewer.glob("*.html")}
    assert pages == {"index.html", *(f"trailer_{trailer}.html" for trailer in tested)}


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_each_model_has_a_linked_evaluation_run_and_the_classifier_an_alias(
    trained_corpus: Path,
):
    root = trained_corpus
    # A client of this store, not the process's tracking URI: another test in this process may
    # have set that (mlflow.set_tracking_uri outlives the test that calls it).
    store = f"sqlite:///{root / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=store, registry_uri=store)
    experiment = client.get_experiment_by_name(smoke_config(root).tracking.experiment)
    runs = {run.info.run_name: run for run in client.search_runs([experiment.experiment_id])}
    assert {name for name in runs if name.startswith("evaluate")} == {
        f"evaluate-{model}" for model in MODELS
    }
    metrics = json.loads((root / "metrics" / "evaluate.json").read_text())
    for model in MODELS:
        card = model_card.read(root / "models" / model).card
        run = runs[f"evaluate-{model}"]
        assert run.data.tags["training_run_id"] == card.mlflow_run_id
        assert run.data.tags["mlflow.parentRunId"] == card.mlflow_run_id  # nested under it
        assert run.data.metrics["test_macro_average_precision"] == pytest.approx(
            metrics[f"{model}_macro_ap"]
        )
        assert run.data.metrics["test_macro_segment_map"] == pytest.approx(
            metrics[f"{model}_segment_map"]
        )
        onset = model_card.read(root / "models" / model).rules["rules"]["comedy"].onset
        assert run.data.params["rule_comedy_onset"] == str(onset)
        logged = {entry.path for entry in client.list_artifacts(run.info.run_id, "evaluate")}
        assert {
            "evaluate/segment_rules.json",
            "evaluate/report.json",
            "evaluate/pr",
            "evaluate/figures",
            "evaluate/viewer",
        } <= logged
    assert "test_gain_motion_only_average_precision" in runs["evaluate-classifier"].data.metrics
    classifier = model_card.read(root / "models" / "classifier").card
    assert client.get_model_version_by_alias("trailer-genres", "champion").run_id == (
        classifier.mlflow_run_id
    )


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_missing_model_is_one_line(trained_corpus: Path, tmp_path: Path):
    root = copy_corpus(trained_corpus, tmp_path)
    result = trailers(
        "evaluate", *path_overrides(root), f"tracking.tracking_uri=sqlite:///{root}/m.db", cwd=root
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"trailers evaluate: {root / 'models' / 'classifier'}: no trained model (model.keras and "
        "model.json; run `trailers train --model classifier`)"
    ]


@pytest.mark.slow
def test_an_unreadable_trailer_is_named_and_the_others_still_scored(
    validated_corpus: Path, tmp_path: Path
):
    from pipeline.evaluate.run import score_split  # imports TensorFlow

    paths = smoke_config(copy_corpus(validated_corpus, tmp_path)).paths
    rows = read_manifest(paths.manifest)
    tested = {row.trailer_id for row in rows if row.split == "test"}
    broken = next(row for row in rows if row.split == "test")
    (paths.shards / broken.shard).unlink()

    def constant(frames: np.ndarray) -> np.ndarray:
        return np.full((len(frames), len(GENRES)), 0.5)

    scored_trailers, failed = score_split(rows, "test", {"classifier": constant}, paths.shards)
    assert {trailer.trailer_id for trailer in scored_trailers} == tested - {broken.trailer_id}
    assert failed == [f"{paths.shards / broken.shard}: shard file missing (run `trailers decode`)"]
