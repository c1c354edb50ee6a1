"""The train stage's tf.data input, on a tiny corpus of real shard files written here.

Every frame's pixels say where it comes from (channel 0: the trailer's number, channel 1: its
frame index in the trailer, low byte in the first row and high byte below, channel 2: the
column), so each yielded window can be located and compared with the files it was read from.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from pipeline import GENRES
from pipeline.core.config import AugmentConfig, TrainConfig
from pipeline.core.errors import StageError
from pipeline.core.io import save_npy
from pipeline.core.manifest import ShardRow, read_manifest, write_manifest
from pipeline.train import dataset

HEIGHT, WIDTH = 6, 10
SHARD_FRAMES = 128
# trailer id -> (number in the pixels, frames, split); "a" spans three shards, "c" is shorter
# than a training window.
TRAILERS = {
    "a": (1, 300, "train"),
    "b": (2, 40, "train"),
    "c": (3, 5, "train"),
    "d": (4, 30, "val"),
    "e": (5, 21, "val"),
}


def trailer_frames(number: int, frames: int) -> np.ndarray:
    pixels = np.empty((frames, 3, HEIGHT, WIDTH), dtype=np.uint8)
    pixels[:, 0] = number
    pixels[:, 1] = np.arange(frames)[:, None, None] // 256  # high byte, every row but the first
    pixels[:, 1, 0] = np.arange(frames)[:, None] % 256
    pixels[:, 2] = np.arange(WIDTH)
    return pixels


def trailer_labels(number: int, frames: int) -> np.ndarray:
    index = np.arange(frames)[:, None] + np.arange(len(GENRES)) + number
    return (index % 3 == 0).astype(np.uint8)


def write_corpus(root: Path) -> Path:
    rows = []
    for trailer_id, (number, frames, split) in TRAILERS.items():
        pixels, labels = trailer_frames(number, frames), trailer_labels(number, frames)
        for k, first in enumerate(range(0, frames, SHARD_FRAMES)):
            shard = f"{split}/trailer_{trailer_id}-{k}.npy"
            labels_file = f"{split}/trailer_{trailer_id}-{k}.labels.npy"
            part = slice(first, first + SHARD_FRAMES)
            rows.append(
                ShardRow(
                    shard=shard,
                    labels=labels_file,
                    trailer_id=trailer_id,
                    split=split,
                    first_frame=first,
                    frames=len(pixels[part]),
                    fps=8.0,
                    channels=3,
                    height=HEIGHT,
                    width=WIDTH,
                    source=f"videos/trailer_{trailer_id}.mp4",
                    source_duration_s=frames / 8,
                    sha256=save_npy(root / shard, pixels[part]),
                    labels_sha256=save_npy(root / labels_file, labels[part]),
                )
            )
    write_manifest(root / "manifest.jsonl", rows)
    return root / "manifest.jsonl"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[ShardRow], Path]:
    root = tmp_path_factory.mktemp("shards")
    return read_manifest(write_corpus(root)), root


def from_files(rows: list[ShardRow], root: Path, trailer_id: str) -> tuple[np.ndarray, ...]:
    """A trailer's frames and labels as the files hold them, shards in first_frame order."""
    mine = sorted((r for r in rows if r.trailer_id == trailer_id), key=lambda r: r.first_frame)
    frames = np.concatenate([np.load(root / r.shard) for r in mine])
    return frames, np.concatenate([np.load(root / r.labels) for r in mine])


def config(**changes) -> TrainConfig:
    augment = AugmentConfig(horizontal_flip=False, temporal_jitter=0)
    base = dict(window=8, stride=4, batch_size=4, parallel_reads=2, augment=augment)
    return TrainConfig(**{**base, **changes})


