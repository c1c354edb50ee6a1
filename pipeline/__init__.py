"""Trailer genre timelines: per-frame genre probabilities for movie trailers."""

GENRES: tuple[str, ...] = ("comedy", "action", "horror", "suspense", "musical", "other")
"""The six genres, in the order used by every file, array and model output of the product."""

SPLITS: tuple[str, ...] = ("train", "val", "test")
"""The labelled splits, by trailer."""

UNLABELLED = "unlabelled"
"""The split of videos decoded from a folder without annotations (no labels are written)."""

__version__ = "0.1.0"
