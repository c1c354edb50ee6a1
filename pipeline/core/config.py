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

    data_dir: str = "data"
    outputs_dir: str = "outputs"
    metrics_dir: str = "metrics"
    models_dir: str = "models"
    schema_file: str = "configs/schema.pbtxt"

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

    n_trailers: int = Field(24, ge=3)
    duration_s: tuple[float, float] = (8.0, 14.0)
    fps_choices: tuple[float, ...] = (24.0, 25.0, 29.97, 30.0)
    width: tuple[int, int] = (160, 256)
    aspect_ratios: tuple[float, ...] = (1.33, 1.78, 2.39)
    block_s: tuple[float, float] = (1.5, 3.0)
    shot_s: tuple[float, float] = (0.8, 2.0)
    title_card_s: float = Field(0.4, gt=0.0)
    black_s: float = Field(0.2, gt=0.0)
    title_card_prob: float = Field(0.5, ge=0.0, le=1.0)
    second_genre_prob: float = Field(0.25, ge=0.0, le=1.0)
    split_fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)
    crf: int = Field(0, ge=0, le=51)
    preset: Literal[
        "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower"
    ] = "veryfast"

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

    runner: str = "DirectRunner"
    direct_running_mode: Literal["in_memory", "multi_threading", "multi_processing"] = (
        "multi_threading"
    )
    num_workers: int = Field(0, ge=0)
    scheduler_address: str | None = Field(None, min_length=1)
    runner_options: dict[str, str] = Field(default_factory=dict)

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

    source: Literal["annotations", "folder"] = "annotations"
    input_dir: str | None = None
    video_extensions: tuple[str, ...] = (
        ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts", ".m2ts", ".mts", ".mpg",
        ".mpeg", ".wmv", ".flv", ".3gp", ".ogv",
    )  # fmt: skip
    remux_formats: tuple[str, ...] = ("mpegts", "mpeg")
    verify: Literal["size_mtime", "sha256"] = "size_mtime"
    fps: float = Field(8.0, gt=0, le=120)
    height: int = Field(64, ge=8, le=2160)
    width: int = Field(64, ge=8, le=3840)
    aspect: Literal["letterbox", "crop"] = "letterbox"
    max_frames_per_shard: int = Field(128, ge=1)
    split_videos: bool = True
    decoder_threads: int = Field(0, ge=0)
    fault_tolerance: float = Field(0.05, ge=-1)
    allow_truncated: bool = True
    decoder: Literal["auto", "pyav"] = "auto"
    stall_timeout_s: float = Field(120.0, gt=0)
    worker_max_videos: int = Field(50, ge=0)
    max_failed_fraction: float = Field(0.0, ge=0.0, le=1.0)

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

    black_level: float = Field(16.0, ge=0, le=255)
    chunk_frames: int = Field(64, ge=1)
    direct_running_mode: Literal["in_memory", "multi_threading", "multi_processing"] = "in_memory"
    drift_features: tuple[str, ...] = ("frame_brightness",)
    drift_threshold: float = Field(0.3, gt=0, le=1)
    genre_drift_threshold: float = Field(0.3, gt=0, le=1)
    skew_features: tuple[str, ...] = ("height", "width", "fps")
    skew_threshold: float = Field(0.3, gt=0, le=1)
    fail_on_truncated: bool = False
    """A trailer whose video file is cut short (decode kept its readable frames): an ERROR that
    stops the pipeline, or (false) a WARNING in the report."""


class ModelConfig(_Section):
    """The multi-branch ConvLSTM classifier."""

    cell: Literal["convlstm", "peephole", "st_clstm"] = "convlstm"
    trunk_filters: tuple[int, ...] = (16, 16)
    kernel_size: int = Field(3, ge=1)
    pool_size: int = Field(2, ge=1)
    branch_filters: int = Field(8, ge=1)
    dense_units: tuple[int, int] = (32, 16)
    dropout: float = Field(0.2, ge=0.0, lt=1.0)
    batch_norm: Literal["synchronized", "per_replica"] = "synchronized"
    """Trunk batch statistics over the global batch (all replicas) or each replica's share."""
    frame_norm: Literal["scale", "standardize"] = "scale"
    """Input frames scaled to [0, 1], or each frame standardised to zero mean, unit variance."""
    motion_input: Literal["none", "difference"] = "none"
    """``difference``: the recurrent model also sees each frame minus the previous one, stacked
    on its channels (the per-frame baseline never does)."""
    cell_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """The recurrent cells' input dropout, as ``keras.layers.ConvLSTM2D``'s ``dropout``: one mask
    per gate and window, the same at every step, drawn from the run's seed."""
    cell_recurrent_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """The recurrent cells' dropout on the hidden state (``ConvLSTM2D``'s ``recurrent_dropout``)."""
    cell_l2: float = Field(0.0, ge=0.0)
    """L2 penalty on the recurrent cells' kernels and recurrent kernels (0: none)."""

    _sizes = field_validator("trunk_filters", "dense_units")(_positive_items)


