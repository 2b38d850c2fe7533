"""`sweeper sweep` end to end, in fresh processes: the behaviours a user relies on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from tests.conftest import in_process, mlflow_runs

pytestmark = pytest.mark.integration

FAST = ["model=mlp", "trainer.accelerator=cpu", "trainer.max_epochs=2", "search.register_model=false"]
# Deterministic pruning: any val/acc under 0.999 is pruned after the first epoch.
PRUNE_ALL = ["search/pruner=none", "search.pruner._target_=optuna.pruners.ThresholdPruner",
             "+search.pruner.lower=0.999"]


def sweep(cwd: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``sweeper sweep ARGS`` in ``cwd``, coordinated from this process (its workers, when
    there are several, are processes of their own)."""
    return in_process(cwd, "sweep", *args)


def load_study(cwd: Path, name: str = "default") -> optuna.Study:
    path = cwd / "outputs" / "sweeps" / name / "optuna.journal"
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    return optuna.load_study(study_name=name, storage=storage)


def runs_by_role(cwd: Path) -> tuple[list, list]:
    runs = mlflow_runs(f"sqlite:///{cwd / 'mlflow.db'}")
    parents = [r for r in runs if r.data.tags.get("sweeper.role") == "parent"]
    children = [r for r in runs if r.data.tags.get("sweeper.role") == "trial"]
    return parents, children


def test_sweep_records_study_parent_and_children_and_reports_the_best(tmp_path):
    out = sweep(tmp_path, *FAST, "search.n_trials=4", "search/pruner=none", "search.register_model=true")
    assert out.returncode == 0, out.stderr + out.stdout
    study = load_study(tmp_path)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    (parent,), children = runs_by_role(tmp_path)
    assert len(children) == 4
    assert parent.info.status == "FINISHED" and parent.info.run_name == "default"
    tags = parent.data.tags
    assert (tags["study"], tags["sampler"], tags["pruner"]) == ("default", "tpe", "none")
    assert tags["storage"].endswith("optuna.journal") and tags["trials_complete"] == "4"
    assert parent.data.metrics["best/val/acc"] == pytest.approx(study.best_value)
    assert 0.5 < parent.data.metrics["test/acc"] <= 1.0
    by_number = {int(c.data.tags["trial_number"]): c for c in children}
    for trial in study.trials:
        child = by_number[trial.number]
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.tags["state"] == "COMPLETE" and child.info.status == "FINISHED"
        assert float(child.data.params["optimizer.lr"]) == pytest.approx(trial.params["optimizer.lr"])
        assert child.data.params["data.batch_size"] == str(trial.params["data.batch_size"])
        assert child.info.run_id == trial.user_attrs["mlflow_run_id"]
    # the end: table, best config, command, registered model
    assert "best trial #" in out.stdout and "optimizer.lr" in out.stdout
    best_config = tmp_path / "outputs" / "sweeps" / "default" / "best_config.yaml"
    assert best_config.is_file() and f"--config-path {best_config.parent}" in out.stdout
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (version,) = client.search_model_versions("name = 'default'")
    assert version.run_id == by_number[study.best_trial.number].info.run_id

    # the same command again: nothing left to do, the parent run is reused
    again = sweep(tmp_path, *FAST, "search.n_trials=4", "search/pruner=none")
    assert again.returncode == 0, again.stderr
    assert len(load_study(tmp_path).trials) == 4
    parents, children = runs_by_role(tmp_path)
    assert len(parents) == 1 and len(children) == 4
    # a changed search space is refused, and nothing is added
    changed = sweep(tmp_path, *FAST, "search.n_trials=6", "search.params.optimizer.lr.high=0.5")
    assert changed.returncode == 2 and "search.force=true" in changed.stderr
    assert len(changed.stderr.strip().splitlines()) == 1
    assert len(load_study(tmp_path).trials) == 4


def test_pruned_trials_are_pruned_in_optuna_and_mlflow(tmp_path):
    out = sweep(tmp_path, *FAST, "search.n_trials=3", "trainer.max_epochs=4", *PRUNE_ALL)
    assert out.returncode == 0, out.stderr + out.stdout
    study = load_study(tmp_path)
    assert [t.state for t in study.trials] == [TrialState.PRUNED] * 3
    assert all(t.user_attrs["epochs"] == 1 for t in study.trials)  # stopped after epoch 0 of 4
    _, children = runs_by_role(tmp_path)
    assert sorted(c.data.tags["state"] for c in children) == ["PRUNED"] * 3
    assert all("pruned at epoch 0" in c.data.tags["prune_reason"] for c in children)
    assert "3 pruned" in out.stderr


