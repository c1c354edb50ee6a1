"""MLflow for the stages that record runs (train, evaluate): one module, so a run is recorded one
way. Where runs go is :func:`pipeline.core.config.tracking_uri`.

- Every run: is the store reachable (:func:`require_reachable`), a run with the resolved config as
  params and system metrics (:func:`start_run`), the code's git state, the data's version,
  artifacts.
- Training runs: tags naming the code, libraries and machine (:func:`run_tags`), the dataset as
  an input (:func:`log_dataset`), the model as a pyfunc (:func:`log_model`; the pyfunc itself is
  :mod:`pipeline.model.pyfunc`). MLflow 3 refuses the file store, so the local default is an
  SQLite store at an absolute path (``dvc exp run --temp`` works in a copy of the repo).
- Evaluation runs: each model's evaluation is a run of its own, ``evaluate-<model>``, in the
  training runs' experiment (not nested: a training run is finished, and an evaluation may be
  rerun on other data or code), linked both ways MLflow offers: tagged ``training_run_id`` with
  the run that trained the model (its model card), and its metrics logged against that run's
  logged model, so the model's page lists them. With ``evaluate.register_model`` the
  classifier's logged model becomes a version of ``evaluate.registered_model_name`` and gets
  ``evaluate.alias`` (MLflow 3: aliases, not the deprecated stages).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext, suppress
from importlib.metadata import version
from pathlib import Path
from typing import Any

import keras
import mlflow
import mlflow.data
import mlflow.system_metrics
import numpy as np
import pandas as pd
import requests
import tensorflow as tf
from mlflow import MlflowClient
from mlflow.entities import (
    Dataset,
    DatasetInput,
    InputTag,
    LoggedModel,
    Metric,
    Param,
    RunTag,
)
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature
from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
from mlflow.types import Schema, TensorSpec
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from pipeline import GENRES
from pipeline.core.config import PROJECT_ROOT, Config, TrackingConfig, tracking_uri
from pipeline.core.errors import StageError
from pipeline.core.io import (
    DiskFull,
    atomic_open,
    atomic_path,
    naming_disk_full,
    read_json,
    write_json,
)
from pipeline.core.manifest import ShardRow

log = logging.getLogger(__name__)


def require_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Raise StageError, naming ``uri``, when runs could not be recorded there.

    An ``http(s)`` server must answer its ``/health`` within ``timeout_s`` (MLflow's own client
    retries for minutes); an ``sqlite`` store's folder must be writable. Other stores are left
    to MLflow.
    """
    if uri.startswith(("http://", "https://")):
        _require_server(uri, timeout_s)
    elif uri.startswith("sqlite:///") and ":memory:" not in uri:
        _require_writable(uri, Path(uri.removeprefix("sqlite:///")).parent)


def _require_server(uri: str, timeout_s: float) -> None:
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s):
            return
    except urllib.error.HTTPError as error:
        if error.code < 500:  # it answered: an auth or routing question, not reachability
            return
        reason = f"HTTP {error.code}"
    except (urllib.error.URLError, OSError) as error:
        reason = str(getattr(error, "reason", error))
    raise StageError(f"MLflow tracking server {uri} cannot be reached: {reason}")


