"""The model predict runs and the decode settings it was trained on, from wherever it lives.

``--model`` names a model folder (``models/<name>``) or the network file in one, read through
:mod:`pipeline.core.model_card`, or an MLflow model URI (``runs:/<id>/model``,
``models:/<name>@<alias>``, ``models:/m-<id>``) in the config's tracking store: train logs the
model folder's card and training statistics beside the network, so a logged model is read as a
folder is (what it was trained on, the drift check; a model logged without them has the decode
settings of its metadata alone, and no drift check). The logged model's ``.keras`` file is
downloaded and loaded with this process's own :mod:`pipeline.model`, never through
``mlflow.pyfunc.load_model``: that would put the model's copy of the ``pipeline`` package first on
``sys.path``.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
from tensorflow_metadata.proto.v0 import statistics_pb2

from pipeline.core import model_card
from pipeline.core.config import Config, tracking_uri
from pipeline.core.errors import StageError
from pipeline.core.model_card import DecodeSettings, TrainedModel, TrainingData
from pipeline.core.timeline import SegmentRule
from pipeline.infra.drift import load_statistics
from pipeline.model import load_network

URI_SCHEMES = ("runs:/", "models:/")


@dataclass(frozen=True)
class LoadedModel:
    network: keras.Model
    decode: DecodeSettings
    source: str
    """What ``--model`` named (or the default folder's network file), as written in each
    video's JSON."""
    rules: dict[str, SegmentRule] | None = None
    """The segment rules evaluate tuned for it on val (None: none stored; a model from MLflow
    carries none: evaluate tunes them after it is logged)."""
    trained_on: TrainingData | None = None
    """What it was trained on (its card's; None: an older card, or a model logged without
    its card)."""
    evaluation: dict[str, Any] | None = None
    """Evaluate's headline figures for it (None: not evaluated, or a model from MLflow,
    logged before evaluate ran)."""
    statistics: statistics_pb2.DatasetFeatureStatisticsList | None = None
    """Its training split's TFDV statistics, which each video is compared with (None: the
    folder has none, or a model logged without them)."""


def load(reference: str | None, config: Config) -> LoadedModel:
    """The model ``reference`` names (None: the trained classifier of ``config.paths``)."""
    if reference is not None and reference.startswith(URI_SCHEMES):
        return _from_mlflow(reference, tracking_uri(config.tracking))
    trained = model_card.read(Path(reference) if reference else config.paths.model("classifier"))
    return _loaded(trained, str(trained.network_file))


def _loaded(trained: TrainedModel, source: str) -> LoadedModel:
    network = load_network(trained.network_file)
    rules = None if trained.rules is None else trained.rules["rules"]
    statistics = None if trained.statistics is None else load_statistics(trained.statistics)
    return LoadedModel(
        network,
        trained.card.decode,
        source,
        rules,
        trained.card.trained_on,
        trained.evaluation,
        statistics,
    )


def _from_mlflow(uri: str, store: str) -> LoadedModel:
    """The logged model, with its card and training statistics when train logged them beside
    the network (a model folder's files, under ``artifacts/``), else with the decode settings
    of its metadata alone."""
    import mlflow  # imported here: a model file needs none of MLflow's start-up
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(store)
    try:
        info = mlflow.models.get_model_info(uri)
        with tempfile.TemporaryDirectory(prefix="trailers-model-") as folder:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=folder))
            files = sorted(local.glob(f"artifacts/*{model_card.NETWORK_SUFFIX}"))
            if len(files) != 1:
                raise StageError(f"{uri}: expected one .keras file in the logged model")
            if model_card.has_card(files[0]):
                return _loaded(model_card.read(files[0]), uri)
            network = load_network(files[0])
    except MlflowException as exc:
        first_line = str(exc.message).strip().splitlines()[0]
        raise StageError(
            f"{uri}: cannot load from the MLflow store {store}: {first_line}"
        ) from None
    decode = DecodeSettings.from_dict((info.metadata or {}).get("decode") or {}, uri)
    return LoadedModel(network, decode, uri)
