"""How many trailers to label by hand: the label-fraction study (issue 26, item 3).

With trailer-level labels for every train trailer and segment labels for some, how good is the
timeline? For each fraction of the train trailers that keep their segments
(``weaken.segment_fraction``; the rest labelled at trailer level by
``docs/bring_your_own/weaken.py``, the user's path), and each way of training the trailer-level
ones (:data:`METHODS`: ``broadcast``, and ``mil`` with each pooling), this trains the ConvLSTM
with ``trailers train`` and scores it with evaluate's own functions on val and on test (segment
rules tuned on val, as ``trailers evaluate`` does): frame macro AP, segment F1, trailer AP.

Each fraction: the corpus's synthesised annotations are restored (kept beside them on the first
run as ``annotations.segments.csv``), weakened, then ``trailers decode`` (only the relabelled
trailers) and ``trailers validate``. At fraction 1 no trailer is a bag, so the two poolings are
one training (run once, reported for both). Every finished run is added to the results file
at once (atomically), and a rerun skips what it holds, so a kill loses only the run in
progress; ``--report-only`` rewrites the table and the plot from the results file.

Writes ``docs/label_fraction.md`` (the table) and ``docs/images/label_fraction.png`` (frame macro
AP and segment F1 against the fraction, one line per method, test solid and val dashed).

Usage: ``python docs/label_fraction.py [--config configs/weak.yaml] [--fractions 0 0.1 ...]
[--set KEY=VALUE ...] [--report-only]`` (``make label-fraction``).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from matplotlib.figure import Figure  # noqa: E402

from pipeline import GENRES  # noqa: E402
from pipeline.core.config import Config, ConfigError, load_config  # noqa: E402
from pipeline.core.io import atomic_open, atomic_path, read_json, write_json  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
WEAKEN = ROOT / "docs" / "bring_your_own" / "weaken.py"
TABLE = ROOT / "docs" / "label_fraction.md"
PLOT = ROOT / "docs" / "images" / "label_fraction.png"
FRACTIONS = (0.0, 0.1, 0.25, 0.5, 1.0)
METHODS: dict[str, tuple[str, ...]] = {
    "broadcast": ("train.weak_labels=broadcast",),
    "mil, top-k": ("train.weak_labels=mil", "train.mil_pooling=top_k"),
    "mil, mean": ("train.weak_labels=mil", "train.mil_pooling=mean"),
}
"""How the trailer-level trailers train; ``mil`` runs also get ``train.window`` = the longest
train trailer, so every bag fits one window."""
POOLINGS_AGREE = ("mil, top-k", "mil, mean")
"""Without bags (fraction 1) these are the same training."""
SPLITS = ("val", "test")
FIGURES = ("frame_ap", "segment_f1", "trailer_ap")
FIGURE_NAMES = {"frame_ap": "frame macro AP", "segment_f1": "segment F1"}
FIGURE_INCHES = (9.0, 3.8)
DPI = 100


def run_key(fraction: float, method: str) -> str:
    return f"{fraction:g} {method}"


def split_figures(report: Mapping) -> dict:
    """The study's numbers from one :func:`pipeline.evaluate.report.model_report`."""
    macro = report["macro"]
    return {
        "frame_ap": macro["average_precision"],
        "segment_f1": macro["segment_f1"],
        "trailer_ap": macro["trailer_average_precision"],
        "genre_ap": {
            genre: report["genres"][genre].get("frames", {}).get("average_precision")
            for genre in GENRES
        },
    }


def cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def table(results: Mapping[str, Mapping], caption: str) -> str:
    """The Markdown page: a row per fraction and method, val (chooses nothing here; shown for
    the plot's dashed lines) and test figures, then test frame AP per genre."""
    runs = sorted(
        results.values(), key=lambda run: (run["fraction"], list(METHODS).index(run["method"]))
    )
    head = [
        "# How many trailers to label by hand",
        "",
        "<!-- written by `make label-fraction` (docs/label_fraction.py); do not edit -->",
        "",
        caption,
        "",
        "![frame macro AP and segment F1 against the fraction of segment-labelled train "
        "trailers](images/label_fraction.png)",
        "",
        "| segment-labelled train trailers | method | val frame macro AP | val segment F1 "
        "| **test** frame macro AP | **test** segment F1 | test trailer AP | epochs (best) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    rows = [
        f"| {run['fraction']:.0%} ({run['segment_trailers']} of "
        f"{run['segment_trailers'] + run['trailer_trailers']}) | {run['method']} "
        f"| {cell(run['val']['frame_ap'])} | {cell(run['val']['segment_f1'])} "
        f"| {cell(run['test']['frame_ap'])} | {cell(run['test']['segment_f1'])} "
        f"| {cell(run['test']['trailer_ap'])} | {run['epochs']} ({run['best_epoch']}) |"
        for run in runs
    ]
    genres = [
        "",
        "Test frame AP per genre:",
        "",
        f"| fraction | method | {' | '.join(GENRES)} |",
        f"| --- | --- | {' | '.join('---' for _ in GENRES)} |",
        *(
            f"| {run['fraction']:.0%} | {run['method']} | "
            + " | ".join(cell(run["test"]["genre_ap"][genre]) for genre in GENRES)
            + " |"
            for run in runs
        ),
    ]
    return "\n".join([*head, *rows, *genres, ""])


