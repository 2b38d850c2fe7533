"""The edges of a study: what a refused command leaves, a study that completes although a
worker was lost, a finished study run again, every process searching one space, the
moment between claiming a trial and training it. Checked in both stores."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from optuna.trial import TrialState

from tests.search.test_sweep_cli import load_study, runs_by_role, sweep

pytestmark = pytest.mark.integration

FAST = ["model=mlp", "trainer.accelerator=cpu", "trainer.max_epochs=2", "search.register_model=false",
        "search/pruner=none"]
SLOW_MACHINE = Path(__file__).parents[1] / "slow_machine"


def _start(cwd: Path, args: list[str], **extra_env: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore", **extra_env}
    if extra_env:
        env["PYTHONPATH"] = os.pathsep.join([str(SLOW_MACHINE), *filter(None, [env.get("PYTHONPATH")])])
    env.pop("SWEEPER_DDP_CONFIG", None)
    return subprocess.Popen([sys.executable, "-m", "sweeper", "sweep", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_refused_sweep_creates_nothing_and_the_corrected_command_runs(tmp_path):
    # an MLflow server that is not there: refused before the study, its folder or a run exist
    refused = sweep(tmp_path, *FAST, "search.n_trials=1", "tracking.uri=http://127.0.0.1:9")
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 2 and len(lines) == 1 and "tracking.uri" in lines[0], refused.stderr
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "mlflow.db").exists()
    # a SQLite tracking store in a folder that does not exist: the same
    refused = sweep(tmp_path, *FAST, "search.n_trials=1", f"tracking.uri=sqlite:///{tmp_path}/nope/m.db")
    assert refused.returncode == 2 and "tracking.uri" in refused.stderr and "nope" in refused.stderr
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "nope").exists()
    # a metric that does not exist is named as such, not as a metric without a direction
    refused = sweep(tmp_path, *FAST, "search.n_trials=1", "search.metric=val/nosuch")
    (line,) = refused.stderr.strip().splitlines()
    assert refused.returncode == 2 and "search.metric" in line and "val/nosuch" in line, refused.stderr
    assert "direction" not in line
    assert not (tmp_path / "outputs").exists()

    fixed = sweep(tmp_path, *FAST, "search.n_trials=1")
    assert fixed.returncode == 0, fixed.stderr + fixed.stdout
    assert [t.state for t in load_study(tmp_path).trials] == [TrialState.COMPLETE]


def test_a_study_that_never_ran_a_trial_takes_the_corrected_config(tmp_path):
    """A study left empty by a refusal after it was created (an older sweeper, a crash
    between creating it and its first trial) does not block the command that fixes it."""
    import optuna

    from sweeper.search.storage import open_storage

    folder = tmp_path / "outputs" / "sweeps" / "default"
    folder.mkdir(parents=True)
    url = f"journal:///{folder / 'optuna.journal'}"
    study = optuna.create_study(study_name="default", storage=open_storage(url), direction="maximize")
    study.set_user_attr("sweeper.config", {"model._target_": '"sweeper.models.CNN"'})
    out = sweep(tmp_path, *FAST, "search.n_trials=1")
    assert out.returncode == 0, out.stderr + out.stdout
    assert len(load_study(tmp_path).trials) == 1


@pytest.mark.parametrize("store", ["journal", "sqlite"])
def test_a_finished_study_run_again_leaves_both_stores_byte_for_byte(tmp_path, store):
    given = [f"search.storage=sqlite:///{tmp_path}/optuna.db"] if store == "sqlite" else []
    first = sweep(tmp_path, *FAST, "search.n_trials=2", *given)
    assert first.returncode == 0, first.stderr + first.stdout
    optuna_store = tmp_path / ("optuna.db" if given else "outputs/sweeps/default/optuna.journal")
    before = _digest(optuna_store), _digest(tmp_path / "mlflow.db")
    for _ in range(2):
        again = sweep(tmp_path, *FAST, "search.n_trials=2", *given)
        assert again.returncode == 0 and "is finished" in again.stdout, again.stderr + again.stdout
    assert (_digest(optuna_store), _digest(tmp_path / "mlflow.db")) == before


@pytest.mark.processes
def test_shuffled_choices_are_one_space_for_every_worker_and_every_resume(tmp_path):
    space = ['search.params.data.batch_size="shuffle(16, 32, 64, 128)"',
             "search.params.optimizer.lr={type:float,low:0.001,high:0.1,log:true}"]
    out = sweep(tmp_path, *FAST, *space, "search.n_trials=4", "search.workers=2")
    assert out.returncode == 0, out.stderr + out.stdout
    logs = "".join(p.read_text() for p in (tmp_path / "outputs" / "sweeps" / "default").glob("worker_*.log"))
    assert "dynamic value space" not in logs
    again = sweep(tmp_path, *FAST, *space, "search.n_trials=6", "search.workers=2")
    assert again.returncode == 0, again.stderr + again.stdout
    assert "resuming study 'default': 4 of 6" in again.stdout
    trials = load_study(tmp_path).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 6
    choices = {t.distributions["data.batch_size"].choices for t in trials}
    assert choices == {(16, 32, 64, 128)}  # the declared order, in every process


def _workers(proc: subprocess.Popen[str]) -> list[psutil.Process]:
    return [c for c in psutil.Process(proc.pid).children() if "_worker" in " ".join(c.cmdline())]


@pytest.mark.processes
def test_a_study_completed_by_the_other_worker_is_complete_though_one_was_killed(tmp_path):
    registered = [a for a in FAST if not a.startswith("search.register_model")] + ["search.register_model=true"]
    proc = _start(tmp_path, [*registered, "trainer.max_epochs=3", "search.n_trials=6", "search.workers=2",
                             "search.heartbeat_timeout=10"], SWEEPER_TEST_EPOCH_DELAY="0.7")
    try:
        deadline = time.monotonic() + 120
        victim = None
        while time.monotonic() < deadline and victim is None:
            time.sleep(0.3)
            try:
                running = [t for t in load_study(tmp_path).trials
                           if t.state == TrialState.RUNNING and t.intermediate_values]
            except (KeyError, FileNotFoundError, ValueError):
                continue
            pids = {p.pid: p for p in _workers(proc)}
            for t in running:
                pid = int(str(t.user_attrs.get("sweeper.worker", "x:0")).split(":")[1])
                if pid in pids:
                    victim = pids[pid]
                    break
        assert victim is not None, "no trial started training"
        victim.kill()  # kill -9 one worker mid-trial; the other finishes the study
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err + out
    assert "ended early (killed by SIGKILL)" in out and "the other workers finished the study" in out
    study = load_study(tmp_path)
    states = [t.state for t in study.trials]
    assert states.count(TrialState.COMPLETE) == 6 and TrialState.RUNNING not in states
    (abandoned,) = [t for t in study.trials if t.state == TrialState.FAIL]
    assert abandoned.user_attrs["sweeper.failure_kind"] == "abandoned"
    assert study.user_attrs["sweeper.finished"] == "complete"
    (parent,), children = runs_by_role(tmp_path)
    assert parent.info.status == "FINISHED" and parent.data.tags["outcome"] == "complete"
    assert all(c.info.status != "RUNNING" for c in children)
    # the README's state table: an abandoned trial's run ends FAILED
    by_id = {c.info.run_id: c for c in children}
    lost = by_id[abandoned.user_attrs["mlflow_run_id"]]
    assert lost.info.status == "FAILED" and lost.data.tags["failure_kind"] == "abandoned"
    # the study's model was registered, once, from its best trial
    assert "registered model 'default' version 1" in out
    assert parent.data.tags["registered_model"] == "default/1"


@pytest.mark.processes
def test_a_signal_between_claiming_a_trial_and_training_it_interrupts_it(tmp_path):
    proc = _start(tmp_path, [*FAST, "search.n_trials=2"], SWEEPER_TEST_COMPOSE_DELAY="30",
                  SWEEPER_TEST_EPOCH_DELAY="0")
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            time.sleep(0.3)
            try:
                if any(t.state == TrialState.RUNNING for t in load_study(tmp_path).trials):
                    break
            except (KeyError, FileNotFoundError, ValueError):
                continue
        else:
            raise AssertionError("no trial was claimed")
        os.killpg(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143, err + out
    trials = load_study(tmp_path).trials
    (stopped,) = [t for t in trials if t.state == TrialState.FAIL]
    assert stopped.user_attrs["sweeper.failure"] == "interrupted (SIGTERM)"
    assert stopped.user_attrs["sweeper.failure_kind"] == "interrupted"
    assert [t.user_attrs.get("sweeper.retry_of") for t in trials if t.state == TrialState.WAITING] == [
        stopped.number]
    assert not any(t.state == TrialState.RUNNING for t in trials)
    (parent,), children = runs_by_role(tmp_path)  # and in MLflow
    assert parent.info.status == "KILLED" and parent.data.tags["outcome"] == "interrupted"
    assert all(c.info.status != "RUNNING" for c in children)
