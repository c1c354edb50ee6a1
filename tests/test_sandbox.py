"""The sandbox survives a child that raises, aborts, segfaults or hangs, and recovers."""

import os
from pathlib import Path

import pytest

from pipeline.infra.sandbox import CallFailed, Sandbox, SandboxError


@pytest.fixture
def sandbox(monkeypatch):
    monkeypatch.setenv(
        "PYTHONPATH", str(Path(__file__).parent) + os.pathsep + os.environ.get("PYTHONPATH", "")
    )
    with Sandbox(timeout_s=5, max_calls=0) as box:
        yield box


def test_result_and_progress_come_back(sandbox):
    seen = []
    assert sandbox.call("sandbox_targets:count", {"upto": 3}, on_progress=seen.append) == 3
    assert seen == [0, 1, 2]


def test_an_exception_is_a_failed_call_and_the_child_lives_on(sandbox):
    with pytest.raises(CallFailed, match="bad frame"):
        sandbox.call("sandbox_targets:fail", {"message": "bad frame"})
    assert sandbox.call("sandbox_targets:count", {"upto": 1}) == 1


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("sandbox_targets:abort", r"died \(signal SIGABRT\): terminate called .*dmlc::Error"),
        ("sandbox_targets:segfault", r"died \(signal SIGSEGV\)"),
    ],
)
def test_a_dying_child_is_reported_and_replaced(sandbox, target, reason):
    with pytest.raises(SandboxError, match=reason):
        sandbox.call(target, {})
    assert sandbox.call("sandbox_targets:count", {"upto": 2}) == 2


def test_a_hung_child_is_killed_after_the_stall_timeout(sandbox):
    sandbox.timeout_s = 1.0
    with pytest.raises(SandboxError, match=r"no progress for 1 s, killed"):
        sandbox.call("sandbox_targets:hang_holding_the_gil", {})
    assert sandbox.call("sandbox_targets:count", {"upto": 1}) == 1


def test_the_child_is_recycled_after_max_calls(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))
    with Sandbox(timeout_s=5, max_calls=2) as box:
        box.call("sandbox_targets:count", {"upto": 1})
        first = box.pid
        box.call("sandbox_targets:count", {"upto": 1})
        assert box.pid is None
        box.call("sandbox_targets:count", {"upto": 1})
        assert box.pid not in (None, first)


def test_preloaded_modules_are_imported_before_the_first_call(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))
    with Sandbox(timeout_s=5, preload=("wave",)) as box:
        box.start()
        assert box.call("sandbox_targets:imported", {"module": "wave"})
    with Sandbox(timeout_s=5) as box:
        assert not box.call("sandbox_targets:imported", {"module": "wave"})
