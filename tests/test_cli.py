"""The command line end to end, in fresh processes and working directories."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import REPO, mlflow_runs

pytestmark = pytest.mark.integration
FAST = ["trainer.accelerator=cpu", "trainer.max_epochs=2", "progress_bar=false"]


def _uri(cwd: Path) -> str:
    return f"sqlite:///{cwd / 'mlflow.db'}"


def test_help_does_not_import_heavy_libraries():
    code = (
        "import sys; from sweeper.cli import main; rc = main(['--help']); "
        "heavy = [m for m in ('torch', 'pytorch_lightning', 'mlflow', 'optuna') if m in sys.modules]; "
        "print(heavy); sys.exit(rc)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and "usage: sweeper" in out.stdout
    assert out.stdout.strip().endswith("[]")


def test_console_script_help(tmp_path):
    script = Path(sys.executable).with_name("sweeper")
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0 and "train" in out.stdout


def test_train_help_and_cfg_job(run_cli):
    out = run_cli("train", "--help")
    assert out.returncode == 0
    assert "model: cnn, mlp, rnn" in out.stdout and "optimizer: adam, adamw, sgd" in out.stdout
    out = run_cli("train", "--cfg", "job", "model=rnn", "optimizer.lr=0.05")
    assert out.returncode == 0
    assert "_target_: sweeper.models.RNN" in out.stdout and "lr: 0.05" in out.stdout


def test_train_records_a_run_in_the_default_store(run_cli, tmp_path):
    out = run_cli("train", "model=rnn", "optimizer=sgd", "optimizer.lr=0.05", "data.batch_size=32",
                  "trainer.max_epochs=5", "progress_bar=false")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "mlflow.db").is_file()  # MLflow's default store, in the working directory
    (run,) = mlflow_runs(_uri(tmp_path))
    assert run.info.status == "FINISHED"
    p = run.data.params
    assert (p["model"], p["optimizer"], p["optimizer.lr"], p["data.batch_size"]) == ("rnn", "sgd", "0.05", "32")
    assert p["trainer.max_epochs"] == "5" and p["optimizer.momentum"] == "0.9"
    assert "val/acc" in out.stdout and run.info.run_id in out.stdout
    assert len(list((tmp_path / "outputs" / "train").glob("*/checkpoints/best.ckpt"))) == 1


def test_multirun_makes_one_run_per_job(run_cli, tmp_path):
    out = run_cli("train", "-m", "model=mlp,cnn,rnn", *FAST)
    assert out.returncode == 0, out.stderr
    runs = mlflow_runs(_uri(tmp_path))
    assert [r.data.tags["model_family"] for r in runs] == ["mlp", "cnn", "rnn"]
    assert all(r.info.status == "FINISHED" for r in runs)
    assert len(list((tmp_path / "multirun" / "train").glob("*/[0-2]/config.yaml"))) == 3


@pytest.mark.parametrize(
    "args, key",
    [
        (["model=transformer"], "model=transformer"),
        (["optimizer=lion"], "optimizer=lion"),
        (["modle.channels=[8]"], "modle.channels"),
        (["trainer.max_epochz=3"], "trainer.max_epochz"),
        (["data.batch_size=abc"], "data.batch_size"),
        (["data.batch_size=0"], "data.batch_size"),
        (["data.batch_size=-8"], "data.batch_size"),
        (["optimizer.lr=0"], "optimizer.lr"),
        (["optimizer.lr=-1e-3"], "optimizer.lr"),
        (["trainer.max_epochs=two"], "trainer.max_epochs"),
        (["model.pool=median"], "model"),
        (["data=mnist", "data.root=missing"], "data.root"),
        (["data=fashion_mnist"], "data.download=true"),
        (["tracking.uri=bogus-scheme://x"], "tracking.uri"),
        (["model=[oops"], "override"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_creates_no_run(run_cli, tmp_path, args, key):
    out = run_cli("train", *FAST, *args)
    assert out.returncode == 2, (out.stdout, out.stderr)
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("sweeper: error:") and key in lines[0]
    assert "Traceback" not in out.stderr + out.stdout
    assert not (tmp_path / "mlflow.db").exists()  # no store, so no run
    assert not (tmp_path / "outputs").exists()  # not even Hydra's run folder


def test_unknown_command(run_cli):
    out = run_cli("trian")
    assert out.returncode == 2 and "unknown command 'trian'" in out.stderr


def _has_metric(db: Path, key: str) -> bool:
    """Read the store with sqlite directly: an MLflow client could race the writer's migrations."""
    if not db.exists():
        return False
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            return con.execute("select count(*) from metrics where key = ?", (key,)).fetchone()[0] > 0
    except sqlite3.Error:
        return False


