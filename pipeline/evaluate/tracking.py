"""MLflow for the evaluate stage: a linked evaluation run per model, and the Model Registry.

Each model's evaluation is a run of its own, ``evaluate-<model>``, in the training runs'
experiment (not nested: a training run is finished, and an evaluation may be rerun on other data
or code), linked both ways MLflow offers: tagged ``training_run_id`` with the run that trained
the model (``models/<model>/model.json``), and its metrics logged against that run's logged
model, so the model's page lists them. With ``evaluate.register_model`` the classifier's logged
model becomes a version of ``evaluate.registered_model_name`` and gets ``evaluate.alias``
(MLflow 3: aliases, not the deprecated stages).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import mlflow
from mlflow.entities import LoggedModel

from pipeline.config import Config, tracking_uri
from pipeline.errors import StageError
from pipeline.tracking import git_state, log_artifacts, manifest_digest, start_run


def logged_model(training_run_id: str) -> LoggedModel | None:
    """The model the training run logged (its latest, if it logged several), or None when the
    store does not hold that run or it logged none."""
    try:
        run = mlflow.get_run(training_run_id)
    except mlflow.exceptions.MlflowException:
        return None
    models = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{training_run_id}'",
        order_by=[{"field_name": "creation_timestamp", "ascending": False}],
        output_format="list",
    )
    return models[0] if models else None


@contextmanager
def evaluation_run(
    config: Config, model: str, training_run_id: str | None
) -> Iterator[LoggedModel | None]:
    """An active run ``evaluate-<model>`` tagged with the training run, the evaluated split,
    the data version and the code; yields the training run's logged model (None if unknown)."""
    commit, dirty = git_state()
    tags = {
        "model": model,
        "stage": "evaluate",
        "split": config.evaluate.split,
        "training_run_id": training_run_id or "unknown",
        "data_version": manifest_digest(config.paths.manifest),
        "git_commit": commit,
        "git_dirty": dirty,
    }
    with start_run(config, run_name=f"evaluate-{model}", tags=tags):
        yield logged_model(training_run_id) if training_run_id else None


def log_evaluation(
    metrics: Mapping[str, float], model: LoggedModel | None, artifacts: Sequence[Path]
) -> None:
    """Log metrics to the active run (and against the logged model, when known) and copy the
    ``artifacts`` (files or folders) under ``evaluate/``."""
    mlflow.log_metrics(dict(metrics), model_id=model.model_id if model else None)
    log_artifacts(artifacts, "evaluate")


def register(model: LoggedModel | None, training_run_id: str | None, config: Config) -> str:
    """Register ``model`` as a new version of ``evaluate.registered_model_name``, point
    ``evaluate.alias`` at it, and return the version (MLflow prints what it registered)."""
    if model is None:
        raise StageError(
            f"evaluate.register_model: the store {tracking_uri(config.tracking)} holds no model "
            f"logged by training run {training_run_id} (train the classifier against this store)"
        )
    name, alias = config.evaluate.registered_model_name, config.evaluate.alias
    version = mlflow.register_model(f"models:/{model.model_id}", name)
    mlflow.MlflowClient().set_registered_model_alias(name, alias, version.version)
    return str(version.version)
