"""Optuna's own tools on sweeper's studies: the commands a sweep prints run as printed,
with the real ``optuna`` CLI and ``optuna-dashboard`` (its HTTP API), and the study names
its metrics."""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from sweeper.search.storage import optuna_commands, optuna_storage
from tests.conftest import cli
from tests.postgres import PASSWORD

pytestmark = pytest.mark.integration
BIN = str(Path(sys.executable).parent)


def _printed_commands(stdout: str) -> list[str]:
    (line,) = [ln for ln in stdout.splitlines() if ln.startswith("Optuna's own tools: ")]
    line = line.split("   (password from")[0]
    return [c.strip() for c in line[len("Optuna's own tools: "):].split("   |   ")]


def _shell(command: str, cwd: Path, timeout: float = 120, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ.get("PATH", ""), "PYTHONWARNINGS": "ignore", **extra}
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _dashboard_study(command: str, cwd: Path, **extra: str) -> dict:
    """Start the printed ``optuna-dashboard`` command and read its first study by its API."""
    port = _free_port()
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ.get("PATH", ""), **extra}
    proc = subprocess.Popen(["bash", "-c", f"exec {command} --port {port}"], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(120):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as r:
                    studies = json.load(r)["study_summaries"]
                break
            except OSError:
                if proc.poll() is not None:
                    raise AssertionError(f"optuna-dashboard exited: {proc.stderr.read()}") from None
                time.sleep(0.5)
        else:
            raise AssertionError("optuna-dashboard did not answer")
        (study,) = studies
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{study['study_id']}", timeout=10) as r:
            return {**study, **json.load(r)}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.processes  # the real optuna and optuna-dashboard commands
def test_the_printed_optuna_commands_work_as_printed(tmp_path):
    out = cli(tmp_path, "sweep", "model=mlp", "trainer.accelerator=cpu", "trainer.max_epochs=1", "tracking=none",
              "search.n_trials=2", "search/pruner=none", "search.register_model=false", "search.study_name=tools")
    assert out.returncode == 0, out.stderr + out.stdout
    dashboard, trials = _printed_commands(out.stdout)
    journal = (tmp_path / "outputs" / "sweeps" / "tools" / "optuna.journal").resolve()
    assert dashboard == f"optuna-dashboard {journal}" and "journal:" not in trials
    # the optuna CLI, from another folder, reads both trials with their values
    listed = _shell(trials + " -f json", cwd=tmp_path.parent)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [r["state"] for r in rows] == ["COMPLETE", "COMPLETE"]
    assert all(0 < r["value"]["val/acc"] <= 1 for r in rows)  # the value under its metric's name
    best = _shell(f"optuna best-trial --storage {shlex.quote(str(journal))} --study-name tools -f json", tmp_path)
    assert best.returncode == 0, best.stderr
    assert json.loads(best.stdout)["value"]["val/acc"] == max(r["value"]["val/acc"] for r in rows)
    # the dashboard names the objective after the metric, not "Objective 0"
    study = _dashboard_study(dashboard, tmp_path.parent)
    assert study["study_name"] == "tools" and study["objective_names"] == ["val/acc"]
    assert len(study["trials"]) == 2


def test_storage_strings_for_optuna_drop_the_password_and_the_journal_prefix(tmp_path):
    assert optuna_storage(f"journal:///{tmp_path}/s/optuna.journal") == f"{tmp_path}/s/optuna.journal"
    url = optuna_storage("postgresql+psycopg2://me:secret@db:5432/optuna")
    assert url == "postgresql+psycopg2://me@db:5432/optuna"
    dashboard, trials = optuna_commands("postgresql+psycopg2://me:secret@db/optuna", "my study")
    assert "secret" not in dashboard + trials and trials.endswith("--study-name 'my study'")


@pytest.mark.postgres
@pytest.mark.processes  # the real optuna and optuna-dashboard commands
def test_the_printed_commands_read_a_postgresql_study(tmp_path, postgres_server):
    url = postgres_server.url(postgres_server.new_database())
    out = cli(tmp_path, "sweep", "model=mlp", "trainer.accelerator=cpu", "trainer.max_epochs=1", "tracking=none",
              "search.n_trials=1", "search/pruner=none", "search.register_model=false", "search.study_name=pg",
              f"search.storage={url}")
    assert out.returncode == 0, out.stderr + out.stdout
    assert "(password from PGPASSWORD or ~/.pgpass)" in out.stdout and PASSWORD not in out.stdout
    dashboard, trials = _printed_commands(out.stdout)
    listed = _shell(trials + " -f json", cwd=tmp_path, PGPASSWORD=PASSWORD)
    assert listed.returncode == 0, listed.stderr
    assert [r["state"] for r in json.loads(listed.stdout)] == ["COMPLETE"]
    assert _dashboard_study(dashboard, tmp_path, PGPASSWORD=PASSWORD)["objective_names"] == ["val/acc"]