def windows(ds) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every window of one pass as (uint8 frames, float32 labels (time, 6)), in order."""
    out = []
    for frames, labels in ds:
        assert list(labels) == list(GENRES)
        stacked = np.concatenate([labels[g].numpy() for g in GENRES], axis=-1)
        out.extend(zip(frames.numpy(), stacked, strict=True))
    return out


def locate(frames: np.ndarray) -> tuple[str, int]:
    """The trailer and first frame a window says it holds."""
    number = int(frames[0, 0, 0, 0])
    trailer_id = next(t for t, (n, _, _) in TRAILERS.items() if n == number)
    return trailer_id, int(frames[0, 1, 0, 0]) + 256 * int(frames[0, 1, 1, 0])


def check_window(frames, labels, rows, root, flipped: bool = False) -> tuple[str, int]:
    trailer_id, start = locate(frames)
    if flipped:
        trailer_id, start = locate(frames[..., ::-1])
    expected_frames, expected_labels = from_files(rows, root, trailer_id)
    expected = expected_frames[start : start + len(frames)]
    np.testing.assert_array_equal(frames, expected[..., ::-1] if flipped else expected)
    np.testing.assert_array_equal(labels, expected_labels[start : start + len(frames)])
    return trailer_id, start


def test_train_windows_are_the_files_frames_and_labels(corpus):
    rows, root = corpus
    train = config()
    ds = dataset.train_dataset(rows, root, train, seed=0, split="train")
    frames_spec, labels_spec = ds.element_spec
    assert frames_spec.dtype.name == "uint8" and frames_spec.shape[1:] == (8, 3, HEIGHT, WIDTH)
    assert list(labels_spec) == list(GENRES)
    assert all(s.dtype.name == "float32" and s.shape[1:] == (8, 1) for s in labels_spec.values())

    found = [check_window(f, lab, rows, root) for f, lab in windows(ds)]
    per_trailer = {t: sorted(s for u, s in found if u == t) for t in ("a", "b", "c")}
    assert len(found) == dataset.window_count(rows, train, split="train") == 74 + 9
    assert [len(s) for s in per_trailer.values()] == [74, 9, 0]
    assert any(s < 128 < s + 8 for s in per_trailer["a"]), "no window crosses a shard boundary"
    assert len(ds) == -(-len(found) // train.batch_size)


def batches_of(ds) -> list[np.ndarray]:
    return [frames.numpy() for frames, _ in ds]


def test_same_seed_same_batches_other_seed_different(corpus):
    rows, root = corpus
    one, again, other = (
        batches_of(dataset.train_dataset(rows, root, config(), seed=s, split="train"))
        for s in (1, 1, 2)
    )
    assert all(np.array_equal(x, y) for x, y in zip(one, again, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(one, other, strict=True))


def test_epochs_differ_in_windows_and_order(corpus):
    rows, root = corpus
    ds = dataset.train_dataset(rows, root, config(), seed=3, split="train")
    first, second = ([locate(f) for f, _ in windows(ds)] for _ in range(2))
    assert first != second
    assert sorted(first) != sorted(second), "same windows, only reordered"


def test_eval_yields_whole_trailers_exactly(corpus):
    rows, root = corpus
    ds = dataset.eval_dataset(rows, root, config(augment=AugmentConfig()), split="train")
    found = windows(ds)
    assert [locate(f) for f, _ in found] == [("a", 0), ("b", 0), ("c", 0)]
    for (frames, labels), trailer_id in zip(found, "abc", strict=True):
        expected_frames, expected_labels = from_files(rows, root, trailer_id)
        np.testing.assert_array_equal(frames, expected_frames)  # not flipped: no augmentation
        np.testing.assert_array_equal(labels, expected_labels)


def test_eval_windows_tile_each_trailer(corpus):
    rows, root = corpus
    ds = dataset.eval_dataset(rows, root, config(eval_window=10, eval_batch_size=2), split="val")
    found = [check_window(f, lab, rows, root) for f, lab in windows(ds)]
    assert found == [("d", 0), ("d", 10), ("d", 20), ("e", 0), ("e", 10)]


def test_whole_trailers_need_eval_batch_size_one(corpus):
    rows, root = corpus
    with pytest.raises(ValueError, match="eval_batch_size"):
        dataset.eval_dataset(rows, root, config(eval_batch_size=2), split="val")


def test_flip_reverses_whole_windows_and_jitter_moves_starts(corpus):
    rows, root = corpus
    augment = AugmentConfig(horizontal_flip=True, temporal_jitter=2)
    ds = dataset.train_dataset(rows, root, config(augment=augment), seed=0, split="train")
    flips, starts = [], []
    for frames, labels in windows(ds):
        flipped = frames[0, 2, 0, 0] != 0  # column 0 holds 0 unless the width axis is reversed
        trailer_id, start = check_window(frames, labels, rows, root, flipped=bool(flipped))
        flips.append(flipped)
        if trailer_id == "a":
            starts.append(start)
    assert 0.3 < np.mean(flips) < 0.7
    assert len({s % 4 for s in starts}) > 1, "no start moved off the stride"


def test_several_splits_need_a_split(corpus):
    rows, root = corpus
    with pytest.raises(StageError, match="several splits"):
        dataset.train_dataset(rows, root, config(), seed=0)


def test_positive_frequencies_from_the_label_files(corpus):
    rows, root = corpus
    labels = np.concatenate([from_files(rows, root, t)[1] for t in "abc"])
    np.testing.assert_allclose(
        dataset.positive_frequencies(rows, root, split="train"), labels.mean(axis=0)
    )


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("missing", "shard file missing"),
        ("shorter", r"expected uint8 \(128, 3, 6, 10\).*found uint8 \(100, 3, 6, 10\)"),
    ],
)
def test_broken_shard_is_named(tmp_path, breakage, message):
    rows = read_manifest(write_corpus(tmp_path))
    shard = tmp_path / "train/trailer_a-1.npy"
    if breakage == "missing":
        shard.unlink()
    else:
        save_npy(shard, trailer_frames(1, 100))
    with pytest.raises(StageError, match=message) as error:
        dataset.train_dataset(rows, tmp_path, config(), seed=0, split="train")
    assert str(shard) in str(error.value)


def test_batches_split_evenly_between_replicas_with_weightless_padding(corpus):
    rows, root = corpus
    ds = dataset.eval_dataset(rows, root, config(augment=AugmentConfig()), "train", replicas=2)
    for (frames, labels, weights), trailer_id in zip(ds.as_numpy_iterator(), "abc", strict=True):
        expected_frames, _ = from_files(rows, root, trailer_id)
        assert frames.shape[0] == 2 and weights.shape == (2, len(expected_frames), 1)
        np.testing.assert_array_equal(frames[0], expected_frames)
        assert not frames[1].any() and not any(labels[genre][1].any() for genre in labels)
        assert weights[0].all() and not weights[1].any()


def weak(rows: list[ShardRow], *trailer_ids: str) -> list[ShardRow]:
    """The rows with ``trailer_ids`` marked as labelled at trailer level."""
    return [
        dataclasses.replace(row, label_level="trailer") if row.trailer_id in trailer_ids else row
        for row in rows
    ]


def test_mil_reads_each_weak_trailer_as_one_padded_bag(corpus):
    """ "b" (40 frames) and "c" (5) are weak: one whole-trailer window each per epoch, positives
    WEAK, padding PAD of weight 0; "a" keeps its segment windows, all in mixed batches."""
    rows, root = corpus
    train = config(window=40, stride=20, weak_labels="mil")
    data = dataset.train_dataset(weak(rows, "b", "c"), root, train, seed=0, split="train")
    found: dict[str, list] = {"a": [], "b": [], "c": []}
    for frames, labels, weights in data:
        stacked = np.concatenate([labels[g].numpy() for g in GENRES], axis=-1)
        for window, label, weight in zip(frames.numpy(), stacked, weights.numpy(), strict=True):
            trailer_id, start = locate(window)
            found[trailer_id].append((start, label, weight[:, 0]))
    assert len(found["a"]) == dataset.windows_per_trailer(300, 40, 20)
    assert all(weight.min() == 1 for _, _, weight in found["a"])
    assert len(found["b"]) == len(found["c"]) == 1
    for trailer_id, frames in (("b", 40), ("c", 5)):
        start, label, weight = found[trailer_id][0]
        truth = from_files(rows, root, trailer_id)[1]
        assert start == 0
        np.testing.assert_array_equal(label[:frames], truth * dataset.WEAK)
        np.testing.assert_array_equal(weight, np.arange(40) < frames)
        assert (label[frames:] == dataset.PAD).all()
    expected = dataset.windows_per_trailer(300, 40, 20) + 2
    assert dataset.window_count(weak(rows, "b", "c"), train, split="train") == expected


def test_mil_reads_a_segment_trailer_shorter_than_the_window_whole_with_its_exact_labels(corpus):
    """Bags need a long window; a segment-labelled trailer shorter than it ("c", 5 frames) is
    one padded window of its exact labels (not WEAK), not dropped, so a catalogue mixing both
    levels (the label-fraction study) keeps its segments. broadcast still drops it."""
    rows, root = corpus
    train = config(window=40, stride=20, weak_labels="mil")
    data = dataset.train_dataset(weak(rows, "b"), root, train, seed=0, split="train")
    found = [
        (window, label, weight[:, 0])
        for frames, labels, weights in data
        for window, label, weight in zip(
            frames.numpy(),
            np.concatenate([labels[g].numpy() for g in GENRES], axis=-1),
            weights.numpy(),
            strict=True,
        )
        if locate(window)[0] == "c"
    ]
    assert len(found) == 1
    _, label, weight = found[0]
    np.testing.assert_array_equal(label[:5], from_files(rows, root, "c")[1])
    np.testing.assert_array_equal(weight, np.arange(40) < 5)
    assert (label[5:] == dataset.PAD).all()
    expected = dataset.windows_per_trailer(300, 40, 20) + 2
    assert dataset.window_count(weak(rows, "b"), train, split="train") == expected
    broadcast = config(window=40, stride=20)
    assert dataset.window_count(weak(rows, "b"), broadcast, split="train") == expected - 1


def test_a_bag_longer_than_the_window_is_refused(corpus):
    rows, root = corpus
    train = config(window=8, weak_labels="mil")
    with pytest.raises(StageError, match="trailer b: 40 frames, more than train.window 8"):
        dataset.train_dataset(weak(rows, "b"), root, train, seed=0, split="train")


def test_broadcast_reads_weak_trailers_like_any_other(corpus):
    rows, root = corpus
    plain = windows(dataset.train_dataset(rows, root, config(), seed=0, split="train"))
    marked = weak(rows, "a", "b", "c")
    same = windows(dataset.train_dataset(marked, root, config(), seed=0, split="train"))
    for (frames, labels), (frames2, labels2) in zip(plain, same, strict=True):
        np.testing.assert_array_equal(frames, frames2)
        np.testing.assert_array_equal(labels, labels2)
