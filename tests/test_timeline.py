"""The timeline contract shared by predict and evaluate: runs, segments, trailer scores."""

import numpy as np
import pytest

from pipeline import GENRES
from pipeline.core.config import TimelineConfig
from pipeline.core.timeline import genre_segments, genres_present, runs, trailer_scores


def test_runs_find_every_stretch_including_the_edges():
    active = np.array([1, 1, 0, 0, 1, 0, 1, 1, 1], dtype=bool)
    assert runs(active) == [(0, 2), (4, 5), (6, 9)]
    assert runs(np.zeros(4, dtype=bool)) == []


def test_segments_are_annotation_rows_in_time_order():
    probabilities = np.zeros((10, len(GENRES)), dtype=np.float32)
    probabilities[2:6, GENRES.index("horror")] = 0.9
    probabilities[0:10, GENRES.index("comedy")] = 0.6
    rows = genre_segments(
        probabilities, fps=4.0, duration_s=2.4, timeline=TimelineConfig(), trailer_id="t1"
    )
    assert rows == [
        {
            "trailer_id": "t1",
            "start_s": 0.0,
            "end_s": 2.4,
            "genre": "comedy",
            "mean_probability": 0.6,
        },
        {
            "trailer_id": "t1",
            "start_s": 0.5,
            "end_s": 1.5,
            "genre": "horror",
            "mean_probability": 0.9,
        },
    ]


def test_short_segments_are_dropped_when_asked():
    probabilities = np.zeros((8, len(GENRES)), dtype=np.float32)
    probabilities[3, 0] = 0.8
    timeline = TimelineConfig(min_segment_s=0.5)
    assert genre_segments(probabilities, fps=8.0, duration_s=1.0, timeline=timeline) == []


def test_trailer_score_is_the_mean_of_the_top_frames():
    probabilities = np.zeros((8, len(GENRES)), dtype=np.float32)
    probabilities[:2, 1] = [1.0, 0.5]
    scores = trailer_scores(probabilities, top_fraction=0.25)
    assert scores[1] == pytest.approx(0.75)
    assert genres_present(scores, threshold=0.5) == ["action"]
    with pytest.raises(ValueError, match="zero frames"):
        trailer_scores(probabilities[:0], 0.25)
