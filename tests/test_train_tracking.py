"""The train stage's MLflow record, against a real ``mlflow server`` started on 127.0.0.1.

``trailers train`` runs two epochs on the validated smoke corpus; the run is then read back through
``MlflowClient`` (params, per-genre metric history, tags, dataset input, system metrics, model)
and the model is loaded with ``mlflow.pyfunc.load_model`` in a fresh process that cannot import
the repository's ``pipeline``. Plus where runs go (URI resolution) and failing fast when they
cannot.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import (
    SMOKE_CONFIG,
    TRAINED_EPOCHS,
    copy_corpus,
    path_overrides,
    trailers,
    trailers_command,
)
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from tcp_gate import TcpGate

import pipeline.model  # noqa: F401  registers the layers the saved model names
from pipeline import GENRES
from pipeline.core import model_card
from pipeline.core.config import PROJECT_ROOT, TrackingConfig, load_config
from pipeline.core.errors import StageError
from pipeline.core.manifest import read_manifest, write_manifest
from pipeline.infra import tracking

pytestmark = pytest.mark.xdist_group("mlflow_server")
"""One `mlflow server` per run: these tests run in one xdist worker."""

SMOKE = load_config(PROJECT_ROOT / "configs" / "smoke.yaml")
OVERRIDES = ("train.epochs=2", "train.weak_labels=mil", "train.window=16")
"""The run's ``--set``: smoke trailers are 16 frames at most, so a window holds a whole bag."""
FRAME = (3, SMOKE.decode.height, SMOKE.decode.width)
MLFLOW = Path(sys.executable).with_name("mlflow")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, server: subprocess.Popen, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"mlflow server exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1):
                return
        except OSError:
            time.sleep(0.25)
    raise TimeoutError(f"mlflow server at {url} not healthy after {timeout_s} s")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real tracking server with its own SQLite store and proxied artifacts."""
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    log = (root / "server.log").open("wb")
    process = subprocess.Popen(
        [
            str(MLFLOW),
            "server",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],  # fmt: skip
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_healthy(url, process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture(scope="module")
def logged(
    server: str, validated_corpus: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict]:
    """``trailers train`` on the validated smoke corpus, its train trailers relabelled at
    trailer level and trained as bags (``train.weak_labels: mil``, windows of whole trailers),
    tracked by the server; what the tests read back (with ``MLFLOW_TRACKING_URI`` set to the
    server meanwhile)."""
    root = copy_corpus(validated_corpus, tmp_path_factory.mktemp("run"))
    manifest = root / "data" / "shards" / "manifest.jsonl"
    rows = read_manifest(manifest)
    write_manifest(
        manifest,
        [dataclasses.replace(r, label_level="trailer") if r.split == "train" else r for r in rows],
    )
    result = trailers(
        "train",
        *path_overrides(root),
        f"tracking.tracking_uri={server}",
        *OVERRIDES,
        cwd=root,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(server)
    experiment = client.get_experiment_by_name(SMOKE.tracking.experiment)
    # The experiment also holds the other fixtures' runs: this one is the classifier's.
    (run,) = client.search_runs([experiment.experiment_id], "attributes.run_name = 'classifier'")
    source = f"source_run_id = '{run.info.run_id}'"
    (model,) = client.search_logged_models([experiment.experiment_id], filter_string=source)
    clip = np.random.default_rng(1).integers(0, 256, (1, 5, *FRAME), dtype=np.uint8)
    trained = keras.saving.load_model(root / "models" / "classifier" / "model.keras")
    expected = trained(clip, training=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", server)
        yield {
            "root": root,
            "run_id": run.info.run_id,
            "model_uri": f"models:/{model.model_id}",
            "digest": hashlib.sha256(manifest.read_bytes()).hexdigest(),
            "train_rows": sum(row.split == "train" for row in rows),
            "train_trailers": len({row.trailer_id for row in rows if row.split == "train"}),
            "params": {
                **tracking.flatten_params(SMOKE.model_dump(mode="json", by_alias=True)),
                **tracking.flatten_params(
                    {"paths": load_config(SMOKE_CONFIG, path_overrides(root)).paths.model_dump()}
                ),
                "tracking.tracking_uri": server,
                **dict(override.split("=") for override in OVERRIDES),
            },
            "card": model_card.read(root / "models" / "classifier").card,
            "decode": {
                key: getattr(SMOKE.decode, key) for key in ("fps", "height", "width", "aspect")
            },
            "clip": clip,
            "expected": {genre: np.asarray(expected[genre])[..., 0] for genre in GENRES},
            "client": client,
        }


@pytest.mark.slow
def test_every_config_value_is_a_param(logged: dict) -> None:
    params = logged["client"].get_run(logged["run_id"]).data.params
    assert params["train.window"] == "16"  # the --set override: a whole smoke trailer
    assert params["decode.fps"] == "8.0"
    assert params["validate.drift_features"] == '["frame_brightness"]'
    assert params["train.epochs"] == "2"  # the --set override, as the run resolved it
    assert params["train.augment.horizontal_flip"] == "true"
    assert params["train.weak_labels"] == "mil"
    assert params["train.mil_pooling"] == "top_k"
    assert params == logged["params"]


@pytest.mark.slow
def test_the_run_and_the_model_card_record_how_labels_were_read(logged: dict) -> None:
    tags = logged["client"].get_run(logged["run_id"]).data.tags
    assert tags["train_trailers"] == f"0 segment, {logged['train_trailers']} trailer"
    assert tags["monitor"] == "val_macro_auc_pr"  # val is segment-labelled
    assert logged["card"].labels == {
        "weak_labels": "mil",
        "mil_pooling": "top_k",
        "mil_top_fraction": SMOKE.train.mil_top_fraction,
        "train_trailers": {"segment": 0, "trailer": logged["train_trailers"]},
    }


@pytest.mark.slow
def test_metrics_per_genre_and_epoch(logged: dict) -> None:
    client = logged["client"]
    for genre in GENRES:
        trailer = f"val_{genre}_trailer_auc_pr"  # trailer-level labels in play
        for name in (f"{genre}_auc_pr", f"val_{genre}_auc_pr", trailer, f"{genre}_loss"):
            history = client.get_metric_history(logged["run_id"], name)
            assert sorted(m.step for m in history) == [0, 1], name
    losses = client.get_metric_history(logged["run_id"], "loss")
    assert len(losses) == 2 and all(np.isfinite(m.value) for m in losses)


@pytest.mark.slow
def test_tags_name_code_libraries_data_and_machine(logged: dict) -> None:
    tags = logged["client"].get_run(logged["run_id"]).data.tags
    commit = tags["git_commit"]
    kind = subprocess.run(
        ["git", "cat-file", "-t", commit], cwd=PROJECT_ROOT, capture_output=True, text=True
    ).stdout.strip()
    assert kind == "commit" and len(commit) == 40  # HEAD may move: the tree is shared
    assert tags["mlflow.source.git.commit"] == commit
    assert tags["git_dirty"] in ("true", "false")
    assert tags["tensorflow_version"] == tf.__version__
    assert tags["keras_version"] == keras.__version__
    assert tags["strategy"] == type(tf.distribute.get_strategy()).__name__
    assert tags["replicas"] == "1"
    assert tags["mixed_precision"] == "off"
    assert tags["gpu_count"] == str(len(tf.config.list_physical_devices("GPU")))
    assert tags["device"] and tags["cpu"] != "unknown"
    assert tags["data_version"] == logged["digest"]


@pytest.mark.slow
def test_dataset_input_is_the_split_rows(logged: dict) -> None:
    inputs = logged["client"].get_run(logged["run_id"]).inputs.dataset_inputs
    assert len(inputs) == 1
    dataset = inputs[0].dataset
    assert dataset.name == "shards-train"
    assert logged["digest"].startswith(dataset.digest)
    assert json.loads(dataset.profile)["num_rows"] == logged["train_rows"]
    assert {tag.key: tag.value for tag in inputs[0].tags}["mlflow.data.context"] == "train"


@pytest.mark.slow
def test_system_metrics_are_sampled(logged: dict) -> None:
    metrics = logged["client"].get_run(logged["run_id"]).data.metrics
    assert "system/cpu_utilization_percentage" in metrics
    assert "system/system_memory_usage_megabytes" in metrics


@pytest.mark.slow
def test_model_and_artifacts_are_logged(logged: dict) -> None:
    import mlflow

    client = logged["client"]
    validate = [a.path for a in client.list_artifacts(logged["run_id"], "validate")]
    assert validate == ["validate/report.md", "validate/schema.pbtxt"]
    info = mlflow.models.get_model_info(logged["model_uri"])
    assert info.run_id == logged["run_id"]
    assert info.metadata["decode"] == logged["decode"]
    (frames,) = info.signature.inputs.inputs
    assert (frames.type, frames.shape) == (np.dtype(np.uint8), (-1, -1, *FRAME))
    timelines = info.signature.outputs.inputs
    assert [spec.name for spec in timelines] == list(GENRES)
    assert {(spec.type, spec.shape) for spec in timelines} == {(np.dtype(np.float32), (-1, -1))}
    requirements = Path(mlflow.pyfunc.get_model_dependencies(logged["model_uri"]))
    assert requirements.read_text().split() == tracking.model_requirements()  # none inferred
    assert "tensorflow==2.16.2" in tracking.model_requirements()
    files = {Path(a.path).name for a in client.list_logged_model_artifacts(info.model_id)}
    assert {"MLmodel", "requirements.txt", "input_example.json", "code", "artifacts"} <= files


FRESH_PROCESS = """
import json, sys
import numpy as np
import mlflow.pyfunc
assert "pipeline" not in sys.modules
model = mlflow.pyfunc.load_model(sys.argv[1])
clip = np.load(sys.argv[2])
out = model.predict(clip)
print(json.dumps({
    "pipeline": sys.modules["pipeline"].__file__,
    "out": {genre: value.tolist() for genre, value in out.items()},
}))
"""


@pytest.mark.slow
def test_model_loads_and_predicts_in_a_fresh_process(logged: dict, tmp_path: Path) -> None:
    clip_path = tmp_path / "clip.npy"
    np.save(clip_path, logged["clip"])
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS, logged["model_uri"], str(clip_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    assert not answer["pipeline"].startswith(str(PROJECT_ROOT))  # the model's own copy
    for genre in GENRES:
        timeline = np.asarray(answer["out"][genre])
        assert timeline.shape == (1, 5)
        assert ((timeline >= 0) & (timeline <= 1)).all()
        np.testing.assert_allclose(timeline, logged["expected"][genre], rtol=1e-5, atol=1e-6)


def test_tracking_uri_config_then_environment_then_project_sqlite(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert tracking.tracking_uri(TrackingConfig(tracking_uri="http://config:5000")) == (
        "http://config:5000"
    )
    assert tracking.tracking_uri(TrackingConfig()) == "http://env:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert tracking.tracking_uri(TrackingConfig()) == f"sqlite:///{PROJECT_ROOT}/mlflow.db"
    assert tracking.tracking_uri(TrackingConfig()).startswith("sqlite:////")  # absolute


def test_unreachable_server_fails_fast_naming_the_uri() -> None:
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there any more
    start = time.monotonic()
    with pytest.raises(StageError, match=f"^MLflow tracking server {uri} cannot be reached"):
        tracking.require_reachable(uri, timeout_s=2)
    assert time.monotonic() - start < 5


def test_sqlite_store_needs_a_writable_folder(tmp_path: Path) -> None:
    tracking.require_reachable(f"sqlite:///{tmp_path}/new/mlflow.db")
    assert (tmp_path / "new").is_dir()
    blocker = tmp_path / "file"
    blocker.write_text("")
    uri = f"sqlite:///{blocker}/mlflow.db"
    with pytest.raises(StageError, match=f"^MLflow store {uri}: cannot create"):
        tracking.require_reachable(uri)


KILLED_AMONG_MIGRATIONS = """
import os, signal, sys
from sqlalchemy import event
from sqlalchemy.engine import Engine
from pipeline.infra.tracking import require_reachable

