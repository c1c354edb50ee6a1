"""The one configuration schema of the product, validated on load.

A config is a YAML file (``configs/pipeline.yaml`` for the demo, ``configs/smoke.yaml`` for tests)
with one section per stage. The same files are DVC's params. Loading rejects, before any work
starts, an unknown key, a value of the wrong type and a value out of range, with one line that
names the file and the dotted key.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pipeline import GENRES, SPLITS

__all__ = ["GENRES", "SPLITS", "Config", "ConfigError", "PathsConfig", "load_config"]

PROJECT_ROOT = Path(__file__).resolve().parents[2]


class ConfigError(ValueError):
    """A config file or override that does not fit the schema; the message is one line."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _positive_range(values: tuple[float, float]) -> tuple[float, float]:
    low, high = values
    if not 0 < low <= high:
        raise ValueError(f"expected [min, max] with 0 < min <= max, got [{low}, {high}]")
    return values


def _positive_items(values: tuple[float, ...]) -> tuple[float, ...]:
    if not values or any(v <= 0 for v in values):
        raise ValueError(f"expected a non-empty list of positive numbers, got {list(values)}")
    return values


class PathsConfig(_Section):
    """Every path a stage reads or writes, derived here and nowhere else (``dvc.yaml`` takes the
    same folders from this section through its ``vars``). Relative paths are taken from the
    current directory.

    ``data_dir`` holds the corpus and what is decoded from it, ``outputs_dir`` one folder per
    stage (``stage_outputs``), ``metrics_dir`` one small git-tracked JSON of summary numbers per
    stage (``metrics``), ``models_dir`` the trained models.
    """

    data_dir: str = Field(
        "data", description="The corpus (videos, annotations, splits) and its decoded shards."
    )
    outputs_dir: str = Field("outputs", description="One folder of outputs per stage.")
    metrics_dir: str = Field(
        "metrics", description="One small JSON of summary numbers per stage, tracked in git."
    )
    models_dir: str = Field("models", description="The trained models, one folder each.")
    schema_file: str = Field(
        "configs/schema.pbtxt",
        description="The data contract validate checks the shards against (TFDV schema).",
    )

    @property
    def data(self) -> Path:
        return Path(self.data_dir)

    @property
    def videos(self) -> Path:
        return self.data / "videos"

    def video(self, trailer_id: str) -> Path:
        """The demo corpus's video of one trailer (synth writes it, decode reads it)."""
        return self.videos / f"trailer_{trailer_id}.mp4"

    @property
    def annotations(self) -> Path:
        return self.data / "annotations.csv"

    @property
    def splits(self) -> Path:
        return self.data / "splits.csv"

    @property
    def synth_receipt(self) -> Path:
        """The size and SHA-256 of every video ``trailers synth`` wrote: how decode knows the
        demo's videos."""
        return self.data / "synth_receipt.json"

    @property
    def shards(self) -> Path:
        return self.data / "shards"

    @property
    def manifest(self) -> Path:
        return self.shards / "manifest.jsonl"

    @property
    def decode_report(self) -> Path:
        """Decode's details: every failure with its reason, per-trailer figures, timings."""
        return self.data / "decode_report.json"

    @property
    def outputs(self) -> Path:
        return Path(self.outputs_dir)

    def stage_outputs(self, stage: str) -> Path:
        """The folder of a stage's outputs, e.g. ``outputs/validate``."""
        return self.outputs / stage

    def metrics(self, stage: str) -> Path:
        """A stage's summary numbers for ``dvc metrics show``, e.g. ``metrics/decode.json``."""
        return Path(self.metrics_dir) / f"{stage}.json"

    @property
    def validate_report(self) -> Path:
        """Validate's verdict and every anomaly, in words."""
        return self.stage_outputs("validate") / "report.md"

    @property
    def anomalies(self) -> Path:
        """Validate's anomalies and drift/skew measurements, as JSON."""
        return self.stage_outputs("validate") / "anomalies.json"

    @property
    def shard_features(self) -> Path:
        """Validate's scalar features of each shard, one JSON line per shard."""
        return self.stage_outputs("validate") / "shards.jsonl"

    def statistics(self, split: str) -> Path:
        """TFDV's statistics of one split (binary protobuf)."""
        return self.stage_outputs("validate") / "statistics" / f"{split}.pb"

    @property
    def models(self) -> Path:
        return Path(self.models_dir)

    def model(self, name: str) -> Path:
        """A trained model's folder (:mod:`pipeline.core.model_card`), e.g. ``models/baseline``."""
        return self.models / name

    def train_outputs(self, name: str) -> Path:
        """One model's training history and, while it trains, its checkpoints."""
        return self.stage_outputs("train") / name

    @property
    def evaluate_report(self) -> Path:
        """Evaluate's every number: per model, genre and level, the gain, per trailer."""
        return self.stage_outputs("evaluate") / "report.json"

    @property
    def pr_curves(self) -> Path:
        """Evaluate's precision-recall CSVs, one per genre (``dvc plots``)."""
        return self.stage_outputs("evaluate") / "pr"

    def pr_curve(self, genre: str) -> Path:
        """One genre's precision-recall curves of every model (``pr/comedy.csv``)."""
        return self.pr_curves / f"{genre}.csv"

    @property
    def evaluate_figures(self) -> Path:
        """Evaluate's pictures: a PR curve per genre, example timelines of evaluated trailers."""
        return self.stage_outputs("evaluate") / "figures"

    @property
    def evaluate_viewer(self) -> Path:
        """A viewer page per evaluated trailer and their index (``index.html``), worst first."""
        return self.stage_outputs("evaluate") / "viewer"

    @property
    def schema(self) -> Path:
        return Path(self.schema_file)


