"""The timeline viewer: a video with its genre timeline under it, as one self-contained HTML page.

``write_viewer`` writes the page predict and evaluate leave beside a timeline; ``write_index``
lists such pages, worst first. A page works offline from the file system: its script and style
(``viewer.js``, ``viewer.css`` in this package) are inlined, the timeline is embedded as JSON,
the video is referenced by a path relative to the page, and a Content-Security-Policy lets no
other script, style or network request in.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from urllib.parse import quote

import numpy as np

from pipeline import GENRES
from pipeline.core.io import atomic_open
from pipeline.core.timeline import (
    DURATION_TOLERANCE_S,
    PROBABILITY_FLOOR,
    SLIDER_LIMITS,
    SegmentRules,
)

PALETTE: Mapping[str, str] = {
    "comedy": "#E69F00",  # Okabe-Ito orange
    "action": "#D55E00",  # vermillion
    "horror": "#CC79A7",  # reddish purple
    "suspense": "#0072B2",  # blue
    "musical": "#009E73",  # bluish green
    "other": "#56B4E9",  # sky blue
}
"""Each genre's colour on the page: the Okabe-Ito palette, told apart with any colour vision."""

_PLACEHOLDER = re.compile(r"@(\w+)@")


@dataclass(frozen=True)
class ViewerEntry:
    """One line of the index: a viewer page and its trailer's average precision (None: unscored)."""

    name: str
    page: Path
    average_precision: float | None


def write_viewer(
    page: Path,
    video: Path,
    fps: float,
    duration_s: float,
    probabilities: np.ndarray,
    rules: SegmentRules,
    truth: np.ndarray | None = None,
    title: str | None = None,
) -> None:
    """Write the viewer of ``video`` and its timeline to ``page`` (atomically).

    ``probabilities`` is float ``(frames, 6)`` in GENRES order, frame ``k`` at time ``k / fps``
    (the timeline contract, ``pipeline/core/timeline.py``); ``truth``, when given, the labels 0/1 of
    the same shape. The page's segment list decodes the probabilities by each genre's rule
    (``rules``) as :func:`pipeline.core.timeline.genre_segments` does; its threshold slider
    starts at the mean onset and moves every genre's onset and offset by as much
    (:meth:`pipeline.core.timeline.SegmentRule.shifted`). ``title`` defaults to the video's
    name.
    """
    page = Path(page)
    probabilities = _timeline_array(probabilities, "probabilities")
    if truth is not None:
        truth = _timeline_array(truth, "truth")
        if truth.shape != probabilities.shape:
            raise ValueError(
                f"truth has shape {truth.shape}, probabilities {probabilities.shape}: "
                "they must match"
            )
    if not (fps > 0 and duration_s > 0):
        raise ValueError(f"fps ({fps}) and duration_s ({duration_s}) must be positive")
    data = {
        "title": Path(video).name if title is None else title,
        "video": _relative_url(Path(video), page.parent),
        "fps": float(fps),
        "duration_s": float(duration_s),
        "frames": len(probabilities),
        "genres": list(GENRES),
        "colours": [PALETTE[genre] for genre in GENRES],
        "rules": [rules[genre].to_dict() for genre in GENRES],
        "slider_limits": list(SLIDER_LIMITS),
        "probability_floor": PROBABILITY_FLOOR,
        "duration_tolerance_s": DURATION_TOLERANCE_S,
        # Little-endian float32 and uint8, frame-major: exact, and a third of the size of
        # decimal JSON for a feature film's tens of thousands of frames.
        "probabilities": _base64(probabilities.astype("<f4")),
        "truth": None if truth is None else _base64((truth > 0).astype(np.uint8)),
    }
    _write_page(
        page,
        "viewer.html",
        script=_asset("viewer.js"),
        style=_asset("viewer.css"),
        data=_script_json(data),
    )


def write_index(page: Path, entries: Sequence[ViewerEntry]) -> None:
    """Write a page listing viewer pages, worst average precision first (unscored last)."""
    page = Path(page)
    rows = "\n".join(
        _index_row(rank, entry, page.parent)
        for rank, entry in enumerate(sorted(entries, key=_worst_first), start=1)
    )
    _write_page(page, "index.html", style=_asset("index.css"), rows=rows, count=str(len(entries)))


def _timeline_array(array: np.ndarray, name: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 2 or array.shape[1] != len(GENRES) or len(array) == 0:
        raise ValueError(
            f"{name} has shape {array.shape}: expected (frames, {len(GENRES)}), frames > 0"
        )
    return array


def _relative_url(target: Path, folder: Path) -> str:
    """``target`` as a URL relative to ``folder`` (percent-encoded, '/' separated)."""
    relative = os.path.relpath(target.resolve(), folder.resolve())
    return quote(Path(relative).as_posix())


def _base64(array: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(array).tobytes()).decode("ascii")


def _script_json(data: dict) -> str:
    """JSON safe inside ``<script type="application/json">``: no '<', '>' or '&' in the text,
    so no name can close the element (``</script>``) or open a comment."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _asset(name: str) -> str:
    return resources.files(__package__).joinpath("assets", name).read_text(encoding="utf-8")


def _csp_hash(text: str) -> str:
    digest = base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")
    return f"'sha256-{digest}'"


def _write_page(page: Path, template: str, **parts: str) -> None:
    """Fill ``@NAME@`` placeholders of a template in one pass (filled text is never re-read);
    the inlined script and style get their hashes in the page's Content-Security-Policy."""
    parts = {key.upper(): value for key, value in parts.items()}
    for key in ("SCRIPT", "STYLE"):
        if key in parts:
            parts[f"{key}_HASH"] = _csp_hash(parts[key])
    text = _PLACEHOLDER.sub(lambda match: parts[match.group(1)], _asset(template))
    with atomic_open(page, "w", encoding="utf-8") as handle:
        handle.write(text)


def _worst_first(entry: ViewerEntry) -> tuple[bool, float, str]:
    unscored = entry.average_precision is None or math.isnan(entry.average_precision)
    return unscored, 0.0 if unscored else entry.average_precision, entry.name


def _index_row(rank: int, entry: ViewerEntry, folder: Path) -> str:
    score = entry.average_precision
    shown = "n/a" if score is None or math.isnan(score) else f"{score:.3f}"
    href = html.escape(_relative_url(Path(entry.page), folder))
    return (
        f'<tr><td>{rank}</td><td><a href="{href}">{html.escape(entry.name)}</a></td>'
        f"<td>{shown}</td></tr>"
    )
