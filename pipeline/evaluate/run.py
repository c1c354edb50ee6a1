"""``trailers evaluate``: how good each trained model is, per genre, on a labelled split.

Runs the ConvLSTM (``classifier``) and the per-frame ``baseline`` over every whole trailer of
``evaluate.split`` (and of val, where the per-genre thresholds and segment rules are tuned),
each trailer in one pass, and writes (paths from :class:`pipeline.core.config.PathsConfig`):

- each model's segment rules, tuned on val (:mod:`pipeline.evaluate.rules`), into its folder
  (:func:`pipeline.core.model_card.write_rules`), where predict and the viewer read them,
  and its headline figures beside them (:func:`pipeline.core.model_card.write_evaluation`);
- ``metrics/evaluate.json``: the summary numbers (``dvc metrics show``);
- ``outputs/evaluate/report.json``: every number (:mod:`pipeline.evaluate.report`);
- ``outputs/evaluate/pr/<genre>.csv``: the PR curves of both models (``dvc plots show``);
- ``outputs/evaluate/figures/``: ``pr_<genre>.png`` and, for the first
  ``evaluate.example_timelines`` trailers, ``timeline_<trailer>_<model>.png``, truth against
  prediction;
- ``outputs/evaluate/viewer/``: a viewer page per trailer (the classifier's timeline over its
  video) and ``index.html``, worst average precision first;

and records an evaluation run per model in MLflow (:mod:`pipeline.infra.tracking`), nested under
the model's training run. Evaluation never waits on the tracking server: as train's, the runs'
records wait in ``outputs/evaluate/mlflow-outbox/`` while it is away, and ``trailers evaluate
--sync`` sends them later (exit 75 until then).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import keras
import numpy as np
from mlflow.entities import LoggedModel
from tqdm import tqdm

from pipeline import GENRES
from pipeline.core import model_card
from pipeline.core.config import Config, PathsConfig, tracking_uri
from pipeline.core.errors import StageError
from pipeline.core.io import write_json
from pipeline.core.manifest import ManifestError, ShardRow, read_manifest
from pipeline.core.model_card import ModelCard
from pipeline.core.shards import by_trailer, read_trailer
from pipeline.core.timeline import SegmentRules, rules_to_dict
from pipeline.evaluate import plots
from pipeline.evaluate.metrics import pr_curve
from pipeline.evaluate.report import (
    NO_FRAME_SCORES,
    ScoredTrailer,
    gain,
    model_report,
    pooled,
    rounded,
    segment_labelled,
    summary,
    trailer_average_precision,
)
from pipeline.evaluate.rules import tune_rules
from pipeline.infra import tracking
from pipeline.model import frame_probabilities, load_network
from pipeline.views.timeline_plot import draw_timeline
from pipeline.views.viewer import ViewerEntry, write_index, write_viewer

MODELS = ("classifier", "baseline")
"""The ConvLSTM, then the per-frame baseline: the gain from time is the first minus the second."""

log = logging.getLogger(__name__)

Predictor = Callable[[np.ndarray], np.ndarray]
"""uint8 frames ``(frames, channels, height, width)`` -> float ``(frames, 6)`` probabilities."""


def load_model(folder: Path) -> tuple[keras.Model, ModelCard]:
    """A trained model and its card (decode settings, MLflow run)."""
    trained = model_card.read(folder)
    return load_network(trained.network_file), trained.card


def score_split(
    rows: Sequence[ShardRow], split: str, predictors: Mapping[str, Predictor], shards: Path
) -> tuple[list[ScoredTrailer], list[str]]:
    """Every trailer of ``split`` scored by every model, and a line per trailer that could
    not be read (left out, the others still scored)."""
    trailers, failed = [], []
    groups = by_trailer([row for row in rows if row.split == split])
    for group in tqdm(groups, desc=f"scoring {split}", unit="trailer", leave=False, disable=None):
        try:
            frames, labels = read_trailer(group, shards)
        except StageError as exc:
            log.error("%s", exc)
            failed.append(str(exc))
            continue
        first = group[0]
        trailers.append(
            ScoredTrailer(
                trailer_id=first.trailer_id,
                fps=first.fps,
                duration_s=first.source_duration_s,
                source=first.source,
                labels=labels,
                probabilities={model: predict(frames) for model, predict in predictors.items()},
                label_level=first.label_level or "segment",
            )
        )
    if not trailers:
        raise StageError(f"no {split} trailer to evaluate")
    return trailers, failed


def flat_metrics(values: Mapping, prefix: str) -> dict[str, float]:
    """Every number of a nested report as ``<prefix>_<key>_<key>...`` (MLflow metrics)."""
    metrics = {}
    for key, value in values.items():
        name = f"{prefix}_{key}"
        if isinstance(value, Mapping):
            metrics.update(flat_metrics(value, name))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            metrics[name] = float(value)
    return metrics


def write_pr_curves(
    paths: PathsConfig, trailers: Sequence[ScoredTrailer], reports: Mapping
) -> None:
    curves = {}
    trailers = segment_labelled(trailers)
    if not trailers:
        return  # no frame labels to draw curves from (the report says why)
    for model in MODELS:
        labels, scores = pooled(trailers, model)
        curves[model] = [pr_curve(labels[:, i], scores[:, i]) for i in range(len(GENRES))]
    for index, genre in enumerate(GENRES):
        per_model = {model: curves[model][index] for model in MODELS}
        plots.write_pr_csv(paths.pr_curve(genre), per_model)
        average_precisions = {
            model: reports[model]["genres"][genre]["frames"]["average_precision"]
            for model in MODELS
        }
        plots.draw_pr_curves(
            paths.evaluate_figures / f"pr_{genre}.png", genre, per_model, average_precisions
        )


def write_timelines(folder: Path, trailers: Sequence[ScoredTrailer]) -> None:
    for trailer in trailers:
        for model in MODELS:
            draw_timeline(
                folder / f"timeline_{trailer.trailer_id}_{model}.png",
                trailer.probabilities[model],
                trailer.fps,
                trailer.duration_s,
                truth=trailer.labels,
                title=f"trailer {trailer.trailer_id}: truth against the {model}",
            )


def write_viewers(
    folder: Path, trailers: Sequence[ScoredTrailer], config: Config, rules: SegmentRules
) -> None:
    """A page per trailer with the classifier's timeline over its video (segments by its
    ``rules``), and the index."""
    entries = []
    for trailer in trailers:
        page = folder / f"trailer_{trailer.trailer_id}.html"
        score = trailer_average_precision(trailer, MODELS[0])
        write_viewer(
            page,
            Path(trailer.source),
            trailer.fps,
            trailer.duration_s,
            trailer.probabilities[MODELS[0]],
            rules,
            truth=trailer.labels,
            title=f"trailer {trailer.trailer_id} ({MODELS[0]}, {config.evaluate.split} split)",
        )
        entries.append(ViewerEntry(f"trailer {trailer.trailer_id}", page, score))
    write_index(folder / "index.html", entries)


def fresh(folder: Path) -> Path:
    """An empty ``folder``: a rerun with fewer trailers leaves no stale pictures or pages."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def rule_params(rules: Mapping[str, Mapping]) -> dict[str, str]:
    """Each genre's tuned rule as MLflow params, ``rule_<genre>_<field>``."""
    return {
        f"rule_{genre}_{field}": str(value)
        for genre, rule in rules.items()
        for field, value in rule.items()
    }