class SynthConfig(_Section):
    """The procedural demo corpus (``trailers synth``); times in seconds, sizes in pixels.

    A trailer is genre blocks (``block_s`` long, each cut into shots of about ``shot_s``)
    separated by a title card (probability ``title_card_prob``) or black frames.
    """

    n_trailers: int = Field(24, ge=3, description="How many trailers to make.")
    duration_s: tuple[float, float] = Field(
        (8.0, 14.0), description="[min, max] length of a trailer, drawn per trailer."
    )
    fps_choices: tuple[float, ...] = Field(
        (24.0, 25.0, 29.97, 30.0), description="Frame rates a trailer is drawn from."
    )
    width: tuple[int, int] = Field(
        (160, 256), description="[min, max] frame width (at least 16), drawn per trailer."
    )
    aspect_ratios: tuple[float, ...] = Field(
        (1.33, 1.78, 2.39), description="Width-to-height ratios a trailer is drawn from."
    )
    block_s: tuple[float, float] = Field(
        (1.5, 3.0), description="[min, max] length of a genre block."
    )
    shot_s: tuple[float, float] = Field(
        (0.8, 2.0),
        description="[min, max] length of a shot within a block (action cuts twice as fast).",
    )
    title_card_s: float = Field(0.4, gt=0.0, description="Length of a title card between blocks.")
    black_s: float = Field(
        0.2, gt=0.0, description="Length of the black frames between blocks without a title card."
    )
    title_card_prob: float = Field(
        0.5, ge=0.0, le=1.0, description="Probability that blocks are separated by a title card."
    )
    second_genre_prob: float = Field(
        0.25,
        ge=0.0,
        le=1.0,
        description="Probability that a block shows a second genre beside it (split screen, "
        "two labels).",
    )
    genres_per_trailer: tuple[int, int] | None = Field(
        None,
        description="[min, max] distinct genres in each trailer, as real catalogues have (1 to "
        "3); null: the genres of a split are dealt to its blocks from shuffled decks of all six "
        "(4 or 5 per demo trailer).",
    )
    split_fractions: tuple[float, float, float] = Field(
        (0.6, 0.2, 0.2), description="Fractions of trailers in train, val and test (sum 1)."
    )
    crf: int = Field(
        0,
        ge=0,
        le=51,
        description="x264 quality; 0 is lossless: decoded frames are exactly the drawn ones, in "
        "every run and process.",
    )
    preset: Literal[
        "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower"
    ] = Field("veryfast", description="x264 speed preset.")

    _ranges = field_validator("duration_s", "width", "block_s", "shot_s")(_positive_range)
    _lists = field_validator("fps_choices", "aspect_ratios")(_positive_items)

    @field_validator("width")
    @classmethod
    def _min_width(cls, values: tuple[int, int]) -> tuple[int, int]:
        if values[0] < 16:
            raise ValueError(
                f"expected widths of at least 16 pixels, got [{values[0]}, {values[1]}]"
            )
        return values

    @field_validator("genres_per_trailer")
    @classmethod
    def _genre_count(cls, values: tuple[int, int] | None) -> tuple[int, int] | None:
        if values is not None and not 1 <= values[0] <= values[1] <= len(GENRES):
            raise ValueError(
                f"expected [min, max] with 1 <= min <= max <= {len(GENRES)}, got {list(values)}"
            )
        return values

    @field_validator("split_fractions")
    @classmethod
    def _fractions(cls, values: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(f <= 0 for f in values) or abs(sum(values) - 1) > 1e-6:
            raise ValueError(f"expected three positive fractions summing to 1, got {list(values)}")
        return values


DASK_RUNNERS = ("dask", "apache_beam.runners.dask.dask_runner.DaskRunner")
"""The names ``beam.runner`` takes for Beam's Dask runner (``pipeline/infra/beam.py`` runs a fixed
subclass of it)."""


class BeamConfig(_Section):
    """How the Beam stages (decode, validate) run: never what they write, so not DVC params.

    ``DirectRunner`` runs on Beam's local FnApiRunner with ``num_workers`` workers (0: one per
    usable core) in ``direct_running_mode``. ``dask`` runs on the Dask cluster at
    ``scheduler_address``, or (null) on a local cluster of ``num_workers`` worker processes
    that the stage starts and stops; ``num_workers`` also sets how many parts decode cuts
    long videos into. Any runner gets ``runner_options`` as its flags (``pipeline/infra/beam.py``).
    """

    runner: str = Field(
        "DirectRunner",
        description="`DirectRunner`, `dask` (Beam's Dask runner), or another Beam runner's name.",
    )
    direct_running_mode: Literal["in_memory", "multi_threading", "multi_processing"] = Field(
        "multi_threading", description="How the DirectRunner runs its workers (decode's mode)."
    )
    num_workers: int = Field(
        0,
        ge=0,
        description="Workers; 0: one per usable core (CPU affinity and cgroup limits "
        "respected). Also how many parts decode cuts long videos into.",
    )
    scheduler_address: str | None = Field(
        None,
        min_length=1,
        description='Dask only: the scheduler, e.g. `"tcp://host:8786"`; null: a local cluster '
        "of `num_workers` processes that the stage starts and stops. Not together with "
        "`runner_options.dask_client_address`.",
    )
    runner_options: dict[str, str] = Field(
        default_factory=dict,
        description='Extra runner flags without "--", e.g. `{dask_connection_timeout: "10"}`.',
    )

    @model_validator(mode="after")
    def _one_scheduler(self) -> BeamConfig:
        if self.scheduler_address is None:
            return self
        if self.runner not in DASK_RUNNERS:
            raise ValueError(
                f"scheduler_address is for the Dask runner (runner: dask), got runner "
                f"{self.runner!r}"
            )
        if "dask_client_address" in self.runner_options:
            raise ValueError(
                "scheduler_address and runner_options.dask_client_address both name a "
                "scheduler: keep one"
            )
        return self


class DecodeConfig(_Section):
    """Video -> channels_first uint8 shards (``trailers decode``).

    ``input_dir`` is the videos folder (null: ``<data_dir>/videos``): every video in it with
    ``source: folder``, the files that ``annotations.csv``'s ``video`` column names (relative
    to it) otherwise. ``video_extensions`` are the files taken for videos (any other file is
    listed as skipped in the report); ``remux_formats`` are containers (PyAV format names)
    copied into Matroska before decord reads them, as decord misplaces their frames;
    ``verify`` is how a rerun checks the shards it keeps (``size_mtime``: size, and the hash
    only when the modification time moved; ``sha256``: always the hash); ``allow_truncated``:
    a file cut short (frames end before its header's duration) gives its readable frames and
    a warning, or (false) fails; ``decoder``: ``auto`` reads with decord and falls back to PyAV
    where decord cannot (AV1, quarter-turned clips), ``pyav`` reads everything with PyAV (where
    decord is not installable, or to compare).
    """

    source: Literal["annotations", "folder"] = Field(
        "annotations",
        description="`annotations`: the videos annotations.csv and splits.csv list; `folder`: "
        "every video in `input_dir`, unlabelled.",
    )
    input_dir: str | None = Field(
        None,
        description="The videos folder (null: `<data_dir>/videos`); annotations' `video` "
        "column is relative to it.",
    )
    video_extensions: tuple[str, ...] = Field(
        (
            ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts", ".m2ts", ".mts", ".mpg",
            ".mpeg", ".wmv", ".flv", ".3gp", ".ogv",
        ),
        description="Lower-case extensions of the files taken for videos; any other file is "
        "listed as skipped in the report.",
    )  # fmt: skip
    remux_formats: tuple[str, ...] = Field(
        ("mpegts", "mpeg"),
        description="Containers (PyAV format names) copied into Matroska first: decord "
        "misplaces their frames.",
    )
    verify: Literal["size_mtime", "sha256"] = Field(
        "size_mtime",
        description="How a rerun checks the shards it keeps: size, and the hash only when the "
        "modification time moved; or `sha256`: hash every kept shard.",
    )
    fps: float = Field(8.0, gt=0, le=120, description="Frames sampled per second of video.")
    height: int = Field(64, ge=8, le=2160, description="Height of a decoded frame, in pixels.")
    width: int = Field(64, ge=8, le=3840, description="Width of a decoded frame, in pixels.")
    aspect: Literal["letterbox", "crop"] = Field(
        "letterbox",
        description="Fit frames of another shape with black bars, or centre-crop them.",
    )
    max_frames_per_shard: int = Field(
        128,
        ge=1,
        description="Frames per shard (16 s at 8 fps); also the grain of a long video's split.",
    )
    split_videos: bool = Field(
        True, description="Cut long videos into parts of whole shards that workers share."
    )
    decoder_threads: int = Field(
        0, ge=0, description="decord threads per worker; 0: the cores that busy workers leave idle."
    )
    fault_tolerance: float = Field(
        0.05,
        ge=-1,
        description="decord's `fault_tol`: a video with more recovered (repeated) frames than "
        "this fraction of its frames (above 1: this count) fails; negative: off.",
    )
    allow_truncated: bool = Field(
        True,
        description="A file cut short gives its readable frames and a warning (false: it fails).",
    )
    decoder: Literal["auto", "pyav"] = Field(
        "auto",
        description="`auto`: decord, PyAV where decord cannot read a video (AV1, quarter-turned "
        "clips); `pyav`: PyAV for all.",
    )
    stall_timeout_s: float = Field(
        120.0,
        gt=0,
        description="A decoder process that reports no progress this long is killed and "
        "replaced; only its video fails.",
    )
    worker_max_videos: int = Field(
        50,
        ge=0,
        description="Calls (video parts) a decoder process serves before it is replaced, "
        "bounding native memory leaks (0: never).",
    )
    max_failed_fraction: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="The stage exits 1 when more than this fraction of the videos failed.",
    )

    @field_validator("video_extensions")
    @classmethod
    def _extensions(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        bad = [v for v in values if not (v.startswith(".") and len(v) > 1 and v == v.lower())]
        if bad or not values:
            raise ValueError(f"expected lower-case extensions such as '.mp4', got {list(values)}")
        return values


class ValidateConfig(_Section):
    """TFDV statistics, schema and drift/skew checks (``trailers validate``).

    Runs on the ``beam:`` runner and options, in its own DirectRunner mode: the work is light
    per shard, so in-process (``in_memory``, one worker) starts fastest.
    """

    black_level: float = Field(
        16.0, ge=0, le=255, description="A frame whose mean pixel is below this counts as black."
    )
    chunk_frames: int = Field(
        64, ge=1, description="Frames of a shard read at a time (memory-mapped)."
    )
    direct_running_mode: Literal["in_memory", "multi_threading", "multi_processing"] = Field(
        "in_memory", description="Validate's own DirectRunner mode."
    )
    drift_features: tuple[str, ...] = Field(
        ("frame_brightness",),
        description="Features whose distribution in val, test and unlabelled data is compared "
        "with train's (Jensen-Shannon divergence).",
    )
    drift_threshold: float = Field(
        0.3, gt=0, le=1, description="Largest divergence of a drift feature that passes."
    )
    genre_drift_threshold: float = Field(
        0.3,
        gt=0,
        le=1,
        description="Largest difference in a genre's share of frames between a split and train.",
    )
    skew_features: tuple[str, ...] = Field(
        ("height", "width", "fps"),
        description="Features that must match train's (a split decoded with other settings).",
    )
    skew_threshold: float = Field(
        0.3, gt=0, le=1, description="Largest divergence of a skew feature that passes."
    )
    fail_on_truncated: bool = Field(
        False,
        description="A trailer whose video file is cut short (decode kept its readable frames): "
        "an ERROR that stops the pipeline, or (false) a WARNING in the report.",
    )


class ModelConfig(_Section):
    """The multi-branch ConvLSTM classifier."""

    cell: Literal["convlstm", "peephole", "st_clstm"] = Field(
        "convlstm",
        description="The recurrent cell: ConvLSTM, ConvLSTM with peepholes, or ST-CLSTM.",
    )
    trunk_filters: tuple[int, ...] = Field(
        (16, 16), description="Filters of each ConvLSTM layer of the shared trunk."
    )
    kernel_size: int = Field(3, ge=1, description="Convolution kernel size of the cells.")
    pool_size: int = Field(2, ge=1, description="Spatial max-pooling after each layer.")
    branch_filters: int = Field(8, ge=1, description="Filters of each genre branch's ConvLSTM.")
    dense_units: tuple[int, int] = Field(
        (32, 16), description="Units of the two Dense layers of each genre head."
    )
    dropout: float = Field(0.2, ge=0.0, lt=1.0, description="Dropout in each genre head.")
    batch_norm: Literal["synchronized", "per_replica"] = Field(
        "synchronized",
        description="Trunk batch statistics over the global batch (all replicas) or each "
        "replica's share.",
    )
    frame_norm: Literal["scale", "standardize"] = Field(
        "scale",
        description="Input frames scaled to [0, 1], or each frame standardised to zero mean, "
        "unit variance (dark, low-contrast frames at full range).",
    )
    motion_input: Literal["none", "difference"] = Field(
        "none",
        description="`difference`: the recurrent model also sees each frame minus the previous "
        "one, stacked on its channels (the per-frame baseline never does).",
    )
    cell_dropout: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="The recurrent cells' input dropout, as `keras.layers.ConvLSTM2D`'s "
        "`dropout`: one mask per gate and window, the same at every step, drawn from the seed.",
    )
    cell_recurrent_dropout: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="The recurrent cells' dropout on the hidden state (`ConvLSTM2D`'s "
        "`recurrent_dropout`).",
    )
    cell_l2: float = Field(
        0.0,
        ge=0.0,
        description="L2 penalty on the recurrent cells' kernels and recurrent kernels (0: none).",
    )

    _sizes = field_validator("trunk_filters", "dense_units")(_positive_items)


