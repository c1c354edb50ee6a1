"""A genre timeline as a picture: one heat strip per genre over time, with a time axis.

Predict draws each video's timeline; evaluate draws test trailers' truth against prediction
(``truth``: a thin strip of the labels above each genre's probabilities). Frame ``k`` covers
``[k / fps, (k + 1) / fps)``, the timeline contract of :mod:`pipeline.core.timeline`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from pipeline import GENRES
from pipeline.core.io import atomic_path

STRIP_INCHES = 0.45
"""Height of one genre's strip; the figure grows with the genres drawn."""
WIDTH_INCHES = 10.0
TRUTH_SHARE = 0.3
"""Height of a genre's truth strip relative to its prediction strip."""
COLOURMAP = "magma"
"""Probabilities and labels alike: 1 is bright, 0 dark."""
DPI = 100


def draw_timeline(
    path: str | Path,
    probabilities: np.ndarray,
    fps: float,
    duration_s: float,
    truth: np.ndarray | None = None,
    title: str | None = None,
) -> None:
    """Write a PNG of ``probabilities`` (float ``(frames, 6)``, GENRES order) to ``path``.

    ``truth`` (``(frames, 6)``, 0/1 labels of the same frames) adds a labelled strip above each
    genre's prediction. Written atomically.
    """
    probabilities = np.asarray(probabilities, dtype=np.float32)
    end_s = max(duration_s, len(probabilities) / fps)
    ratios = [TRUTH_SHARE, 1.0] * len(GENRES) if truth is not None else [1.0] * len(GENRES)
    # A bare Figure, not pyplot: no backend or window, and nothing global to close.
    figure = Figure(figsize=(WIDTH_INCHES, STRIP_INCHES * sum(ratios) + 1.0))
    axes = figure.subplots(
        len(ratios),
        1,
        sharex=True,
        gridspec_kw={"height_ratios": ratios, "hspace": 0.08},
        squeeze=False,
    )
    axes = axes[:, 0]
    extent = (0.0, len(probabilities) / fps, 0.0, 1.0)
    image = None
    for index, genre in enumerate(GENRES):
        if truth is not None:
            _strip(axes[2 * index], np.asarray(truth)[:, index], extent, "truth", COLOURMAP)
            predicted = axes[2 * index + 1]
        else:
            predicted = axes[index]
        image = _strip(predicted, probabilities[:, index], extent, genre, COLOURMAP)
    axes[-1].set_xlim(0.0, end_s)
    axes[-1].set_xlabel("time (s)")
    if title:
        axes[0].set_title(title)
    figure.colorbar(image, ax=list(axes), label="probability", fraction=0.02, pad=0.01)
    with atomic_path(path, keep_suffix=True) as tmp:
        figure.savefig(tmp, dpi=DPI, format="png", bbox_inches="tight")


def _strip(axis, values: np.ndarray, extent: tuple, label: str, colourmap: str):
    image = axis.imshow(
        np.asarray(values, dtype=np.float32)[None, :],
        aspect="auto",
        cmap=colourmap,
        vmin=0.0,
        vmax=1.0,
        extent=extent,
        interpolation="nearest",
    )
    axis.set_yticks([])
    axis.set_ylabel(label, rotation=0, ha="right", va="center")
    return image