def _require_writable(uri: str, folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise StageError(f"MLflow store {uri}: cannot create {folder}: {error}") from None
    if not os.access(folder, os.W_OK):
        raise StageError(f"MLflow store {uri}: folder {folder} is not writable")


def flatten_params(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"train": {"window": 8}}`` -> ``{"train.window": "8"}``; values written as in YAML
    (``true``, ``null``, ``[16, 16]``), strings as they are."""
    params: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            params.update(flatten_params(value, f"{name}."))
        else:
            params[name] = value if isinstance(value, str) else json.dumps(value)
    return params


@contextmanager
def start_run(
    config: Config, *, run_name: str, tags: Mapping[str, str]
) -> Iterator[mlflow.ActiveRun]:
    """A run in ``config.tracking.experiment`` with system metrics sampled every
    ``system_metrics_interval_s`` and every resolved config value as a param.

    Call :func:`require_reachable` first: MLflow's client retries an absent server for minutes.
    """
    uri = tracking_uri(config.tracking)
    mlflow.set_tracking_uri(uri)
    _use_experiment(config.tracking.experiment, uri)
    with _sampling_interval(config.tracking.system_metrics_interval_s):
        run = mlflow.start_run(run_name=run_name, tags=dict(tags), log_system_metrics=True)
    with run:
        mlflow.log_params(flatten_params(config.model_dump(mode="json", by_alias=True)))
        yield run


def _use_experiment(name: str, uri: str) -> str:
    """Make ``name`` the active experiment. A new one in an SQLite store keeps its artifacts in
    ``mlruns`` beside the database: MLflow's default is ``./mlruns`` of whichever directory
    first creates it, which under ``dvc exp run --temp`` is a copy of the repo deleted after."""
    if uri.startswith("sqlite:///") and mlflow.get_experiment_by_name(name) is None:
        store = Path(uri.removeprefix("sqlite:///")).resolve().parent
        mlflow.create_experiment(name, artifact_location=(store / "mlruns").as_uri())
    return mlflow.set_experiment(name).experiment_id


@contextmanager
def _sampling_interval(seconds: float) -> Iterator[None]:
    """MLflow reads the interval from its environment variable when a run's monitor starts;
    set it for that moment only, so nothing else in the process sees it."""
    previous = os.environ.get("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL")
    mlflow.system_metrics.set_system_metrics_sampling_interval(seconds)
    try:
        yield
    finally:
        mlflow.system_metrics.set_system_metrics_sampling_interval(
            None if previous is None else float(previous)
        )


def git_state() -> tuple[str, str]:
    """The project's HEAD commit and whether tracked files differ from it (``true``/``false``);
    ``("unknown", "unknown")`` outside a git checkout."""
    try:
        commit = _git("rev-parse", "HEAD")
        changes = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown", "unknown"
    return commit, json.dumps(bool(changes))


def _git(*args: str) -> str:
    result = subprocess.run(
        ["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True, timeout=10
    )
    return result.stdout.strip()


def manifest_digest(manifest_path: Path) -> str:
    """The sha256 of the manifest's bytes: every shard's own sha256 is in it, so this names
    the data version."""
    return hashlib.sha256(Path(manifest_path).read_bytes()).hexdigest()


def log_artifacts(paths: Sequence[Path], artifact_path: str) -> None:
    """Copy files (or folders) into the run's artifacts under ``artifact_path``."""
    for path in map(Path, paths):
        if path.is_dir():
            mlflow.log_artifacts(str(path), f"{artifact_path}/{path.name}")
        elif path.is_file():
            mlflow.log_artifact(str(path), artifact_path)
        else:
            raise StageError(f"{path}: not found, so it cannot be logged to MLflow")


MODEL_NAME = "model"
"""The name of the pyfunc in each run's logged models."""

_MAX_DIGEST = 36
"""MLflow stores a dataset digest in 36 characters at most (``MAX_DATASET_DIGEST_SIZE``)."""


def run_tags(strategy: Any, mixed_precision: bool) -> dict[str, str]:
    """Tags naming the code, libraries and machine of a run (``strategy``: a tf.distribute
    strategy). Lists the physical devices, which initialises TensorFlow's runtime."""
    gpus = [_gpu_name(gpu) for gpu in tf.config.list_physical_devices("GPU")]
    cpu = cpu_model()
    commit, dirty = git_state()
    source = {"mlflow.source.git.commit": commit} if commit != "unknown" else {}
    return {
        **source,
        "git_commit": commit,
        "git_dirty": dirty,
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "cpu": cpu,
        "gpus": ", ".join(gpus) or "none",
        "gpu_count": str(len(gpus)),
        "device": f"{len(gpus)} x {gpus[0]}" if gpus else f"CPU: {cpu}",
        "strategy": type(strategy).__name__,
        "replicas": str(strategy.num_replicas_in_sync),
        "mixed_precision": "on" if mixed_precision else "off",
    }


def _gpu_name(device: tf.config.PhysicalDevice) -> str:
    return tf.config.experimental.get_device_details(device).get("device_name", device.name)


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else what ``platform`` says)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def dataset_record(
    manifest_path: Path, rows: Sequence[ShardRow], split: str, *, digest: str | None = None
) -> dict[str, Any]:
    """The ``split``'s shard rows as an MLflow dataset (its entity's fields) and the manifest's
    ``digest`` (by default :func:`manifest_digest`), the run's ``data_version``.

    The dataset is the manifest's rows, not the frames: MLflow's TensorFlow dataset would read
    every frame to compute its own digest.
    """
    digest = digest or manifest_digest(manifest_path)
    table = pd.DataFrame([row.to_dict() for row in rows if row.split == split])
    # Silences two UserWarnings that say nothing here: a local path "can be interpreted" as
    # either of MLflow's two local sources, and integer columns "cannot represent missing values".
    with warnings.catch_warnings(action="ignore", category=UserWarning):
        dataset = mlflow.data.from_pandas(
            table,
            source=str(Path(manifest_path).resolve()),
            name=f"shards-{split}",
            digest=digest[:_MAX_DIGEST],
        )
        entity = dataset._to_mlflow_entity()  # infers the schema: the second warning
    fields = ("name", "digest", "source_type", "source", "schema", "profile")
    return {"dataset": {key: getattr(entity, key) for key in fields}, "data_version": digest}


