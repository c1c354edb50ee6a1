"""The trained model's folder, ``models/<model>/``: the network and its card.

- ``model.keras``: the Keras network, float32, loadable on any host
  (:func:`pipeline.model.load_network`).
- ``model.json``: the card (:class:`ModelCard`): which model it is, its genres and frame shape,
  the decode settings it was trained on (predict samples every video exactly so), the MLflow
  run that trained it and how it learnt from its labels (``labels``: ``train.weak_labels`` and
  its pooling, the train trailers of each label level).
  The card also says what the model was trained on (:class:`TrainingData`: the corpus, whether
  it is the synthetic demo, its data version, trailers and hours per split).
- ``train_statistics.pb``: TFDV's statistics of the training split (validate's), which predict
  compares each video with (:func:`statistics_file`).
- ``segment_rules.json``: each genre's :class:`pipeline.core.timeline.SegmentRule`, tuned on the
  val split by evaluate (:func:`write_rules`); predict and the viewer read timelines by them.
- ``evaluation.json``: evaluate's headline figures for the model (:func:`write_evaluation`).
  Evaluate's own file, beside its rules, so that train's ``model.json`` stays train's output
  alone (a DVC out is written by one stage).

Train writes the folder through :func:`write` (which removes the rules and figures of an
earlier network); evaluate adds the rules and figures; evaluate and predict read it through
:func:`read`; no other module names these files. :meth:`DecodeSettings.check_rows` is the one
check that shards were decoded as a model (or the config) expects. Train logs the card and the
statistics beside the network in MLflow (:func:`card_files`), so a logged model's downloaded
``artifacts/`` folder reads through :func:`read` as the folder does.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pipeline import SPLITS, UNLABELLED
from pipeline.core.config import DecodeConfig
from pipeline.core.errors import StageError
from pipeline.core.io import atomic_path, write_json
from pipeline.core.manifest import ShardRow
from pipeline.core.timeline import SegmentRules, rules_from_dict, rules_to_dict

NETWORK_FILE = "model.keras"
NETWORK_SUFFIX = Path(NETWORK_FILE).suffix
CARD_FILE = "model.json"
STATISTICS_FILE = "train_statistics.pb"
RULES_FILE = "segment_rules.json"
EVALUATION_FILE = "evaluation.json"
SECONDS_PER_HOUR = 3600.0
TRAIN = SPLITS[0]


@dataclass(frozen=True)
class DecodeSettings:
    """How the model's training videos were sampled; predict samples every video exactly so."""

    fps: float
    height: int
    width: int
    aspect: Literal["letterbox", "crop"]

    @classmethod
    def from_config(cls, decode: DecodeConfig) -> DecodeSettings:
        return cls(decode.fps, decode.height, decode.width, decode.aspect)

    @classmethod
    def from_dict(cls, settings: Mapping[str, Any], source: str) -> DecodeSettings:
        try:
            return cls(
                float(settings["fps"]),
                int(settings["height"]),
                int(settings["width"]),
                settings["aspect"],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StageError(f"{source}: no usable decode settings ({exc!r})") from None

    def check_rows(self, rows: Iterable[ShardRow], expected_by: str, remedy: str) -> None:
        """StageError at the first shard decoded otherwise, e.g. ``expected_by="the config
        says"``, ``remedy="rerun decode"``."""
        for row in rows:
            if (row.fps, row.height, row.width) != (self.fps, self.height, self.width):
                raise StageError(
                    f"{row.shard}: decoded at {row.fps} fps, {row.height}x{row.width}, but "
                    f"{expected_by} {self.fps} fps, {self.height}x{self.width}: {remedy}"
                )


@dataclass(frozen=True)
class TrainingData:
    """What a model was trained on: ``corpus`` (the videos folder, or the demo's),
    ``synthetic`` (every train video is one ``trailers synth`` wrote, as decode found),
    ``data_version`` (the SHA-256 of the manifest, which holds every shard's own hash),
    ``frames_per_shard`` (the longest shard: how the training statistics group frames), per
    split its trailers and hours, and
    ``frame_size``: the train split's source frame sizes, ``{"min": [width, height], "max":
    [width, height]}`` as players show them (None: a manifest that does not record them)."""

    corpus: str
    synthetic: bool
    data_version: str
    frames_per_shard: int
    splits: dict[str, dict[str, float]]
    frame_size: dict[str, list[int]] | None = None

    @classmethod
    def from_rows(cls, rows: Iterable[ShardRow], corpus: str, data_version: str) -> TrainingData:
        """Synthetic when every train row is (decode found each video to be synth's)."""
        rows = list(rows)
        train = [row for row in rows if row.split == TRAIN]
        synthetic = bool(train) and all(row.synthetic for row in train)
        splits: dict[str, dict[str, float]] = {}
        for split in sorted({row.split for row in rows}):
            chosen = [row for row in rows if row.split == split]
            seconds = sum(row.frames / row.fps for row in chosen)
            splits[split] = {
                "trailers": len({row.trailer_id for row in chosen}),
                "hours": round(seconds / SECONDS_PER_HOUR, 4),
            }
        longest = max(row.frames for row in rows)
        return cls(corpus, synthetic, data_version, longest, splits, _frame_sizes(train))

    def size_far(self, size: tuple[int, int], tolerance: float) -> bool:
        """Whether a video of ``size`` (width, height) is narrower or wider, shorter or taller,
        than the training videos by more than ``tolerance`` times (False when not recorded)."""
        if self.frame_size is None:
            return False
        low, high = self.frame_size["min"], self.frame_size["max"]
        return any(
            value * tolerance < least or value > most * tolerance
            for value, least, most in zip(size, low, high, strict=True)
        )

    def describe(self) -> str:
        """One line: ``the synthetic demo corpus of `trailers synth` (data/videos, data version
        1a2b3c4d; train 32 trailers, 0.0944 h; val ...)``."""
        kind = "the synthetic demo corpus of `trailers synth`" if self.synthetic else "the corpus"
        order = [*SPLITS, UNLABELLED]
        splits = "; ".join(
            f"{split} {int(counts['trailers'])} trailers, {counts['hours']:g} h"
            for split, counts in sorted(self.splits.items(), key=lambda item: order.index(item[0]))
        )
        return f"{kind} ({self.corpus}, data version {self.data_version[:8]}; {splits})"


def _frame_sizes(rows: list[ShardRow]) -> dict[str, list[int]] | None:
    """The rows' least and greatest source width and height; None unless every row records
    them."""
    sizes = [(row.source_width, row.source_height) for row in rows]
    if not sizes or any(None in size for size in sizes):
        return None
    widths, heights = zip(*sizes, strict=True)
    return {"min": [min(widths), min(heights)], "max": [max(widths), max(heights)]}


@dataclass(frozen=True)
class ModelCard:
    """``model.json``: what a trained network is and what it was trained on."""

    model: str
    cell: str | None
    genres: tuple[str, ...]
    frame_shape: tuple[int, int, int]
    decode: DecodeSettings
    mlflow_run_id: str | None
    labels: Mapping[str, Any] | None = None
    """How training read the labels: ``weak_labels``, ``mil_pooling``, ``mil_top_fraction``
    and ``train_trailers`` per label level; None on cards written before it."""
    trained_on: TrainingData | None = None
    """None in cards written before it was recorded."""

    def to_dict(self) -> dict[str, Any]:
        card = dataclasses.asdict(self)
        labels = None if self.labels is None else dict(self.labels)
        return card | {
            "genres": list(self.genres),
            "frame_shape": list(self.frame_shape),
            "labels": labels,
        }

    @classmethod
    def from_dict(cls, card: Mapping[str, Any], source: str) -> ModelCard:
        try:
            return cls(
                model=card["model"],
                cell=card["cell"],
                genres=tuple(card["genres"]),
                frame_shape=tuple(card["frame_shape"]),
                decode=DecodeSettings.from_dict(card["decode"], source),
                mlflow_run_id=card["mlflow_run_id"],
                labels=card.get("labels"),
                trained_on=TrainingData(**card["trained_on"]) if card.get("trained_on") else None,
            )
        except (KeyError, TypeError) as exc:
            raise StageError(f"{source}: not a model card ({exc!r} missing or wrong)") from None


@dataclass(frozen=True)
class TrainedModel:
    """A model folder as read: where its network is, and its card."""

    network_file: Path
    card: ModelCard
    rules: dict[str, Any] | None
    """The segment rules tuned for it (``{"tuned_on": ..., "rules": SegmentRules}``), None
    before evaluate tuned them."""
    evaluation: dict[str, Any] | None = None
    """Evaluate's headline figures (``{"split": ..., "trailers": ..., figure: value}``), None
    before evaluate ran."""
    statistics: Path | None = None
    """The training split's TFDV statistics, None when the folder has none."""


def network_file(folder: Path) -> Path:
    return folder / NETWORK_FILE


def rules_file(folder: Path) -> Path:
    return folder / RULES_FILE


def statistics_file(folder: Path) -> Path:
    return folder / STATISTICS_FILE


def evaluation_file(folder: Path) -> Path:
    return folder / EVALUATION_FILE


def card_files(folder: Path) -> list[Path]:
    """The folder's card and training statistics (those it has): what, logged beside the
    network, makes a copy of the network a model folder that :func:`read` reads whole."""
    return [path for path in (folder / CARD_FILE, statistics_file(folder)) if path.is_file()]


def has_card(network: Path) -> bool:
    """Whether the network file ``network`` has its card beside it."""
    return network.with_name(CARD_FILE).is_file()


def write_evaluation(folder: Path, figures: Mapping[str, Any]) -> None:
    """Store evaluate's headline figures with the model."""
    write_json(evaluation_file(folder), dict(figures))


def read_evaluation(folder: Path) -> dict[str, Any] | None:
    """Evaluate's figures, None when the folder has none; StageError, one line naming the
    file, when it cannot be read."""
    path = evaluation_file(folder)
    if not path.is_file():
        return None
    try:
        figures = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise StageError(f"{path}: cannot read the evaluation figures ({exc})") from None
    if not isinstance(figures, dict):
        raise StageError(f"{path}: expected a JSON object of figures")
    return figures


def write_rules(folder: Path, rules: SegmentRules, tuned_on: str) -> None:
    """Store each genre's segment rule with the model, and which split chose them."""
    write_json(rules_file(folder), {"tuned_on": tuned_on, "rules": rules_to_dict(rules)})


def read_rules(folder: Path) -> dict[str, Any] | None:
    """``{"tuned_on": split, "rules": {genre: SegmentRule}}``, None when the folder has none;
    StageError, one line naming the file, when it cannot be read."""
    path = rules_file(folder)
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text())
        return {
            "tuned_on": str(stored["tuned_on"]),
            "rules": rules_from_dict(stored["rules"], str(path)),
        }
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as exc:
        raise StageError(f"{path}: cannot read the segment rules ({exc!r})") from None


