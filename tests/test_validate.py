"""The validate stage: a clean corpus passes; each way shards break in practice fails with a report.

The corpus is written here in the decode stage's shard format (manifest.jsonl, channels_first
uint8 frames, multi-hot labels): validate's input is that format, and corrupting it is the
point. One clean corpus is built per session; each test corrupts one thing in a copy.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow_data_validation as tfdv
from helpers import COMMITTED_SCHEMA, smoke_config

from pipeline import GENRES
from pipeline.core.errors import StageError
from pipeline.core.io import save_npy
from pipeline.core.manifest import KEYS, ShardRow, read_manifest, write_manifest
from pipeline.infra.drift import frame_features
from pipeline.validate.features import label_features
from pipeline.validate.integrity import check_manifest, truncated_trailers
from pipeline.validate.run import run

pytestmark = pytest.mark.xdist_group("validate")
"""Its module fixtures are built once: all its tests run in one xdist worker."""

SIZE, FRAMES, SHARD_FRAMES, FPS = 16, 40, 16, 8.0
TRAILERS = {"train": 8, "val": 4, "test": 4, "unlabelled": 2}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_trailer(rng: np.random.Generator, genre_offset: int) -> tuple[np.ndarray, np.ndarray]:
    """Shots of coloured backgrounds with a moving block, black frames between, genres per shot."""
    frames = np.zeros((FRAMES, 3, SIZE, SIZE), dtype=np.uint8)
    labels = np.zeros((FRAMES, len(GENRES)), dtype=np.uint8)
    start, shot = 0, 0
    while start < FRAMES:
        length = int(rng.integers(5, 9))
        end = min(start + length, FRAMES)
        background = rng.integers(30, 220, size=3)
        block = rng.integers(0, 256, size=3)
        genre = (genre_offset + shot) % len(GENRES)
        for t in range(start, end):
            frames[t] = background[:, None, None]
            x = (t - start) * 2 % (SIZE - 4)
            frames[t, :, 4:8, x : x + 4] = block[:, None, None]
        labels[start:end, genre] = 1
        if rng.random() < 0.3:
            labels[start:end, (genre + 1) % len(GENRES)] = 1
        if end < FRAMES:
            frames[end] = 0  # one black frame between shots, unlabelled like a cut
            labels[end] = 0
            end += 1
        start, shot = end, shot + 1
    return frames, labels


def write_corpus(data: Path, seed: int = 0) -> None:
    """Shards, labels and manifest.jsonl exactly as the decode stage writes them."""
    rng = np.random.default_rng(seed)
    shards = data / "shards"
    rows, number = [], 0
    for split, count in TRAILERS.items():
        for _ in range(count):
            trailer_id = f"{number:03d}"
            frames, labels = make_trailer(rng, number)
            for k, first in enumerate(range(0, FRAMES, SHARD_FRAMES)):
                stem = f"{split}/trailer_{trailer_id}-{k}"
                chunk = frames[first : first + SHARD_FRAMES]
                labels_name = labels_sha256 = None
                if split != "unlabelled":
                    labels_name = f"{stem}.labels.npy"
                    labels_sha256 = save_npy(
                        shards / labels_name, labels[first : first + SHARD_FRAMES]
                    )
                row = ShardRow(
                    shard=f"{stem}.npy",
                    labels=labels_name,
                    trailer_id=trailer_id,
                    split=split,
                    first_frame=first,
                    frames=len(chunk),
                    fps=FPS,
                    channels=3,
                    height=SIZE,
                    width=SIZE,
                    source=f"data/videos/trailer_{trailer_id}.mp4",
                    source_duration_s=FRAMES / FPS,
                    sha256=save_npy(shards / f"{stem}.npy", chunk),
                    labels_sha256=labels_sha256,
                )
                rows.append(row)
            number += 1
    write_manifest(shards / "manifest.jsonl", rows)


class Corpus:
    """A copy of the clean corpus to break, keeping the manifest in step where decode would."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.shards = root / "data" / "shards"

    def rows(self) -> list[ShardRow]:
        return read_manifest(self.shards / "manifest.jsonl")

    def write_rows(self, rows: list[ShardRow]) -> None:
        write_manifest(self.shards / "manifest.jsonl", rows)

    def first(self, split: str) -> ShardRow:
        return next(row for row in self.rows() if row.split == split)

    def load(self, name: str) -> np.ndarray:
        return np.load(self.shards / name)

    def rewrite(self, name: str, array: np.ndarray) -> None:
        """Replace a shard or labels file as a buggy decode would: manifest agrees with it."""
        digest = save_npy(self.shards / name, array)
        rows = []
        for row in self.rows():
            if row.shard == name:
                channels, height, width = (int(size) for size in array.shape[1:])
                row = dataclasses.replace(
                    row,
                    sha256=digest,
                    frames=len(array),
                    channels=channels,
                    height=height,
                    width=width,
                )
            elif row.labels == name:
                row = dataclasses.replace(row, labels_sha256=digest)
            rows.append(row)
        self.write_rows(rows)

    def config(self, schema_file: Path = COMMITTED_SCHEMA):
        return smoke_config(self.root, f"paths.schema_file={schema_file}")

    @property
    def outputs(self) -> Path:
        return self.root / "outputs" / "validate"