def model_signature(frame_shape: tuple[int, int, int]) -> ModelSignature:
    """uint8 ``(-1, -1, *frame_shape)`` frames in; float32 ``(-1, -1)`` per genre out."""
    frames = TensorSpec(np.dtype(np.uint8), (-1, -1, *frame_shape))
    timelines = [TensorSpec(np.dtype(np.float32), (-1, -1), name=genre) for genre in GENRES]
    return ModelSignature(inputs=Schema([frames]), outputs=Schema(timelines))


def model_requirements() -> list[str]:
    """The pinned packages a loaded model needs (not inferred: MLflow would import the model);
    pydantic and PyYAML because the model's layers import :mod:`pipeline.core.config`."""
    packages = ("tensorflow", "keras", "numpy", "mlflow", "pydantic", "pyyaml")
    return [f"{name}=={version(name)}" for name in packages]


def log_model(
    model_path: Path,
    frame_shape: tuple[int, int, int],
    decode_settings: Mapping[str, Any],
    input_example: np.ndarray,
    *,
    python_model: str,
    keras_artifact: str,
    run_id: str,
    name: str = MODEL_NAME,
) -> str:
    """Log the ``.keras`` file at ``model_path`` as run ``run_id``'s pyfunc ``name``; returns
    its model URI. ``input_example``: a short uint8 clip (a few frames; it is stored as JSON);
    ``python_model``: the file that is the pyfunc (:mod:`pipeline.model.pyfunc`), which finds the
    ``.keras`` file under its ``keras_artifact`` key.

    ``decode_settings`` (fps, height, width, aspect) go into the model's metadata, which
    ``mlflow.models.get_model_info(uri).metadata["decode"]`` reads without loading the model.
    """
    # The logged model goes in the run's experiment: left to itself, MLflow puts it in the
    # process's active experiment (the default one in `trailers train --sync`).
    client = MlflowClient()
    run = client.get_run(run_id)
    created = client.create_logged_model(
        run.info.experiment_id,
        name=name,
        source_run_id=run_id,
        params=run.data.params,
    )
    info = Model.log(
        artifact_path=None,
        flavor=mlflow.pyfunc,
        run_id=run_id,
        model_id=created.model_id,
        name=name,
        python_model=python_model,
        artifacts={keras_artifact: str(model_path)},
        code_paths=[str(PROJECT_ROOT / "pipeline")],
        pip_requirements=model_requirements(),
        signature=model_signature(frame_shape),
        input_example=np.asarray(input_example, dtype=np.uint8),
        metadata={
            "decode": dict(decode_settings),
            "genres": list(GENRES),
            "frame_shape": list(frame_shape),
        },
    )
    return info.model_uri


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
    metrics: Mapping[str, float],
    model: LoggedModel | None,
    artifacts: Sequence[Path],
    params: Mapping[str, str] | None = None,
) -> None:
    """Log metrics to the active run (and against the logged model, when known), ``params``
    (e.g. the tuned segment rules) and copy the ``artifacts`` (files or folders) under
    ``evaluate/``."""
    mlflow.log_metrics(dict(metrics), model_id=model.model_id if model else None)
    if params:
        mlflow.log_params(dict(params))
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


