"""Frames per second the train input pipeline delivers, against raw reads and the train step.

On the decoded demo corpus (``data/shards``, the train split) with the ``train:`` section of
the config (default: windows of 16 frames every 8, batches of 8, 4 parallel reads), one run
measures, in interleaved rounds:

* ``pipeline``: :func:`pipeline.train.dataset.train_dataset` with augmentation off (the same
  work as the raw reads), one epoch per pass, batches pulled by a Python loop (frames and the
  per-genre label dict); ``+ augment``: the same with the config's ``train.augment``;
* ``raw reads``: the same number of windows of one epoch's plan, read by a plain Python loop
  (``np.load(mmap_mode="r")`` of each shard and labels file, slicing, ``np.ascontiguousarray``);
* ``generators``: the rejected design, ``interleave`` over ``parallel_reads``
  ``Dataset.from_generator`` sources that each read a share of the same plan;
* ``train step``: frames one ``train_on_batch`` of the classifier (``model:`` section, Adam,
  binary cross-entropy per genre) consumes per second, on batches of ``batch_size x window``.

Each round runs every reader ``--epochs`` epochs once, then one train step; the table prints
the best of the rounds and the median of the ratios taken within a round (the machine may be
shared: load shifts within seconds). Usage:
``python benchmarks/input.py [--config configs/pipeline.yaml] [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from pipeline.infra.noise import configure  # noqa: E402

configure(-1)  # as the stages: library chatter off before the libraries load (TensorFlow's too)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from pipeline import GENRES  # noqa: E402
from pipeline.core.config import PROJECT_ROOT, AugmentConfig, TrainConfig, load_config  # noqa: E402
from pipeline.core.manifest import read_manifest  # noqa: E402
from pipeline.model import build_classifier  # noqa: E402
from pipeline.train import dataset  # noqa: E402


def raw_reads(corpus: dataset.Corpus, plan: np.ndarray) -> int:
    """Read every window of ``plan`` with np.load + slicing; returns the frames read."""
    frames = 0
    for trailer_index, start, length, _ in plan:
        trailer = corpus.trailers[trailer_index]
        for shard, low, high in trailer.pieces(int(start), int(length)):
            pixels = np.load(trailer.shards[shard], mmap_mode="r", allow_pickle=False)
            labels = np.load(trailer.labels[shard], mmap_mode="r", allow_pickle=False)
            np.ascontiguousarray(pixels[low:high])
            np.ascontiguousarray(labels[low:high])
            frames += high - low
    return frames


def generator_dataset(corpus: dataset.Corpus, plan: np.ndarray, train: TrainConfig):
    """The alternative design: ``parallel_reads`` interleaved ``from_generator`` sources."""
    spec = (
        tf.TensorSpec((train.window, *corpus.frame_shape), tf.uint8),
        tf.TensorSpec((train.window, len(GENRES)), tf.float32),
    )

    def share(part: int):
        for entry in plan[int(part) :: train.parallel_reads]:
            frames, labels, _ = corpus.read(entry[None])  # per-frame weights: all 1 here
            yield frames[0], labels[0]

    parts = tf.data.Dataset.range(train.parallel_reads)
    windows = parts.interleave(
        lambda part: tf.data.Dataset.from_generator(share, output_signature=spec, args=(part,)),
        cycle_length=train.parallel_reads,
        num_parallel_calls=train.parallel_reads,
        deterministic=True,
    )
    return windows.batch(train.batch_size).map(dataset.genre_heads).prefetch(tf.data.AUTOTUNE)


def frames_of(ds: tf.data.Dataset) -> int:
    return sum(int(frames.shape[0] * frames.shape[1]) for frames, _ in ds)


def timed(read: Callable[[], int], epochs: int) -> float:
    """Frames per second of ``epochs`` calls of ``read``."""
    start, frames = time.perf_counter(), 0
    for _ in range(epochs):
        frames += read()
    return frames / (time.perf_counter() - start)


def train_step(config, frame_shape, train: TrainConfig) -> Callable[[], float]:
    """A warmed-up classifier; the returned call times one train step in frames per second."""
    keras.utils.set_random_seed(0)
    model = build_classifier(config.model, frame_shape)
    model.compile(
        optimizer=keras.optimizers.Adam(train.learning_rate),
        loss={genre: "binary_crossentropy" for genre in GENRES},
    )
    rng = np.random.default_rng(0)
    batch = (train.batch_size, train.window)
    frames = rng.integers(0, 256, (*batch, *frame_shape), dtype=np.uint8)
    labels = {g: rng.integers(0, 2, (*batch, 1)).astype("float32") for g in GENRES}
    for _ in range(2):
        model.train_on_batch(frames, labels)

    def step() -> float:
        start = time.perf_counter()
        model.train_on_batch(frames, labels)
        return frames.shape[0] * frames.shape[1] / (time.perf_counter() - start)

    return step


def summary(name: str, values: list[float], reference: list[float] | None = None) -> str:
    line = f"{name:>12}: {max(values):>9,.0f} frames/s (best of {len(values)})"
    if reference is not None:
        ratios = [a / b for a, b in zip(values, reference, strict=True)]
        line += f"  {max(values) / max(reference):6.2f}x best, {statistics.median(ratios):.2f}x"
        line += f" median per round ({min(ratios):.2f}-{max(ratios):.2f})"
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(PROJECT_ROOT / "configs" / "pipeline.yaml"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=10, help="epochs per reader per round")
    args = parser.parse_args()

    config = load_config(args.config)
    shards, train = PROJECT_ROOT / config.paths.shards, config.train
    if not (shards / "manifest.jsonl").is_file():
        sys.exit(f"no decoded corpus at {shards}: run `make decode` first")
    rows = [row for row in read_manifest(shards / "manifest.jsonl") if row.split == "train"]
    corpus = dataset.Corpus(rows, Path(shards), "train")
    plan = dataset.epoch_plan(corpus.lengths, train, key=0)
    plain = train.model_copy(update={"augment": AugmentConfig(horizontal_flip=False)})
    pipeline = dataset.train_dataset(rows, shards, plain, seed=0)
    flipping = dataset.train_dataset(rows, shards, train, seed=0)
    generators = generator_dataset(corpus, plan, plain)
    readers = {
        "pipeline": lambda: frames_of(pipeline),
        "+ augment": lambda: frames_of(flipping),
        "raw reads": lambda: raw_reads(corpus, plan),
        "generators": lambda: frames_of(generators),
    }
    step = train_step(config, corpus.frame_shape, train)
    print(
        f"TF {tf.__version__}, {os.cpu_count()} CPUs, load avg {os.getloadavg()[0]:.1f}; "
        f"{len(corpus.trailers)} train trailers, {len(plan)} windows of {train.window} frames "
        f"x {corpus.frame_shape} per epoch, batch {train.batch_size}, "
        f"parallel_reads {train.parallel_reads}"
    )
    for read in readers.values():
        read()  # warm-up: tracing, page cache
    fps: dict[str, list[float]] = {name: [] for name in [*readers, "train step"]}
    for _ in range(args.rounds):
        for name, read in readers.items():
            fps[name].append(timed(read, args.epochs))
        fps["train step"].append(step())
    print(summary("raw reads", fps["raw reads"]))
    print(summary("pipeline", fps["pipeline"], fps["raw reads"]), "vs raw reads, target >= 0.5x")
    print(summary("+ augment", fps["+ augment"], fps["raw reads"]), "vs raw reads")
    print(summary("generators", fps["generators"], fps["raw reads"]), "vs raw reads")
    print(summary("train step", fps["train step"]))
    print(summary("pipeline", fps["pipeline"], fps["train step"]), "vs train step, target >= 10x")
    print(f"load avg at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
