"""Honest records and study control, end to end: every number a sweep records says what
happened, and the rules a user sets (start points, plateau, time and epoch budgets)
are kept, in Optuna and in MLflow alike."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from tests.conftest import cli
from tests.search.test_sweep_cli import load_study, runs_by_role, sweep

pytestmark = pytest.mark.integration

QUICK = ["model=mlp", "trainer.accelerator=cpu", "search/pruner=none", "search.register_model=false"]
ONE = "trainer.max_epochs=1"


def _trial_runs(cwd: Path) -> dict[int, object]:
    _, children = runs_by_role(cwd)
    return {int(c.data.tags["trial_number"]): c for c in children}


def test_hyperband_never_prunes_a_trial_that_trained_its_whole_budget(tmp_path):
    out = sweep(tmp_path, "model=mlp", "trainer.accelerator=cpu", "trainer.max_epochs=4",
                "search.n_trials=8", "search/pruner=hyperband", "search.register_model=false")
    assert out.returncode == 0, out.stderr + out.stdout
    study = load_study(tmp_path)
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert complete and len(pruned) + len(complete) == 8
    for t in pruned:  # stopped early: fewer epochs than the budget, the pruner said so
        assert t.user_attrs["epochs"] < 4 and max(t.intermediate_values) < 3
        assert t.user_attrs["sweeper.pruned_by"] == "pruner"
    for t in complete:
        assert t.user_attrs["epochs"] == 4
    assert study.best_trial.state == TrialState.COMPLETE
    runs = _trial_runs(tmp_path)
    for t in study.trials:
        assert runs[t.number].data.tags["state"] == t.state.name
        assert runs[t.number].data.tags["epochs"] == str(t.user_attrs["epochs"])


def test_a_finished_study_is_left_as_it_is_and_a_changed_one_is_refused(tmp_path):
    def args(model: str = "mlp", pruner: str = "none", n_trials: int = 2) -> list[str]:
        return [f"model={model}", "trainer.accelerator=cpu", "trainer.max_epochs=2",
                f"search.n_trials={n_trials}", f"search/pruner={pruner}", "search.register_model=true"]

    first = sweep(tmp_path, *args())
    assert first.returncode == 0, first.stderr + first.stdout
    registered = [line for line in first.stdout.splitlines() if "registered" in line.lower()]
    assert registered == ["registered model 'default' version 1"]  # one line, ours
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    study = load_study(tmp_path)
    best_run = client.get_run(study.best_trial.user_attrs["mlflow_run_id"])
    trial_seconds = (best_run.info.end_time - best_run.info.start_time) / 1000
    # registering did not reopen the best trial's run: its duration is the training's
    assert trial_seconds < study.best_trial.user_attrs["duration_s"] + 5
    (parent,), children = runs_by_role(tmp_path)

    again = sweep(tmp_path, *args())
    assert again.returncode == 0, again.stderr + again.stdout
    assert "is finished: 2 of 2 trials done" in again.stdout and "nothing to run" in again.stdout
    versions = client.search_model_versions("name = 'default'")
    assert [str(v.version) for v in versions] == ["1"]
    (parent_after,), children_after = runs_by_role(tmp_path)
    assert parent_after.info.end_time == parent.info.end_time and parent_after.info.status == "FINISHED"
    assert sorted((c.info.run_id, c.info.end_time) for c in children_after) == \
        sorted((c.info.run_id, c.info.end_time) for c in children)
    assert len(load_study(tmp_path).trials) == 2

    # another model family, another pruner: refused with what changed, nothing added
    for change, key in ((args(model="cnn", n_trials=3), "model._target_"),
                        (args(pruner="median", n_trials=3), "search.pruner._target_")):
        refused = sweep(tmp_path, *change)
        lines = refused.stderr.strip().splitlines()
        assert refused.returncode == 2 and len(lines) == 1, refused.stderr
        assert key in lines[0] and "search.force=true" in lines[0]
    assert len(load_study(tmp_path).trials) == 2
    # search.force=true resumes anyway
    forced = sweep(tmp_path, *args(pruner="median", n_trials=3), "search.force=true")
    assert forced.returncode == 0, forced.stderr + forced.stdout
    assert len(load_study(tmp_path).trials) == 3


def test_a_failing_trial_keeps_its_traceback_and_only_chance_failures_are_retried(tmp_path):
    # a step size of 0 builds, and fails only when the scheduler first steps, in training
    out = sweep(tmp_path, "model=mlp", "scheduler=step", "trainer.accelerator=cpu",
                "trainer.max_epochs=1", "search.n_trials=3", "search/params=none",
                "+search.params.scheduler.step_size=[0]", "search.register_model=false",
                "search.retries=1")
    assert out.returncode == 2 and "search.max_failure_rate" in out.stderr, out.stderr + out.stdout
    trials = load_study(tmp_path).trials
    assert any(t.user_attrs.get("sweeper.retry_of") == 0 for t in trials)  # an error of chance: retried
    log = tmp_path / "outputs" / "sweeps" / "default" / "trial_0000" / "trial.log"
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "ZeroDivisionError" in text
    # the same log is an artifact of the trial's run, readable without the folder
    run = _trial_runs(tmp_path)[0]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    artifact = Path(client.download_artifacts(run.info.run_id, "trial.log", str(tmp_path)))
    assert artifact.read_text() == text
    assert run.data.tags["failure_kind"] == "error" and "ZeroDivisionError" in run.data.tags["failure_reason"]
    shown = cli(tmp_path, "logs", "default", "0")
    assert shown.returncode == 0 and "ZeroDivisionError" in shown.stdout and str(log) in shown.stdout
    remote = cli(tmp_path, "logs", "default", "0", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert remote.returncode == 0 and "ZeroDivisionError" in remote.stdout and run.info.run_id in remote.stdout
    missing = cli(tmp_path, "logs", "default", "99", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert missing.returncode == 2 and "no trial 99" in missing.stderr


BROKEN_DATA = '''
from sweeper.data import DigitsDataModule
from sweeper.errors import DataError


class BrokenDigits(DigitsDataModule):
    """Fails the same way in every trial, after the sweep's checks (they never tear down)."""

    def teardown(self, stage=None):
        raise DataError("data: the cache folder is read-only; fix data.cache_dir")