def model_figures(numbers: Mapping[str, Any], model: str, split: str) -> dict[str, Any]:
    """One model's headline figures from the stage's metrics (``classifier_macro_ap`` ->
    ``macro_ap``), with the split and how many trailers they were measured on."""
    prefix = f"{model}_"
    return {
        "split": split,
        "trailers": numbers["evaluated_trailers"],
        **{key[len(prefix) :]: value for key, value in numbers.items() if key.startswith(prefix)},
    }


def record(
    config: Config,
    runs: Mapping[str, tuple[tracking.RecordedRun, LoggedModel | None]],
    report: Mapping,
) -> None:
    """Each model's evaluation run gets its metrics (against the training run's logged model
    too), its tuned segment rules (params and file) and the outputs; the classifier's also the
    gain, and the registry alias when ``evaluate.register_model`` says so. All through the runs'
    outboxes: nothing here waits on the server."""
    paths, split = config.paths, config.evaluate.split
    artifacts = [
        paths.evaluate_report,
        paths.pr_curves,
        paths.evaluate_figures,
        paths.evaluate_viewer,
    ]
    for model, (run, logged) in runs.items():
        scores = report["models"][model]  # per genre, macro and motion-only; not "undefined"
        named = {key: scores[key] for key in ("macro", "motion_only_average_precision")}
        metrics = flat_metrics({**scores["genres"], **named}, split)
        if model == MODELS[0]:
            metrics |= flat_metrics(report["gain"], f"{split}_gain")
        run.log_metrics(metrics, step=0, model_id=logged.model_id if logged else None)
        run.log_params(rule_params(report["rules"][model]))
        run.log_artifacts([*artifacts, model_card.rules_file(paths.model(model))], "evaluate")
        if model == MODELS[0] and config.evaluate.register_model and logged is not None:
            run.register(logged, config.evaluate.registered_model_name, config.evaluate.alias)