statements = 0


@event.listens_for(Engine, "before_cursor_execute")
def killed_midway(*args):
    global statements
    statements += 1
    if statements == int(sys.argv[2]):
        os.kill(os.getpid(), signal.SIGKILL)


require_reachable(sys.argv[1])
"""


def test_a_process_killed_while_the_store_is_made_leaves_none_half_made(tmp_path: Path) -> None:
    # MLflow 3.17 makes a new SQLite store in about 1,700 statements; the kill comes midway,
    # where a store MLflow made in place can no longer be opened.
    database = tmp_path / "mlflow.db"
    uri = f"sqlite:///{database}"
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_AMONG_MIGRATIONS, uri, "800"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not database.exists()
    tracking.require_reachable(uri)
    client = MlflowClient(uri)
    client.create_experiment("after the kill")
    assert {e.name for e in client.search_experiments()} == {"Default", "after the kill"}


def test_params_are_flat_dotted_keys_written_as_yaml() -> None:
    nested = {"train": {"window": 8, "augment": {"horizontal_flip": True}}, "seed": 0}
    nested["tracking"] = {"tracking_uri": None, "experiment": "x", "sizes": [16, 16]}
    assert tracking.flatten_params(nested) == {
        "train.window": "8",
        "train.augment.horizontal_flip": "true",
        "seed": "0",
        "tracking.tracking_uri": "null",
        "tracking.experiment": "x",
        "tracking.sizes": "[16, 16]",
    }


@pytest.mark.slow
def test_local_store_keeps_artifacts_beside_the_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"  # the directory a `dvc exp run --temp` copy would be
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    store = tmp_path / "store"
    config = load_config(
        PROJECT_ROOT / "configs" / "smoke.yaml",
        [f"tracking.tracking_uri=sqlite:///{store}/mlflow.db", "tracking.experiment=local"],
    )
    tracking.require_reachable(tracking.tracking_uri(config.tracking))
    outbox = tmp_path / "outbox"
    with tracking.recorded_run(config, run_name="local", tags={}, folder=outbox) as record:
        record.log_artifacts([PROJECT_ROOT / "configs" / "smoke.yaml"], "config")
    assert record.complete and (store / "mlflow.db").is_file()
    run = MlflowClient(tracking.tracking_uri(config.tracking)).get_run(record.run_id)
    assert run.info.artifact_uri == (store / "mlruns" / run.info.run_id / "artifacts").as_uri()
    assert (store / "mlruns" / run.info.run_id / "artifacts" / "config" / "smoke.yaml").is_file()
    assert not (elsewhere / "mlruns").exists()


def open_gate(server: str) -> TcpGate:
    """The module's server behind a gate, open: shut it and the server goes away."""
    host, port = server.removeprefix("http://").split(":")
    gate = TcpGate((host, int(port)))
    gate.open()
    return gate


