"""The demo corpus: deterministic, labels that fit the videos, every genre in every split, and
look-alike genres that only motion separates."""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import time
from collections import defaultdict
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from av.video.reformatter import VideoReformatter
from helpers import DEMO_CONFIG, SMOKE_CONFIG, WEAK_CONFIG, smoke_config

from pipeline import GENRES, SPLITS
from pipeline.core.annotations import labelled_trailers
from pipeline.core.config import PathsConfig, load_config
from pipeline.core.errors import StageError
from pipeline.synth.grammar import GRAMMAR, scene
from pipeline.synth.run import (
    annotation_rows,
    assign_splits,
    deal_genres,
    frame_rate,
    missing_genres,
    plan_corpus,
    render,
    run,
    seconds_text,
)

pytestmark = pytest.mark.xdist_group("synth")
"""Its module fixtures are built once: all its tests run in one xdist worker."""

SAMPLE_FPS, SAMPLE_SIZE = 8.0, 64
"""The view the grammar guarantees its motions at: the decode defaults (pipeline/core/config.py;
the demo config decodes at 32x32 to fit its training budget, see docs/experiments.md)."""


def decode_all(path: Path) -> tuple[np.ndarray, list[av.VideoFrame], Fraction]:
    """Every frame with PyAV (not decord): start times (s), frames, and the stream's rate."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        frames = list(container.decode(stream))
        starts = np.array([float(frame.pts * frame.time_base) for frame in frames])
        return starts, frames, Fraction(stream.average_rate)


def rgb(frames: list[av.VideoFrame], size: int | None = None) -> np.ndarray:
    """``(n, h, w, 3)`` uint8, optionally resized to ``size x size`` (one scaler for all)."""
    scaler = VideoReformatter()
    resize = {"width": size, "height": size} if size else {}
    return np.stack([scaler.reformat(f, format="rgb24", **resize).to_ndarray() for f in frames])


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_grammar_covers_every_genre_with_two_look_alike_pairs():
    assert tuple(GRAMMAR) == GENRES
    looks = defaultdict(set)
    for genre, style in GRAMMAR.items():
        looks[style.look_name].add(genre)
    assert {"comedy", "musical"} in looks.values()
    assert {"horror", "suspense"} in looks.values()
    assert GRAMMAR["horror"].look is GRAMMAR["suspense"].look


@pytest.mark.parametrize("genre", GENRES)
def test_every_frame_of_a_shot_has_the_same_colours(genre):
    """Motion is a cyclic shift of one picture: each frame holds exactly the same pixels."""
    frames = scene(genre, np.random.default_rng(7), np.arange(24) / 24, 54, 96)
    pixels = np.sort(frames.reshape(len(frames), -1, 3).view([("rgb", "u1", 3)])[..., 0], axis=1)
    assert (pixels == pixels[0]).all()
    assert np.abs(np.diff(frames.astype(int), axis=0)).sum() > 0, "the shot does not move"


def test_frame_rates_are_exact():
    assert frame_rate(29.97) == Fraction(30000, 1001)
    assert frame_rate(23.976) == Fraction(24000, 1001)
    assert frame_rate(25.0) == 25
    assert frame_rate(12.5) == Fraction(25, 2)


def test_times_round_down_to_microseconds():
    assert seconds_text(Fraction(1001, 30000) * 61) == "2.035366"
    assert seconds_text(Fraction(2, 3)) == "0.666666"
    assert seconds_text(Fraction(10)) == "10.000000"


def test_split_sizes_and_a_split_left_empty():
    rng = np.random.default_rng(0)
    splits = assign_splits([f"{i:03d}" for i in range(24)], (0.6, 0.2, 0.2), rng)
    assert sorted(splits.values()).count("train") == 14
    assert sorted(splits.values()).count("val") == 5
    with pytest.raises(StageError, match=r"synth.split_fractions .*leave none for train"):
        assign_splits(["a", "b", "c", "d"], (0.1, 0.45, 0.45), rng)


@pytest.mark.parametrize("blocks", [3, 4, 6, 13])
def test_genre_deal_covers_all_six_and_never_repeats_in_a_block(blocks):
    dealt = deal_genres(blocks, 0.25, np.random.default_rng(blocks))
    assert len(dealt) == blocks
    assert all(len(set(genres)) == len(genres) for genres in dealt)
    assert {genre for genres in dealt for genre in genres} == set(GENRES)


def test_genres_per_trailer_like_a_real_catalogue():
    """configs/weak.yaml's corpus: 1 to 3 distinct genres per trailer, each of its genres in a
    block of its own or beside another, every count drawn, every genre in every split."""
    config = load_config(WEAK_CONFIG)
    plans = plan_corpus(config.synth, config.seed)
    counts = [len({g for block in plan.blocks for g in block.genres}) for plan in plans]
    assert set(counts) == {1, 2, 3}
    assert missing_genres(plans) == {split: [] for split in SPLITS}
    default = load_config(WEAK_CONFIG, ["synth.genres_per_trailer=null"])
    dealt = [len({g for b in p.blocks for g in b.genres}) for p in plan_corpus(default.synth, 0)]
    assert max(dealt) > 3  # the demo deal: up to all six in a trailer


@pytest.mark.parametrize("path", [DEMO_CONFIG, SMOKE_CONFIG], ids=["demo", "smoke"])
def test_every_genre_in_every_split(path):
    config = load_config(path)
    plans = plan_corpus(config.synth, config.seed)
    assert missing_genres(plans) == {split: [] for split in SPLITS}
    split_of = {plan.trailer_id: plan.split for plan in plans}
    written = {(split_of[row[0]], row[3]) for row in annotation_rows(plans)}
    assert written == {(split, genre) for split in SPLITS for genre in GENRES}


def test_annotations_and_splits_fit_the_videos(smoke_corpus):
    """Read back with PyAV: format, rate, frame count and duration; every segment inside."""
    paths, settings = smoke_corpus.paths, smoke_corpus.synth
    trailers, problems = labelled_trailers(paths.annotations, paths.splits)
    assert problems == []
    assert set(read_csv(paths.splits)[0]) == {"trailer_id", "split"}
    assert {labels.split for labels in trailers.values()} == set(SPLITS)
    assert sorted(paths.videos.glob("*.mp4")) == [
        paths.video(trailer_id) for trailer_id in sorted(trailers)
    ]
    rates = {frame_rate(fps) for fps in settings.fps_choices}
    for trailer_id, labels in trailers.items():
        starts, frames, rate = decode_all(paths.video(trailer_id))
        frames = rgb(frames)
        assert rate in rates
        assert np.allclose(np.diff(starts), float(1 / rate))
        duration = len(starts) / rate
        assert float(duration) == pytest.approx(starts[-1] + float(1 / rate))
        assert float(duration) == pytest.approx(np.mean(settings.duration_s), abs=float(1 / rate))
        height, width = frames.shape[1:3]
        assert height % 2 == 0 and width % 2 == 0
        assert settings.width[0] - 1 <= width <= settings.width[1] + 1
        for segment in labels.segments:
            assert 0 <= segment.start_s < segment.end_s <= duration


def test_videos_show_the_planned_frames(smoke_corpus):
    """Each decoded frame is the frame the plan drew, so the labels describe the pictures."""
    plans = plan_corpus(smoke_corpus.synth, smoke_corpus.seed)
    rows = read_csv(smoke_corpus.paths.annotations)
    assert [tuple(row.values()) for row in rows] == annotation_rows(plans)
    for plan in plans:
        decoded = rgb(decode_all(smoke_corpus.paths.video(plan.trailer_id))[1])
        planned = np.concatenate(list(render(plan)))
        assert decoded.shape == planned.shape
        error = np.abs(decoded.astype(np.int16) - planned).mean(axis=(1, 2, 3))
        assert error.max() < 12, f"trailer {plan.trailer_id}: frame {error.argmax()} differs"


def synth_cli(root: Path, *overrides: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "pipeline.cli", "synth", "--config", str(SMOKE_CONFIG)]
    for override in overrides:
        command += ["--set", override]
    return subprocess.Popen(command, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def finishes(process: subprocess.Popen) -> None:
    _, stderr = process.communicate()
    assert process.returncode == 0, stderr.decode()[-2000:]


def test_same_seed_same_corpus_other_seed_other_corpus(smoke_corpus, tmp_path):
    """A second run, in another process through the CLI, gives the same bytes and frames."""
    finishes(synth_cli(tmp_path))
    first, again = smoke_corpus.paths.data, tmp_path / "data"
    for name in ("annotations.csv", "splits.csv"):
        assert (again / name).read_bytes() == (first / name).read_bytes()
    for video in sorted(first.glob("videos/*.mp4")):
        frames = rgb(decode_all(again / "videos" / video.name)[1])
        assert np.array_equal(rgb(decode_all(video)[1]), frames)

    other = smoke_config(tmp_path / "other", "seed=1")
    plans = plan_corpus(other.synth, other.seed)
    assert annotation_rows(plans) != [
        tuple(row.values()) for row in read_csv(first / "annotations.csv")
    ]


@pytest.mark.slow
def test_killed_run_reruns_cleanly(smoke_corpus, tmp_path):
    """Kill synth mid-run: no half-written file is left, and a rerun gives the same corpus."""
    data = tmp_path / "data"
    (data / "videos").mkdir(parents=True)
    (data / "videos" / "trailer_999.mp4").write_bytes(b"from an earlier, larger corpus")
    slow = ("synth.n_trailers=30", "synth.duration_s=[4, 4]")
    process = synth_cli(tmp_path, *slow)
    while len(list((data / "videos").glob("trailer_0*.mp4"))) < 3 and process.poll() is None:
        time.sleep(0.05)
    process.kill()
    process.communicate()
    assert process.returncode == -signal.SIGKILL, "synth finished before it was killed"
    assert not (data / "annotations.csv").exists()
    for video in (data / "videos").glob("trailer_0*.mp4"):
        assert len(decode_all(video)[0]) > 0, f"{video.name} is incomplete"

    finishes(synth_cli(tmp_path))
    assert not (data / "videos" / "trailer_999.mp4").exists()
    assert sorted(path.name for path in data.rglob("*")) == sorted(
        path.name for path in smoke_corpus.paths.data.rglob("*")
    )
    for name in ("annotations.csv", "splits.csv"):
        assert (data / name).read_bytes() == (smoke_corpus.paths.data / name).read_bytes()


# -- motion-only genres: per-frame features at chance, motion features far above ---------------


def samples(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Frames at 8 fps, 64x64, by the decode stage's rule (the frame on screen at k / fps)."""
    starts, frames, _ = decode_all(path)
    times = np.arange(0, starts[-1] + 1e-9, 1 / SAMPLE_FPS)
    shown = np.searchsorted(starts, times + 1e-6, side="right") - 1
    return times, rgb([frames[i] for i in shown], SAMPLE_SIZE)