def run(config: Config, sync: bool = False) -> None:
    """Evaluate both trained models on ``evaluate.split`` and write and record the results
    (``sync``: only send what earlier evaluation runs could not)."""
    paths = config.paths
    outbox = paths.stage_outputs("evaluate") / tracking.OUTBOX
    if sync:
        lines = tracking.sync(outbox, config.tracking)
        for line in lines or ["MLflow: nothing of evaluate's runs waits to be sent"]:
            log.info("%s", line)
        return
    tracking.require_reachable(tracking_uri(config.tracking))
    try:
        rows = read_manifest(paths.manifest)
    except (FileNotFoundError, ManifestError) as exc:
        raise StageError(f"{paths.manifest}: {exc} (run `trailers decode`)") from None
    loaded = {model: load_model(paths.model(model)) for model in MODELS}
    chosen = [row for row in rows if row.split in ("val", config.evaluate.split)]
    for model, (_, card) in loaded.items():
        card.decode.check_rows(chosen, f"the {model} was trained on", "rerun train")
    if config.evaluate.register_model:
        tracking.registrable(config, loaded[MODELS[0]][1].mlflow_run_id)
    with ExitStack() as stack:
        runs = {
            model: stack.enter_context(
                tracking.evaluation_run(config, model, card.mlflow_run_id, outbox)
            )
            for model, (_, card) in loaded.items()
        }
        report = evaluate(config, rows, {model: net for model, (net, _) in loaded.items()})
        record(config, runs, report)
    if report["unreadable"]:
        raise StageError(
            f"{len(report['unreadable'])} trailers could not be read and are left out of "
            f"the numbers (see {paths.evaluate_report})"
        )
    tracking.report_complete(
        [run for run, _ in runs.values()], "outputs written", "trailers evaluate --sync"
    )


def evaluate(config: Config, rows: Sequence[ShardRow], networks: Mapping[str, keras.Model]) -> dict:
    """Score, tune the segment rules on val, write every output; the report."""
    paths, split = config.paths, config.evaluate.split
    predictors = {model: frame_probabilities(network) for model, network in networks.items()}
    val, failed = score_split(rows, "val", predictors, paths.shards)
    trailers = val
    if split != "val":
        trailers, failed_here = score_split(rows, split, predictors, paths.shards)
        failed += failed_here
    tuned = {model: tune_rules(val, model, config) for model in MODELS}
    for model, (rules, _) in tuned.items():
        model_card.write_rules(paths.model(model), rules, tuned_on="val")
    reports = {
        model: model_report(trailers, val, model, config, tuned[model][0]) for model in MODELS
    }
    gains = gain(reports[MODELS[0]], reports[MODELS[1]])
    report = rounded(
        {
            "split": split,
            "tuned_on": "val",
            "frames": int(sum(len(trailer.labels) for trailer in segment_labelled(trailers))),
            "models": reports,
            "rules": {
                model: {
                    genre: rule | sources[genre] for genre, rule in rules_to_dict(rules).items()
                }
                for model, (rules, sources) in tuned.items()
            },
            "gain": gains,
            "trailers": {
                trailer.trailer_id: {
                    "frames": len(trailer.labels),
                    "source": trailer.source,
                    "average_precision": {
                        model: trailer_average_precision(trailer, model) for model in MODELS
                    },
                }
                for trailer in trailers
            },
            "unreadable": failed,
        }
    )
    levels = reports[MODELS[0]]["label_levels"]
    if not levels["segment"]:
        log.warning("%s split: %s", split, NO_FRAME_SCORES)
    write_json(paths.evaluate_report, report)
    figures = fresh(paths.evaluate_figures)
    write_pr_curves(paths, trailers, reports)
    write_timelines(figures, trailers[: config.evaluate.example_timelines])
    write_viewers(fresh(paths.evaluate_viewer), trailers, config, tuned[MODELS[0]][0])
    numbers = {"evaluated_trailers": len(trailers), **summary(reports, gains)}
    write_json(paths.metrics("evaluate"), numbers)
    for model in MODELS:
        model_card.write_evaluation(paths.model(model), model_figures(numbers, model, split))
    log.info(
        "%s split, %d trailers (%d segment-labelled: frames and segments; %d trailer-level: "
        "trailer figures only): macro AP classifier %s, baseline %s; motion-only gain %s; "
        "classifier segment F1 %s (untuned %s), segment mAP %s",
        split,
        len(trailers),
        levels["segment"],
        levels["trailer"],
        numbers.get("classifier_macro_ap", "n/a"),
        numbers.get("baseline_macro_ap", "n/a"),
        numbers.get("gain_motion_only_ap", "n/a"),
        numbers.get("classifier_segment_f1", "n/a"),
        numbers.get("classifier_segment_f1_untuned", "n/a"),
        numbers.get("classifier_segment_map", "n/a"),
    )
    return report
