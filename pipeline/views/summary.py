"""What ``make run`` prints at the end: the demo's quality and where everything it made lies.

Reads only what the stages wrote (``metrics/evaluate.json`` and the config's paths); run as
``python -m pipeline.views.summary --config configs/pipeline.yaml``.
"""

from __future__ import annotations

import argparse
import sys

from pipeline.core.config import Config, ConfigError, load_config
from pipeline.core.io import read_json

MODELS = {"classifier": "ConvLSTM", "baseline": "per-frame baseline"}
"""Each evaluated model's metrics prefix and its name for people."""

COLUMNS = {"macro_ap": "macro AP", "motion_only_ap": "motion-only AP", "trailer_ap": "trailer AP"}
"""The summary's columns: metrics-file suffix -> heading."""

SEGMENT_COLUMNS = {
    "segment_f1_iou30": "F1 @IoU0.3",
    "segment_f1_iou50": "F1 @IoU0.5",
    "segment_f1_iou70": "F1 @IoU0.7",
    "segment_map": "mAP",
    "segment_f1_untuned": "F1 untuned",
}
"""The segment table's columns: metrics-file suffix -> heading (``untuned``: the config's
``timeline:`` rule for every genre, at ``evaluate.segment_iou``)."""


def _number(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def quality_table(numbers: dict[str, float]) -> list[str]:
    """The models' macro, motion-only and trailer-level AP, and the gain from time."""
    width = max(len(name) for name in (*MODELS.values(), "gain from time"))
    lines = ["  " + " " * width + "".join(f"  {heading:>15}" for heading in COLUMNS.values())]
    for model, name in MODELS.items():
        cells = [_number(numbers.get(f"{model}_{column}")) for column in COLUMNS]
        lines.append(f"  {name:<{width}}" + "".join(f"  {cell:>15}" for cell in cells))
    gains = [_number(numbers.get(f"gain_{column}"), signed=True) for column in COLUMNS]
    lines.append(f"  {'gain from time':<{width}}" + "".join(f"  {cell:>15}" for cell in gains))
    return lines


def segment_table(numbers: dict[str, float]) -> list[str]:
    """Each model's macro segment F1 at three IoUs, segment mAP, and F1 before tuning."""
    width = max(len(name) for name in MODELS.values())
    headings = "".join(f"  {heading:>11}" for heading in SEGMENT_COLUMNS.values())
    lines = ["  " + " " * width + headings]
    for model, name in MODELS.items():
        cells = [_number(numbers.get(f"{model}_{column}")) for column in SEGMENT_COLUMNS]
        lines.append(f"  {name:<{width}}" + "".join(f"  {cell:>11}" for cell in cells))
    return lines


def summary(config: Config) -> str:
    paths = config.paths
    numbers = read_json(paths.metrics("evaluate"))
    if numbers is None:
        return f"{paths.metrics('evaluate')}: not found (run `make run` or `trailers evaluate`)"
    split = config.evaluate.split
    return "\n".join(
        [
            "",
            f"Demo quality on the {split} split ({numbers.get('evaluated_trailers', '?')} "
            f"trailers; per-frame average precision; {paths.metrics('evaluate')}):",
            *quality_table(numbers),
            "",
            "Segments (each genre's rule tuned on val; F1 matched one-to-one at an IoU; mAP "
            "over IoU 0.5:0.05:0.95):",
            *segment_table(numbers),
            "",
            f"Every number, per genre:  {paths.evaluate_report}",
            f"PR curves:                {paths.pr_curves}/ (`dvc plots show` renders them)",
            f"Pictures:                 {paths.evaluate_figures}/",
            f"Timelines to watch:       {paths.evaluate_viewer / 'index.html'} (worst first)",
            f"Models:                   {paths.model('classifier')}, {paths.model('baseline')}",
            "Runs in MLflow:           make ui  (it prints the runs table's address)",
            "Your own video:           make predict VIDEO=path/to/trailer.mp4",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.views.summary", description=__doc__)
    parser.add_argument("--config", default="configs/pipeline.yaml")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
