"""The timeline contract shared by predict and evaluate: runs, segments decoded by each genre's
rule (on hand-made probability tracks whose segments are known), trailer scores, and the rules
stored with a model."""

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline import GENRES
from pipeline.core import model_card
from pipeline.core.config import TimelineConfig
from pipeline.core.errors import StageError
from pipeline.core.timeline import (
    SegmentRule,
    chosen_rules,
    config_rules,
    decode_runs,
    genre_segments,
    genres_present,
    median_smoothed,
    runs,
    trailer_scores,
    viterbi_path,
)

FPS = 10.0


def track(*pieces: tuple[float, int]) -> np.ndarray:
    """A float32 probability track of ``(value, frames)`` pieces."""
    return np.concatenate([np.full(frames, value, np.float32) for value, frames in pieces])


def segments_of(column: np.ndarray, **rule: float | str) -> list[tuple[int, int]]:
    fields = {"onset": 0.5, "offset": 0.5} | rule
    return decode_runs(column, SegmentRule(**fields), FPS, len(column) / FPS)


def test_runs_find_every_stretch_including_the_edges():
    active = np.array([1, 1, 0, 0, 1, 0, 1, 1, 1], dtype=bool)
    assert runs(active) == [(0, 2), (4, 5), (6, 9)]
    assert runs(np.zeros(4, dtype=bool)) == []


