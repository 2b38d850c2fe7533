"""A new SQLite MLflow store made beside the checks (sweeper.tracking.fresh_store)."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from sweeper.tracking.fresh_store import PREFIX, FreshStore, imports_ahead
from tests.conftest import cli

FAST = ["model=mlp", "search.n_trials=1", "trainer.max_epochs=1", "search.register_model=false"]


def _schema(db: Path) -> tuple[list[tuple], list[tuple], list[tuple]]:
    con = sqlite3.connect(db)
    try:
        # MLflow's batch migrations write a rebuilt table's constraints in set order, which
        # differs between processes: compare each statement's lines, not their order
        tables = [(kind, name, sorted(line.strip().rstrip(",") for line in (sql or "").splitlines()))
                  for kind, name, sql in con.execute("select type, name, sql from sqlite_master order by type, name")]
        version = con.execute("select * from alembic_version").fetchall()
        experiments = con.execute(
            "select experiment_id, name, artifact_location, lifecycle_stage from experiments").fetchall()
    finally:
        con.close()
    return tables, version, experiments


def _scratch(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if PREFIX in p.name)


def test_the_store_made_ahead_is_what_mlflow_makes_and_appears_only_when_placed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # what MLflow itself makes in a process of its own (this one copies a template)
    subprocess.run([sys.executable, "-c", "from mlflow.tracking import MlflowClient; "
                    "MlflowClient(tracking_uri='sqlite:///reference.db').search_experiments()"],
                   check=True, capture_output=True)
    fresh = FreshStore.start("sqlite:///mlflow.db")
    assert fresh is not None
    fresh.process.wait(timeout=120)
    assert not (tmp_path / "mlflow.db").exists()  # nothing visible before the checks have passed
    assert _scratch(tmp_path) == [f".mlflow.db{PREFIX}{os.getpid()}"]
    assert fresh.place() is True
    assert _schema(tmp_path / "mlflow.db") == _schema(tmp_path / "reference.db")
    assert _schema(tmp_path / "mlflow.db")[2][0][2] == f"{tmp_path}/mlruns/0"  # this folder's artifacts
    assert _scratch(tmp_path) == []
    fresh.discard()  # after place: nothing to undo
    assert (tmp_path / "mlflow.db").is_file()


def test_a_store_that_appeared_meanwhile_is_kept_and_a_discarded_one_leaves_nothing(tmp_path):
    target = tmp_path / "mlflow.db"
    fresh = FreshStore.start(f"sqlite:///{target}")
    assert fresh is not None
    target.write_bytes(b"made by another process")
    assert fresh.place() is False
    assert target.read_bytes() == b"made by another process" and _scratch(tmp_path) == []

    target.unlink()
    fresh = FreshStore.start(f"sqlite:///{target}")
    assert fresh is not None
    fresh.discard()  # a refused sweep: the process is ended, its file removed
    assert fresh.process.returncode is not None
    assert not target.exists() and _scratch(tmp_path) == []


def test_nothing_is_made_ahead_for_an_existing_store_a_server_or_a_missing_folder(tmp_path):
    existing = tmp_path / "there.db"
    existing.write_bytes(b"")
    assert FreshStore.start(f"sqlite:///{existing}") is None
    assert FreshStore.start("http://127.0.0.1:5000") is None
    assert FreshStore.start("postgresql://u@localhost/db") is None
    assert FreshStore.start(f"sqlite:///{tmp_path}/nope/mlflow.db") is None
    assert FreshStore.start("sqlite:///:memory:") is None
    assert not (tmp_path / "nope").exists()
    assert imports_ahead() is False  # this process has torch: it makes a schema itself


def test_scratch_files_of_killed_commands_are_cleared(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    left = tmp_path / f".mlflow.db{PREFIX}{dead.pid}"
    left.write_bytes(b"half made")
    (tmp_path / f".mlflow.db{PREFIX}{dead.pid}-journal").write_bytes(b"")
    running = tmp_path / f".mlflow.db{PREFIX}{os.getppid()}"  # a command still making one
    running.write_bytes(b"in progress")
    fresh = FreshStore.start(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert fresh is not None
    fresh.discard()
    assert _scratch(tmp_path) == [running.name]


@pytest.mark.integration
def test_a_command_makes_its_new_store_ahead_and_a_refused_one_leaves_none(tmp_path):
    """As a user runs it, in a process of its own (torch not imported yet)."""
    refused = cli(tmp_path, "sweep", *FAST[1:], "model=rnn", "model.cell=transformer", fresh=True)
    assert refused.returncode == 2 and "model.cell" in refused.stderr, refused.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no store, no scratch file, no folder

    ran = cli(tmp_path, "sweep", *FAST, fresh=True)
    assert ran.returncode == 0, ran.stderr + ran.stdout
    assert _scratch(tmp_path) == []
    import mlflow

    runs = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}").search_runs(
        [mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
         .get_experiment_by_name("sweeper").experiment_id])
    assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED"]  # the parent and its trial
