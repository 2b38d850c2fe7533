from __future__ import annotations

import subprocess

import pytest
from mlflow.tracking import MlflowClient

from sweeper.errors import SweeperError
from sweeper.tracking import flatten
from sweeper.tracking.mlflow import MlflowTracker, git_commit


def test_flatten_drops_hydra_plumbing_and_keeps_lists():
    tree = {"model": {"_target_": "x.Y", "channels": [1, 2], "opt": {"lr": 0.1}}, "seed": 3}
    assert flatten(tree) == {"model.channels": [1, 2], "model.opt.lr": 0.1, "seed": 3}


def test_git_commit_inside_and_outside_a_repository(tmp_path):
    assert git_commit(tmp_path) is None
    git = ["git", "-c", "user.email=a@b", "-c", "user.name=a", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "f").write_text("x")
    subprocess.run([*git, "-C", str(tmp_path), "add", "f"], check=True)
    subprocess.run([*git, "-C", str(tmp_path), "commit", "-qm", "c"], check=True)
    sha = git_commit(tmp_path)
    assert sha is not None and len(sha) == 40


def test_tracker_batches_params_and_flushes_async_metrics(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    tracker = MlflowTracker(uri, "exp")
    run_id = tracker.start_run("r", {"a": 1, "skip": None})
    tracker.log_params(run_id, {f"p{i}": i for i in range(250)})  # > one batch of 100
    for step in range(5):
        tracker.log_metrics(run_id, {"val/acc": step / 10}, step=step)
    tracker.end_run(run_id)
    run = MlflowClient(uri).get_run(run_id)
    assert len(run.data.params) == 250 and run.data.tags["a"] == "1" and "skip" not in run.data.tags
    assert [m.value for m in MlflowClient(uri).get_metric_history(run_id, "val/acc")] == [0, 0.1, 0.2, 0.3, 0.4]
    assert run.info.status == "FINISHED"
    assert MlflowTracker(uri, "exp").experiment_id == tracker.experiment_id  # reuses the experiment


def test_metrics_are_coalesced_into_few_writes_and_none_is_lost(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    tracker = MlflowTracker(uri, "exp")
    run_id = tracker.start_run("r")
    writes = []
    original = tracker.client.log_batch
    monkeypatch.setattr(tracker.client, "log_batch", lambda *a, **k: (writes.append(k), original(*a, **k))[1])
    for step in range(50):  # 50 epochs in well under METRIC_INTERVAL_S
        tracker.log_metrics(run_id, {"train/loss": 1 / (step + 1), "val/acc": step / 100}, step=step)
    tracker.set_tags(run_id, {"state": "COMPLETE"})
    tracker.end_run(run_id, wait=False)
    tracker.flush()
    history = MlflowClient(uri).get_metric_history(run_id, "val/acc")
    assert [m.step for m in history] == list(range(50))
    assert len(writes) <= 3  # the first epoch at once, the rest with the tags
    run = MlflowClient(uri).get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["state"] == "COMPLETE"


def test_a_failed_write_is_reported_and_does_not_stop_later_writes(tmp_path, caplog):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    tracker = MlflowTracker(uri, "exp")
    run_id = tracker.start_run("r")
    tracker.set_tags("no-such-run", {"a": 1})
    tracker.log_metrics(run_id, {"val/acc": 0.5}, step=0)
    with caplog.at_level("WARNING"):
        tracker.end_run(run_id)
    assert "MLflow write log_batch failed" in caplog.text
    assert MlflowClient(uri).get_run(run_id).info.status == "FINISHED"
    assert [m.value for m in MlflowClient(uri).get_metric_history(run_id, "val/acc")] == [0.5]


def test_unusable_store_is_a_user_error(tmp_path):
    with pytest.raises(SweeperError, match=r"tracking\.uri"):
        MlflowTracker("bogus-scheme://x", "exp")
