"""Evaluate's pictures and plot data: per-genre precision-recall curves of every model.

Two forms of one curve: a CSV per genre for ``dvc plots`` (recall on :data:`RECALL_GRID`, one
interpolated-precision column per model, so one plot shows both models by line style while DVC
keeps colour for revisions) and a PNG per genre with scikit-learn's exact step curves.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from pipeline.core.io import atomic_open, atomic_path
from pipeline.evaluate.metrics import RECALL_GRID, interpolated_precision

Curve = tuple[np.ndarray, np.ndarray]
"""``(recall, precision)`` of one model and genre, as scikit-learn computes them."""

FIGURE_INCHES = (5.0, 4.0)
DPI = 100
DIGITS = 4
"""Decimals of the precision written to the CSVs."""


def write_pr_csv(path: Path, curves: Mapping[str, Curve | None]) -> None:
    """``recall`` on the grid and one precision column per model (empty where the split has
    no positive frame of the genre, so no curve exists)."""
    columns = {
        model: None if curve is None else interpolated_precision(*curve)
        for model, curve in curves.items()
    }
    with atomic_open(path, newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["recall", *columns])
        for index, recall in enumerate(RECALL_GRID):
            writer.writerow(
                [
                    f"{recall:.2f}",
                    *(
                        "" if values is None else round(float(values[index]), DIGITS)
                        for values in columns.values()
                    ),
                ]
            )


def draw_pr_curves(
    path: Path,
    genre: str,
    curves: Mapping[str, Curve | None],
    average_precisions: Mapping[str, float | None],
) -> None:
    """A PNG of every model's precision-recall curve of ``genre``, its AP in the legend."""
    figure = Figure(figsize=FIGURE_INCHES)
    axis = figure.subplots()
    for model, curve in curves.items():
        if curve is None:
            continue
        label = f"{model} (AP {average_precisions[model]:.3f})"
        axis.step(*curve, where="post", label=label)
    if not any(curve is not None for curve in curves.values()):
        axis.text(0.5, 0.5, "no positive frame in this split", ha="center", va="center")
    axis.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision", title=genre)
    if axis.get_legend_handles_labels()[0]:
        axis.legend(loc="best")
    with atomic_path(path, keep_suffix=True) as tmp:
        figure.savefig(tmp, dpi=DPI, format="png", bbox_inches="tight")