# A training run's record: on disk first, sent by a thread, caught up later if need be.

OUTBOX = "mlflow-outbox"
"""The folder, in a stage's outputs, where a run's records wait until the server has them."""

_RECORDS, _SENT, _RUN = "records.jsonl", "sent", "run.json"

_HTTP_SETTINGS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "request_timeout_s",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "request_retries",
}
"""MLflow's HTTP settings -> the ``tracking:`` keys a stage sets them from."""


class RunBehind(StageError):
    """The stage's outputs are written but its MLflow run lacks records kept on disk."""

    exit_code = 75  # EX_TEMPFAIL: try again later (``trailers train --sync``)


def use_short_requests(tracking: TrackingConfig) -> None:
    """MLflow's HTTP timeout and retries from the config, unless the environment sets them: a
    call to an absent server then gives up in seconds instead of retrying for minutes."""
    for variable, key in _HTTP_SETTINGS.items():
        os.environ.setdefault(variable, str(getattr(tracking, key)))


class _OutboxThread(logging.Filter):
    """Drops urllib3's "Retrying" lines from the outbox's sender: the outbox says once that the
    server went away, and once that it is back."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.threadName.startswith(_SENDER)


_SENDER = "mlflow-outbox"
logging.getLogger("urllib3.connectionpool").addFilter(_OutboxThread())


class RunOutbox:
    """What a run logs, appended to ``<folder>/records.jsonl`` (files it names copied beside it)
    and sent in order by a thread of its own; ``sent`` counts the records the server holds.

    The run goes on at full speed when the server goes away: one warning line, records kept,
    tried again every ``retry_every_s`` and sent when it answers. A folder left behind (the
    server was away at the end, or the process was killed) is sent by :func:`sync`.
    """

    def __init__(self, folder: Path, uri: str, run_id: str, retry_every_s: float) -> None:
        self.folder, self.uri, self.run_id = Path(folder), uri, run_id
        self.folder.mkdir(parents=True, exist_ok=True)
        if not (self.folder / _RUN).is_file():
            write_json(self.folder / _RUN, {"tracking_uri": uri, "run_id": run_id})
        self._records = self._read_records()
        self._sent = int((self.folder / _SENT).read_text()) if self.sent_file.is_file() else 0
        self._retry_every_s = retry_every_s
        self._lock = threading.Lock()
        self._wake, self._stop = threading.Event(), threading.Event()
        self._away: str | None = None  # why the server last failed, while it is away
        self._thread: threading.Thread | None = None
        self.refused = 0  # records the server answered with an error (4xx), left out

    @classmethod
    def open(cls, folder: Path, retry_every_s: float = 0.0) -> RunOutbox:
        """The outbox a run left in ``folder``."""
        run = read_json(Path(folder) / _RUN)
        if run is None:
            raise StageError(f"{folder / _RUN}: missing or unreadable, so its run is unknown")
        return cls(folder, run["tracking_uri"], run["run_id"], retry_every_s)

    @property
    def sent_file(self) -> Path:
        return self.folder / _SENT

    @property
    def pending(self) -> int:
        """How many records the server does not hold yet."""
        with self._lock:
            return len(self._records) - self._sent

    @property
    def ended(self) -> bool:
        """Whether the run's end is recorded (a killed run's is not)."""
        with self._lock:
            return any(record["kind"] == "end" for record in self._records)

    def _read_records(self) -> list[dict[str, Any]]:
        """The records on disk; a line a killed process left half-written is dropped (and cut
        from the file, so the next record starts a line of its own)."""
        path = self.folder / _RECORDS
        if not path.is_file():
            return []
        records, whole = [], 0
        for line in path.read_bytes().splitlines(keepends=True):
            try:
                records.append(json.loads(line))
            except ValueError:
                break
            whole += len(line)
        if whole < path.stat().st_size:
            os.truncate(path, whole)
        return records

    def add(self, kind: str, **fields: Any) -> None:
        """Record ``kind`` (a key of :data:`_SENDERS`) with the time now, and wake the sender."""
        record = {"kind": kind, "time_ms": int(time.time() * 1000), **fields}
        line = json.dumps(record) + "\n"
        path = self.folder / _RECORDS
        with self._lock, naming_disk_full(path):
            whole = path.stat().st_size if path.is_file() else 0
            try:
                with path.open("a") as handle:
                    handle.write(line)
            except OSError:
                os.truncate(path, whole)  # a full disk: no half line for the next to follow
                raise
            self._records.append(record)
        self._wake.set()

    def keep(self, path: Path, name: str) -> str:
        """Copy ``path`` into the outbox (the original may change before it is sent)."""
        target = self.folder / "files" / name
        with atomic_path(target) as tmp:
            shutil.copy2(path, tmp)
        return str(target)

    def next_step(self, prefix: str) -> int:
        """One past the last step of the metrics whose names start with ``prefix``."""
        with self._lock:
            steps = [
                record["step"]
                for record in self._records
                if record["kind"] == "metrics"
                and any(name.startswith(prefix) for name in record["metrics"])
            ]
        return max(steps, default=-1) + 1

    def start(self) -> None:
        """Send in the background from now on (records already waiting first)."""
        self._thread = threading.Thread(target=self._send_loop, name=_SENDER, daemon=True)
        self._thread.start()
        self._wake.set()

    def close(self, timeout_s: float) -> bool:
        """Stop the sender after one last try, waiting ``timeout_s`` at most; whether the server
        holds every record."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        return self.pending == 0

    def send(self) -> bool:
        """Send what waits, now, in this thread; whether the server holds every record."""
        return self._send_pending()

    def _send_loop(self) -> None:
        while not self._stop.is_set():
            if self._away:
                self._stop.wait(self._retry_every_s)
            else:
                self._wake.wait()
                self._wake.clear()
            self._send_pending()

    def _send_pending(self) -> bool:
        client = MlflowClient(self.uri)
        while True:
            with self._lock:
                if self._sent == len(self._records):
                    break
                record = self._records[self._sent]
            try:
                _SENDERS[record["kind"]](client, self.run_id, record)
            except Exception as error:  # what a client call raises is open-ended
                if _server_away(error):
                    self._went_away(error)
                    return False
                self.refused += 1
                log.warning(  # the server answered and refused: sending it again cannot help
                    "MLflow run %s: the server refused its %s record (%s); left out",
                    self.run_id, record["kind"], str(error).splitlines()[0],
                )  # fmt: skip
            with self._lock:
                self._sent += 1
                try:
                    with atomic_open(self.sent_file) as handle:
                        handle.write(str(self._sent))
                except DiskFull as full:  # the next record's count says it; training is told
                    log.debug("%s", full)
        if self._away:
            log.info("MLflow tracking server %s answers again: records it missed sent", self.uri)
            self._away = None
        return True

    def _went_away(self, error: Exception) -> None:
        if self._away is None:
            log.warning(
                "MLflow tracking server %s stopped answering (%s): training goes on, its "
                "records wait in %s and are sent when it answers",
                self.uri, _first_line(error), self.folder,
            )  # fmt: skip
        self._away = _first_line(error)


