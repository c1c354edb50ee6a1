"""Classifier train-step time against the same network built from ``keras.layers.ConvLSTM2D``.

Three models of one architecture (the ``model:`` section of the config: by default two 16-filter
trunk layers and six 8-filter branches), the same weights count, trained side by side in one
run on batches of uint8 frames (default 4 x 16 frames of 3 x 64 x 64):

* ``ours``: :func:`pipeline.model.build_classifier` fed channels_first frames;
* ``keras channels_first``: ``ConvLSTM2D(data_format="channels_first")`` fed the same frames;
* ``keras channels_last``: ``ConvLSTM2D(data_format="channels_last")`` fed frames transposed
  beforehand (outside the timing): Keras' fast case, the reference.

Each model runs ``--warmup`` untimed steps (tracing, allocation); then, for ``--rounds``
rounds, each model takes one timed ``train_on_batch`` step in turn. Load from other processes
shifts within seconds on a shared machine, so the ratios are taken within a round (steps
seconds apart) and their median is printed, with the median seconds per step of each model.
Usage: ``python benchmarks/model.py [--config configs/pipeline.yaml] [--rounds 15]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from pipeline.infra.noise import configure  # noqa: E402

configure(-1)  # as the stages: library chatter off before the libraries load (TensorFlow's too)
# oneDNN: TensorFlow turns it on only on CPUs with AVX-512; without it there is no NCHW
# convolution on CPU at all, and the Keras channels_first reference cannot run.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from pipeline import GENRES  # noqa: E402
from pipeline.core.config import PROJECT_ROOT, ModelConfig, load_config  # noqa: E402
from pipeline.model import build_classifier, build_network  # noqa: E402


def keras_reference(model_config: ModelConfig, frames_shape, data_format: str) -> keras.Model:
    """The classifier's architecture with ``keras.layers.ConvLSTM2D`` in ``data_format``."""
    channels, rows, cols = frames_shape
    frame = (channels, rows, cols) if data_format == "channels_first" else (rows, cols, channels)
    frames = keras.Input((None, *frame), dtype="uint8", name="frames")
    x = keras.layers.Rescaling(1 / 255)(frames)

    def block(filters: int, name: str) -> keras.layers.Layer:
        return keras.layers.ConvLSTM2D(
            filters,
            model_config.kernel_size,
            padding="same",
            data_format=data_format,
            return_sequences=True,
            name=name,
        )

    return keras.Model(frames, build_network(x, model_config, block, data_format))


def train_step_seconds(model: keras.Model, frames, labels) -> float:
    start = time.perf_counter()
    model.train_on_batch(frames, labels)
    return time.perf_counter() - start


def median_ratio(numerators: list[float], denominators: list[float]) -> str:
    ratios = [a / b for a, b in zip(numerators, denominators, strict=True)]
    return f"{statistics.median(ratios):.2f}x (rounds: {min(ratios):.2f}-{max(ratios):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(PROJECT_ROOT / "configs" / "pipeline.yaml"))
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=64, help="rows and cols of a frame")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=15, help="timed steps per model")
    args = parser.parse_args()

    model_config = load_config(args.config).model
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    frames_shape = (3, args.size, args.size)
    first = rng.integers(0, 256, (args.batch, args.frames, *frames_shape), dtype=np.uint8)
    last = np.ascontiguousarray(first.transpose(0, 1, 3, 4, 2))
    labels = {
        genre: rng.integers(0, 2, (args.batch, args.frames, 1)).astype("float32")
        for genre in GENRES
    }
    runs = {
        "ours (channels_first data)": (build_classifier(model_config, frames_shape), first),
        "keras channels_first": (
            keras_reference(model_config, frames_shape, "channels_first"),
            first,
        ),
        "keras channels_last": (keras_reference(model_config, frames_shape, "channels_last"), last),
    }
    print(
        f"TF {tf.__version__}, Keras {keras.__version__}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}, "
        f"GPUs: {len(tf.config.list_physical_devices('GPU'))}; cell {model_config.cell}, "
        f"trunk {list(model_config.trunk_filters)}, branches {model_config.branch_filters}; "
        f"batch {args.batch} x {args.frames} frames x {frames_shape}"
    )
    for name, (model, frames) in runs.items():
        model.compile(optimizer="adam", loss="binary_crossentropy")
        for _ in range(args.warmup):
            model.train_on_batch(frames, labels)
        print(f"  {name}: {model.count_params():,} params, warmed up")
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, (model, frames) in runs.items():
            seconds[name].append(train_step_seconds(model, frames, labels))
    for name, values in seconds.items():
        print(f"{name:>28}: {statistics.median(values):.3f} s/step (median of {len(values)})")
    ours, keras_first, keras_last = seconds.values()
    print(f"ours / keras channels_last:  {median_ratio(ours, keras_last)}, target <= 1.00x")
    print(f"keras channels_first / ours: {median_ratio(keras_first, ours)}, target >= 2.5x")
    print(f"keras channels_first / keras channels_last: {median_ratio(keras_first, keras_last)}")


if __name__ == "__main__":
    main()
