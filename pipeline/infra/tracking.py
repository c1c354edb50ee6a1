"""MLflow for the stages that record runs (train, evaluate): one module, so a run is recorded one
way. Where runs go is :func:`pipeline.core.config.tracking_uri`.

- Every run: is the store reachable (:func:`require_reachable`), then a run (:func:`recorded_run`)
  with the resolved config as params, system metrics, the code's git state (:func:`git_state`:
  dirty means the code changed, not the pipeline's own outputs), the data's version, artifacts;
  what it logs goes through an outbox on disk (:class:`RunOutbox`), so a stage never waits on
  the server, and :func:`sync` sends what it missed. The experiment is tagged as a model
  development one (:data:`EXPERIMENT_KIND`); MLflow 3.17's UI opens it on its runs at the
  address :func:`runs_page` builds (``make ui`` prints it).
- Training runs: tags naming the code, libraries and machine (:func:`run_tags`), the dataset as
  an input (:func:`log_dataset`), the model as a pyfunc (:func:`log_model`; the pyfunc itself is
  :mod:`pipeline.model.pyfunc`). MLflow 3 refuses the file store, so the local default is an
  SQLite store at an absolute path (``dvc exp run --temp`` works in a copy of the repo).
- Evaluation runs (:func:`evaluation_run`): each model's evaluation is a run of its own,
  ``evaluate-<model>``, nested under the run that trained the model (``mlflow.parentRunId``, the
  one link the UI's runs table draws: the evaluations sit under their training run; a tag alone
  shows only as text), also tagged ``training_run_id``, and its metrics logged against that
  run's logged model, so the model's page lists them. A model evaluated again gets another
  child run. With ``evaluate.register_model`` the classifier's logged model becomes a version
  of ``evaluate.registered_model_name`` and gets ``evaluate.alias`` (MLflow 3: aliases, not the
  deprecated stages), through the outbox too.
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
    Run,
    RunTag,
)
from mlflow.exceptions import MlflowException
from mlflow.models import Model, ModelSignature
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
from mlflow.types import Schema, TensorSpec
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT, MLFLOW_PARENT_RUN_ID

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
    retries for minutes); an ``sqlite`` store's folder must be writable, and a store not there
    yet is created whole (:func:`_create_store`). Other stores are left to MLflow.
    """
    if uri.startswith(("http://", "https://")):
        _require_server(uri, timeout_s)
    elif uri.startswith("sqlite:///") and ":memory:" not in uri:
        database = Path(uri.removeprefix("sqlite:///"))
        _require_writable(uri, database.parent)
        if not database.exists():
            _create_store(database)


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


def _create_store(database: Path) -> None:
    """A new SQLite store, created whole: MLflow builds its schema in a second or so of
    migrations, and a process killed among them leaves a database MLflow can no longer open.
    It is built in a hidden file beside ``database`` and linked into place; a store another
    process made first is kept. The default experiment's artifacts go to ``mlruns`` beside the
    database, as every experiment's do (:func:`_use_experiment`)."""
    partial = database.with_name(f".{database.name}.{os.getpid()}.partial")
    try:
        store = SqlAlchemyStore(f"sqlite:///{partial}", (database.parent / "mlruns").as_uri())
        store.engine.dispose()
        try:
            os.link(partial, database)
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links; a concurrent creator is unlikely
            if not database.exists():
                os.replace(partial, database)
    finally:
        partial.unlink(missing_ok=True)


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


def _use_experiment(name: str, uri: str) -> str:
    """Make ``name`` the active experiment. A new one in an SQLite store keeps its artifacts in
    ``mlruns`` beside the database: MLflow's default is ``./mlruns`` of whichever directory
    first creates it, which under ``dvc exp run --temp`` is a copy of the repo deleted after."""
    if uri.startswith("sqlite:///") and mlflow.get_experiment_by_name(name) is None:
        store = Path(uri.removeprefix("sqlite:///")).resolve().parent
        mlflow.create_experiment(name, artifact_location=(store / "mlruns").as_uri())
    experiment = mlflow.set_experiment(name)
    if EXPERIMENT_KIND not in experiment.tags:  # a kind chosen in the UI stays
        MlflowClient().set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND, MODEL_KIND)
    return experiment.experiment_id