class AugmentConfig(_Section):
    """Training-time augmentation of the windows (never applied to evaluation data)."""

    horizontal_flip: bool = Field(True, description="Flip whole training windows left-right.")
    temporal_jitter: int = Field(
        0, ge=0, description="Shift each window's start by up to this many frames (0: none)."
    )


class TrainConfig(_Section):
    """Training the classifier and the per-frame baseline (``trailers train``).

    Training reads windows of ``window`` frames every ``stride`` frames of each trailer, at a
    random offset per epoch; evaluation reads whole trailers (``eval_window: 0``) or windows
    of ``eval_window`` frames.
    """

    window: int = Field(16, ge=1, description="Frames per training window (2 s at 8 fps).")
    stride: int = Field(8, ge=1, description="Frames between the starts of two windows.")
    eval_window: int = Field(
        0, ge=0, description="Frames per validation window; 0: score whole trailers."
    )
    batch_size: int = Field(
        8, ge=1, description="Windows per batch (per worker with `strategy: multi_worker`)."
    )
    eval_batch_size: int = Field(
        1, ge=1, description="Validation batch; 1 when scoring whole trailers."
    )
    parallel_reads: int = Field(4, ge=1, description="Windows read from the shards at once.")
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    epochs: int = Field(20, ge=1, description="Most epochs (early stopping may end sooner).")
    learning_rate: float = Field(2e-3, gt=0, description="Adam's learning rate.")
    positive_weights: bool = Field(
        False,
        description="Weigh each genre's positives and negatives equally overall, from the "
        "train split's label frequencies.",
    )
    early_stopping_patience: int = Field(
        5,
        ge=0,
        description="Epochs without a better `val_macro_auc_pr` before training stops.",
    )
    strategy: Literal["auto", "default", "mirrored", "multi_worker"] = Field(
        "auto",
        description="Distribution: `auto` is MirroredStrategy when more than one GPU is "
        "visible; `multi_worker`: one process per worker, the cluster in `TF_CONFIG`.",
    )
    cluster_heartbeat_s: float = Field(
        60,
        gt=0,
        description="`multi_worker`: seconds a worker may miss the cluster's heartbeats before "
        "the run fails (TensorFlow's default, 10, fails runs on busy hosts).",
    )
    mixed_precision: Literal["auto", "on", "off"] = Field(
        "auto", description="`auto`: mixed_float16 with a GPU, never on CPU."
    )
    jit_compile: bool = Field(
        False,
        description="Compile the train step with XLA (false: never, also on a GPU, where Keras "
        "would by itself).",
    )
    weak_labels: Literal["broadcast", "mil"] = Field(
        "broadcast",
        description="How a trailer labelled at trailer level (`label_level: trailer`) trains. "
        "`broadcast`: its genres on every frame. `mil`: multiple-instance learning, the trailer "
        "is one bag (one window from its first frame, padded; it must fit `window`): each "
        "present genre's pooled score (`mil_pooling`) is compared with the trailer's label, "
        "and each absent genre is an exact negative on every frame. Segment-labelled trailers "
        "keep the per-frame loss.",
    )
    mil_pooling: Literal["top_k", "mean"] = Field(
        "top_k",
        description="`mil`: a bag's score per genre, the mean of its top `mil_top_fraction` "
        "frames, or of all.",
    )
    mil_top_fraction: float = Field(
        0.25, gt=0, le=1, description="`mil` with `top_k`: the fraction of a bag's frames pooled."
    )

    @model_validator(mode="after")
    def _mil_unweighted(self) -> TrainConfig:
        if self.weak_labels == "mil" and self.positive_weights:
            raise ValueError(
                "positive_weights: the frame frequencies of trailer-level labels are unknown, "
                "so weak_labels: mil trains unweighted; set positive_weights: false"
            )
        return self

    @field_validator("eval_batch_size")
    @classmethod
    def _whole_trailers_one_at_a_time(cls, value: int, info: ValidationInfo) -> int:
        if value != 1 and info.data.get("eval_window") == 0:
            raise ValueError(
                "whole trailers (eval_window 0) differ in length and are scored one at a "
                f"time: expected 1, got {value}"
            )
        return value


