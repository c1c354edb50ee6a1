"""Which steps of the segment rules pay: segment F1 at IoU 0.5 on val and test, per grid.

Scores val and test with both trained models once (as ``trailers evaluate`` does), then tunes
each genre's rule on val (:func:`pipeline.evaluate.rules.tune_rules`) over a grid that allows
one more step at a time (thresholds only, hysteresis, the minimums, median or Viterbi
smoothing, everything: the config's ``evaluate.tune_rules``), and prints the macro segment F1
and mAP each gives on val and test. ``untuned`` is the config's ``timeline:`` rule for every
genre (the timeline before issue 27). ``--rules-from MODELS_DIR`` also scores test with the rules
stored in another models folder (e.g. the demo's, on a corpus synthesised with another seed).
``--picture TRAILER PNG`` draws one test trailer's labels, untuned and tuned (the classifier's
stored rules) segments per genre (``docs/segments.png``).

Usage: ``python docs/segment_rules.py [--config configs/pipeline.yaml] [--set KEY=VALUE ...]
[--rules-from models] [--picture 002 docs/segments.png]``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from pipeline.core import model_card  # noqa: E402
from pipeline.core.config import Config, load_config  # noqa: E402
from pipeline.core.manifest import read_manifest  # noqa: E402
from pipeline.core.timeline import SegmentRules, config_rules  # noqa: E402
from pipeline.evaluate.metrics import macro  # noqa: E402
from pipeline.evaluate.report import ScoredTrailer, iou_key, segment_scores  # noqa: E402
from pipeline.evaluate.rules import tune_rules  # noqa: E402

MODELS = ("classifier", "baseline")
VARIANTS = {
    "thresholds only": {"hysteresis": (0.0,), "min_segment_s": (0.0,), "min_gap_s": (0.0,)},
    "+ hysteresis": {"min_segment_s": (0.0,), "min_gap_s": (0.0,)},
    "+ minimum segment, gap": {"hysteresis": (0.0,)},
    "+ hysteresis, minimums": {},
}
"""Grid overrides; each is tried with no smoothing, then with median only, Viterbi only, and
both (the default grid is the last of the last)."""
SMOOTHINGS = {
    "none": {"median_window_s": (), "switch_cost": ()},
    "median": {"switch_cost": ()},
    "viterbi": {"median_window_s": ()},
    "either": {},
}


def scored(config: Config) -> dict[str, list[ScoredTrailer]]:
    from pipeline.evaluate.run import load_model, score_split  # imports TensorFlow
    from pipeline.model import frame_probabilities

    rows = read_manifest(config.paths.manifest)
    predictors = {
        model: frame_probabilities(load_model(config.paths.model(model))[0]) for model in MODELS
    }
    return {
        split: score_split(rows, split, predictors, config.paths.shards)[0]
        for split in ("val", "test")
    }


def figures(trailers: list[ScoredTrailer], model: str, rules: SegmentRules) -> str:
    scores = segment_scores(trailers, model, rules, 0.5)
    f1 = macro(scores[genre][iou_key(0.5)]["f1"] for genre in scores)
    average = macro(scores[genre]["map"] for genre in scores)
    return f"F1 {f1:.3f} mAP {average:.3f}"


def draw(trailer: ScoredTrailer, rules: SegmentRules, untuned: SegmentRules, path: Path) -> None:
    """Per genre three bars: the labels, the untuned segments, the tuned ones."""
    from matplotlib.figure import Figure

    from pipeline import GENRES
    from pipeline.core.timeline import genre_segments
    from pipeline.evaluate.metrics import true_segments
    from pipeline.views.viewer import PALETTE

    probabilities = trailer.probabilities["classifier"]
    rows = {
        "untuned": genre_segments(probabilities, trailer.fps, trailer.duration_s, untuned),
        "tuned": genre_segments(probabilities, trailer.fps, trailer.duration_s, rules),
    }
    figure = Figure(figsize=(10, 0.9 * len(GENRES) + 0.8))
    axis = figure.subplots()
    ticks, names = [], []
    for index, genre in enumerate(GENRES):
        labelled = true_segments(trailer.labels[:, index], trailer.fps, trailer.duration_s)
        bars = {
            "labels": [(start, end - start) for start, end in labelled],
            **{
                name: [
                    (r["start_s"], r["end_s"] - r["start_s"]) for r in found if r["genre"] == genre
                ]
                for name, found in rows.items()
            },
        }
        for row, (name, spans) in enumerate(bars.items()):
            y = -(index * 4 + row)
            axis.broken_barh(spans, (y - 0.4, 0.8), color=PALETTE[genre], edgecolor="black")
            ticks.append(y)
            names.append(f"{genre}: {name} ({len(spans)})")
    axis.set_yticks(ticks, names)
    axis.set_xlim(0, trailer.duration_s)
    axis.set_xlabel("time (s)")
    counts = {name: len(found) for name, found in rows.items()}
    axis.set_title(
        f"trailer {trailer.trailer_id}: {counts['untuned']} segments untuned, "
        f"{counts['tuned']} with the rules tuned on val"
    )
    figure.savefig(path, dpi=100, bbox_inches="tight")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="configs/pipeline.yaml")
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--rules-from", type=Path)
    parser.add_argument("--picture", nargs=2, metavar=("TRAILER", "PNG"))
    args = parser.parse_args()
    config = load_config(args.config, args.overrides)
    splits = scored(config)
    if args.picture is not None:
        trailer = next(t for t in splits["test"] if t.trailer_id == args.picture[0])
        stored = model_card.read_rules(config.paths.model("classifier"))
        draw(trailer, stored["rules"], config_rules(config.timeline), Path(args.picture[1]))
        return
    print(f"val {len(splits['val'])} trailers, test {len(splits['test'])} trailers")
    for model in MODELS:
        untuned = config_rules(config.timeline)
        print(
            f"{model:10} {'untuned':38} val {figures(splits['val'], model, untuned)}"
            f"  test {figures(splits['test'], model, untuned)}"
        )
        for variant, steps in VARIANTS.items():
            for smoothing, off in SMOOTHINGS.items():
                grid = config.evaluate.tune_rules.model_copy(update=steps | off)
                tuned_config = config.model_copy(
                    update={"evaluate": config.evaluate.model_copy(update={"tune_rules": grid})}
                )
                rules, _ = tune_rules(splits["val"], model, tuned_config)
                name = f"{variant}, smoothing {smoothing}"
                print(
                    f"{model:10} {name:38} val {figures(splits['val'], model, rules)}"
                    f"  test {figures(splits['test'], model, rules)}"
                )
        if args.rules_from is not None:
            folder = args.rules_from / model
            stored = model_card.read_rules(folder)
            if stored is not None:
                print(
                    f"{model:10} {'rules of ' + str(folder):38} "
                    f"test {figures(splits['test'], model, stored['rules'])}"
                )


if __name__ == "__main__":
    main()