def draw(path: Path, results: Mapping[str, Mapping]) -> None:
    """Frame macro AP and segment F1 against the fraction: a colour per method, test solid,
    val dashed."""
    figure = Figure(figsize=FIGURE_INCHES)
    axes = figure.subplots(1, len(FIGURE_NAMES))
    colours = {method: f"C{index}" for index, method in enumerate(METHODS)}
    for axis, (figure_key, name) in zip(axes, FIGURE_NAMES.items(), strict=True):
        for method in METHODS:
            runs = sorted(
                (run for run in results.values() if run["method"] == method),
                key=lambda run: run["fraction"],
            )
            if not runs:
                continue
            fractions = [run["fraction"] for run in runs]
            for split, style in zip(SPLITS, ("--", "-"), strict=True):
                values = [run[split][figure_key] for run in runs]
                label = f"{method} ({split})"
                axis.plot(fractions, values, style, color=colours[method], marker="o", label=label)
        axis.set(xlim=(-0.02, 1.02), ylim=(0, 1.02), xlabel="segment-labelled train trailers")
        axis.set_title(name)
        axis.xaxis.set_major_formatter(lambda value, _: f"{value:.0%}")
        axis.grid(alpha=0.3)
    axes[0].legend(loc="upper left", fontsize="small")
    figure.tight_layout()
    with atomic_path(path, keep_suffix=True) as tmp:
        figure.savefig(tmp, dpi=DPI, format="png")


def write_report(results: Mapping, text: str) -> None:
    with atomic_open(TABLE) as out:
        out.write(table(results["runs"], text))
    draw(PLOT, results["runs"])


def trailers(*args: str) -> None:
    """Run one ``trailers`` command; its failure ends the sweep with its own message."""
    command = [str(Path(sys.executable).with_name("trailers")), *args]
    done = subprocess.run(command, check=False, cwd=ROOT)
    if done.returncode:
        raise SystemExit(f"label-fraction: `{' '.join(command[1:])}` failed ({done.returncode})")


def relabel(config_path: Path, overrides: Sequence[str], config: Config, fraction: float) -> None:
    """The corpus's synthesised annotations, weakened at ``fraction``, decoded and validated."""
    data = Path(config.paths.data_dir)
    pristine = data / "annotations.segments.csv"
    current = data / "annotations.csv"
    if not has_trailer_level_rows(current):  # as synthesised (again): the copy to restore
        shutil.copyfile(current, pristine)
    elif not pristine.is_file():
        raise SystemExit(
            f"label-fraction: {current} is already weakened and no {pristine.name} is kept "
            f"beside it: run `trailers synth --config {config_path}` first"
        )
    shutil.copyfile(pristine, data / "annotations.csv")
    sets = [item for override in overrides for item in ("--set", override)]
    fraction_set = ("--set", f"weaken.segment_fraction={fraction}")
    command = [sys.executable, str(WEAKEN), "--config", str(config_path), *sets, *fraction_set]
    if subprocess.run(command, check=False, cwd=ROOT).returncode:
        raise SystemExit("label-fraction: weaken.py failed")
    trailers("decode", "--config", str(config_path), *sets)
    trailers("validate", "--config", str(config_path), *sets)


def has_trailer_level_rows(annotations: Path) -> bool:
    """Whether any row has neither start nor end (a whole-trailer label)."""
    with open(annotations, encoding="utf-8", newline="") as handle:
        return any(not row["start_s"] and not row["end_s"] for row in csv.DictReader(handle))


def longest_train_trailer(config: Config) -> int:
    from pipeline.core.manifest import read_manifest
    from pipeline.core.shards import by_trailer

    rows = [row for row in read_manifest(config.paths.manifest) if row.split == "train"]
    return max(sum(row.frames for row in group) for group in by_trailer(rows))


def train_and_score(
    config_path: Path, overrides: Sequence[str], fraction: float, method: str, folder: Path
) -> dict:
    """Train the ConvLSTM one way into ``folder``; its figures on val and test."""
    from pipeline.core.manifest import read_manifest
    from pipeline.evaluate.report import model_report
    from pipeline.evaluate.rules import tune_rules
    from pipeline.evaluate.run import load_model, score_split
    from pipeline.model import frame_probabilities
    from pipeline.train.run import label_levels

    config = load_config(config_path, overrides)
    method_sets = list(METHODS[method])
    if "train.weak_labels=mil" in method_sets:
        method_sets.append(f"train.window={longest_train_trailer(config)}")
    sets = [*overrides, *method_sets, f"paths.models_dir={folder}"]
    config = load_config(config_path, sets)
    started = time.monotonic()
    trailers(
        "train",
        "--config",
        str(config_path),
        "--model",
        "classifier",
        *(item for override in sets for item in ("--set", override)),
    )
    seconds = time.monotonic() - started
    network, _ = load_model(config.paths.model("classifier"))
    rows = read_manifest(config.paths.manifest)
    predictors = {"classifier": frame_probabilities(network)}
    val, _ = score_split(rows, "val", predictors, config.paths.shards)
    test, _ = score_split(rows, "test", predictors, config.paths.shards)
    rules, _ = tune_rules(val, "classifier", config)
    metrics = read_json(config.paths.metrics("train_classifier")) or {}
    levels = label_levels([row for row in rows if row.split == "train"])
    return {
        "fraction": fraction,
        "method": method,
        "segment_trailers": levels["segment"],
        "trailer_trailers": levels["trailer"],
        "epochs": metrics.get("epochs"),
        "best_epoch": metrics.get("best_epoch"),
        "train_seconds": round(seconds),
        "settings": method_sets,
        **{
            split: split_figures(model_report(trailers_, val, "classifier", config, rules))
            for split, trailers_ in (("val", val), ("test", test))
        },
    }


