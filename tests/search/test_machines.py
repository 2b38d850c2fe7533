"""Several machines on one real PostgreSQL server: Optuna's study and MLflow's runs both
live there. Each "machine" is a `sweeper sweep` with its own working folder and host
identity (SWEEPER_HOST); all start at the same instant on empty databases."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from tests.postgres import PASSWORD

pytestmark = [pytest.mark.integration, pytest.mark.postgres]


SLOW_MACHINE = Path(__file__).parents[1] / "slow_machine"


def _machine(cwd: Path, host: str, args: list[str], slow: bool = False) -> subprocess.Popen[str]:
    cwd.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "SWEEPER_HOST": host}
    if slow:  # same study config, slower hardware: each epoch sleeps a few seconds
        env["PYTHONPATH"] = os.pathsep.join([str(SLOW_MACHINE), *filter(None, [env.get("PYTHONPATH")])])
        env["SWEEPER_TEST_EPOCH_DELAY"] = "3"
    env.pop("SWEEPER_DDP_CONFIG", None)
    return subprocess.Popen([sys.executable, "-m", "sweeper", "sweep", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _all_succeed(procs: dict[str, subprocess.Popen[str]]) -> None:
    """Wait for these machines; each must exit 0 without a traceback (leftovers are killed)."""
    try:
        results = {h: p.communicate(timeout=600) for h, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    for h, p in procs.items():
        assert p.returncode == 0, results[h][1][-3000:] + results[h][0][-2000:]
        assert "Traceback" not in results[h][1]


def _load(url: str, name: str) -> optuna.Study:
    from sweeper.search.storage import open_storage

    return optuna.load_study(study_name=name, storage=open_storage(url))


def test_the_store_lock_admits_one_holder_at_a_time(postgres_server):
    from sweeper.tracking.stores import held

    url = postgres_server.url(postgres_server.new_database())
    inside, most, log = [0], [0], []
    guard = threading.Lock()

    def work(i: int) -> None:
        for _ in range(5):
            with held(url, "sweeper.study.x"):
                with guard:
                    inside[0] += 1
                    most[0] = max(most[0], inside[0])
                time.sleep(0.01)
                log.append(i)
                with guard:
                    inside[0] -= 1

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert most[0] == 1 and len(log) == 15


@pytest.mark.slow
def test_three_machines_start_at_once_and_one_is_killed_mid_trial(postgres_server, tmp_path):
    optuna_url = postgres_server.url(postgres_server.new_database())  # postgresql:// (psycopg 3)
    mlflow_url = postgres_server.url(postgres_server.new_database(), driver="psycopg2")
    n_trials, timeout = 12, 10
    args = ["model=mlp", "trainer.accelerator=cpu", "trainer.max_epochs=3", f"search.n_trials={n_trials}",
            "search.study_name=field", f"search.storage={optuna_url}", f"tracking.uri={mlflow_url}",
            f"search.heartbeat_timeout={timeout}", "search/pruner=none"]
    # machine c trains slowly (same config, slower epochs), so it is mid-trial when it is killed
    procs = {h: _machine(tmp_path / h, f"host-{h}", args, slow=h == "c") for h in "abc"}
    try:
        deadline = time.monotonic() + 180
        victim = None
        while victim is None and time.monotonic() < deadline:
            time.sleep(0.5)
            try:
                study = _load(optuna_url, "field")
            except KeyError:
                continue
            victim = next((t for t in study.trials if t.state == TrialState.RUNNING and t.intermediate_values
                           and t.user_attrs.get("sweeper.worker", "").startswith("host-c:")), None)
        assert victim is not None, "machine c never trained a trial"
        os.killpg(procs["c"].pid, signal.SIGKILL)  # the whole machine: coordinator and workers
        killed_at = time.time()
        _all_succeed({h: procs[h] for h in "ab"})
    finally:
        for p in procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)

    # Optuna: exactly n_trials finished, the killed trial failed by another machine in time
    trials = _load(optuna_url, "field").trials
    states = collections.Counter(t.state for t in trials)
    assert states[TrialState.COMPLETE] == n_trials and states[TrialState.RUNNING] == 0
    (dead,) = [t for t in trials if t.number == victim.number]
    assert dead.state == TrialState.FAIL and dead.user_attrs["sweeper.failure_kind"] == "abandoned"
    recovered_after = dead.datetime_complete.timestamp() - killed_at
    print(f"\nkilled machine's trial #{dead.number} failed {recovered_after:.1f} s after the kill "
          f"(heartbeat_timeout {timeout} s); trials {dict(collections.Counter(t.state.name for t in trials))}")
    assert recovered_after < timeout + 8, f"recovered {recovered_after:.1f} s after the kill"
    assert any(t.user_attrs.get("sweeper.retry_of") == dead.number for t in trials)

    # MLflow: one parent, one child per trial, nothing RUNNING, one model version
    client = MlflowClient(mlflow_url)
    exp = client.get_experiment_by_name("sweeper")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("sweeper.role") == "parent"]
    children = [r for r in runs if r.data.tags.get("sweeper.role") == "trial"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert all(c.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for c in children)
    assert not [r.info.run_id for r in runs if r.info.status == "RUNNING"]
    numbers = collections.Counter(c.data.tags["trial_number"] for c in children)
    assert set(numbers) <= {str(t.number) for t in trials} and max(numbers.values()) == 1
    assert len(client.search_model_versions("name = 'field'")) == 1

    # no password in anything sweeper wrote: files, params, tags
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.stat().st_size < 5_000_000:
            assert PASSWORD.encode() not in path.read_bytes(), path
    for run in runs:
        for value in [*run.data.params.values(), *run.data.tags.values()]:
            assert PASSWORD not in value


@pytest.mark.processes
def test_machines_started_at_the_same_instant_never_repeat_each_other(postgres_server, tmp_path):
    """What every SLURM array does: the same command on several machines at one instant.
    Each worker samples its own stream, and no point is trained twice."""
    optuna_url = postgres_server.url(postgres_server.new_database())
    mlflow_url = postgres_server.url(postgres_server.new_database(), driver="psycopg2")
    n_trials = 6
    args = ["model=mlp", "trainer.accelerator=cpu", "trainer.max_epochs=1", f"search.n_trials={n_trials}",
            "search.study_name=twins", f"search.storage={optuna_url}", f"tracking.uri={mlflow_url}",
            "search/pruner=none", "search.register_model=false", "search.threads=1"]
    procs = {h: _machine(tmp_path / h, f"host-{h}", args) for h in "ab"}
    _all_succeed(procs)
    trials = [t for t in _load(optuna_url, "twins").trials if t.state == TrialState.COMPLETE]
    assert len(trials) == n_trials
    hosts = {t.user_attrs["sweeper.worker"].split(":")[0] for t in trials}
    points = [tuple(sorted(t.params.items())) for t in trials]
    print(f"\n{n_trials} trials by {sorted(hosts)}; distinct points: {len(set(points))}")
    assert hosts == {"host-a", "host-b"}
    assert len(set(points)) == n_trials, points
    client = MlflowClient(mlflow_url)
    exp = client.get_experiment_by_name("sweeper")
    children = [r for r in client.search_runs([exp.experiment_id], max_results=100)
                if r.data.tags.get("sweeper.role") == "trial" and r.data.tags.get("state") == "COMPLETE"]
    recorded = {(r.data.params["optimizer.lr"], r.data.params["data.batch_size"]) for r in children}
    assert len(children) == n_trials and len(recorded) == n_trials
