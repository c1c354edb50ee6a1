"""The model predict runs and the decode settings it was trained on, from wherever it lives.

``--model`` names a ``.keras`` file (``model.json`` beside it holds the decode settings), the
folder holding both (``models/<name>``), or an MLflow model URI (``runs:/<id>/model``,
``models:/<name>@<alias>``, ``models:/m-<id>``) in the config's tracking store, whose metadata
holds the decode settings. The logged model's ``.keras`` file is downloaded and loaded with this
process's own :mod:`pipeline.model`, never through ``mlflow.pyfunc.load_model``: that would put
the model's copy of the ``pipeline`` package first on ``sys.path``.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import keras

import pipeline.model  # noqa: F401  registers the layers the .keras file names
from pipeline.config import Config, tracking_uri
from pipeline.errors import StageError

MODEL_FILE = "model.keras"
CARD_FILE = "model.json"
URI_SCHEMES = ("runs:/", "models:/")


@dataclass(frozen=True)
class DecodeSettings:
    """How the model's training videos were sampled; predict samples every video exactly so."""

    fps: float
    height: int
    width: int
    aspect: Literal["letterbox", "crop"]

    @classmethod
    def from_dict(cls, settings: dict, source: str) -> DecodeSettings:
        try:
            return cls(
                float(settings["fps"]),
                int(settings["height"]),
                int(settings["width"]),
                settings["aspect"],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StageError(f"{source}: no usable decode settings ({exc!r})") from None


@dataclass(frozen=True)
class LoadedModel:
    network: keras.Model
    decode: DecodeSettings
    source: str
    """What ``--model`` named (or the default file), as written in each video's JSON."""


def load(reference: str | None, config: Config) -> LoadedModel:
    """The model ``reference`` names (None: the trained classifier of ``config.paths``)."""
    if reference is not None and reference.startswith(URI_SCHEMES):
        return _from_mlflow(reference, tracking_uri(config.tracking))
    path = Path(reference) if reference else config.paths.model("classifier") / MODEL_FILE
    return _from_file(path / MODEL_FILE if path.is_dir() else path)


def _from_file(path: Path) -> LoadedModel:
    card_path = path.with_name(CARD_FILE)
    if not path.is_file():
        raise StageError(f"{path}: model not found (train one with `trailers train`)")
    try:
        card = json.loads(card_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise StageError(f"{card_path}: cannot read the model's decode settings ({exc})") from None
    decode = DecodeSettings.from_dict(card.get("decode") or {}, str(card_path))
    return LoadedModel(_load_keras(path), decode, str(path))


def _from_mlflow(uri: str, store: str) -> LoadedModel:
    import mlflow  # imported here: a model file needs none of MLflow's start-up
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(store)
    try:
        info = mlflow.models.get_model_info(uri)
        with tempfile.TemporaryDirectory(prefix="trailers-model-") as folder:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=folder))
            files = sorted(local.glob(f"artifacts/*{Path(MODEL_FILE).suffix}"))
            if len(files) != 1:
                raise StageError(f"{uri}: expected one .keras file in the logged model")
            network = _load_keras(files[0])
    except MlflowException as exc:
        first_line = str(exc.message).strip().splitlines()[0]
        raise StageError(
            f"{uri}: cannot load from the MLflow store {store}: {first_line}"
        ) from None
    decode = DecodeSettings.from_dict((info.metadata or {}).get("decode") or {}, uri)
    return LoadedModel(network, decode, uri)


def _load_keras(path: Path) -> keras.Model:
    try:
        return keras.saving.load_model(path, compile=False)
    except (OSError, ValueError) as exc:
        raise StageError(f"{path}: not a loadable Keras model ({exc})") from None