class AugmentConfig(_Section):
    """Training-time augmentation of the windows (never applied to evaluation data)."""

    horizontal_flip: bool = True
    temporal_jitter: int = Field(0, ge=0)


class TrainConfig(_Section):
    """Training the classifier and the per-frame baseline (``trailers train``).

    Training reads windows of ``window`` frames every ``stride`` frames of each trailer, at a
    random offset per epoch; evaluation reads whole trailers (``eval_window: 0``) or windows
    of ``eval_window`` frames.
    """

    window: int = Field(16, ge=1)
    stride: int = Field(8, ge=1)
    eval_window: int = Field(0, ge=0)
    batch_size: int = Field(8, ge=1)
    eval_batch_size: int = Field(1, ge=1)
    parallel_reads: int = Field(4, ge=1)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    epochs: int = Field(20, ge=1)
    learning_rate: float = Field(2e-3, gt=0)
    positive_weights: bool = False
    early_stopping_patience: int = Field(5, ge=0)
    strategy: Literal["auto", "default", "mirrored", "multi_worker"] = "auto"
    mixed_precision: Literal["auto", "on", "off"] = "auto"
    jit_compile: bool = False

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

    threshold: float = Field(0.5, gt=0, lt=1)  # genres present; and the onset of these rules
    offset_threshold: float | None = Field(None, gt=0, lt=1)  # ends a segment; null: threshold
    min_segment_s: float = Field(0.0, ge=0)  # shorter segments are dropped
    min_gap_s: float = Field(0.0, ge=0)  # shorter gaps between two segments are bridged
    smoothing: Literal["none", "median", "viterbi"] = "none"
    median_window_s: float = Field(0.5, gt=0)  # smoothing: median's window
    switch_cost: float = Field(2.0, ge=0)  # smoothing: viterbi's cost (nats) of changing state
    rules: Literal["tuned", "config"] = "tuned"  # tuned: the model's rules, tuned on val
    trailer_top_fraction: float = Field(0.25, gt=0, le=1)  # trailer score: mean of the top frames

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

    onsets: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7)
    hysteresis: tuple[float, ...] = (0.0, 0.1, 0.2)  # offset = onset - this (floored above 0)
    min_segment_s: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0)
    min_gap_s: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0)
    median_window_s: tuple[float, ...] = (0.375, 0.625)  # each tried as median smoothing
    switch_cost: tuple[float, ...] = (1.0, 3.0)  # each tried as viterbi smoothing

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

    chunk_frames: int = Field(64, ge=1)  # frames decoded and fed to the model at a time
    decoder_threads: int = Field(0, ge=0)  # per video; 0: as decode's, the usable cores
    html: bool = True  # also write the timeline viewer page
    drift_thresholds: dict[str, float] = Field(
        default_factory=lambda: {"frame_brightness": 0.9, "frame_motion": 0.5}
    )
    """Per feature of a video's frames, the largest Jensen-Shannon divergence between its
    histogram and the model's training split's (validate's drift measure; 1: no overlap) for
    a video near the training data; above it predict warns. Empty: no comparison."""

    @field_validator("drift_thresholds")
    @classmethod
    def _divergences(cls, thresholds: dict[str, float]) -> dict[str, float]:
        if any(not 0 < value <= 1 for value in thresholds.values()):
            raise ValueError(f"expected divergences in (0, 1], got {thresholds}")
        return thresholds


class EvaluateConfig(_Section):
    """``trailers evaluate``: per-genre metrics of each trained model on a labelled split."""

    split: Literal["val", "test"] = "test"
    segment_iou: float = Field(0.5, gt=0, le=1)  # the IoU segment_f1 quotes and rules are tuned at
    tune_rules: RuleGridConfig = Field(default_factory=RuleGridConfig)
    example_timelines: int = Field(4, ge=0)  # test trailers drawn as truth-against-prediction
    register_model: bool = False  # register the ConvLSTM in the MLflow Model Registry
    registered_model_name: str = "trailer-genres"
    alias: str = "champion"


class TrackingConfig(_Section):
    """MLflow tracking: where runs go and what they are called.

    ``tracking_uri: null`` means ``MLFLOW_TRACKING_URI`` if set, else an SQLite store at
    ``<project>/mlflow.db`` (an absolute path, so ``dvc exp run --temp`` logs to the same store).

    A training run never waits on the server: ``request_timeout_s`` and ``request_retries`` are
    MLflow's ``MLFLOW_HTTP_REQUEST_TIMEOUT`` and ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` for the stage
    (the environment's own values win), ``retry_every_s`` how often an absent server is tried
    again, ``flush_timeout_s`` how long the end of a run waits for records still being sent.
    """

    tracking_uri: str | None = None
    experiment: str = "trailer-genres"
    system_metrics_interval_s: float = Field(1.0, gt=0)
    request_timeout_s: int = Field(5, gt=0)
    request_retries: int = Field(1, ge=0, le=10)
    retry_every_s: float = Field(5.0, gt=0)
    flush_timeout_s: float = Field(30.0, ge=0)


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

    seed: int = Field(0, ge=0)
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