@pytest.mark.processes
def test_two_workers_share_one_study_exactly(tmp_path):
    out = sweep(tmp_path, *FAST, "search.n_trials=6", "search.workers=2", "search/pruner=none")
    assert out.returncode == 0, out.stderr + out.stdout
    study = load_study(tmp_path)
    assert len(study.trials) == 6 and all(t.state == TrialState.COMPLETE for t in study.trials)
    workers = {t.user_attrs["sweeper.worker"] for t in study.trials}
    assert len(workers) == 2  # both processes pulled trials
    parents, children = runs_by_role(tmp_path)
    assert len(parents) == 1 and len(children) == 6
    logs = "".join(p.read_text() for p in (tmp_path / "outputs" / "sweeps" / "default").glob("worker_*.log"))
    assert "locked" not in logs.lower() and "Traceback" not in logs


def _wait_for_running_trial(cwd: Path, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            study = load_study(cwd)
            if any(t.state == TrialState.RUNNING and t.intermediate_values for t in study.trials):
                return
        except (KeyError, FileNotFoundError, ValueError):
            pass
        time.sleep(0.5)
    raise AssertionError("no trial started training")


@pytest.mark.slow
def test_kill_9_mid_trial_then_the_same_command_resumes(tmp_path):
    args = ["model=mlp", "trainer.accelerator=cpu", "trainer.max_epochs=12", "search.n_trials=3",
            "search/pruner=none", "search.register_model=false"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, "-m", "sweeper", "sweep", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait_for_running_trial(tmp_path)
        os.killpg(proc.pid, signal.SIGKILL)  # coordinator and worker at once (a lost machine, OOM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    time.sleep(1.0)
    assert any(t.state == TrialState.RUNNING for t in load_study(tmp_path).trials)

    out = sweep(tmp_path, *args)
    assert out.returncode == 0, out.stderr + out.stdout
    assert "abandoned" in out.stdout
    trials = load_study(tmp_path).trials
    states = [t.state for t in trials]
    assert states.count(TrialState.COMPLETE) == 3 and TrialState.RUNNING not in states
    assert states.count(TrialState.FAIL) == 1
    killed = next(t for t in trials if t.state == TrialState.FAIL)
    retried = [t for t in trials if t.user_attrs.get("sweeper.retry_of") == killed.number]
    assert len(retried) == 1 and retried[0].params == killed.params
    parents, children = runs_by_role(tmp_path)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == len(trials)  # one child run per trial, the killed one included
    assert all(c.info.status != "RUNNING" for c in children)
    assert sorted(c.data.tags["state"] for c in children) == ["COMPLETE"] * 3 + ["FAILED"]


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_leaves_nothing_running(tmp_path):
    args = ["model=mlp", "trainer.accelerator=cpu", "trainer.max_epochs=200", "search.n_trials=3",
            "search.register_model=false"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, "-m", "sweeper", "sweep", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _wait_for_running_trial(tmp_path)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole group
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130
    assert "run the same command to resume" in out
    assert all(t.state != TrialState.RUNNING for t in load_study(tmp_path).trials)
    parents, children = runs_by_role(tmp_path)
    assert parents[0].info.status == "KILLED"
    assert children and all(c.info.status != "RUNNING" for c in children)


def test_a_diverging_trial_is_pruned_and_the_study_goes_on(tmp_path):
    out = sweep(tmp_path, "model=mlp", "trainer.accelerator=cpu", "trainer.max_epochs=3",
                "optimizer=sgd", "search/sampler=grid", "search/pruner=none", "search/params=none",
                "+search.params.optimizer.lr={choices:[1.0e+12,0.05]}", "search.register_model=false")
    assert out.returncode == 0, out.stderr + out.stdout
    trials = {t.params["optimizer.lr"]: t for t in load_study(tmp_path).trials}
    assert trials[1e12].state == TrialState.PRUNED
    assert "diverged" in trials[1e12].user_attrs["sweeper.failure"]
    # its record says how long it trained before the loss went non-finite
    assert 1 <= trials[1e12].user_attrs["epochs"] <= 3 and trials[1e12].user_attrs["duration_s"] > 0
    assert trials[0.05].state == TrialState.COMPLETE


def test_every_trial_failing_stops_the_sweep_with_a_clear_message(tmp_path):
    # a step size of 0 builds, and fails only when the scheduler first steps, in training
    out = sweep(tmp_path, "model=mlp", "scheduler=step", "trainer.accelerator=cpu",
                "trainer.max_epochs=1", "search.n_trials=20", "search/params=none",
                "+search.params.scheduler.step_size=[0]", '+search.params.model.dropout="interval(0,0.5)"',
                "search.register_model=false",
                "search.retries=0")
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()[-1:]
    assert "search.max_failure_rate" in line and "ZeroDivisionError" in line
    trials = load_study(tmp_path).trials
    assert len(trials) == 5 and all(t.state == TrialState.FAIL for t in trials)


def test_hydra_optuna_sweeper_params_block_runs(tmp_path):
    out = sweep(tmp_path, "experiment=hos_params", "search.n_trials=2", "trainer.max_epochs=1",
                "trainer.accelerator=cpu", "search.register_model=false")
    assert out.returncode == 0, out.stderr + out.stdout
    trials = load_study(tmp_path, "hos_params").trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2
    assert all(t.params["data.batch_size"] in (32, 64, 128, 256) for t in trials)
    assert all(0.01 <= t.params["model.dropout"] <= 0.3 for t in trials)


@pytest.mark.ddp
@pytest.mark.slow
def test_a_ddp_trial_can_be_pruned(tmp_path):
    out = sweep(tmp_path, *FAST, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                "trainer.max_epochs=4", "search.n_trials=2", *PRUNE_ALL)
    assert out.returncode == 0, out.stderr + out.stdout
    study = load_study(tmp_path)
    assert [t.state for t in study.trials] == [TrialState.PRUNED] * 2
    assert all(t.user_attrs["epochs"] == 1 for t in study.trials)
    summaries = optuna.study.get_all_study_summaries(study._storage)
    assert len(summaries) == 1  # the re-launched DDP rank started no study of its own
    parents, children = runs_by_role(tmp_path)
    assert len(parents) == 1 and len(children) == 2
    assert all(c.data.tags["state"] == "PRUNED" for c in children)


@pytest.mark.parametrize(
    "args, key",
    [
        (["+search.params.optimizer.lr.low=1.0"], "search.params.optimizer.lr"),  # low > high
        (["search.params.optimizer.lr.low=0", "search.params.optimizer.lr.log=true"], "search.params.optimizer.lr"),
        (["search.params.data.batch_size.choices=[]"], "search.params.data.batch_size"),
        (["+search.params.model.dropoot={low:0.0,high:0.5}"], "search.params.model.dropoot"),
        (["+search.params.model=[mlp,transformer]"], "search.params.model"),
        (["search/sampler=annealing"], "search/sampler=annealing"),
        (["search/pruner=patient"], "search/pruner=patient"),
        (["search.sampler=annealing"], "search/sampler=annealing"),
        (["search.workers=0"], "search.workers"),
        (["search.storage=sqlite:////nonexistent/dir/optuna.db"], "search.storage"),
        (["search.metric=val/accuracy"], "search.metric"),
        (["search.n_trials=-3"], "search.n_trials"),
        # sampler and pruner arguments are checked by building them, before the study exists
        (["search/pruner=median", "search.pruner.n_warmup_steps=-1"], "search.pruner"),
        (["search/sampler=tpe", "+search.sampler.n_startup_triels=3"], "search.sampler"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_creates_nothing(tmp_path, args, key):
    out = sweep(tmp_path, *FAST, *args)
    assert out.returncode == 2, (out.stdout, out.stderr)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("sweeper: error:") and key in lines[0], out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    assert not (tmp_path / "outputs" / "sweeps" / "default").exists()
    assert not (tmp_path / "mlflow.db").exists()


def test_a_single_worker_runs_in_the_commands_own_process_unless_asked_for_one_of_its_own(tmp_path):
    """One worker needs no second interpreter (nor a second copy of torch and Lightning);
    search.worker_process=true gives it a process of its own."""
    inline, separate = tmp_path / "inline", tmp_path / "separate"
    inline.mkdir()
    separate.mkdir()
    out = sweep(inline, *FAST, "search.n_trials=1", "search/pruner=none")
    assert out.returncode == 0, out.stderr + out.stdout
    out = sweep(separate, *FAST, "search.n_trials=1", "search/pruner=none", "search.worker_process=true")
    assert out.returncode == 0, out.stderr + out.stdout

    def worker_pid(cwd: Path) -> int:
        (trial,) = load_study(cwd).trials
        return int(str(trial.user_attrs["sweeper.worker"]).split(":")[1])

    assert worker_pid(inline) == os.getpid()  # the command ran in this (the test's) process
    assert worker_pid(separate) != os.getpid()
    for cwd in (inline, separate):  # either way the trial's output is in its log, not on the terminal
        assert (cwd / "outputs" / "sweeps" / "default" / "trial_0000" / "trial.log").is_file()