'''


def test_an_error_that_fails_every_time_is_not_retried(tmp_path):
    (tmp_path / "brokendata.py").write_text(BROKEN_DATA)
    out = sweep(tmp_path, *QUICK, ONE, "data._target_=brokendata.BrokenDigits", "search.n_trials=2",
                "search.retries=2", "search.max_failure_rate=1.0")
    # failures alone end a study even when any failure rate is tolerated: n_trials x (retries + 1)
    assert out.returncode == 2 and len(load_study(tmp_path).trials) == 6, out.stderr + out.stdout
    trials = load_study(tmp_path).trials
    assert trials and all(t.state == TrialState.FAIL for t in trials), out.stderr + out.stdout
    assert not any("sweeper.retry_of" in t.user_attrs for t in trials)
    assert all("cache folder is read-only" in t.user_attrs["sweeper.failure"] for t in trials)


def test_start_points_are_tried_first_and_once(tmp_path):
    base = sweep(tmp_path, *QUICK, ONE, "search.study_name=base", "search.n_trials=3", "search/sampler=random")
    assert base.returncode == 0, base.stderr + base.stdout
    best_two = sorted(load_study(tmp_path, "base").get_trials(states=(TrialState.COMPLETE,)),
                      key=lambda t: t.value, reverse=True)[:2]
    args = [*QUICK, ONE, "search.study_name=warm", "search.n_trials=4",
            "search.enqueue=[{optimizer.lr: 0.01, data.batch_size: 64}]",
            "search.warm_start.study=base", "search.warm_start.top=2"]
    out = sweep(tmp_path, *args)
    assert out.returncode == 0, out.stderr + out.stdout
    assert "queued 3 start point(s)" in out.stdout
    trials = load_study(tmp_path, "warm").trials
    assert trials[0].params == {"optimizer.lr": 0.01, "data.batch_size": 64}
    assert [t.params for t in trials[1:3]] == [t.params for t in best_two]
    # run again with more trials: the start points are in the study, not queued again
    more = sweep(tmp_path, *[a if a != "search.n_trials=4" else "search.n_trials=5" for a in args])
    assert more.returncode == 0, more.stderr + more.stdout
    trials = load_study(tmp_path, "warm").trials
    assert len(trials) == 5
    assert sum(t.params == {"optimizer.lr": 0.01, "data.batch_size": 64} for t in trials) == 1
    # a point outside the space: one line before anything exists
    bad = sweep(tmp_path, *QUICK, ONE, "search.study_name=bad", "search.enqueue=[{data.batch_size: 48}]")
    assert bad.returncode == 2 and "search.enqueue[0]" in bad.stderr and "48" in bad.stderr
    assert not (tmp_path / "outputs" / "sweeps" / "bad").exists()


def test_patience_stops_a_study_on_a_plateau_and_says_so(tmp_path):
    # a first point far better than the 1-epoch random ones after it
    args = [*QUICK, ONE, "search.n_trials=30", "search/sampler=random", "search.patience=2",
            "search.enqueue=[{optimizer.lr: 0.01, data.batch_size: 16}]"]
    out = sweep(tmp_path, *args)
    assert out.returncode == 0, out.stderr + out.stdout
    trials = load_study(tmp_path).trials
    assert len(trials) < 30 and "search stopped early: no improvement of val/acc" in out.stdout
    values = [t.value for t in sorted(trials, key=lambda t: t.datetime_complete)]
    best_at = values.index(max(values))
    assert len(values) - 1 - best_at == 2  # stopped two trials after the last improvement
    (parent,), _ = runs_by_role(tmp_path)
    assert parent.data.tags["outcome"] == "plateau" and parent.info.status == "FINISHED"
    again = sweep(tmp_path, *args)
    assert again.returncode == 0 and "is finished" in again.stdout
    assert len(load_study(tmp_path).trials) == len(trials)


def test_trial_timeout_and_epoch_budget(tmp_path):
    out = sweep(tmp_path, *QUICK, "search.study_name=capped", "trainer.max_epochs=500",
                "data.batch_size=8", "search/params=none", "+search.params.optimizer.lr=[0.001,0.002]",
                "search.n_trials=2", "search.trial_timeout=2")
    assert out.returncode == 0, out.stderr + out.stdout
    trials = load_study(tmp_path, "capped").trials
    assert [t.state for t in trials] == [TrialState.PRUNED] * 2
    assert all(t.user_attrs["sweeper.pruned_by"] == "trial_timeout" and t.user_attrs["epochs"] < 500
               for t in trials)
    runs = _trial_runs(tmp_path)
    assert all(r.data.tags["pruned_by"] == "trial_timeout" and r.data.tags["state"] == "PRUNED"
               for r in runs.values())
    assert all("search.trial_timeout=2s" in r.data.tags["prune_reason"] for r in runs.values())

    budget = sweep(tmp_path, *QUICK, "search.study_name=budget", "trainer.max_epochs=2",
                   "search.n_trials=10", "search.epoch_budget=4")
    assert budget.returncode == 0, budget.stderr + budget.stdout
    trials = load_study(tmp_path, "budget").trials
    assert len(trials) == 2 and sum(t.user_attrs["epochs"] for t in trials) == 4
    assert "search.epoch_budget=4" in budget.stdout