class TimelineConfig(_Section):
    """How per-frame probabilities are read as a timeline (predict's outputs, evaluate's
    segments and trailer-level scores)."""

    threshold: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="A trailer score above it: the genre is present; also the onset of this "
        "section's segment rule.",
    )
    offset_threshold: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="Hysteresis: a segment ends below this (null: `threshold`); at most "
        "`threshold`.",
    )
    min_segment_s: float = Field(0.0, ge=0, description="Shorter segments are dropped.")
    min_gap_s: float = Field(
        0.0, ge=0, description="Shorter gaps between two segments of a genre are bridged."
    )
    smoothing: Literal["none", "median", "viterbi"] = Field(
        "none",
        description="`median` over `median_window_s`, or `viterbi` with `switch_cost` per change.",
    )
    median_window_s: float = Field(0.5, gt=0, description="The median smoothing's window.")
    switch_cost: float = Field(
        2.0, ge=0, description="Viterbi smoothing's cost (nats) of changing state."
    )
    rules: Literal["tuned", "config"] = Field(
        "tuned",
        description="`tuned`: the model's rules, tuned on val by evaluate; `config`: predict and "
        "the viewer use this section's rule.",
    )
    trailer_top_fraction: float = Field(
        0.25, gt=0, le=1, description="A trailer's score per genre: the mean of its top frames."
    )

    @model_validator(mode="after")
    def _offset_below_onset(self) -> TimelineConfig:
        if self.offset_threshold is not None and self.offset_threshold > self.threshold:
            raise ValueError(
                f"offset_threshold ({self.offset_threshold}) must not exceed threshold "
                f"({self.threshold}): a segment ends below the offset once it began above the onset"
            )
        return self


