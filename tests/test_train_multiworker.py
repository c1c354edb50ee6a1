"""``train.strategy: multi_worker``: real processes of one ``TF_CONFIG`` cluster on 127.0.0.1.

Two ``trailers train`` processes train one smoke model together; the plain
MultiWorkerMirroredStrategy against Keras 3 shows the upstream failure the product works around.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from helpers import copy_corpus, path_overrides, trailers_command
from mlflow import MlflowClient

import pipeline.model  # noqa: F401  (registers the layers a saved model names)
from pipeline import GENRES
from pipeline.core.config import load_config
from pipeline.core.errors import StageError
from pipeline.train.dataset import PADDING, Shard, shard_plan
from pipeline.train.devices import ClusterTask, cluster_task, coordination_service

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 840
"""Per cluster run: a worker that waits for a peer in vain is killed, not left hanging. Two
processes tracing the model on two busy shared cores took 212 s to train the smoke baseline."""


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def tf_configs(workers: int) -> list[str]:
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(workers)]}
    return [
        json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        for index in range(workers)
    ]


def run_cluster(
    commands: list[list[str]], cwd: Path, logs: Path
) -> list[subprocess.CompletedProcess]:
    """Start one process per command, worker ``i`` with its ``TF_CONFIG`` and its output in
    ``logs/worker-<i>.log`` (no pipe to fill up); wait for them all, killing any left after
    :data:`TIMEOUT_S`. Returns each one's result with that output as ``stderr``."""
    files = [logs / f"worker-{index}.log" for index in range(len(commands))]
    processes = []
    try:
        for command, tf_config, file in zip(
            commands, tf_configs(len(commands)), files, strict=True
        ):
            with file.open("w") as output:
                env = {**os.environ, "TF_CONFIG": tf_config}
                processes.append(
                    subprocess.Popen(command, cwd=cwd, env=env, stdout=output, stderr=output)
                )
        for process in processes:
            process.wait(timeout=TIMEOUT_S)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return [
        subprocess.CompletedProcess(process.args, process.returncode, "", file.read_text())
        for process, file in zip(processes, files, strict=True)
    ]


@pytest.mark.slow
@pytest.mark.timeout(TIMEOUT_S + 120)
def test_two_worker_processes_train_one_model_and_one_mlflow_run(
    validated_corpus: Path, tmp_path: Path
):
    # Each worker reads its own copy of the corpus and is given its own output paths, so
    # anything the second worker wrote would show; both log to one MLflow store.
    chief, other = (copy_corpus(validated_corpus, tmp_path / name) for name in ("0", "1"))
    store = f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"
    commands = [
        trailers_command(
            "train", "--model=baseline", *path_overrides(root), store,
            "train.strategy=multi_worker", "train.epochs=2", "train.stride=8",
        )
        for root in (chief, other)
    ]  # fmt: skip
    results = run_cluster(commands, tmp_path, tmp_path)

    for result in results:
        assert result.returncode == 0, result.stderr[-3000:]
        assert "heartbeat timeout" not in result.stderr  # no worker left before the others
    assert "worker 1 of 2: global batch 8" in results[1].stderr
    history = (chief / "outputs" / "train" / "baseline" / "history.csv").read_text()
    assert len(history.splitlines()) == 1 + 2
    net = keras.saving.load_model(chief / "models" / "baseline" / "model.keras")
    timelines = net.predict(np.zeros((1, 7, 3, 32, 32), np.uint8), verbose=0)
    assert sorted(timelines) == sorted(GENRES) and timelines["comedy"].shape == (1, 7, 1)

    assert not (other / "models").exists()
    assert not any((other / "metrics").iterdir())  # the CLI makes the folder for every stage
    assert not (other / "outputs" / "train").exists()
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(
        load_config(ROOT / "configs/smoke.yaml").tracking.experiment
    )
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.tags["workers"] == "2" and run.data.tags["replicas"] == "2"
    card = json.loads((chief / "models" / "baseline" / "model.json").read_text())
    assert card["mlflow_run_id"] == run.info.run_id