@pytest.fixture(scope="session")
def clean_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clean")
    write_corpus(root / "data")
    return root


@pytest.fixture(scope="session")
def clean_run(clean_root: Path, tmp_path_factory) -> tuple[Corpus, Path]:
    """The stage once on the clean corpus, re-inferring the schema into a scratch file."""
    corpus = Corpus(clean_root)
    schema_file = tmp_path_factory.mktemp("schema") / "schema.pbtxt"
    run(corpus.config(schema_file), update_schema=True)
    return corpus, schema_file


@pytest.fixture
def corpus(clean_root: Path, tmp_path: Path) -> Corpus:
    shutil.copytree(clean_root / "data", tmp_path / "data")
    return Corpus(tmp_path)


@pytest.mark.slow
def test_clean_corpus_passes(clean_run):
    outputs = clean_run[0].outputs
    report = json.loads((outputs / "anomalies.json").read_text())
    assert report["passed"] and report["anomalies"] == []
    text = (outputs / "report.md").read_text()
    assert "**PASSED**" in text
    assert "train 24, val 12, test 12, unlabelled 6" in text
    for split, trailers in TRAILERS.items():
        stats = tfdv.load_stats_binary(str(outputs / "statistics" / f"{split}.pb"))
        assert stats.datasets[0].num_examples == trailers * 3
    measured = {(m["check"], m["split"], m["feature"]) for m in report["drift_skew"]}
    assert ("drift", "val", "frame_genre") in measured
    assert ("drift", "test", "frame_brightness") in measured
    assert ("skew", "unlabelled", "height") in measured
    assert ("drift", "unlabelled", "frame_genre") not in measured  # no labels to compare
    shards = [json.loads(line) for line in (outputs / "shards.jsonl").open()]
    assert len(shards) == 54 and all(row["dtype"] == "uint8" for row in shards)


@pytest.mark.slow
def test_update_schema_reproduces_the_committed_schema(clean_run):
    """The committed schema is exactly what --update-schema makes of a clean corpus."""
    assert clean_run[1].read_text() == COMMITTED_SCHEMA.read_text(), (
        f"{COMMITTED_SCHEMA} is out of date: run `trailers validate --update-schema`, review it "
        "and commit it"
    )


def _dtype(c: Corpus) -> None:
    name = c.first("train").shard
    c.rewrite(name, c.load(name).astype(np.float32) / 255)  # a decode that normalised


def _channels(c: Corpus) -> None:
    name = c.first("val").shard
    c.rewrite(name, c.load(name).mean(axis=1, keepdims=True).astype(np.uint8))  # greyscale


def _nan_labels(c: Corpus) -> None:
    name = c.first("test").labels
    labels = c.load(name).astype(np.float32)
    labels[3:5] = np.nan
    c.rewrite(name, labels)


def _label_range(c: Corpus) -> None:
    name = c.first("train").labels
    c.rewrite(name, c.load(name) * 2)  # e.g. class indices written for multi-hot


def _missing(c: Corpus) -> None:
    (c.shards / c.first("val").shard).unlink()


def _truncated(c: Corpus) -> None:
    path = c.shards / c.first("train").shard
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # a killed copy


def _checksum(c: Corpus) -> None:
    path = c.shards / c.first("test").shard
    data = bytearray(path.read_bytes())
    data[-100:] = bytes(255 - b for b in data[-100:])  # bit rot: same size, other bytes
    path.write_bytes(bytes(data))


