"""`sweeper compare` and `sweeper evaluate` on a small recorded study (and on odd ones)."""

from __future__ import annotations

import csv
import io
import json

import pytest
from mlflow.tracking import MlflowClient

from sweeper.tracking.mlflow import MlflowTracker
from tests.conftest import cli

pytestmark = pytest.mark.integration


def test_compare_latest_study_table(recorded):
    out = cli(recorded, "compare")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("study 'beta' (finished): 2 trials, 2 complete")
    header = next(line for line in out.stdout.splitlines() if line.startswith("trial"))
    for column in ("state", "val/acc", "epochs", "duration_s", "data.batch_size", "optimizer.lr"):
        assert column in header


def test_compare_formats_agree(recorded):
    as_json = json.loads(cli(recorded, "compare", "alpha", "--format", "json").stdout)
    assert len(as_json) == 3 and all(row["state"] == "COMPLETE" for row in as_json)
    values = [row["val/acc"] for row in as_json]
    assert values == sorted(values, reverse=True)  # best first
    rows = list(csv.DictReader(io.StringIO(cli(recorded, "compare", "alpha", "--format", "csv").stdout)))
    assert [int(r["trial"]) for r in rows] == [row["trial"] for row in as_json]
    markdown = cli(recorded, "compare", "alpha", "--format", "markdown").stdout
    assert "| trial | state | val/acc |" in markdown and markdown.count("| COMPLETE |") == 3


def test_compare_reads_optuna_and_mlflow_alike(recorded):
    """The same study read from its Optuna journal (the default when it is local) and from
    MLflow: the same trials, states, values, epochs and parameters."""
    from_optuna = json.loads(cli(recorded, "compare", "alpha", "--format", "json").stdout)
    from_mlflow = json.loads(cli(recorded, "compare", "alpha", "--format", "json",
                                 "--experiment", "sweeper").stdout)
    assert len(from_optuna) == 3
    # durations too: one figure per trial, the training run's, in both stores
    assert from_optuna == from_mlflow
    import optuna

    from sweeper.search.progress import trials_table

    journal = recorded / "outputs" / "sweeps" / "alpha" / "optuna.journal"
    study = optuna.load_study(study_name="alpha", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))))
    measured = {t.number: t.user_attrs["duration_s"] for t in study.trials}
    assert {a["trial"]: a["duration_s"] for a in from_optuna} == {n: round(d, 1) for n, d in measured.items()}
    # and the sweep's own end table shows the same seconds
    rows = {int(line.split()[0]): line.split()[4] for line in trials_table(study, ["val/acc"], []).splitlines()[2:]}
    assert rows == {n: f"{round(d, 1)}s" for n, d in measured.items()}
    storage = f"journal:///{(recorded / 'outputs' / 'sweeps' / 'alpha' / 'optuna.journal').resolve()}"
    by_url = json.loads(cli(recorded, "compare", "--storage", storage, "--format", "json").stdout)
    assert by_url == from_optuna
    head = cli(recorded, "compare", "alpha").stdout.splitlines()[0]
    assert head.startswith("study 'alpha' (finished): 3 trials, 3 complete")


def test_compare_two_studies_side_by_side(recorded):
    out = cli(recorded, "compare", "alpha", "beta", "--format", "json")
    assert out.returncode == 0, out.stderr
    alpha, beta = json.loads(out.stdout)
    assert (alpha["study"], alpha["trials"], beta["trials"]) == ("alpha", 3, 2)
    assert alpha["epochs"] == 6 and 1 <= alpha["trials_to_best"] <= 3
    assert alpha["epochs_to_best"] == 2 * alpha["trials_to_best"]
    table = cli(recorded, "compare", "alpha", "beta").stdout
    assert "trials_to_best" in table and "alpha" in table.splitlines()[0]


def test_compare_a_running_study(recorded, tmp_path):
    """A study still running: its unfinished trial shows as RUNNING with its latest value."""
    uri = f"sqlite:///{recorded / 'mlflow.db'}"
    tracker = MlflowTracker(uri, "sweeper")
    parent = tracker.start_run("gamma", {"sweeper.role": "parent", "study": "gamma", "metric": "val/acc",
                                         "direction": "maximize"})
    child = tracker.start_run("trial-0000", {"sweeper.role": "trial", "trial_number": 0}, parent)
    tracker.log_metrics(child, {"val/acc": 0.5}, step=0, synchronous=True)
    out = cli(recorded, "compare", "gamma", "--format", "json")
    assert out.returncode == 0, out.stderr
    (row,) = json.loads(out.stdout)
    assert row["state"] == "RUNNING" and row["val/acc"] == 0.5
    tracker.end_run(child)
    tracker.end_run(parent)