class RuleGridConfig(_Section):
    """The segment rules evaluate tries per genre on val (every combination; the best segment
    F1 at ``evaluate.segment_iou`` wins, the first listed on a tie)."""

    onsets: tuple[float, ...] = Field(
        (0.3, 0.4, 0.5, 0.6, 0.7), description="Onset thresholds tried, each in (0, 1)."
    )
    hysteresis: tuple[float, ...] = Field(
        (0.0, 0.1, 0.2), description="Offset = onset - this (floored above 0)."
    )
    min_segment_s: tuple[float, ...] = Field(
        (0.0, 0.25, 0.5, 1.0), description="Minimum segment lengths tried."
    )
    min_gap_s: tuple[float, ...] = Field((0.0, 0.25, 0.5, 1.0), description="Gaps bridged tried.")
    median_window_s: tuple[float, ...] = Field(
        (0.375, 0.625), description="Each tried as median smoothing (`[]`: none)."
    )
    switch_cost: tuple[float, ...] = Field(
        (1.0, 3.0), description="Each tried as Viterbi smoothing (`[]`: none)."
    )

    @field_validator("onsets")
    @classmethod
    def _probabilities(cls, values: tuple[float, ...]) -> tuple[float, ...]:
        if not values or any(not 0 < v < 1 for v in values):
            raise ValueError(f"expected a non-empty list in (0, 1), got {list(values)}")
        return values

    @field_validator("hysteresis", "min_segment_s", "min_gap_s")
    @classmethod
    def _non_negative(cls, values: tuple[float, ...]) -> tuple[float, ...]:
        if not values or any(v < 0 for v in values):
            raise ValueError(f"expected a non-empty list of numbers >= 0, got {list(values)}")
        return values

    @field_validator("median_window_s", "switch_cost")
    @classmethod
    def _positive_or_none(cls, values: tuple[float, ...]) -> tuple[float, ...]:
        if any(v <= 0 for v in values):
            raise ValueError(f"expected numbers > 0 (an empty list: not tried), got {list(values)}")
        return values