def _first_line(error: Exception) -> str:
    text = str(error).strip().splitlines()
    return text[0][:_REASON_CHARS] if text else type(error).__name__


_REASON_CHARS = 200
"""How much of a client error the warning line quotes."""


def _server_away(error: Exception) -> bool:
    """Whether a failed call may succeed later: no answer, or a server error (HTTP 5xx)."""
    if isinstance(error, MlflowException):
        return error.get_http_status_code() >= 500
    return isinstance(error, OSError | requests.RequestException)


def _send_params(client: MlflowClient, run_id: str, record: dict) -> None:
    params = [Param(key, value) for key, value in record["params"].items()]
    client.log_batch(run_id, params=params, synchronous=True)


def _send_tags(client: MlflowClient, run_id: str, record: dict) -> None:
    tags = [RunTag(key, value) for key, value in record["tags"].items()]
    client.log_batch(run_id, tags=tags, synchronous=True)


def _send_metrics(client: MlflowClient, run_id: str, record: dict) -> None:
    metrics = [
        Metric(key, value, record["time_ms"], record["step"])
        for key, value in record["metrics"].items()
    ]
    client.log_batch(run_id, metrics=metrics, synchronous=True)


def _send_dataset(client: MlflowClient, run_id: str, record: dict) -> None:
    context = InputTag(key=MLFLOW_DATASET_CONTEXT, value=record["context"])
    dataset = DatasetInput(Dataset(**record["dataset"]), tags=[context])
    client.log_inputs(run_id, datasets=[dataset])
    client.set_tag(run_id, "data_version", record["data_version"])