def write(
    folder: Path,
    card: ModelCard,
    save_network: Callable[[Path], None],
    train_statistics: Path | None = None,
) -> None:
    """Write the network (``save_network(path)``, into a temporary ``.keras`` path renamed into
    place), a copy of the training split's statistics file, and then the card, so a folder
    with a card always has its network."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in (rules_file(folder), evaluation_file(folder), statistics_file(folder)):
        stale.unlink(missing_ok=True)  # of the network this one replaces
    with atomic_path(network_file(folder), keep_suffix=True) as tmp:
        save_network(tmp)
    if train_statistics is not None:
        with atomic_path(statistics_file(folder)) as tmp:
            shutil.copyfile(train_statistics, tmp)
    write_json(folder / CARD_FILE, card.to_dict())


def read(path: Path) -> TrainedModel:
    """The trained model at ``path``: its folder, or the network file in one (the card beside
    it). StageError, one line naming the path, when either file is missing or unreadable."""
    network = path if path.suffix == NETWORK_SUFFIX else network_file(path)
    card_path = network.with_name(CARD_FILE)
    if not network.is_file() or not card_path.is_file():
        folder = network.parent
        raise StageError(
            f"{path}: no trained model ({NETWORK_FILE} and {CARD_FILE}; run "
            f"`trailers train --model {folder.name}`)"
        )
    try:
        card = json.loads(card_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise StageError(f"{card_path}: cannot read the model card ({exc})") from None
    card = ModelCard.from_dict(card, str(card_path))
    folder = network.parent
    statistics = statistics_file(folder)
    return TrainedModel(
        network,
        card,
        read_rules(folder),
        read_evaluation(folder),
        statistics if statistics.is_file() else None,
    )