class PredictConfig(_Section):
    """``trailers predict``: any video through the streaming model, chunk by chunk."""

    chunk_frames: int = Field(
        64, ge=1, description="Frames decoded and fed to the streaming model at a time."
    )
    decoder_threads: int = Field(
        0, ge=0, description="Decoder threads per video; 0: as decode, the usable cores."
    )
    html: bool = Field(True, description="Also write the timeline viewer page.")
    drift_thresholds: dict[str, float] = Field(
        default_factory=lambda: {"frame_brightness": 0.9, "frame_motion": 0.5},
        description="Per feature of a video's frames, the largest Jensen-Shannon divergence "
        "between its histogram and the model's training split's (validate's drift measure; 1: "
        "no overlap) for a video near the training data; above it predict warns. Empty: no "
        "comparison.",
    )
    frame_size_tolerance: float = Field(
        1.5,
        ge=1,
        description="How many times narrower or wider (shorter or taller) than the model's "
        "training videos a video may be, their frame sizes as the model card records them, "
        "before predict warns that its size is far from the training data.",
    )

    @field_validator("drift_thresholds")
    @classmethod
    def _divergences(cls, thresholds: dict[str, float]) -> dict[str, float]:
        if any(not 0 < value <= 1 for value in thresholds.values()):
            raise ValueError(f"expected divergences in (0, 1], got {thresholds}")
        return thresholds