EXPERIMENT_KIND = "mlflow.experimentKind"
"""The experiment tag that says what kind of work it holds: MLflow 3's UI writes it from its kind
selector, and its bundle picks an experiment's first page by it only with its workflow switch
off; 3.17.2 ships the switch on and reads the workflow type instead (:data:`RUNS_WORKFLOW`),
so the tag alone does not keep the experiment off the GenAI overview."""

MODEL_KIND = "custom_model_development"
"""The kind whose page is the runs table (the UI's "Machine learning")."""

RUNS_WORKFLOW = "workflowType=machine_learning"
"""What MLflow 3.17's UI reads first: the workflow type in the page's address (else the one
the browser last chose, GenAI at first) decides an experiment's page, the kind tag does not."""


def runs_page(ui: str, experiment_id: str) -> str:
    """The address of the runs table of experiment ``experiment_id`` in the UI at ``ui``."""
    return f"{ui.rstrip('/')}/#/experiments/{experiment_id}/runs?{RUNS_WORKFLOW}"


def experiment_page(config: Config, ui: str) -> str:
    """:func:`runs_page` of ``config.tracking.experiment`` in the UI at ``ui`` (``make ui``),
    or the UI's list of experiments while the store has no such experiment."""
    experiment = MlflowClient(tracking_uri(config.tracking)).get_experiment_by_name(
        config.tracking.experiment
    )
    if experiment is None:
        return f"{ui.rstrip('/')}/#/experiments?{RUNS_WORKFLOW}"
    return runs_page(ui, experiment.experiment_id)


def git_state(written: Sequence[Path] = (), root: Path = PROJECT_ROOT) -> tuple[str, str]:
    """The HEAD commit of the checkout at ``root`` and whether its code changed (``true`` or
    ``false``): a tracked file differs from HEAD, other than what the pipeline itself writes
    (``dvc.lock``, files under ``written``: see :func:`pipeline_outputs`) or a gitignored file.
    ``("unknown", "unknown")`` outside a git checkout."""
    try:
        commit = _git(root, "rev-parse", "HEAD")
        changed = _git(root, "diff", "HEAD", "--name-only", "--no-renames", "-z").split("\0")
        skipped = [Path(path).resolve() for path in (root / PIPELINE_FILE, *written)]
        code = [
            name
            for name in filter(None, changed)
            if not any((root / name).resolve().is_relative_to(path) for path in skipped)
        ]
        ignored = _git(root, "check-ignore", "--no-index", "-z", "--stdin", stdin=code, ok=(1,))
    except (OSError, subprocess.SubprocessError):
        return "unknown", "unknown"
    return commit, json.dumps(bool(set(code) - set(ignored.split("\0"))))


PIPELINE_FILE = "dvc.lock"
"""The one file at the checkout's root that the pipeline rewrites (``dvc repro``, between
stages): a change to it is not a change to the code."""


def pipeline_outputs(config: Config) -> list[Path]:
    """What the stages write (data, outputs, metrics, models, a local MLflow store): changes
    there leave ``git_dirty`` false."""
    paths, uri = config.paths, tracking_uri(config.tracking)
    store = [Path(uri.removeprefix("sqlite:///"))] if uri.startswith("sqlite:///") else []
    return [paths.data, paths.outputs, Path(paths.metrics_dir), paths.models, *store]


def _git(root: Path, *args: str, stdin: Sequence[str] = (), ok: Sequence[int] = ()) -> str:
    """``git args`` in ``root``; its output. Exit codes other than 0 and ``ok`` raise."""
    result = subprocess.run(
        ["git", *args],
        cwd=root,
        input="\0".join(stdin),
        capture_output=True,
        text=True,
        check=False,
        timeout=10,
    )
    if result.returncode and result.returncode not in ok:
        raise subprocess.CalledProcessError(result.returncode, result.args, result.stderr)
    return result.stdout.strip()


