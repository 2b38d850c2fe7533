"""A sweep's workers as jobs of a real SLURM cluster (``search/launcher=slurm``), on one
real PostgreSQL server holding both stores. CI starts a one-node cluster from Debian's
packages (``.ci/slurm-up``); without one these tests are skipped, unless
``SWEEPER_REQUIRE_SLURM=1`` makes that a failure."""

from __future__ import annotations

import collections
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.slurm]

SLOW_MACHINE = Path(__file__).parents[1] / "slow_machine"


@pytest.fixture(scope="module")
def slurm():
    up = shutil.which("sinfo") and subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True,
                                                  timeout=30).stdout.strip()
    if not up or not any(s in up for s in ("idle", "mix", "alloc")):
        if os.environ.get("SWEEPER_REQUIRE_SLURM") == "1":
            pytest.fail("no SLURM cluster answers sinfo; start one with .ci/slurm-up")
        pytest.skip("no SLURM cluster (start one with .ci/slurm-up)")


def _stores(postgres_server) -> tuple[str, str]:
    return (postgres_server.url(postgres_server.new_database()),
            postgres_server.url(postgres_server.new_database(), driver="psycopg2"))


def _sweep(cwd: Path, *args: str, slow: float | None = None, timeout: float = 900) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if slow:  # every epoch of every trial sleeps: time to act mid-trial
        env["PYTHONPATH"] = os.pathsep.join([str(SLOW_MACHINE), *filter(None, [env.get("PYTHONPATH")])])
        env["SWEEPER_TEST_EPOCH_DELAY"] = str(slow)
    env.pop("SWEEPER_DDP_CONFIG", None)
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([sys.executable, "-m", "sweeper", "sweep", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _finish(proc: subprocess.Popen[str], timeout: float = 900) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def _study(url: str, name: str) -> optuna.Study:
    from sweeper.search.storage import open_storage

    return optuna.load_study(study_name=name, storage=open_storage(url))


def _job_logs(cwd: Path, study: str) -> dict[str, str]:
    folder = cwd / "outputs" / "sweeps" / study / "jobs"
    return {p.name: p.read_text(errors="replace") for p in folder.glob("*_log.out")}


def _runs(url: str) -> list:
    client = MlflowClient(url)
    exp = client.get_experiment_by_name("sweeper")
    return client.search_runs([exp.experiment_id], max_results=500)


def test_two_jobs_finish_one_study_once(slurm, postgres_server, tmp_path):
    optuna_url, mlflow_url = _stores(postgres_server)
    n = 6
    proc = _sweep(tmp_path, "model=mlp", "trainer.accelerator=cpu", "trainer.max_epochs=2", f"search.n_trials={n}",
                  "search.study_name=array", f"search.storage={optuna_url}", f"tracking.uri={mlflow_url}",
                  "search/pruner=none", "search/launcher=slurm", "search.launcher.jobs=2")
    out, err = _finish(proc)
    assert proc.returncode == 0, err[-3000:] + out[-2000:]
    assert "submitted jobs" in out and "sbatch --cpus-per-task=1" in out
    trials = _study(optuna_url, "array").trials
    assert [t.state for t in trials].count(TrialState.COMPLETE) == n and len(trials) == n  # nothing RUNNING
    hosts = {t.user_attrs["sweeper.worker"].split(":")[0] for t in trials}
    assert len(hosts) == 2 and all("-slurm" in h for h in hosts), hosts  # one identity per array task
    points = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(points)) == n, points  # array tasks start at the same instant: still no repeats
    runs = _runs(mlflow_url)
    parents = [r for r in runs if r.data.tags.get("sweeper.role") == "parent"]
    children = [r for r in runs if r.data.tags.get("sweeper.role") == "trial"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == n and all(r.info.status == "FINISHED" for r in children)
    tested = [r for r in children if "test/acc" in r.data.metrics]
    assert len(tested) == 1  # the best model tested once, whatever the number of jobs
    versions = MlflowClient(mlflow_url).search_model_versions("name = 'array'")
    assert len(versions) == 1 and versions[0].run_id == tested[0].info.run_id
    logs = _job_logs(tmp_path, "array")
    assert len(logs) == 2
    text = "".join(logs.values())
    assert text.count("test split:") == 1 and text.count("registered model 'array'") == 1
    assert "srun" not in text and "Traceback" not in text
    # the submission is listed by `sweeper logs`, and one job's log printed from there
    listed = subprocess.run([sys.executable, "-m", "sweeper", "logs", "array", "--jobs"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    rows = [ln.split() for ln in listed.stdout.splitlines()]
    assert len(rows) == 2 and all(Path(r[1]).name in logs and len(r) == 2 for r in rows), listed.stdout
    one = subprocess.run([sys.executable, "-m", "sweeper", "logs", "array", "--job", rows[0][0]], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert one.returncode == 0 and f"# job {rows[0][0]}: " in one.stdout, one.stderr
    assert logs[Path(rows[0][1]).name].strip().splitlines()[-1] in one.stdout


def test_a_job_stopped_mid_trial_hands_it_to_the_other_from_its_checkpoint(slurm, postgres_server, tmp_path):
    optuna_url, mlflow_url = _stores(postgres_server)
    epochs = 8
    proc = _sweep(tmp_path, "model=mlp", "trainer.accelerator=cpu", f"trainer.max_epochs={epochs}", "search.n_trials=3",
                  "search.study_name=preempt", f"search.storage={optuna_url}", f"tracking.uri={mlflow_url}",
                  "search/pruner=none", "search.register_model=false", "search/launcher=slurm",
                  "search.launcher.jobs=2", slow=1.5)
    study = None
    deadline = time.time() + 300
    victim = None
    while time.time() < deadline and victim is None:  # a trial 3 epochs in
        time.sleep(1)
        try:
            study = study or _study(optuna_url, "preempt")
        except KeyError:
            continue
        for t in study.get_trials(states=(TrialState.RUNNING,)):
            if len(t.intermediate_values) >= 3:
                victim = t
    assert victim is not None, "no trial reached its third epoch"
    host = victim.user_attrs["sweeper.worker"].split(":")[0]
    job = host.rsplit("-slurm", 1)[1]  # <array job>_<task>
    subprocess.run(["scancel", "--signal=TERM", job], check=True, timeout=30)  # what preemption sends
    out, err = _finish(proc)
    assert proc.returncode == 0, err[-3000:] + out[-2000:]
    trials = _study(optuna_url, "preempt").trials
    stopped = trials[victim.number]
    assert stopped.state == TrialState.FAIL and stopped.user_attrs["sweeper.failure"] == "interrupted (SIGTERM)"
    (retry,) = [t for t in trials if t.user_attrs.get("sweeper.retry_of") == victim.number]
    assert retry.state == TrialState.COMPLETE
    assert retry.user_attrs["sweeper.worker"].split(":")[0] != host  # the other job took it
    resumed_at = retry.user_attrs["sweeper.resumed_at_epoch"]
    # from the checkpoint of the last epoch that finished saving (the signal may land
    # between an epoch's report and its checkpoint), never from epoch 0
    assert resumed_at >= 2 and resumed_at >= len(victim.intermediate_values) - 1
    assert retry.user_attrs["epochs"] == epochs
    # one story: the retry holds the earlier epochs' values and trained only the rest
    assert all(retry.intermediate_values[s] == v for s, v in stopped.intermediate_values.items() if s < resumed_at)
    assert sorted(retry.intermediate_values) == list(range(epochs))
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == 3
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    runs = {r.data.tags.get("trial_number"): r for r in _runs(mlflow_url) if r.data.tags.get("sweeper.role") == "trial"}
    assert runs[str(retry.number)].data.tags["resumed_from_trial"] == str(victim.number)
    assert runs[str(victim.number)].info.status == "KILLED"
    log = (tmp_path / "outputs" / "sweeps" / "preempt" / f"trial_{retry.number:04d}" / "trial.log").read_text()
    assert f"continuing trial #{victim.number} from its checkpoint after epoch {resumed_at}" in log


@pytest.mark.ddp
def test_a_cpu_ddp_trial_trains_in_a_job_and_can_be_pruned(slurm, postgres_server, tmp_path):
    optuna_url, mlflow_url = _stores(postgres_server)
    proc = _sweep(tmp_path, "model=mlp", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                  "trainer.max_epochs=3", "search.n_trials=2", "search.study_name=ddpjob",
                  f"search.storage={optuna_url}", f"tracking.uri={mlflow_url}", "search.register_model=false",
                  "search/pruner=none", "search.pruner._target_=optuna.pruners.ThresholdPruner",
                  "+search.pruner.lower=0.999", "search/launcher=slurm", "search.launcher.jobs=1",
                  "search.launcher.cpus_per_task=2")
    out, err = _finish(proc)
    assert proc.returncode == 0, err[-3000:] + out[-2000:]
    assert "--cpus-per-task=2" in out
    study = _study(optuna_url, "ddpjob")
    assert [t.state for t in study.trials] == [TrialState.PRUNED] * 2
    assert all(t.user_attrs["epochs"] == 1 for t in study.trials)
    assert len(optuna.study.get_all_study_summaries(study._storage)) == 1  # no rank opened a study of its own
    text = "".join(_job_logs(tmp_path, "ddpjob").values())
    assert "srun" not in text and "Traceback" not in text
    counts = collections.Counter(r.data.tags.get("sweeper.role") for r in _runs(mlflow_url))
    assert counts["parent"] == 1 and counts["trial"] == 2


def test_a_sweep_refused_after_its_jobs_were_submitted_leaves_nothing(slurm, postgres_server, tmp_path):
    """The jobs are submitted while the model is checked (they load their libraries
    meanwhile); a refused model cancels them and removes every file of theirs."""
    optuna_url, mlflow_url = _stores(postgres_server)
    before = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, timeout=30).stdout.split()
    proc = _sweep(tmp_path, "model=rnn", "model.cell=transformer", "trainer.accelerator=cpu",
                  "search.n_trials=2", "search.study_name=refused", f"search.storage={optuna_url}",
                  f"tracking.uri={mlflow_url}", "search/launcher=slurm", "search.launcher.jobs=2")
    out, err = _finish(proc, timeout=300)
    assert proc.returncode == 2, err[-3000:] + out[-2000:]
    (line,) = err.strip().splitlines()
    assert line.startswith("sweeper: error: model.cell: ") and "cell must be one of lstm, gru, rnn" in line, line
    assert not (tmp_path / "outputs").exists()  # no jobs folder, no submission record
    with pytest.raises(KeyError):
        _study(optuna_url, "refused")
    assert not MlflowClient(mlflow_url).search_experiments(filter_string="name = 'sweeper'") or not _runs(mlflow_url)
    for _ in range(60):  # cancelled: gone from the queue within seconds
        now = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, timeout=30).stdout.split()
        if set(now) <= set(before):
            break
        time.sleep(1)
    assert set(now) <= set(before), now
    shown = subprocess.run(["scontrol", "show", "job"], capture_output=True, text=True, timeout=30).stdout
    assert "JobName=sweeper-refused" in shown and "JobState=CANCELLED" in shown  # they had been submitted