def _labels_out_of_step(c: Corpus) -> None:
    name = c.first("train").labels
    digest = save_npy(c.shards / name, c.load(name)[:-2])
    c.write_rows(
        [
            dataclasses.replace(row, labels_sha256=digest) if row.labels == name else row
            for row in c.rows()
        ]
    )


def _each(c: Corpus, split: str, key: str, change) -> None:
    for row in c.rows():
        if row.split == split:
            name = getattr(row, key)
            c.rewrite(name, change(c.load(name)))


def _darker(c: Corpus) -> None:
    _each(c, "val", "shard", lambda frames: frames // 3)  # e.g. a wrong colour range


def _genre_mix(c: Corpus) -> None:
    horror = np.zeros(len(GENRES), dtype=np.uint8)
    horror[GENRES.index("horror")] = 1
    _each(c, "val", "labels", lambda labels: np.broadcast_to(horror, labels.shape).copy())


def _smaller(c: Corpus) -> None:
    _each(c, "test", "shard", lambda frames: frames[:, :, ::2, ::2].copy())  # other decode params


CORRUPTIONS = {
    "wrong_dtype": (_dtype, "schema", "train", "dtype", "float32"),
    "wrong_channels": (_channels, "schema", "val", "channels", "small value: 1"),
    "nan_labels": (_nan_labels, "schema", "test", "label_nan_count", "large value"),
    "labels_out_of_range": (_label_range, "schema", "train", "label_max", "high value: 2"),
    "missing_shard": (_missing, "integrity", "val", "shard", "file is missing"),
    "truncated_shard": (_truncated, "integrity", "train", "shard", "truncated"),
    "checksum_mismatch": (_checksum, "integrity", "test", "shard", "sha256"),
    "labels_out_of_step": (_labels_out_of_step, "integrity", "train", "labels", "shape (14, 6)"),
    "brightness_drift": (_darker, "drift", "val", "frame_brightness", " here, "),
    "genre_mix_drift": (_genre_mix, "drift", "val", "frame_genre", "horror: 100% here"),
    "frame_size_skew": (_smaller, "skew", "test", "height", "(mean 8 here, 16 in train)"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", CORRUPTIONS, ids=str)
def test_corruption_fails_with_a_clear_report(corpus: Corpus, case: str):
    corrupt, check, split, feature, found = CORRUPTIONS[case]
    corrupt(corpus)
    with pytest.raises(StageError, match="ERROR anomalies .* see .*report.md"):
        run(corpus.config())
    report = json.loads((corpus.outputs / "anomalies.json").read_text())
    assert not report["passed"]
    matches = [
        a
        for a in report["anomalies"]
        if (a["check"], a["split"], a["feature"]) == (check, split, feature)
        and found in a["found"]
        and a["severity"] == "ERROR"
    ]
    assert matches, report["anomalies"]
    assert {a["split"] for a in report["anomalies"]} == {split}, "only the broken split is flagged"
    if check in ("schema", "integrity"):
        assert matches[0]["shards"], "the report names the broken shard"
    text = (corpus.outputs / "report.md").read_text()
    assert "**FAILED" in text
    row = next(line for line in text.splitlines() if f"| {check} | {split} | {feature} |" in line)
    assert matches[0]["expected"] in row and matches[0]["found"] in row


@pytest.mark.slow
def test_a_trailer_cut_short_is_a_warning_unless_configured_an_error(corpus: Corpus):
    """Rows that say their video file is cut short (``missing_s``, as decode writes them for a
    file whose frames stop early): one WARNING naming the trailer and its shards, the stage
    passes; with ``validate.fail_on_truncated`` the same is an ERROR (the stage stops on any
    ERROR: the corruption table)."""
    cut = corpus.first("val").trailer_id
    corpus.write_rows(
        [
            dataclasses.replace(row, missing_s=1.5) if row.trailer_id == cut else row
            for row in corpus.rows()
        ]
    )
    shards = sorted(row.shard for row in corpus.rows() if row.trailer_id == cut)
    run(corpus.config())
    report = json.loads((corpus.outputs / "anomalies.json").read_text())
    assert report["passed"]
    [warning] = report["anomalies"]
    assert (warning["severity"], warning["split"], warning["feature"]) == (
        "WARNING",
        "val",
        "missing_s",
    )
    assert f"trailer {cut}" in warning["found"] and "1.50 s missing" in warning["found"]
    assert sorted(warning["shards"]) == shards
    assert "**PASSED** (1 warnings)" in (corpus.outputs / "report.md").read_text()
    metrics = json.loads(corpus.config().paths.metrics("validate").read_text())
    assert (metrics["errors"], metrics["warnings"]) == (0, 1)

    [gated] = truncated_trailers(corpus.rows(), gate=True)  # validate.fail_on_truncated
    assert gated.severity == "ERROR" and gated.found == warning["found"]


@pytest.mark.parametrize("chunk_frames", [1, 3, 64])
def test_frame_features_do_not_depend_on_chunking(chunk_frames):
    frames, _ = make_trailer(np.random.default_rng(1), 0)
    chunks = (frames[i : i + chunk_frames] for i in range(0, len(frames), chunk_frames))
    example = frame_features(chunks, black_level=16.0)
    values = frames.astype(np.float64)
    assert example["pixel_mean_g"][0] == pytest.approx(values[:, 1].mean())
    assert example["pixel_std_b"][0] == pytest.approx(values[:, 2].std())
    assert example["pixel_max_r"][0] == values[:, 0].max()
    assert example["motion"][0] == pytest.approx(np.abs(np.diff(values, axis=0)).mean())
    motion = np.abs(np.diff(values, axis=0)).mean(axis=(1, 2, 3))
    assert example["frame_motion"] == pytest.approx(motion.tolist())
    brightness = values.mean(axis=(1, 2, 3))
    assert example["frame_brightness"] == pytest.approx(brightness.tolist())
    assert example["black_fraction"][0] == pytest.approx((brightness < 16).mean())


def test_label_features_count_genres_and_nans():
    labels = np.zeros((4, len(GENRES)), dtype=np.float32)
    labels[:2, GENRES.index("action")] = 1
    labels[1, GENRES.index("other")] = 1
    labels[3, 0] = np.nan
    example = label_features(labels)
    assert example["label_fraction_action"] == [0.5]
    assert example["labels_per_frame"] == [0.75]
    assert example["label_nan_count"] == [1]
    assert example["labels_dtype"] == ["float32"]
    assert sorted(example["frame_genre"]) == ["action", "action", "other"]


def test_manifest_problems_are_named_by_line(tmp_path):
    good = {"shard": "train/trailer_001-0.npy", "labels": None, "labels_sha256": None}
    good |= {"trailer_id": "001", "split": "train", "first_frame": 0, "frames": 8, "fps": 8.0}
    good |= {"channels": 3, "height": 4, "width": 4, "source": "v.mp4", "sha256": "0"}
    good |= {"source_duration_s": 1.0}
    lines = [
        json.dumps(good),
        "{not json",
        json.dumps({**good, "shard": "val/trailer_001-0.npy", "split": "val"}),
        json.dumps({k: v for k, v in good.items() if k != "sha256"}),
        json.dumps(good),
        json.dumps({**good, "shard": "x.npy", "split": "holdout"}),
        json.dumps({**good, "shard": "y.npy", "frames": "8"}),
    ]
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    rows, anomalies = check_manifest(manifest)
    assert [r.shard for r in rows] == ["train/trailer_001-0.npy", "val/trailer_001-0.npy"]
    found = [(a.feature, a.found) for a in anomalies]
    assert found[0][1].startswith("line 2: not JSON")
    assert found[1] == ("manifest", "line 4: no sha256")
    assert found[2][0] == "shard" and "first on line 1" in found[2][1]
    assert found[3] == ("split", "line 6: 'holdout'")
    assert found[4] == ("manifest", "line 7: frames: expected int, got '8'")
    assert found[5] == ("split", "trailer 001 in train, val")
    assert len(KEYS) == len(good)
    with pytest.raises(StageError, match="manifest not found"):
        check_manifest(tmp_path / "missing.jsonl")


def test_missing_schema_or_unknown_feature_stops_before_any_work(corpus):
    with pytest.raises(StageError, match=r"no schema; create it with .*--update-schema"):
        run(corpus.config(corpus.root / "none.pbtxt"))
    config = corpus.config()
    bad = config.model_copy(
        update={"validate_": config.validate_.model_copy(update={"drift_features": ("glow",)})}
    )
    with pytest.raises(StageError, match="validate.drift_features: unknown feature 'glow'"):
        run(bad)
    assert not corpus.outputs.exists()