def manifest_digest(manifest_path: Path) -> str:
    """The sha256 of the manifest's bytes: every shard's own sha256 is in it, so this names
    the data version."""
    return hashlib.sha256(Path(manifest_path).read_bytes()).hexdigest()


MODEL_NAME = "model"
"""The name of the pyfunc in each run's logged models."""

_MAX_DIGEST = 36
"""MLflow stores a dataset digest in 36 characters at most (``MAX_DATASET_DIGEST_SIZE``)."""


def run_tags(strategy: Any, mixed_precision: bool, config: Config) -> dict[str, str]:
    """Tags naming the code, libraries and machine of a run (``strategy``: a tf.distribute
    strategy). Lists the physical devices, which initialises TensorFlow's runtime."""
    gpus = [_gpu_name(gpu) for gpu in tf.config.list_physical_devices("GPU")]
    cpu = cpu_model()
    commit, dirty = git_state(pipeline_outputs(config))
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
    card_files: Sequence[str] = (),
) -> str:
    """Log the ``.keras`` file at ``model_path`` as run ``run_id``'s pyfunc ``name``; returns
    its model URI. ``input_example``: a short uint8 clip (a few frames; it is stored as JSON);
    ``python_model``: the file that is the pyfunc (:mod:`pipeline.model.pyfunc`), which finds the
    ``.keras`` file under its ``keras_artifact`` key.

    ``decode_settings`` (fps, height, width, aspect) go into the model's metadata, which
    ``mlflow.models.get_model_info(uri).metadata["decode"]`` reads without loading the model.
    ``card_files``: the model folder's other files (its card, the training statistics), logged
    beside the ``.keras`` file under ``artifacts/`` with their own names, so that the
    downloaded ``artifacts/`` folder reads as the model folder does.
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
        artifacts={keras_artifact: str(model_path)} | {Path(f).name: f for f in card_files},
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


def _stored_run(run_id: str | None) -> Run | None:
    """The run ``run_id`` of the active store, or None when the store does not hold it."""
    if not run_id:
        return None
    try:
        return mlflow.get_run(run_id)
    except MlflowException:
        return None


@contextmanager
def evaluation_run(
    config: Config, model: str, training_run_id: str | None, folder: Path
) -> Iterator[tuple[RecordedRun, LoggedModel | None]]:
    """A run ``evaluate-<model>`` whose records go through an outbox in ``folder/<run id>``, as
    a training run's do; yields it and the training run's logged model (None if unknown).

    Tagged with the training run (``training_run_id``), the evaluated split, the data version
    and the code, and nested under the training run (``mlflow.parentRunId``: the UI's runs table
    shows it under that run) when the store holds that run. Call :func:`require_reachable`
    first: the run is created at once.
    """
    mlflow.set_tracking_uri(tracking_uri(config.tracking))
    trained = _stored_run(training_run_id)
    commit, dirty = git_state(pipeline_outputs(config))
    tags = {
        "model": model,
        "stage": "evaluate",
        "split": config.evaluate.split,
        "training_run_id": training_run_id or "unknown",
        "data_version": manifest_digest(config.paths.manifest),
        "git_commit": commit,
        "git_dirty": dirty,
    }
    if trained is not None:
        tags[MLFLOW_PARENT_RUN_ID] = trained.info.run_id
    logged = logged_model(trained.info.run_id) if trained is not None else None
    with recorded_run(config, run_name=f"evaluate-{model}", tags=tags, folder=folder) as record:
        yield record, logged


def registrable(config: Config, training_run_id: str | None) -> None:
    """Raise StageError unless the store holds the model training run ``training_run_id``
    logged (``evaluate.register_model`` registers it): said before evaluating, not after."""
    mlflow.set_tracking_uri(tracking_uri(config.tracking))
    if not training_run_id or logged_model(training_run_id) is None:
        raise StageError(
            f"evaluate.register_model: the store {tracking_uri(config.tracking)} holds no model "
            f"logged by training run {training_run_id} (train the classifier against this store, "
            "or send its waiting records: `trailers train --sync`)"
        )


# A run's record: on disk first, sent by a thread, caught up later if need be.

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
        """Copy ``path`` (a file or a folder) into the outbox (the original may change before
        it is sent)."""
        target = self.folder / "files" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if Path(path).is_dir():
            shutil.rmtree(target, ignore_errors=True)  # a killed process's partial copy
            shutil.copytree(path, target)
        else:
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
    model_id = record.get("model_id")  # logged against that model too: its page lists them
    metrics = [
        Metric(key, value, record["time_ms"], record["step"], model_id=model_id)
        for key, value in record["metrics"].items()
    ]
    client.log_batch(run_id, metrics=metrics, synchronous=True)


def _send_dataset(client: MlflowClient, run_id: str, record: dict) -> None:
    context = InputTag(key=MLFLOW_DATASET_CONTEXT, value=record["context"])
    dataset = DatasetInput(Dataset(**record["dataset"]), tags=[context])
    client.log_inputs(run_id, datasets=[dataset])
    client.set_tag(run_id, "data_version", record["data_version"])


def _send_artifact(client: MlflowClient, run_id: str, record: dict) -> None:
    path = Path(record["path"])
    if path.is_dir():
        client.log_artifacts(run_id, str(path), f"{record['artifact_path']}/{path.name}")
    else:
        client.log_artifact(run_id, str(path), record["artifact_path"])


def _send_model(client: MlflowClient, run_id: str, record: dict) -> None:
    details = dict(record["details"])
    shape, decode = tuple(details.pop("frame_shape")), details.pop("decode_settings")
    log_model(
        Path(record["path"]), shape, decode, np.load(record["example"]), run_id=run_id, **details
    )


def _send_end(client: MlflowClient, run_id: str, record: dict) -> None:
    client.set_terminated(run_id, record["status"], end_time=record["time_ms"])


def _send_register(client: MlflowClient, run_id: str, record: dict) -> None:
    """A new version of the registered model from the logged model, and the alias on it (as
    ``mlflow.register_model``, through this client: the outbox's server, not the process's)."""
    name = record["name"]
    try:
        client.create_registered_model(name)
    except MlflowException as error:
        if error.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    model_id = record["model_id"]
    version = client.create_model_version(name, f"models:/{model_id}", model_id=model_id)
    client.set_registered_model_alias(name, record["alias"], version.version)
    log.info("the classifier is %s version %s, alias %s", name, version.version, record["alias"])


_SENDERS = {
    "params": _send_params,
    "tags": _send_tags,
    "metrics": _send_metrics,
    "dataset": _send_dataset,
    "artifact": _send_artifact,
    "model": _send_model,
    "register": _send_register,
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


class RecordedRun:
    """A run's record (:func:`recorded_run`): what it logs goes through its outbox."""

    def __init__(self, outbox: RunOutbox) -> None:
        self.outbox, self.run_id, self.uri = outbox, outbox.run_id, outbox.uri
        self.complete = False

    def log_metrics(
        self, metrics: Mapping[str, float], step: int, model_id: str | None = None
    ) -> None:
        """Metrics at ``step`` (and against the logged model ``model_id``), unless a killed
        process of this run recorded that step's already (it ended the epoch, not its backup:
        the resumed run repeats it, alike)."""
        if step >= self.outbox.next_step(next(iter(metrics))):
            self.outbox.add("metrics", metrics=dict(metrics), step=step, model_id=model_id)

    def log_params(self, params: Mapping[str, str]) -> None:
        """Params besides the config's (e.g. evaluate's tuned segment rules)."""
        self.outbox.add("params", params=dict(params))

    def register(self, model: LoggedModel, name: str, alias: str) -> None:
        """A new version of the registered model ``name`` from ``model``, with ``alias``."""
        self.outbox.add("register", model_id=model.model_id, name=name, alias=alias)

    def log_dataset(self, manifest_path: Path, rows: Sequence[ShardRow], split: str) -> None:
        """The ``split``'s shard rows as the run's input, the manifest as its data version."""
        self.outbox.add("dataset", context=split, **dataset_record(manifest_path, rows, split))

    def log_artifacts(self, paths: Sequence[Path], artifact_path: str) -> None:
        """Files (or folders) into the run's artifacts under ``artifact_path``."""
        for path in map(Path, paths):
            if not path.exists():
                raise StageError(f"{path}: not found, so it cannot be logged to MLflow")
            kept = self.outbox.keep(path, f"{artifact_path}/{path.name}")
            self.outbox.add("artifact", path=kept, artifact_path=artifact_path)

    def log_model(
        self,
        model_path: Path,
        input_example: np.ndarray,
        card_files: Sequence[Path] = (),
        **details: Any,
    ) -> None:
        """:func:`log_model` when the outbox gets to it, from copies of the files and example;
        ``details``: its ``frame_shape``, ``decode_settings``, ``python_model`` and
        ``keras_artifact``."""
        example = self.outbox.folder / "files" / "model" / "input_example.npy"
        example.parent.mkdir(parents=True, exist_ok=True)
        np.save(example, np.asarray(input_example, dtype=np.uint8))
        path, *cards = (
            self.outbox.keep(file, f"model/{Path(file).name}") for file in (model_path, *card_files)
        )
        details = details | {"card_files": cards}
        self.outbox.add("model", path=path, example=str(example), details=details)


