"""What happens to a sweep in the field: schedulers' signals, damaged or missing stores,
unwritable folders, unreachable servers. Every test checks both stores afterwards."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from optuna.trial import TrialState

from tests.search.test_sweep_cli import _wait_for_running_trial, load_study, runs_by_role, sweep

pytestmark = pytest.mark.integration

FAST = ["model=mlp", "trainer.accelerator=cpu", "trainer.max_epochs=2", "search.register_model=false",
        "search/pruner=none"]
LONG = ["model=mlp", "trainer.accelerator=cpu", "trainer.max_epochs=300", "search.n_trials=3",
        "search.register_model=false", "search/pruner=none"]


def _start(cwd: Path, args: list[str]) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("SWEEPER_DDP_CONFIG", None)
    return subprocess.Popen([sys.executable, "-m", "sweeper", "sweep", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _nothing_running(cwd: Path) -> None:
    assert all(t.state != TrialState.RUNNING for t in load_study(cwd).trials)
    parents, children = runs_by_role(cwd)
    assert parents and all(r.info.status != "RUNNING" for r in parents + children)


@pytest.mark.processes
@pytest.mark.parametrize("target", [pytest.param("coordinator", marks=pytest.mark.slow), "group"])
def test_sigterm_ends_the_sweep_like_ctrl_c_with_exit_143(tmp_path, target):
    """SLURM, Kubernetes and systemd send SIGTERM, to the main process or to the group."""
    proc = _start(tmp_path, LONG)
    try:
        _wait_for_running_trial(tmp_path)
        sent = time.monotonic()
        if target == "group":
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    print(f"\nSIGTERM to the {target}: exit {proc.returncode} after {took:.1f} s")
    assert proc.returncode == 143, err
    assert took < 30, f"took {took:.1f} s to stop"
    assert "Traceback" not in err and "interrupted (SIGTERM)" in out
    trials = load_study(tmp_path).trials
    stopped = [t for t in trials if t.state == TrialState.FAIL]
    assert len(stopped) == 1 and stopped[0].user_attrs["sweeper.failure"] == "interrupted (SIGTERM)"
    queued = [t for t in trials if t.state == TrialState.WAITING]
    assert [t.user_attrs.get("sweeper.retry_of") for t in queued] == [stopped[0].number]
    _nothing_running(tmp_path)
    parents, children = runs_by_role(tmp_path)
    assert parents[0].info.status == "KILLED" and parents[0].data.tags["outcome"] == "interrupted"
    (child,) = [c for c in children if c.data.tags["trial_number"] == str(stopped[0].number)]
    assert child.info.status == "KILLED" and child.data.tags["failure_reason"] == "interrupted (SIGTERM)"


@pytest.mark.slow
def test_a_worker_whose_coordinator_was_killed_marks_its_trial(tmp_path):
    # a worker of its own: a single worker otherwise runs in the coordinator's process
    proc = _start(tmp_path, [*LONG, "search.worker_process=true"])
    try:
        _wait_for_running_trial(tmp_path)
        proc.send_signal(signal.SIGKILL)  # the coordinator only: its workers get SIGTERM
        proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(t.state == TrialState.RUNNING
                                                  for t in load_study(tmp_path).trials):
            time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
    trials = load_study(tmp_path).trials
    assert [t.user_attrs.get("sweeper.failure") for t in trials if t.state == TrialState.FAIL] == [
        "interrupted (SIGTERM)"]
    assert not any(t.state == TrialState.RUNNING for t in trials)


@pytest.mark.slow
def test_a_journal_cut_mid_record_is_repaired_before_the_resume_appends(tmp_path):
    assert sweep(tmp_path, *FAST, "search.n_trials=2").returncode == 0
    journal = tmp_path / "outputs" / "sweeps" / "default" / "optuna.journal"
    whole = journal.read_bytes()
    journal.write_bytes(whole + b'{"op_code":5,"worker_id":"x","trial_id":1,"us')  # killed mid-write
    out = sweep(tmp_path, *FAST, "search.n_trials=3")
    assert out.returncode == 0, out.stderr + out.stdout
    warnings = [ln for ln in out.stderr.splitlines() if "partial record" in ln]
    assert len(warnings) == 1 and "dropped it" in warnings[0]
    for line in journal.read_text().splitlines():
        json.loads(line)  # every record whole
    assert [t.state for t in load_study(tmp_path).trials] == [TrialState.COMPLETE] * 3
    _nothing_running(tmp_path)


@pytest.mark.slow
def test_a_deleted_mlflow_store_is_recreated_and_the_sweep_completes(tmp_path):
    first = sweep(tmp_path, *FAST, "search.n_trials=2", "search.register_model=true")
    assert first.returncode == 0, first.stderr
    (tmp_path / "mlflow.db").unlink()
    out = sweep(tmp_path, *FAST, "search.n_trials=3", "search.register_model=true")
    assert out.returncode == 0, out.stderr + out.stdout
    assert "Traceback" not in out.stderr
    parents, children = runs_by_role(tmp_path)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"  # a new parent in the new store
    assert [c.data.tags["trial_number"] for c in children] == ["2"]  # the trial run since
    _nothing_running(tmp_path)
    assert [t.state for t in load_study(tmp_path).trials] == [TrialState.COMPLETE] * 3


def test_an_unwritable_study_folder_is_one_line_exit_2(tmp_path):
    (tmp_path / "outputs").write_text("a file where the outputs folder goes")
    out = sweep(tmp_path, *FAST, "search.n_trials=1")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot write" in lines[0] and "outputs" in lines[0], out.stderr
    assert not (tmp_path / "mlflow.db").exists()


def test_an_unreachable_tracking_server_fails_in_seconds(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    started = time.monotonic()
    out = sweep(tmp_path, *FAST, "search.n_trials=1", f"tracking.uri=http://127.0.0.1:{port}")
    took = time.monotonic() - started
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "tracking.uri" in lines[0] and "no MLflow server answers" in lines[0]
    assert took < 60, f"took {took:.0f} s"


@pytest.mark.slow
def test_sweeper_ui_stops_its_server_on_sigterm(tmp_path):
    """On a store with no experiment yet, too: it says so instead of failing."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, "-m", "sweeper", "ui", "--port", str(port)], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stdout], daemon=True).start()
    try:
        first = lines.get(timeout=120)
        while "MLflow UI" not in first:  # the server's own lines come first
            first = lines.get(timeout=120)
        assert "MLflow UI at" in first and "no experiment" in first, first
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 143
    finally:
        if proc.poll() is None:
            proc.kill()
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0  # nothing listens any more