def colour_histogram(frame: np.ndarray) -> np.ndarray:
    """8 bins per RGB channel, as fractions of the frame."""
    bins = [np.bincount(frame[..., c].ravel() // 32, minlength=8) for c in range(3)]
    return np.concatenate(bins) / frame[..., 0].size


def global_shift(previous: np.ndarray, current: np.ndarray) -> np.ndarray:
    """``(|dy|, |dx|)``: how far the whole picture moved, in pixels (phase correlation)."""
    spectrum = np.fft.fft2(current.mean(-1)) * np.conj(np.fft.fft2(previous.mean(-1)))
    correlation = np.fft.ifft2(spectrum / (np.abs(spectrum) + 1e-9)).real
    peak = np.array(np.unravel_index(correlation.argmax(), correlation.shape))
    size = np.array(correlation.shape)
    return np.abs((peak + size // 2) % size - size // 2).astype(float)


def corpus_features(paths: PathsConfig) -> list[tuple[str, str, np.ndarray, np.ndarray | None]]:
    """Per 8 fps sample with exactly one genre: trailer, genre, colour histogram, and the
    global shift since the previous sample when that one carries the same genre."""
    segments = defaultdict(list)
    for row in read_csv(paths.annotations):
        segments[row["trailer_id"]].append(
            (float(row["start_s"]), float(row["end_s"]), row["genre"])
        )
    features = []
    for trailer_id, rows in sorted(segments.items()):
        times, frames = samples(paths.video(trailer_id))
        on = [{g for start, end, g in rows if start <= t < end} for t in times]
        for k in range(len(times)):
            if len(on[k]) == 1:
                shift = global_shift(frames[k - 1], frames[k]) if k and on[k - 1] == on[k] else None
                features.append((trailer_id, *on[k], colour_histogram(frames[k]), shift))
    return features


def nearest_centroid(train_x, train_y, test_x):
    classes = sorted(set(train_y))
    centroids = np.stack([train_x[train_y == c].mean(0) for c in classes])
    distances = ((test_x[:, None] - centroids[None]) ** 2).sum(-1)
    return np.array(classes)[distances.argmin(1)]


def nearest_neighbours(train_x, train_y, test_x, k=5):
    distances = ((test_x[:, None] - train_x[None]) ** 2).sum(-1)
    votes = train_y[np.argsort(distances, axis=1, kind="stable")[:, :k]]
    return np.array([max(sorted(set(row)), key=list(row).count) for row in votes])


def held_out_accuracy(features, pair, column, classifier, folds=4) -> float:
    """Balanced accuracy of ``classifier`` on ``pair``, cross-validated by trailer."""
    rows = [f for f in features if f[1] in pair and f[column] is not None]
    trailers = sorted({f[0] for f in rows})
    fold = {trailer: i % folds for i, trailer in enumerate(trailers)}
    x = np.stack([f[column] for f in rows])
    y = np.array([f[1] for f in rows])
    group = np.array([fold[f[0]] for f in rows])
    predicted = np.empty_like(y)
    for i in range(folds):
        test = group == i
        predicted[test] = classifier(x[~test], y[~test], x[test])
    return float(np.mean([np.mean(predicted[y == genre] == genre) for genre in pair]))


@pytest.fixture(scope="module")
def many_shots(tmp_path_factory) -> list:
    """The demo grammar with short shots and no split screens: hundreds of independent shots,
    so that accuracies measure the genres, not the luck of a few shots."""
    config = smoke_config(
        tmp_path_factory.mktemp("many_shots"),
        "synth.n_trailers=96",
        "synth.duration_s=[6, 6]",
        "synth.width=[64, 96]",
        "synth.block_s=[0.8, 1.6]",
        "synth.shot_s=[0.4, 0.6]",
        "synth.second_genre_prob=0.0",
    )
    run(config)
    return corpus_features(config.paths)


HISTOGRAM, SHIFT = 2, 3


@pytest.mark.slow
@pytest.mark.parametrize("pair", [("comedy", "musical"), ("horror", "suspense")])
def test_motion_only_genres_need_time(many_shots, pair):
    """Single frames of a look-alike pair: a per-frame classifier is at chance (0.5). The
    global motion between two consecutive 8 fps samples separates them."""
    per_frame = {
        classifier.__name__: held_out_accuracy(many_shots, pair, HISTOGRAM, classifier)
        for classifier in (nearest_centroid, nearest_neighbours)
    }
    motion = held_out_accuracy(many_shots, pair, SHIFT, nearest_neighbours)
    print(
        f"{pair}: colours { ({k: round(v, 2) for k, v in per_frame.items()}) }, motion {motion:.2f}"
    )
    assert all(abs(accuracy - 0.5) < 0.15 for accuracy in per_frame.values()), per_frame
    assert motion > 0.85, f"motion: {motion:.2f}"


@pytest.mark.slow
@pytest.mark.parametrize(
    "pair", [("horror", "comedy"), ("action", "other"), ("suspense", "musical")]
)
def test_other_genres_differ_frame_by_frame(many_shots, pair):
    """The control: the same per-frame classifier tells genres of different looks apart."""
    accuracy = held_out_accuracy(many_shots, pair, HISTOGRAM, nearest_centroid)
    print(f"{pair}: colours {accuracy:.2f}")
    assert accuracy > 0.95
