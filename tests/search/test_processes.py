"""Worker processes: thread choice, early start, and ending them when a sweep never begins."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

from sweeper.search import processes
from sweeper.search.processes import WorkerPool, worker_envs, worker_threads


def test_threads_split_cores_and_drop_to_one_on_a_busy_machine(monkeypatch):
    monkeypatch.setattr(processes.os, "cpu_count", lambda: 8)
    monkeypatch.setattr(processes, "others_running", lambda: 0.0)
    assert worker_threads(1) == 8
    assert worker_threads(3) == 2
    assert worker_threads(16) == 1
    assert worker_threads(2, requested=3) == 3  # search.threads wins
    monkeypatch.setattr(processes, "others_running", lambda: 1.0)  # other work runs here
    assert worker_threads(1) == 1
    assert worker_threads(1, requested=4) == 4


def test_a_busy_process_is_seen_running():
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        assert processes.others_running() >= 1
    finally:
        hog.kill()
        hog.wait()


def test_exported_thread_counts_win(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert worker_envs(2, "cpu", 3)[0]["OMP_NUM_THREADS"] == "3"
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    assert [e["OMP_NUM_THREADS"] for e in worker_envs(2, "cpu", 3)] == ["7", "7"]


def test_a_pool_that_never_gets_its_plan_ends_at_once(tmp_path):
    pool = WorkerPool(worker_envs(2, "cpu", 1), preload_tracking=False)
    pids = [p.pid for p in pool.procs]
    start = time.monotonic()
    pool.close()
    assert time.monotonic() - start < 5  # killed while importing, not waited for
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert all(p.returncode is not None for p in pool.procs)
    assert not pool._tmp.exists()


def test_a_worker_told_nothing_exits_quietly():
    # stdin closed without a plan: the coordinator stopped before the sweep began
    out = subprocess.run([sys.executable, "-m", "sweeper", "_worker", "-", "0", "--no-tracking"],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0
    assert "Traceback" not in out.stderr