def test_segments_are_annotation_rows_in_time_order():
    probabilities = np.zeros((10, len(GENRES)), dtype=np.float32)
    probabilities[2:6, GENRES.index("horror")] = 0.9
    probabilities[0:10, GENRES.index("comedy")] = 0.6
    rows = genre_segments(
        probabilities,
        fps=4.0,
        duration_s=2.4,
        rules=config_rules(TimelineConfig()),
        trailer_id="t1",
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
    rules = config_rules(TimelineConfig(min_segment_s=0.5))
    assert genre_segments(probabilities, fps=8.0, duration_s=1.0, rules=rules) == []


def test_trailer_score_is_the_mean_of_the_top_frames():
    probabilities = np.zeros((8, len(GENRES)), dtype=np.float32)
    probabilities[:2, 1] = [1.0, 0.5]
    scores = trailer_scores(probabilities, top_fraction=0.25)
    assert scores[1] == pytest.approx(0.75)
    assert genres_present(scores, threshold=0.5) == ["action"]
    with pytest.raises(ValueError, match="zero frames"):
        trailer_scores(probabilities[:0], 0.25)


def test_flicker_inside_a_segment_is_bridged_by_the_minimum_gap():
    # 2 s on, with two dips of 1 and 2 frames (0.1 s, 0.2 s) below the threshold.
    column = track((0.1, 5), (0.9, 6), (0.2, 1), (0.8, 6), (0.3, 2), (0.9, 6), (0.1, 5))
    assert segments_of(column) == [(5, 11), (12, 18), (20, 26)]
    assert segments_of(column, min_gap_s=0.15) == [(5, 18), (20, 26)]
    assert segments_of(column, min_gap_s=0.25) == [(5, 26)]


def test_a_sliver_under_the_minimum_is_dropped_and_one_at_it_kept():
    column = track((0.1, 5), (0.9, 2), (0.1, 5), (0.9, 10), (0.1, 5))
    assert segments_of(column) == [(5, 7), (12, 22)]
    assert segments_of(column, min_segment_s=0.25) == [(12, 22)]
    assert segments_of(column, min_segment_s=0.2) == [(5, 7), (12, 22)]  # 0.2 s is not under


def test_gaps_are_bridged_before_slivers_are_dropped():
    # Two 0.2 s pieces 0.1 s apart: bridged they make 0.5 s, which a 0.4 s minimum keeps.
    column = track((0.1, 3), (0.9, 2), (0.1, 1), (0.9, 2), (0.1, 3))
    assert segments_of(column, min_segment_s=0.4) == []
    assert segments_of(column, min_segment_s=0.4, min_gap_s=0.15) == [(3, 8)]


def test_hysteresis_holds_a_segment_through_a_dip_between_offset_and_onset():
    # Up to 0.8, a dip to 0.45 (between offset 0.4 and onset 0.6), up again, then down to 0.3.
    column = track((0.1, 3), (0.8, 4), (0.45, 3), (0.7, 4), (0.3, 3))
    assert segments_of(column, onset=0.6, offset=0.6) == [(3, 7), (10, 14)]
    assert segments_of(column, onset=0.6, offset=0.4) == [(3, 14)]
    # A bump between offset and onset that never passes the onset starts nothing.
    assert segments_of(track((0.1, 3), (0.55, 5), (0.1, 3)), onset=0.6, offset=0.4) == []
    # A dip below the offset ends it.
    assert segments_of(track((0.8, 3), (0.35, 1), (0.8, 3)), onset=0.6, offset=0.4) == [
        (0, 3),
        (4, 7),
    ]


def test_median_smoothing_removes_spikes_and_fills_dips_shorter_than_half_its_window():
    column = track((0.1, 5), (0.9, 1), (0.1, 5), (0.9, 5), (0.2, 1), (0.9, 5), (0.1, 3))
    assert median_smoothed(column, 0.3, FPS).tolist() == pytest.approx(
        track((0.1, 11), (0.9, 11), (0.1, 3)).tolist()
    )
    assert segments_of(column, smoothing="median", median_window_s=0.3) == [(11, 22)]
    assert median_smoothed(column, 0.01, FPS) is column  # under a frame either side: unchanged


def test_viterbi_keeps_its_state_through_what_does_not_pay_the_switch_cost():
    column = track((0.1, 5), (0.8, 1), (0.1, 5), (0.9, 5), (0.3, 1), (0.9, 5), (0.1, 3))
    # No switch cost: each frame on its own side of the onset, as plain thresholding.
    assert runs(viterbi_path(column, 0.5, 0.0)) == runs(column > 0.5)
    # On rather than off gains logit(p) - logit(onset): 1.39 for the spike at 0.8, -0.85 for
    # the dip at 0.3. Both need two changes, 2 nats at 1 nat each: the state holds through
    # both, while the ten frames at 0.9 (2.2 each) pay for theirs.
    assert segments_of(column, smoothing="viterbi", switch_cost=1.0) == [(11, 22)]
    assert segments_of(column, smoothing="viterbi", switch_cost=0.6) == [(5, 6), (11, 22)]
    assert viterbi_path(column[:0], 0.5, 1.0).tolist() == []


def test_a_two_hour_track_decodes_into_ordered_segments():
    rng = np.random.default_rng(3)
    column = rng.random(2 * 3600 * 8).astype(np.float32)  # a 2-hour film at 8 fps
    for smoothing in ("none", "median", "viterbi"):
        found = segments_of(column, smoothing=smoothing, offset=0.4, min_gap_s=0.3)
        assert found and all(a < b for (_, a), (b, _) in zip(found, found[1:], strict=False))


def test_the_slider_moves_onset_and_offset_together_inside_its_limits():
    rule = SegmentRule(onset=0.6, offset=0.4, min_segment_s=0.5)
    assert rule.shifted(0.1) == SegmentRule(onset=0.7, offset=0.5, min_segment_s=0.5)
    assert rule.shifted(-0.5).offset == 0.01 and rule.shifted(0.5).onset == 0.99
    with pytest.raises(ValueError, match="offset <= onset"):
        SegmentRule(onset=0.4, offset=0.6)
    with pytest.raises(ValueError, match="durations and switch cost >= 0"):
        SegmentRule(onset=0.4, offset=0.4, min_gap_s=-1.0)
    with pytest.raises(ValueError, match="median_window_s > 0"):
        SegmentRule(onset=0.4, offset=0.4, median_window_s=0.0)


def test_predict_reads_by_the_models_rules_unless_the_config_says_otherwise():
    tuned = {genre: SegmentRule(onset=0.7, offset=0.6) for genre in GENRES}
    assert chosen_rules(TimelineConfig(), tuned) is tuned
    assert chosen_rules(TimelineConfig(rules="config"), tuned) == config_rules(TimelineConfig())
    assert chosen_rules(TimelineConfig(), None) == config_rules(TimelineConfig())
    with pytest.raises(ValueError, match="offset_threshold"):
        TimelineConfig(threshold=0.5, offset_threshold=0.6)


def test_rules_stored_with_a_model_read_back_and_go_when_it_is_retrained(tmp_path: Path):
    rules = {genre: SegmentRule(onset=0.6, offset=0.5, smoothing="median") for genre in GENRES}
    model_card.write_rules(tmp_path, rules, tuned_on="val")
    assert model_card.read_rules(tmp_path) == {"tuned_on": "val", "rules": rules}
    path = model_card.rules_file(tmp_path)
    stored = json.loads(path.read_text())
    del stored["rules"]["horror"]
    path.write_text(json.dumps(stored))
    with pytest.raises(StageError, match=f"^{path}: .*horror"):
        model_card.read_rules(tmp_path)
    path.write_text("{")
    with pytest.raises(StageError, match=f"^{path}: cannot read the segment rules"):
        model_card.read_rules(tmp_path)
    card = model_card.ModelCard("m", None, GENRES, (3, 8, 8), None, None)
    model_card.write(tmp_path, card, lambda target: target.write_bytes(b"network"))
    assert model_card.read_rules(tmp_path) is None
