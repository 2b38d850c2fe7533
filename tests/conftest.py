"""Shared fixtures: the real config, composed once per test and shrunk to run in seconds.

Every test writes under its own ``tmp_path``: MLflow store, outputs and data files.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

from sweeper.paths import conf_dir

REPO = Path(__file__).resolve().parents[1]

FAST = [
    "trainer.accelerator=cpu",
    "trainer.max_epochs=2",
    "progress_bar=false",
]


def compose_train(overrides: Sequence[str] = (), config_name: str = "train") -> DictConfig:
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))


@pytest.fixture
def tracking_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture
def make_cfg(tmp_path: Path, tracking_uri: str) -> Callable[..., DictConfig]:
    """Compose ``conf/train.yaml`` with overrides, on CPU, 2 epochs, tracking in tmp_path."""

    def make(*overrides: str) -> DictConfig:
        cfg = compose_train([*FAST, f"tracking.uri={tracking_uri}", *overrides])
        with open_dict(cfg):
            cfg.pop("hydra", None)
        return cfg

    return make


@pytest.fixture
def run_cli(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``python -m sweeper ARGS`` in ``tmp_path`` (a fresh working directory)."""

    def run(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        env.pop("SWEEPER_DDP_CONFIG", None)
        return subprocess.run(
            [sys.executable, "-m", "sweeper", *args],
            cwd=cwd or tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


def mlflow_runs(uri: str, experiment: str = "sweeper") -> list:
    """All runs of an experiment, oldest first."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    return sorted(runs, key=lambda r: r.info.start_time)


def cli(cwd: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run ``python -m sweeper ARGS`` in ``cwd``."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("SWEEPER_DDP_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "sweeper", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def recorded(tmp_path_factory) -> Path:
    """Two small studies recorded in one store, the way `sweeper sweep` records them."""
    cwd = tmp_path_factory.mktemp("recorded")
    common = ["model=mlp", "trainer.accelerator=cpu", "trainer.max_epochs=2", "search.register_model=false"]
    for name, n in (("alpha", 3), ("beta", 2)):
        out = cli(cwd, "sweep", *common, f"search.study_name={name}", f"search.n_trials={n}",
                  "search/pruner=none")
        assert out.returncode == 0, out.stderr + out.stdout
    return cwd


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """In-process training on one thread: on a busy 2-core machine, spinning OpenMP
    threads make a tiny fit many times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def postgres_server():
    """One PostgreSQL server on 127.0.0.1 for the whole session (see tests/postgres.py)."""
    from tests import postgres

    if not postgres.available():
        if os.environ.get("SWEEPER_REQUIRE_POSTGRES") == "1":
            pytest.fail("PostgreSQL binaries (initdb, pg_ctl) not found; apt-get install postgresql")
        pytest.skip("PostgreSQL not installed (apt-get install postgresql)")
    server = postgres.PostgresServer()
    yield server
    server.stop()


# Markers that imply a real process, server or cluster: such a test is an integration
# test whatever its author marked, so `-m "not integration"` (the fast stage) never runs it.
_IMPLY_INTEGRATION = ("slow", "ddp", "postgres", "slurm", "browser")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if any(item.get_closest_marker(name) for name in _IMPLY_INTEGRATION) \
                and item.get_closest_marker("integration") is None:
            item.add_marker(pytest.mark.integration)