def _send_artifact(client: MlflowClient, run_id: str, record: dict) -> None:
    client.log_artifact(run_id, record["path"], record["artifact_path"])


def _send_model(client: MlflowClient, run_id: str, record: dict) -> None:
    details = dict(record["details"])
    shape, decode = tuple(details.pop("frame_shape")), details.pop("decode_settings")
    log_model(
        Path(record["path"]), shape, decode, np.load(record["example"]), run_id=run_id, **details
    )


def _send_end(client: MlflowClient, run_id: str, record: dict) -> None:
    client.set_terminated(run_id, record["status"], end_time=record["time_ms"])


_SENDERS = {
    "params": _send_params,
    "tags": _send_tags,
    "metrics": _send_metrics,
    "dataset": _send_dataset,
    "artifact": _send_artifact,
    "model": _send_model,
    "end": _send_end,
}


class _SystemSampler(SystemMetricsMonitor):
    """MLflow's system metrics (CPU, memory, disk, network, GPU), sampled every ``interval_s``
    into the outbox: MLflow's own monitor sends them itself and stops for good when a call to
    the server fails."""

    def __init__(self, outbox: RunOutbox, interval_s: float) -> None:
        super().__init__(outbox.run_id, tracking_uri=outbox.uri)
        self.sampling_interval, self._outbox = interval_s, outbox
        self._logging_step = outbox.next_step(self._metrics_prefix)

    def monitor(self) -> None:
        while not self._shutdown_event.is_set():
            self.collect_metrics()
            if self._shutdown_event.wait(self.sampling_interval):
                return
            metrics = self.aggregate_metrics()
            try:
                self._outbox.add(
                    "metrics",
                    metrics={f"{self._metrics_prefix}{k}": v for k, v in metrics.items()},
                    step=self._logging_step,
                )
            except DiskFull as exc:  # the training thread meets it too and stops the stage
                log.warning("system metrics stopped: %s", exc)
                return
            self._logging_step += 1
            for monitor in self.monitors:
                monitor.clear_metrics()

    def finish(self) -> None:
        self._shutdown_event.set()
        if self._process is not None:
            self._process.join()