@pytest.mark.processes
def test_ctrl_c_ends_the_run_killed_not_running(tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sweeper", "train", "trainer.max_epochs=100000", "progress_bar=false"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    uri = _uri(tmp_path)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not _has_metric(tmp_path / "mlflow.db", "val/acc"):
            time.sleep(0.5)
        assert _has_metric(tmp_path / "mlflow.db", "val/acc"), "training never started"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    (run,) = mlflow_runs(uri)
    assert run.info.status == "KILLED"


@pytest.mark.ddp
def test_ddp_on_two_cpu_processes_records_exactly_one_run(run_cli, tmp_path):
    out = run_cli("train", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
                  "trainer.max_epochs=2", "progress_bar=false")
    assert out.returncode == 0, out.stderr
    assert "MEMBER: 2/2" in out.stdout + out.stderr  # both ranks joined the process group
    (run,) = mlflow_runs(_uri(tmp_path))
    assert run.info.status == "FINISHED" and run.data.params["trainer.devices"] == "2"
    history = MlflowClient(_uri(tmp_path)).get_metric_history(run.info.run_id, "val/acc")
    assert sorted(m.step for m in history) == [0, 1]  # one value per epoch: rank 0 logs alone
    assert run.data.metrics["test/acc"] > 0.5


@pytest.mark.slow
def test_non_editable_install_runs_from_any_directory(tmp_path):
    dist = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(REPO)],
        capture_output=True, text=True,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = dist.glob("sweeper-*.whl")
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
        check=True, capture_output=True,
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONWARNINGS": "ignore"}
    code = "import sweeper.paths as p; print(p.conf_dir())"
    where = subprocess.run([sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True)
    assert where.stdout.strip() == str(site / "sweeper" / "conf")
    out = subprocess.run(
        [sys.executable, "-m", "sweeper", "train", "model=mlp", *FAST],
        cwd=work, env=env, capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stderr
    (run,) = mlflow_runs(_uri(work))
    assert run.info.status == "FINISHED"
    recipes = subprocess.run(
        [sys.executable, "-m", "sweeper", "sweep", "experiment=digits_cnn", "--cfg", "job"],
        cwd=work, env=env, capture_output=True, text=True,
    )
    assert recipes.returncode == 0 and "study_name" in recipes.stdout, recipes.stderr
    # a user's project beside the non-editable install: own folder, data module, experiment
    from tests.test_user_project import write_project

    project = write_project(tmp_path / "project")
    out = subprocess.run(
        [sys.executable, "-m", "sweeper", "sweep", "experiment=wine_mlp", "trainer.accelerator=cpu"],
        cwd=project, env=env, capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stderr + out.stdout
    trials = [r for r in mlflow_runs(_uri(project)) if r.data.tags.get("sweeper.role") == "trial"]
    assert len(trials) == 2
    assert {r.data.tags["model_class"] for r in trials} == {"sweeper.models.mlp.MLP"}
    assert {r.data.tags["data_class"] for r in trials} == {"winedata.WineDataModule"}


def test_shell_completion_is_refused_in_one_line_and_not_offered_in_help(run_cli):
    out = run_cli("train", "-sc", "install=bash")
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        "sweeper: error: shell completion is not offered; `sweeper <command> --help` lists the "
        "config groups and keys"]
    helped = run_cli("sweep", "--hydra-help")
    assert helped.returncode == 0 and "--config-dir" in helped.stdout
    assert "shell-completion" not in helped.stdout and "-sc" not in helped.stdout
