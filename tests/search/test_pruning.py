"""The pruning callback and trial bookkeeping, with real training and real Optuna storage."""

from __future__ import annotations

import subprocess
import sys

import optuna
from optuna.trial import TrialState

from sweeper.search.liveness import WORKER_ATTR, worker_id
from sweeper.search.pruning import pruning_callback
from sweeper.search.trials import ATTEMPT_ATTR, FAILURE_KIND_ATTR, recover_stale
from sweeper.training import run_training
from tests.conftest import mlflow_runs


def test_a_pruned_trial_stops_at_once_and_its_run_says_pruned(make_cfg, tmp_path, tracking_uri):
    # ThresholdPruner is deterministic: any val/acc below 0.999 prunes after the first epoch.
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=0.999))
    trial = study.ask()
    callback = pruning_callback(trial, "val/acc")
    result = run_training(make_cfg("model=mlp", "trainer.max_epochs=5"), tmp_path / "t",
                          callbacks=[callback])
    assert callback.pruned and result.pruned and "epoch 0" in result.prune_reason
    assert result.epochs == 1 and result.test_metrics == {}  # stopped after epoch 0, not tested
    study.tell(trial, state=TrialState.PRUNED)
    assert study.trials[0].state == TrialState.PRUNED
    assert list(study.trials[0].intermediate_values) == [0]
    (run,) = mlflow_runs(tracking_uri)
    assert run.data.tags["state"] == "PRUNED" and run.info.status == "FINISHED"


def test_an_unpruned_trial_reports_every_epoch(make_cfg, tmp_path):
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    trial = study.ask()
    callback = pruning_callback(trial, "val/acc")
    result = run_training(make_cfg("model=mlp", "trainer.max_epochs=3", "tracking=none"),
                          tmp_path / "t", callbacks=[callback])
    assert not callback.pruned and not result.pruned and result.epochs == 3
    assert sorted(study.trials[0].intermediate_values) == [0, 1, 2]


def test_a_trial_that_reaches_its_last_epoch_is_never_pruned(make_cfg, tmp_path):
    # This pruner prunes anything under 0.999 once warm-up ends: here, at the last epoch,
    # where stopping saves nothing and would throw the trial's value away.
    pruner = optuna.pruners.ThresholdPruner(lower=0.999, n_warmup_steps=2)
    study = optuna.create_study(direction="maximize", pruner=pruner)
    trial = study.ask()
    callback = pruning_callback(trial, "val/acc")
    result = run_training(make_cfg("model=mlp", "trainer.max_epochs=3", "tracking=none"),
                          tmp_path / "t", callbacks=[callback])
    assert not callback.pruned and not result.pruned and result.epochs == 3
    assert sorted(study.trials[0].intermediate_values) == [0, 1, 2]  # the last value is reported
    # the same pruner one epoch earlier does prune
    trial = study.ask()
    callback = pruning_callback(trial, "val/acc")
    result = run_training(make_cfg("model=mlp", "trainer.max_epochs=4", "tracking=none"),
                          tmp_path / "u", callbacks=[callback])
    assert result.pruned and result.epochs == 3 and "epoch 2" in result.prune_reason


def test_the_time_cap_stops_a_trial_mid_epoch(make_cfg, tmp_path):
    callback = pruning_callback(None, "val/acc", time_limit_s=0.5)
    result = run_training(make_cfg("model=mlp", "trainer.max_epochs=500", "data.batch_size=8",
                                   "tracking=none"), tmp_path / "t", callbacks=[callback])
    assert result.pruned and result.timed_out and callback.timed_out
    assert "search.trial_timeout=0.5s" in result.prune_reason
    assert result.epochs < 50 and result.duration_s < 30


def _dead_worker() -> str:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    wid = worker_id(proc.pid)
    proc.wait()
    return wid


def test_stale_trials_fail_and_are_queued_again(tmp_path):
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "j.journal"))
    )
    study = optuna.create_study(study_name="s", storage=storage)
    dead = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    dead.set_user_attr(WORKER_ATTR, _dead_worker())
    alive = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    alive.set_user_attr(WORKER_ATTR, worker_id())
    failed = []
    # the callback gets the trial as failed, to record it in MLflow
    assert recover_stale(study, storage, retries=1, on_failed=lambda t: failed.append((t.number, t.state))) == [0]
    states = {t.number: t.state for t in study.trials}
    assert states[0] == TrialState.FAIL and states[1] == TrialState.RUNNING and failed == [(0, TrialState.FAIL)]
    assert study.trials[0].user_attrs[FAILURE_KIND_ATTR] == "abandoned"
    retry = study.trials[2]
    assert retry.state == TrialState.WAITING and retry.user_attrs[ATTEMPT_ATTR] == 2
    again = study.ask()  # the queued retry comes first, with the abandoned trial's values
    assert again.number == 2 and again.suggest_float("x", 0, 1) == dead.params["x"]
    # the retry is itself abandoned: no third attempt with retries=1
    again.set_user_attr(WORKER_ATTR, _dead_worker())
    recover_stale(study, storage, retries=1)
    assert [t.state for t in study.trials].count(TrialState.WAITING) == 0