@pytest.fixture
def gate(server: str) -> Iterator[TcpGate]:
    """The module's server behind a gate a test shuts (the server goes away) and opens again."""
    gate = open_gate(server)
    yield gate
    gate.shut()


def wait_for(condition, timeout_s: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        time.sleep(0.05)


def steps(client: MlflowClient, run_id: str, name: str = "loss") -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, name))


@pytest.mark.slow
def test_a_server_that_drops_and_returns_within_the_run_loses_nothing(
    gate: TcpGate, server: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The outbox of a run in this process, against the real server behind the gate: logging
    never waits while it is away, and what it missed arrives when it is back, without a sync."""
    config = load_config(
        SMOKE_CONFIG,
        [
            f"tracking.tracking_uri={gate.url}",
            "tracking.experiment=outbox",
            "tracking.retry_every_s=0.2",
        ],
    )
    client = MlflowClient(server)
    with tracking.recorded_run(config, run_name="drop", tags={}, folder=tmp_path) as record:
        record.log_metrics({"loss": 0.5}, 0)
        wait_for(lambda: steps(client, record.run_id) == [(0, 0.5)], what="step 0 sent")
        gate.shut()
        started = time.monotonic()
        for step in (1, 2, 3):
            record.log_metrics({"loss": step / 8}, step)
        assert time.monotonic() - started < 0.5  # on disk, not on the wire
        wait_for(lambda: "stopped answering" in caplog.text, what="the outage noticed")
        gate.open()
        wait_for(lambda: len(steps(client, record.run_id)) == 4, what="the missed steps sent")
        record.log_metrics({"loss": 0.625}, 4)
    assert record.complete and not (tmp_path / record.run_id).exists()
    assert steps(client, record.run_id) == [(0, 0.5), (1, 0.125), (2, 0.25), (3, 0.375), (4, 0.625)]
    assert client.get_run(record.run_id).info.status == "FINISHED"
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and "tracking" in r.name]
    assert len(warnings) == 1 and gate.url in warnings[0].getMessage()


def test_a_record_half_written_by_a_killed_process_is_dropped(tmp_path: Path) -> None:
    outbox = tracking.RunOutbox(tmp_path, "http://127.0.0.1:1", "run", retry_every_s=1)
    outbox.add("metrics", metrics={"loss": 1.0}, step=0)
    with (tmp_path / "records.jsonl").open("a") as records:
        records.write('{"kind": "metrics", "metr')  # the kill landed here
    reopened = tracking.RunOutbox.open(tmp_path)
    assert reopened.pending == 1 and reopened.next_step("loss") == 1
    reopened.add("end", status="FINISHED")
    assert tracking.RunOutbox.open(tmp_path).pending == 2 and reopened.ended


@pytest.fixture(scope="module")
def gone_for_good(
    server: str, validated_corpus: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict:
    """``trailers train`` of the baseline as the session's trained corpus was (same seed and
    epochs, tracked in SQLite), the server behind a gate shut after its first epoch and never
    opened again; then, the gate open, ``trailers train --sync``. What each printed (its run
    then also serves the evaluation's tests)."""
    root = copy_corpus(validated_corpus, tmp_path_factory.mktemp("gone"))
    gate = open_gate(server)
    overrides = [*path_overrides(root), f"tracking.tracking_uri={gate.url}"]
    command = trailers_command(
        "train", "--model=baseline", *overrides, f"train.epochs={TRAINED_EPOCHS}"
    )
    out = root / "outputs" / "train" / "baseline"
    started = time.monotonic()
    process = subprocess.Popen(
        command, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for(lambda: (out / "history.csv").is_file() or process.poll() is not None, 300)
        gate.shut()
        stderr = process.communicate(timeout=300)[1]
        wall_s = time.monotonic() - started
        gate.open()
        synced = trailers("train", "--model=baseline", "--sync", *overrides, cwd=root)
    finally:
        process.kill()
        gate.shut()
    return {
        "root": root,
        "url": gate.url,
        "returncode": process.returncode,
        "stderr": stderr,
        "wall_s": wall_s,
        "synced": synced,
    }


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_server_gone_for_good_neither_stalls_nor_changes_training_and_sync_completes_it(
    gone_for_good: dict, server: str, trained_corpus: Path
) -> None:
    root, stderr, url = gone_for_good["root"], gone_for_good["stderr"], gone_for_good["url"]
    out = root / "outputs" / "train" / "baseline"
    assert gone_for_good["returncode"] == 75, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert "trailers train --model baseline --sync" in last and url in last
    assert stderr.count("stopped answering") == 1 and "Retrying" not in stderr

    # The outputs are the undisturbed run's.
    for name in ("outputs/train/baseline/history.csv", "metrics/train_baseline.json"):
        assert (root / name).read_bytes() == (trained_corpus / name).read_bytes(), name
    ours, theirs = (
        keras.saving.load_model(r / "models/baseline/model.keras") for r in (root, trained_corpus)
    )
    assert all(
        np.array_equal(a, b) for a, b in zip(ours.get_weights(), theirs.get_weights(), strict=True)
    )

    # Back: the sync makes the run whole.
    synced = gone_for_good["synced"]
    assert synced.returncode == 0, synced.stderr[-3000:]
    assert "complete" in synced.stderr.strip().splitlines()[-1]
    assert not list((out / tracking.OUTBOX).iterdir())
    client = MlflowClient(server)
    run_id = json.loads((root / "models" / "baseline" / "model.json").read_text())["mlflow_run_id"]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    with (out / "history.csv").open(newline="") as handle:
        history = list(csv.DictReader(handle))
    for name in history[0].keys() - {"epoch"}:
        assert steps(client, run_id, name) == [
            (int(row["epoch"]), float(row[name])) for row in history
        ], name
    assert (
        run.data.params["train.epochs"] == str(TRAINED_EPOCHS)
        and run.data.tags["model"] == "baseline"
    )
    assert [d.dataset.name for d in run.inputs.dataset_inputs] == ["shards-train"]
    source = f"source_run_id = '{run_id}'"
    assert client.search_logged_models([run.info.experiment_id], filter_string=source)
    assert [a.path for a in client.list_artifacts(run_id, "validate")] == [
        "validate/report.md",
        "validate/schema.pbtxt",
    ]

    # No slower than the undisturbed run, by MLflow's own times: from the end of the first
    # epoch (the outage began there; the first epoch is mostly tracing, which the machine's load
    # dominates) to the run's end. The reference ran at another moment of a shared machine, so
    # SLACK_S absorbs load noise; a call that waited on the absent server would not fit in it.
    undisturbed = MlflowClient(f"sqlite:///{trained_corpus / 'mlflow.db'}")
    trained = model_card.read(trained_corpus / "models" / "baseline").card  # its training run
    reference = undisturbed.get_run(trained.mlflow_run_id)

    def after_first_epoch(client: MlflowClient, run) -> float:
        first = min(m.timestamp for m in client.get_metric_history(run.info.run_id, "loss"))
        return (run.info.end_time - first) / 1000

    took, reference_s = after_first_epoch(client, run), after_first_epoch(undisturbed, reference)
    print(
        f"after epoch 1: {took:.1f} s with the server gone "
        f"(process {gone_for_good['wall_s']:.1f} s in all), "
        f"{reference_s:.1f} s undisturbed"
    )
    assert took <= 1.2 * reference_s + SLACK_S


SLACK_S = 10.0
"""Seconds of load noise allowed between two runs of the shared test machine."""


def git(root: Path, *args: str) -> None:
    identity = ("-c", "user.name=test", "-c", "user.email=test@example.com")
    subprocess.run(["git", *identity, *args], cwd=root, check=True, capture_output=True)


def test_git_dirty_means_the_code_changed_not_the_pipeline_outputs(tmp_path: Path) -> None:
    """A real checkout in tmp: what ``dvc repro`` rewrites between stages (``dvc.lock``, the
    metrics, outputs), or a gitignored file, leaves ``git_dirty`` false; code or config, true."""
    root = tmp_path / "repo"
    files = (
        "pipeline/stage.py",
        "configs/pipeline.yaml",
        "dvc.lock",
        "metrics/evaluate.json",
        "outputs/evaluate/pr/comedy.csv",
        "notes/scratch.txt",
    )
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("first\n")
    (root / ".gitignore").write_text("/notes/\n")
    git(root, "init", "-q")
    git(root, "add", "--force", ".")  # notes/ too: tracked, and ignored
    git(root, "commit", "-q", "-m", "first")
    config = load_config(
        SMOKE_CONFIG,
        [f"{key}={root / name}" for key, name in (("paths.data_dir", "data"),
         ("paths.outputs_dir", "outputs"), ("paths.metrics_dir", "metrics"),
         ("paths.models_dir", "models"))] + [f"tracking.tracking_uri=sqlite:///{root}/mlflow.db"],
    )  # fmt: skip
    written = tracking.pipeline_outputs(config)
    assert root / "mlflow.db" in written

    def dirty() -> str:
        commit, state = tracking.git_state(written, root)
        assert len(commit) == 40
        return state

    assert dirty() == "false"
    for name in ("dvc.lock", "metrics/evaluate.json", "outputs/evaluate/pr/comedy.csv"):
        (root / name).write_text("rewritten by the pipeline\n")
        assert dirty() == "false", name
    (root / "notes/scratch.txt").write_text("changed, ignored\n")
    assert dirty() == "false"
    (root / "pipeline/stage.py").write_text("changed code\n")
    assert dirty() == "true"
    git(root, "checkout", "pipeline/stage.py")
    assert dirty() == "false"
    (root / "configs/pipeline.yaml").write_text("a changed param\n")
    git(root, "add", "configs/pipeline.yaml")  # staged counts too
    assert dirty() == "true"
    assert tracking.git_state(written, tmp_path) == ("unknown", "unknown")  # not a checkout


@pytest.fixture(scope="module")
def evaluated(
    server: str,
    logged: dict,
    gone_for_good: dict,
    validated_corpus: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict]:
    """``trailers evaluate`` of the classifier :func:`logged` and the baseline
    :func:`gone_for_good` trained against the server, the server cut off (a gate) as soon as
    the evaluation runs exist; then, the gate open again, ``trailers evaluate --sync`` (in this
    process). What the server held before and after the sync."""
    root = copy_corpus(validated_corpus, tmp_path_factory.mktemp("evaluate"))
    for model, trained in (("classifier", logged["root"]), ("baseline", gone_for_good["root"])):
        shutil.copytree(trained / "models" / model, root / "models" / model)
    assert gone_for_good["synced"].returncode == 0  # its run is on the server
    started = time.monotonic()
    gate = open_gate(server)
    client = MlflowClient(server)
    experiment = client.get_experiment_by_name(SMOKE.tracking.experiment).experiment_id

    def evaluations() -> dict:
        runs = client.search_runs([experiment], "tags.stage = 'evaluate'")
        return {run.info.run_name: run for run in runs}

    overrides = [*path_overrides(root), f"tracking.tracking_uri={gate.url}"]
    process = subprocess.Popen(
        trailers_command("evaluate", *overrides),
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: len(evaluations()) == 2 or process.poll() is not None, 300)
        gate.shut()
        stderr = process.communicate(timeout=300)[1]
        took = {"evaluate": time.monotonic() - started}
        before, alias_before = evaluations(), alias(client)
        gate.open()
        from pipeline.evaluate.run import run as evaluate  # imports TensorFlow

        synced = time.monotonic()
        evaluate(load_config(SMOKE_CONFIG, overrides), sync=True)
        took["sync"] = time.monotonic() - synced
        print(", ".join(f"{part} {seconds:.1f} s" for part, seconds in took.items()))
    finally:
        process.kill()
        gate.shut()
    cards = {model: model_card.read(root / "models" / model).card for model in MODELS}
    yield {
        "root": root,
        "returncode": process.returncode,
        "stderr": stderr,
        "before": before,
        "alias_before": alias_before,
        "after": evaluations(),
        "training_runs": {model: card.mlflow_run_id for model, card in cards.items()},
        "experiment": experiment,
        "client": client,
    }


MODELS = ("classifier", "baseline")


def alias(client: MlflowClient) -> str | None:
    """The version the smoke config's alias points at; None while it points nowhere."""
    try:
        name, alias = SMOKE.evaluate.registered_model_name, SMOKE.evaluate.alias
        return client.get_model_version_by_alias(name, alias).version
    except MlflowException:
        return None


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_evaluate_with_the_server_gone_writes_its_outputs_and_the_sync_completes_its_runs(
    evaluated: dict, server: str
) -> None:
    root, client = evaluated["root"], evaluated["client"]
    stderr = evaluated["stderr"]
    assert evaluated["returncode"] == 75, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    before = evaluated["before"]
    runs = sorted(run.info.run_id for run in before.values())
    assert last.startswith("trailers evaluate: outputs written; MLflow runs ") and all(
        run_id in last for run_id in runs
    ), last
    assert "`trailers evaluate --sync`" in last and "Retrying" not in stderr
    assert stderr.count("stopped answering") == 2  # once per run's outbox

    # Every DVC output is written, as with the server there.
    metrics = json.loads((root / "metrics" / "evaluate.json").read_text())
    assert {"classifier_macro_ap", "baseline_macro_ap", "gain_macro_ap"} <= set(metrics)
    for name in ("report.json", "figures/pr_comedy.png", "viewer/index.html", "pr/comedy.csv"):
        assert (root / "outputs" / "evaluate" / name).is_file(), name
    for model in MODELS:
        assert (root / "models" / model / "segment_rules.json").is_file()

    # Before the sync: the runs exist, nested, but lack their numbers; no alias yet.
    assert evaluated["alias_before"] is None
    for run in before.values():
        assert run.info.status == "RUNNING" and "test_macro_average_precision" not in (
            run.data.metrics
        )
    # After it: each run complete, under its training run, the alias on the classifier's model.
    after = evaluated["after"]
    assert sorted(run.info.run_id for run in after.values()) == runs
    assert not list((root / "outputs" / "evaluate" / tracking.OUTBOX).iterdir())
    for model in MODELS:
        run = after[f"evaluate-{model}"]
        training_run = evaluated["training_runs"][model]
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == training_run
        assert run.data.tags["training_run_id"] == training_run
        assert run.data.metrics["test_macro_average_precision"] == pytest.approx(
            metrics[f"{model}_macro_ap"]
        )
        assert run.data.params["evaluate.split"] == "test" and "rule_comedy_onset" in (
            run.data.params
        )
        logged = {entry.path for entry in client.list_artifacts(run.info.run_id, "evaluate")}
        assert {"evaluate/report.json", "evaluate/viewer", "evaluate/segment_rules.json"} <= logged
        (model_of_run,) = client.search_logged_models(
            [evaluated["experiment"]], filter_string=f"source_run_id = '{training_run}'"
        )
        assert "test_macro_average_precision" in {m.key for m in model_of_run.metrics}
    name, alias_name = SMOKE.evaluate.registered_model_name, SMOKE.evaluate.alias
    version = client.get_model_version_by_alias(name, alias_name)
    assert version.run_id == evaluated["training_runs"]["classifier"]


@pytest.mark.slow
def test_the_ui_opens_the_experiment_on_its_training_runs_with_their_evaluations(
    evaluated: dict, server: str, browser: object, tmp_path: Path
) -> None:
    """The address ``make ui`` prints, in the test browser: the runs table, not the GenAI
    overview; each training run expands to its evaluation. With ``TRAILERS_SCREENSHOTS=1``
    (``make screenshots``) the page is saved as the manual's picture."""
    client, experiment = evaluated["client"], evaluated["experiment"]
    tags = client.get_experiment(experiment).tags
    assert tags[tracking.EXPERIMENT_KIND] == tracking.MODEL_KIND
    page = browser.new_page(viewport={"width": 1400, "height": 700})
    try:
        page.goto(tracking.runs_page(server, experiment))
        for model in MODELS:
            link = page.get_by_role("link", name=model, exact=True)
            page.get_by_role("gridcell").filter(has=link).get_by_role("button").click()  # expand
            page.get_by_role("link", name=f"evaluate-{model}", exact=True).wait_for()
        page.get_by_role("button", name="Close").click()  # MLflow's assistant panel, for room
        assert page.get_by_text("Detect issues", exact=False).count() == 0
        shot = SCREENSHOT if os.environ.get("TRAILERS_SCREENSHOTS") == "1" else tmp_path / "ui.png"
        page.screenshot(path=shot)
    finally:
        page.close()


SCREENSHOT = PROJECT_ROOT / "docs" / "images" / "mlflow-experiment.png"
"""The MLflow UI's experiment page in the manual."""
