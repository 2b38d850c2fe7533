"""Bookkeeping between Optuna trials and their MLflow runs."""

from __future__ import annotations

import optuna
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from sweeper.search.trials import FAILURE_ATTR, RUN_ID_ATTR, close_finished_trial_runs
from sweeper.tracking.mlflow import MlflowTracker


def test_runs_left_running_by_a_killed_worker_are_closed_from_the_study(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    tracker = MlflowTracker(uri, "sweeper")
    study = optuna.create_study(direction="maximize", study_name="s")
    runs = {}
    for name, state in (("done", TrialState.COMPLETE), ("pruned", TrialState.PRUNED),
                        ("failed", TrialState.FAIL), ("training", TrialState.RUNNING),
                        ("orphan", TrialState.FAIL)):
        trial = study.ask()
        # as a worker creates them: the trial's tags are on the run from its first write
        runs[name] = tracker.start_run(name, {"study": "s", "sweeper.role": "trial", "trial_number": trial.number})
        if name != "orphan":  # killed between creating the run and recording its id
            trial.set_user_attr(RUN_ID_ATTR, runs[name])
        trial.set_user_attr("epochs", 3)
        if state == TrialState.FAIL:
            trial.set_user_attr(FAILURE_ATTR, "RuntimeError: boom")
        if state == TrialState.COMPLETE:
            study.tell(trial, 0.9)
        elif state != TrialState.RUNNING:
            study.tell(trial, state=state)
    untouched = tracker.start_run("not a trial")
    other_study = tracker.start_run("other", {"study": "t", "sweeper.role": "trial", "trial_number": 0})

    closed = close_finished_trial_runs(tracker, study)

    client = MlflowClient(uri)
    assert sorted(closed) == sorted(runs[n] for n in ("done", "pruned", "failed", "orphan"))
    got = {n: client.get_run(r) for n, r in runs.items()}
    assert (got["done"].info.status, got["done"].data.tags["state"]) == ("FINISHED", "COMPLETE")
    assert (got["pruned"].info.status, got["pruned"].data.tags["state"]) == ("FINISHED", "PRUNED")
    assert got["failed"].info.status == "FAILED" and got["failed"].data.tags["failure_reason"] == "RuntimeError: boom"
    # an abandoned trial's run ends FAILED, as the state table says (KILLED is for interrupts)
    assert got["orphan"].info.status == "FAILED" and got["orphan"].data.tags["state"] == "FAILED"
    assert got["orphan"].data.tags["failure_kind"] == "abandoned"
    assert "before the trial recorded this run" in got["orphan"].data.tags["failure_reason"]
    assert got["training"].info.status == "RUNNING"  # maybe on another machine: left alone
    assert client.get_run(untouched).info.status == "RUNNING"
    assert client.get_run(other_study).info.status == "RUNNING"
    assert close_finished_trial_runs(tracker, study) == []  # nothing left to close


def test_each_optuna_outcome_has_one_mlflow_record():
    from sweeper.search.trials import FAILURE_KIND_ATTR, PRUNED_BY_ATTR, mlflow_outcome

    def trial(state, **attrs):
        return optuna.trial.create_trial(state=state, value=0.5 if state == TrialState.COMPLETE else None,
                                         intermediate_values={0: 0.1, 1: 0.2}, user_attrs=attrs)

    assert mlflow_outcome(trial(TrialState.COMPLETE, epochs=2, duration_s=1.5)) == (
        {"state": "COMPLETE", "epochs": 2, "duration_s": 1.5}, "FINISHED")
    tags, status = mlflow_outcome(trial(TrialState.PRUNED, prune_reason="pruned at epoch 1"))
    assert (tags["state"], tags["prune_reason"], tags["epochs"], status) == (
        "PRUNED", "pruned at epoch 1", 2, "FINISHED")
    assert tags["pruned_by"] == "pruner"
    tags, status = mlflow_outcome(trial(TrialState.PRUNED, prune_reason="stopped by search.trial_timeout=5s",
                                        **{PRUNED_BY_ATTR: "trial_timeout"}))
    assert (tags["state"], tags["pruned_by"], status) == ("PRUNED", "trial_timeout", "FINISHED")
    tags, status = mlflow_outcome(trial(TrialState.PRUNED, **{FAILURE_ATTR: "diverged: loss is nan",
                                                            FAILURE_KIND_ATTR: "diverged"}))
    assert (tags["state"], tags["prune_reason"], status) == ("PRUNED", "diverged: loss is nan", "FINISHED")
    for kind, run_status in (("error", "FAILED"), ("abandoned", "FAILED"), ("interrupted", "KILLED")):
        tags, status = mlflow_outcome(trial(TrialState.FAIL, **{FAILURE_ATTR: "why", FAILURE_KIND_ATTR: kind}))
        assert (tags["state"], tags["failure_kind"], tags["failure_reason"], status) == (
            "FAILED", kind, "why", run_status)