@contextmanager
def recorded_run(
    config: Config,
    *,
    run_name: str,
    tags: Mapping[str, str],
    folder: Path,
    resume: str | None = None,
) -> Iterator[RecordedRun]:
    """A run in ``config.tracking.experiment`` (or the run ``resume``, continued) whose params,
    tags, metrics, system metrics, dataset, model, artifacts and registration go through an
    outbox in ``folder/<run id>``; at the end, ``complete`` says whether the server holds them
    all (the outbox is then removed). Call :func:`require_reachable` first: the run is created
    at once, with ``tags``.
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
        run_id = client.create_run(experiment, run_name=run_name, tags=dict(tags)).info.run_id
    settings = config.tracking
    outbox = RunOutbox(Path(folder) / run_id, uri, run_id, settings.retry_every_s)
    if resume:
        outbox.add("tags", tags=dict(tags))
    else:
        outbox.add("params", params=flatten_params(config.model_dump(mode="json", by_alias=True)))
    outbox.start()
    sampler = _SystemSampler(outbox, settings.system_metrics_interval_s)
    sampler.start()
    record, status = RecordedRun(outbox), "FAILED"
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


def report_complete(records: Sequence[RecordedRun], written: str, sync_command: str) -> None:
    """A stage's last lines: each run complete in MLflow, else RunBehind (exit 75) naming the
    runs, what waits and ``sync_command``; ``written``: what the stage wrote all the same."""
    behind = [record for record in records if not record.complete]
    if behind:
        runs = ", ".join(record.run_id for record in behind)
        pending = sum(record.outbox.pending for record in behind)
        kept = behind[0].outbox.folder if len(behind) == 1 else behind[0].outbox.folder.parent
        lack = "lacks" if len(behind) == 1 else "lack"
        raise RunBehind(
            f"{written}; MLflow run{'s' * (len(behind) > 1)} {runs} at {behind[0].uri} {lack} "
            f"{pending} records, kept in {kept}: send them with `{sync_command}` when the "
            "server answers"
        )
    for record in records:
        refused = f" ({record.outbox.refused} records refused: see above)"
        log.info(
            "MLflow run %s: complete at %s%s",
            record.run_id, record.uri, refused if record.outbox.refused else "",
        )  # fmt: skip


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
