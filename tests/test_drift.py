"""The shared drift measure (pipeline/infra/drift.py): predict summarises a video's frames as
validate summarises shards, and TFDV's divergence tells a video like the training data from one
unlike it."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.infra.drift import ExampleTap, frame_features, statistics_of, video_drift

FRAMES, SHARD_FRAMES, BLACK = 20, 8, 16.0


def frames(seed: int, low: int = 0, high: int = 256) -> np.ndarray:
    return np.random.default_rng(seed).integers(low, high, (FRAMES, 3, 4, 4), dtype=np.uint8)


@pytest.mark.parametrize("chunk_frames", [1, 7, 64])
def test_a_video_is_summarised_shard_by_shard_whatever_its_chunks(chunk_frames: int) -> None:
    video = frames(0)
    tap = ExampleTap(SHARD_FRAMES, BLACK)
    chunks = [video[i : i + chunk_frames] for i in range(0, FRAMES, chunk_frames)]
    passed = list(tap(iter(chunks)))
    assert all(a is b for a, b in zip(passed, chunks, strict=True))  # the model's frames, as read
    shards = [video[i : i + SHARD_FRAMES] for i in range(0, FRAMES, SHARD_FRAMES)]
    assert tap.examples == [frame_features([shard], BLACK) for shard in shards]


def test_the_divergence_is_small_for_alike_frames_and_near_one_for_unlike() -> None:
    def examples(video: np.ndarray) -> list[dict[str, list]]:
        tap = ExampleTap(SHARD_FRAMES, BLACK)
        list(tap([video]))
        return tap.examples

    baseline = statistics_of(examples(frames(0, high=128)) + examples(frames(1, high=128)))
    thresholds = {"frame_brightness": 0.5, "frame_motion": 0.5}
    alike = video_drift(examples(frames(2, high=128)), baseline, thresholds)
    unlike = video_drift(examples(frames(3, low=200)), baseline, thresholds)
    assert {m["feature"] for m in alike} == set(thresholds)
    assert all(m["value"] < 0.5 and m["threshold"] == 0.5 for m in alike), alike
    brightness = next(m for m in unlike if m["feature"] == "frame_brightness")
    assert brightness["value"] > 0.9, unlike
