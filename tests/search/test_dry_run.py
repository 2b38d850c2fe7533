"""``sweeper sweep --dry-run``: every check of a real sweep, then the plan; nothing created."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from tests.conftest import cli

pytestmark = pytest.mark.integration

COMMON = ["model=mlp", "trainer.accelerator=cpu", "trainer.max_epochs=2", "search.register_model=false"]


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_dry_run_prints_the_plan_and_creates_nothing(tmp_path):
    out = cli(tmp_path, "sweep", "--dry-run", *COMMON, "search.workers=2", "search.n_trials=7")
    assert out.returncode == 0, out.stderr + out.stdout
    text = out.stdout
    assert "dry run of study 'default': every check passed; nothing was created" in text
    assert "optimizer.lr     FloatDistribution(high=0.1, log=True, low=0.0001, step=None)" in text
    assert "data.batch_size  CategoricalDistribution(choices=(16, 32, 64, 128, 256))" in text
    assert "metric:    val/acc (maximize)" in text and "trials:    7" in text
    assert "sampler:   tpe: TPESampler(seed=0, n_startup_trials=5" in text
    assert "pruner:    median: MedianPruner(" in text
    assert re.search(r"workers:   2 worker process\(es\) x \d+ torch thread\(s\) on cpu", text)
    journal = f"journal:///{tmp_path}/outputs/sweeps/default/optuna.journal"
    assert f"{journal}: a new study 'default' would be created" in text
    assert "mlflow:    sqlite:///mlflow.db, experiment 'sweeper': one parent run, one child run per trial" in text
    assert "run it:    sweeper sweep model=mlp" in text and "--dry-run" not in text.split("run it:")[1]
    assert list(tmp_path.iterdir()) == []  # no outputs/, no mlflow.db, no Hydra log


def test_a_dry_run_refuses_what_the_sweep_would_refuse(tmp_path):
    out = cli(tmp_path, "sweep", "--dry-run", "model=rnn", "model.cell=transformer", "trainer.accelerator=cpu")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "cell must be one of lstm, gru, rnn" in lines[0], out.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_dry_run_of_a_recorded_study_reads_it_and_writes_nothing(recorded):
    before = _snapshot(recorded)
    out = cli(recorded, "sweep", "--dry-run", *COMMON, "search.study_name=alpha", "search.n_trials=5",
              "search/pruner=none")
    assert out.returncode == 0, out.stderr + out.stdout
    assert "study 'alpha' exists, would resume: 3 of 5 trials finished" in out.stdout
    assert "workers:   1 worker in this command's process x" in out.stdout
    # a change that makes the trials incomparable is refused, as the sweep would
    out = cli(recorded, "sweep", "--dry-run", *COMMON, "search.study_name=alpha", "search.n_trials=5",
              "search/pruner=none", "trainer.max_epochs=3")
    assert out.returncode == 2 and "study 'alpha' was created with another config: trainer.max_epochs=3" \
        in out.stderr
    assert _snapshot(recorded) == before
