"""Trailer genre timelines: per-frame genre probabilities for movie trailers."""

from pipeline.config import GENRES, SPLITS

__all__ = ["GENRES", "SPLITS"]
__version__ = "0.1.0"