def sweep(
    config_path: Path, overrides: Sequence[str], fractions: Sequence[float], path: Path
) -> dict:
    """Every (fraction, method) run not in the results file yet, each added to it when done."""
    settings = {"config": str(config_path), "overrides": list(overrides)}
    results = read_json(path) or {**settings, "runs": {}}
    if {key: results.get(key) for key in settings} != settings:
        raise SystemExit(
            f"label-fraction: {path} holds runs of other settings ({results.get('config')}, "
            f"--set {' '.join(results.get('overrides', [])) or 'none'}): remove it to start over"
        )
    runs = results["runs"]
    config = load_config(config_path, overrides)
    for fraction in fractions:
        todo = [method for method in METHODS if run_key(fraction, method) not in runs]
        if not todo:
            continue
        relabel(config_path, overrides, config, fraction)
        for method in todo:
            twins = [other for other in POOLINGS_AGREE if other != method]
            same = runs.get(run_key(fraction, twins[0])) if method in POOLINGS_AGREE else None
            if same and same["trailer_trailers"] == 0:
                runs[run_key(fraction, method)] = {**same, "method": method, "same_as": twins[0]}
            else:
                name = f"{fraction:g}-{method.replace(', ', '-')}"
                folder = Path(config.paths.models_dir) / "label_fraction" / name
                checkpoints = config.paths.train_outputs("classifier") / "checkpoints"
                if results.get("running") != name and checkpoints.exists():
                    print(f"label-fraction: {checkpoints}: another run's, removed")
                    shutil.rmtree(checkpoints)
                results["running"] = name  # a killed run resumes from its checkpoints
                write_json(path, results)
                runs[run_key(fraction, method)] = train_and_score(
                    config_path, overrides, fraction, method, folder
                )
            write_json(path, results)
    return results


def caption(config: Config, results: Mapping) -> str:
    """What the table measured: corpus, labels, budget, splits."""
    synth, overrides = config.synth, results["overrides"]
    first = next(iter(results["runs"].values()), None)
    train_count = first["segment_trailers"] + first["trailer_trailers"] if first else "?"
    return (
        f"`{results['config']}` (seed {config.seed}): {synth.n_trailers} synthesised trailers "
        f"of {synth.genres_per_trailer[0]} to {synth.genres_per_trailer[1]} genres, "
        f"{train_count} of them train; the given fraction of the train trailers keep their "
        "segment labels (a seeded choice, `weaken.segment_fraction`; larger fractions keep a "
        "superset), the rest are labelled at trailer level by `docs/bring_your_own/weaken.py`; "
        "val and test keep their segments. One ConvLSTM per row (`trailers train`, "
        f"{config.train.epochs} epochs at most, the best epoch by val frame macro AUC-PR), "
        f"overrides: {', '.join(f'`{item}`' for item in overrides) or 'none'}. Segment rules "
        "tuned on val, as `trailers evaluate` does. **Test** is the figure to quote; val is "
        "shown beside it (dashed in the plot) and chose nothing. `mil` rows train with "
        "`train.window` = the longest train trailer, so every bag fits a window; at 100 % "
        "there are no bags, so both poolings are one training."
    )


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=Path("configs/weak.yaml"))
    parser.add_argument("--fractions", type=float, nargs="+", default=list(FRACTIONS))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--note", default="", help="a line added to the table's caption")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, args.set)
    except ConfigError as exc:
        print(f"label-fraction: {exc}", file=sys.stderr)
        return 2
    results_path = Path(config.paths.outputs_dir) / "label_fraction" / "results.json"
    if args.report_only:
        results = read_json(results_path)
        if not results:
            print(f"label-fraction: {results_path}: no results yet", file=sys.stderr)
            return 2
    else:
        results = sweep(args.config, args.set, args.fractions, results_path)
    text = caption(load_config(results["config"], results["overrides"]), results)
    write_report(results, f"{text} {args.note}".strip())
    written = f"{TABLE.relative_to(ROOT)} and {PLOT.relative_to(ROOT)}"
    print(f"label-fraction: {len(results['runs'])} runs; wrote {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