class TrainingRun:
    """A training run's record (:func:`training_run`): what it logs goes through its outbox."""

    def __init__(self, outbox: RunOutbox) -> None:
        self.outbox, self.run_id, self.uri = outbox, outbox.run_id, outbox.uri
        self.complete = False

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Metrics at ``step``, unless a killed process of this run recorded that step's
        already (it ended the epoch, not its backup: the resumed run repeats it, alike)."""
        if step >= self.outbox.next_step(next(iter(metrics))):
            self.outbox.add("metrics", metrics=dict(metrics), step=step)

    def log_dataset(self, manifest_path: Path, rows: Sequence[ShardRow], split: str) -> None:
        """The ``split``'s shard rows as the run's input, the manifest as its data version."""
        self.outbox.add("dataset", context=split, **dataset_record(manifest_path, rows, split))

    def log_artifacts(self, paths: Sequence[Path], artifact_path: str) -> None:
        """Files into the run's artifacts under ``artifact_path``."""
        for path in map(Path, paths):
            if not path.is_file():
                raise StageError(f"{path}: not found, so it cannot be logged to MLflow")
            kept = self.outbox.keep(path, f"{artifact_path}/{path.name}")
            self.outbox.add("artifact", path=kept, artifact_path=artifact_path)

    def log_model(self, model_path: Path, input_example: np.ndarray, **details: Any) -> None:
        """:func:`log_model` when the outbox gets to it, from copies of the file and example;
        ``details``: its ``frame_shape``, ``decode_settings``, ``python_model`` and
        ``keras_artifact``."""
        example = self.outbox.folder / "files" / "model" / "input_example.npy"
        example.parent.mkdir(parents=True, exist_ok=True)
        np.save(example, np.asarray(input_example, dtype=np.uint8))
        path = self.outbox.keep(model_path, f"model/{Path(model_path).name}")
        self.outbox.add("model", path=path, example=str(example), details=details)


@contextmanager
def training_run(
    config: Config,
    *,
    run_name: str,
    tags: Mapping[str, str],
    folder: Path,
    resume: str | None = None,
) -> Iterator[TrainingRun]:
    """A run in ``config.tracking.experiment`` (or the run ``resume``, continued) whose params,
    tags, metrics, system metrics, dataset, model and artifacts go through an outbox in
    ``folder/<run id>``; at the end, ``complete`` says whether the server holds them all (the
    outbox is then removed). Call :func:`require_reachable` first: the run is created at once.
    """
    uri = tracking_uri(config.tracking)
    use_short_requests(config.tracking)
    mlflow.set_tracking_uri(uri)
    client = MlflowClient(uri)
    if resume:
        client.update_run(resume, status="RUNNING")
        run_id = resume
    else:
        experiment = _use_experiment(config.tracking.experiment, uri)
        run_id = client.create_run(experiment, run_name=run_name).info.run_id
    settings = config.tracking
    outbox = RunOutbox(Path(folder) / run_id, uri, run_id, settings.retry_every_s)
    if not resume:
        outbox.add("params", params=flatten_params(config.model_dump(mode="json", by_alias=True)))
    outbox.add("tags", tags=dict(tags))
    outbox.start()
    sampler = _SystemSampler(outbox, settings.system_metrics_interval_s)
    sampler.start()
    record, status = TrainingRun(outbox), "FAILED"
    try:
        yield record
        status = "FINISHED"
    finally:
        sampler.finish()
        with suppress(DiskFull) if status == "FAILED" else nullcontext():
            outbox.add("end", status=status)  # failed: the error that stops the stage is told
        record.complete = outbox.close(settings.flush_timeout_s)
        if record.complete:
            shutil.rmtree(outbox.folder)


def sync(folder: Path, tracking: TrackingConfig) -> list[str]:
    """Send what the runs' outboxes in ``folder`` (``<folder>/<run id>/``) still hold; one line
    per run says what became of it. An outbox the server now holds entirely is removed (one
    of a run that has not ended stays: its training resumes into it)."""
    use_short_requests(tracking)
    lines = []
    for path in sorted(Path(folder).glob(f"*/{_RUN}")):
        outbox = RunOutbox.open(path.parent)
        require_reachable(outbox.uri)
        mlflow.set_tracking_uri(outbox.uri)  # where log_model's client goes
        waiting = outbox.pending
        if not outbox.send():
            raise StageError(
                f"MLflow run {outbox.run_id}: {outbox.uri} stopped answering, "
                f"{outbox.pending} records still wait in {outbox.folder}"
            )
        refused = f", {outbox.refused} refused: see above" if outbox.refused else ""
        if outbox.ended:
            shutil.rmtree(outbox.folder)
            lines.append(
                f"MLflow run {outbox.run_id}: complete at {outbox.uri} ({waiting} sent{refused})"
            )
        else:
            lines.append(
                f"MLflow run {outbox.run_id}: {waiting} records sent to {outbox.uri}{refused}; "
                "its training has not ended (rerun it to resume)"
            )
    return lines