class WeakenConfig(_Section):
    """How ``docs/bring_your_own/weaken.py --config`` relabels a segment-labelled corpus at
    trailer level (``make run-weak``, ``make label-fraction``): not a stage, it rewrites
    ``<data_dir>/annotations.csv`` before decode."""

    split: Literal["train", "val", "test"] = Field(
        "train", description="The split whose trailers are relabelled at trailer level."
    )
    segment_fraction: float = Field(
        0.0,
        ge=0,
        le=1,
        description="The fraction of the split's trailers that keep their segment labels "
        "(the rest get trailer-level labels): `round(fraction * n)` trailers, a choice fixed "
        "by `seed`. 0: all trailer-level; 1: none.",
    )


class EvaluateConfig(_Section):
    """``trailers evaluate``: per-genre metrics of each trained model on a labelled split."""

    split: Literal["val", "test"] = Field("test", description="The split scored.")
    segment_iou: float = Field(
        0.5,
        gt=0,
        le=1,
        description="The IoU `segment_f1` quotes, and the one the segment rules are tuned at.",
    )
    tune_rules: RuleGridConfig = Field(default_factory=RuleGridConfig)
    example_timelines: int = Field(
        4, ge=0, description="Trailers drawn as truth-against-prediction pictures."
    )
    register_model: bool = Field(
        False,
        description="Register the ConvLSTM in the MLflow Model Registry as "
        "`<registered_model_name>@<alias>`.",
    )
    registered_model_name: str = Field("trailer-genres", description="The registered model's name.")
    alias: str = Field("champion", description="The alias that points at the new version.")