TINY_MODEL = """
import keras


def tiny_model():
    frames = keras.Input((4, 3))
    hidden = keras.layers.BatchNormalization(synchronized=True)(keras.layers.Dense(4)(frames))
    model = keras.Model(frames, {"comedy": keras.layers.Dense(1, name="comedy")(hidden)})
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    return model


def worker_data(index):  # each worker its own data: only the all-reduce joins them
    rng = np.random.default_rng(index)
    return rng.normal(size=(8, 4, 3)), {"comedy": rng.normal(size=(8, 4, 1))}
"""

PAUSE_S = 12
"""How long the product run's worker 1 stops itself (SIGSTOP, every thread) once the cluster is
up: past TensorFlow's own 10 s heartbeat timeout, within ``HEARTBEAT_S``."""
HEARTBEAT_S = 60

TINY_FIT = (
    f"PAUSE_S, HEARTBEAT_S = {PAUSE_S}, {HEARTBEAT_S}\n"
    """
import json, os, signal, subprocess, sys
import numpy as np
import keras
import tensorflow as tf
from pipeline.train.devices import multi_worker_strategy
"""
    + TINY_MODEL
    + """
product = sys.argv[1] == "product"
strategy = multi_worker_strategy(HEARTBEAT_S) if product else (
    tf.distribute.MultiWorkerMirroredStrategy()
)
keras.utils.set_random_seed(0)
with strategy.scope():
    model = tiny_model()
print("initial", json.dumps([w.tolist() for w in model.get_weights()]))
index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
if product and index == 1:  # a busy host: no heartbeat for longer than TensorFlow's default
    subprocess.Popen(["sh", "-c", f"sleep {PAUSE_S}; kill -CONT {os.getpid()}"])
    os.kill(os.getpid(), signal.SIGSTOP)
x, y = worker_data(index)
data = strategy.distribute_datasets_from_function(
    lambda context: tf.data.Dataset.from_tensor_slices((x, y)).batch(2)
)
model.fit(data, epochs=2, verbose=0)
print("weights", json.dumps([w.tolist() for w in model.get_weights()]))
"""
)


def one_process_fit(initial: list) -> list[np.ndarray]:
    """The tiny model from ``initial`` weights, fitted in this process on the union of both
    workers' batches: global batch ``i`` is worker 0's batch ``i`` then worker 1's."""
    scope = {"np": np}
    exec(TINY_MODEL, scope)
    model = scope["tiny_model"]()
    model.set_weights([np.asarray(w, dtype=np.float32) for w in initial])
    (x0, y0), (x1, y1) = scope["worker_data"](0), scope["worker_data"](1)
    x = np.concatenate([np.concatenate([x0[i : i + 2], x1[i : i + 2]]) for i in (0, 2, 4, 6)])
    y = np.concatenate(
        [np.concatenate([y0["comedy"][i : i + 2], y1["comedy"][i : i + 2]]) for i in (0, 2, 4, 6)]
    )
    model.fit(x, {"comedy": y}, batch_size=4, epochs=2, shuffle=False, verbose=0)
    return model.get_weights()


@pytest.mark.slow
@pytest.mark.timeout(TIMEOUT_S + 120)
@pytest.mark.parametrize("strategy", ["plain", "product"])
def test_keras_fit_on_a_cluster_fails_upstream_and_trains_in_step_with_the_workaround(
    strategy: str, tmp_path: Path
):
    command = [sys.executable, "-c", TINY_FIT, strategy]
    results = run_cluster([command, command], ROOT, tmp_path)

    if strategy == "plain":  # keras-team/keras#20585: when this passes, drop the workaround
        for result in results:
            assert result.returncode != 0
            assert (
                "unsupported type (<class 'tensorflow.python.distribute.values.PerReplica'>)"
                in result.stderr
            )
        return
    for result in results:
        assert result.returncode == 0, result.stderr[-3000:]

    def printed(result: subprocess.CompletedProcess, name: str) -> list:
        return json.loads(re.search(f"^{name} (.*)$", result.stderr, re.MULTILINE)[1])

    weights = [printed(result, "weights") for result in results]
    assert weights[0] == weights[1]  # one synchronous model, though the workers' data differ
    initial = printed(results[0], "initial")
    assert all(  # every kernel and bias took steps (batch norm's gamma too)
        not np.allclose(after, before) for after, before in zip(weights[0], initial, strict=True)
    )
    expected = one_process_fit(initial)
    for after, reference in zip(weights[0], expected, strict=True):
        np.testing.assert_allclose(after, reference, rtol=1e-5, atol=1e-6)