def test_compare_errors_are_one_line_exit_2(recorded, tmp_path):
    uri = f"sqlite:///{recorded / 'mlflow.db'}"
    tracker = MlflowTracker(uri, "sweeper")
    empty = tracker.start_run("empty", {"sweeper.role": "parent", "study": "empty"})
    tracker.end_run(empty)
    for args, text in (
        (["compare", "empty"], "has no trials yet"),
        (["compare", "nope"], "no study 'nope'"),
        (["compare", "a", "b", "c"], "at most two"),
    ):
        out = cli(recorded, *args)
        assert out.returncode == 2 and text in out.stderr and len(out.stderr.strip().splitlines()) == 1
    # a folder where nothing was recorded: one line from every reading command, and no
    # store created by reading
    for args in (["compare"], ["compare", "x"], ["evaluate", "x"], ["logs", "x"], ["logs", "x", "3"],
                 ["compare", "--storage", "sqlite:///nope.db"], ["compare", "--storage", "x.journal"]):
        fresh = cli(tmp_path, *args)
        lines = fresh.stderr.strip().splitlines()
        assert fresh.returncode == 2 and len(lines) == 1 and "nothing recorded at" in lines[0], (args, fresh.stderr)
    assert list(tmp_path.iterdir()) == []


def test_sweep_left_plots_and_evaluation_on_its_runs(recorded):
    client = MlflowClient(f"sqlite:///{recorded / 'mlflow.db'}")
    exp = client.get_experiment_by_name("sweeper")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    (parent,) = client.search_runs([exp.experiment_id], "tags.study = 'alpha' and tags.`sweeper.role` = 'parent'")
    plots = {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
    for name in ("optimization_history", "param_importances", "parallel_coordinate",
                 "intermediate_values", "slice", "contour"):
        assert {f"plots/{name}.html", f"plots/{name}.png"} <= plots, name
    evaluation = {a.path for a in client.list_artifacts(parent.info.run_id, "evaluation")}
    assert {"evaluation/confusion_matrix.png", "evaluation/per_class.csv"} <= evaluation
    best = parent.data.tags["best_trial"]
    (child,) = client.search_runs([exp.experiment_id], f"tags.study = 'alpha' and tags.trial_number = '{best}'")
    assert "evaluation/per_class.html" in {a.path for a in client.list_artifacts(child.info.run_id, "evaluation")}
    assert child.data.metrics["test/acc"] == pytest.approx(parent.data.metrics["test/acc"])


def test_evaluate_a_study_and_a_run(recorded):
    out = cli(recorded, "evaluate", "alpha")
    assert out.returncode == 0, out.stderr
    client = MlflowClient(f"sqlite:///{recorded / 'mlflow.db'}")
    exp = client.get_experiment_by_name("sweeper")
    (parent,) = client.search_runs([exp.experiment_id], "tags.study = 'alpha' and tags.`sweeper.role` = 'parent'")
    (child,) = client.search_runs([exp.experiment_id],
                                  f"tags.study = 'alpha' and tags.trial_number = '{parent.data.tags['best_trial']}'")
    # the same checkpoint on the same split scores what the sweep logged
    assert child.data.metrics["eval/digits/test/acc"] == pytest.approx(child.data.metrics["test/acc"])
    # a split seed the model did not train with would put its training samples in the
    # "test" split: refused, one line, nothing logged
    out = cli(recorded, "evaluate", child.info.run_id, "data.seed=7")
    (line,) = out.stderr.strip().splitlines()
    assert out.returncode == 2 and line.startswith("sweeper: error: data.seed:") and "trained" in line
    out = cli(recorded, "evaluate", child.info.run_id, "data.test_fraction=0.3")
    assert out.returncode == 2 and "data.test_fraction" in out.stderr
    # how batches are cut changes no sample: allowed, and scores the same
    out = cli(recorded, "evaluate", child.info.run_id, "data.eval_batch_size=7")
    assert out.returncode == 0, out.stderr
    after = client.get_run(child.info.run_id)
    assert after.data.metrics["eval/digits/test/acc"] == pytest.approx(child.data.metrics["test/acc"])
    bad = cli(recorded, "evaluate", child.info.run_id, "data=mnist", "data.root=/nowhere")
    assert bad.returncode == 2 and "data.download=true" in bad.stderr
    missing = cli(recorded, "evaluate", "0" * 32)
    assert missing.returncode == 2 and "no MLflow run" in missing.stderr


def test_the_ui_landing_page_copes_with_a_store_without_studies(tmp_path):
    from mlflow.tracking import MlflowClient

    from sweeper.reports.ui import latest_study

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert latest_study(uri, "sweeper") == (None, None, None)  # no experiment at all
    experiment_id = MlflowClient(uri).create_experiment("sweeper")
    assert latest_study(uri, "sweeper") == (experiment_id, None, None)  # an experiment, no study