class TrackingConfig(_Section):
    """MLflow tracking: where runs go and what they are called.

    ``tracking_uri: null`` means ``MLFLOW_TRACKING_URI`` if set, else an SQLite store at
    ``<project>/mlflow.db`` (an absolute path, so ``dvc exp run --temp`` logs to the same store).

    A training run never waits on the server: ``request_timeout_s`` and ``request_retries`` are
    MLflow's ``MLFLOW_HTTP_REQUEST_TIMEOUT`` and ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` for the stage
    (the environment's own values win), ``retry_every_s`` how often an absent server is tried
    again, ``flush_timeout_s`` how long the end of a run waits for records still being sent.
    """

    tracking_uri: str | None = Field(
        None,
        description="The MLflow store; null: `MLFLOW_TRACKING_URI`, else "
        "`sqlite:///<project>/mlflow.db`.",
    )
    experiment: str = Field("trailer-genres", description="The MLflow experiment's name.")
    system_metrics_interval_s: float = Field(
        1.0, gt=0, description="Seconds between two samples of CPU, memory, disk and GPU."
    )
    request_timeout_s: int = Field(
        5,
        gt=0,
        description="`MLFLOW_HTTP_REQUEST_TIMEOUT` for train and evaluate (the environment's "
        "wins).",
    )
    request_retries: int = Field(
        1,
        ge=0,
        le=10,
        description="`MLFLOW_HTTP_REQUEST_MAX_RETRIES` likewise: a call gives up in seconds.",
    )
    retry_every_s: float = Field(
        5.0,
        gt=0,
        description="How often training tries an absent server again (its records wait on disk).",
    )
    flush_timeout_s: float = Field(
        30.0, ge=0, description="How long the end of training waits for records still being sent."
    )


def tracking_uri(tracking: TrackingConfig) -> str:
    """The config's URI, else ``MLFLOW_TRACKING_URI``, else ``sqlite:///<project>/mlflow.db``.

    Here, not in the train stage: predict and evaluate read models and runs from the same store.
    """
    return (
        tracking.tracking_uri
        or os.environ.get("MLFLOW_TRACKING_URI")
        or f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"
    )


class Config(_Section):
    """The whole configuration: one section per stage."""

    seed: int = Field(
        0, ge=0, description="Every random draw (corpus, splits, training) derives from it."
    )
    paths: PathsConfig = Field(default_factory=PathsConfig)
    beam: BeamConfig = Field(default_factory=BeamConfig)
    synth: SynthConfig = Field(default_factory=SynthConfig)
    decode: DecodeConfig = Field(default_factory=DecodeConfig)
    validate_: ValidateConfig = Field(default_factory=ValidateConfig, alias="validate")
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    timeline: TimelineConfig = Field(default_factory=TimelineConfig)
    predict: PredictConfig = Field(default_factory=PredictConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    weaken: WeakenConfig = Field(default_factory=WeakenConfig)

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, populate_by_name=True)


def _format_error(source: str, error: ValidationError) -> str:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "<root>"
    received = first.get("input")
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    elif first["type"] not in ("value_error",) and not isinstance(received, dict):
        message = f"{message} (got {received!r})"
    more = f" (+{error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{source}: {key}: {message}{more}"


def _apply_override(raw: dict, override: str) -> None:
    key, sep, text = override.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {override!r}: expected section.key=value")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key}: value is not valid YAML: {exc.problem}") from None
    node = raw
    *parents, leaf = key.split(".")
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: {part} is not a section")
        node = child
    node[leaf] = value


_PLAIN = (str, int, float, bool, type(None))


def _check_plain(source: str, node: Any, key: str = "") -> None:
    """Stop at the first value YAML read as something other than plain data (a date, ...)."""
    if isinstance(node, dict):
        for name, child in node.items():
            _check_plain(source, child, f"{key}.{name}" if key else str(name))
    elif isinstance(node, list):
        for child in node:
            _check_plain(source, child, key)
    elif not isinstance(node, _PLAIN):
        raise ConfigError(
            f"{source}: {key or '<root>'}: expected text, a number, true/false, a list or a "
            f"mapping, got {type(node).__name__} {node!s} (quote it to mean text)"
        )


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read, override and validate a config file; raise ConfigError with one clear line."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a config file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}".replace("\n", " ")) from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    for override in overrides:
        _apply_override(raw, override)
    source = f"{path}" + (" (with --set overrides)" if overrides else "")
    _check_plain(source, raw)
    try:
        # JSON round trip: strict mode then takes YAML lists for tuples, and nothing else loosely.
        return Config.model_validate_json(json.dumps(raw))
    except ValidationError as exc:
        raise ConfigError(_format_error(source, exc)) from None