def test_each_worker_reads_its_part_of_every_global_batch_and_together_all_of_them():
    plan = np.array([[trailer, 8 * trailer, 4, 0] for trailer in range(11)], dtype=np.int64)
    parts = [shard_plan(plan, 3, Shard(index, 2)) for index in range(2)]

    assert [len(part) for part in parts] == [6, 6]  # two global batches of 2 x 3 each
    assert (
        parts[0][:3].tolist() == plan[:3].tolist() and parts[1][:3].tolist() == plan[3:6].tolist()
    )
    real = np.concatenate([part[part[:, 0] != PADDING] for part in parts])
    assert sorted(real[:, 0].tolist()) == list(range(11))  # every window once, none twice
    padding = parts[1][parts[1][:, 0] == PADDING]
    assert padding.tolist() == [[PADDING, 0, 4, 0]]  # the last global batch's missing row


@pytest.mark.parametrize(
    ("tf_config", "message"),
    [
        ("{not json", "TF_CONFIG is not valid JSON"),
        ('{"task": {"type": "worker", "index": 0}}', 'TF_CONFIG: no "cluster"'),
        ('{"cluster": {"ps": ["a:1"], "worker": ["b:2"]}, "task": {"type": "worker"}}',
         "TF_CONFIG: cluster.ps: only chief and worker tasks train"),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}',
         "TF_CONFIG: task.type must be one of the cluster's jobs (worker), got 'chief'"),
        ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}',
         "TF_CONFIG: task.index 2 is out of range for cluster.worker (2 addresses)"),
    ],
)  # fmt: skip
def test_a_bad_tf_config_is_one_line_naming_the_key(tf_config: str, message: str):
    with pytest.raises(StageError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        cluster_task({"TF_CONFIG": tf_config})


def test_the_chief_is_the_chief_task_or_else_worker_zero():
    cluster = {"chief": ["a:1"], "worker": ["b:2", "c:3"]}
    spec = {"cluster": cluster, "task": {"type": "worker", "index": 0}}
    worker = cluster_task({"TF_CONFIG": json.dumps(spec)})
    assert worker == ClusterTask("worker", 0, 3, has_chief=True) and not worker.is_chief
    assert ClusterTask("chief", 0, 3, has_chief=True).is_chief
    assert ClusterTask("worker", 0, 2).is_chief and not ClusterTask("worker", 1, 2).is_chief
    assert cluster_task({}) is None


def test_the_coordination_service_leads_from_the_chief_and_counts_every_worker():
    # The strategy's own choice (multi_worker_util.coordination_leader), with our heartbeat.
    with_chief = coordination_service(ClusterTask("worker", 1, 3, has_chief=True), 1.5)
    assert with_chief["service_leader"] == "/job:chief/replica:0/task:0"
    assert with_chief["heartbeat_timeout_in_ms"] == 1500
    jobs = [(job.name, job.num_tasks) for job in with_chief["coordinated_jobs"]]
    assert jobs == [("chief", 1), ("worker", 2)]
    workers_only = coordination_service(ClusterTask("worker", 0, 2), HEARTBEAT_S)
    assert workers_only["service_leader"] == "/job:worker/replica:0/task:0"
    assert [(job.name, job.num_tasks) for job in workers_only["coordinated_jobs"]] == [
        ("worker", 2)
    ]
