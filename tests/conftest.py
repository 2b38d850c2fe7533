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


def in_process(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``sweeper ARGS`` in ``cwd``, run by this interpreter: the same ``main()`` as the
    command, its exit code and its output, without an interpreter's start-up and imports.
    For commands that end in this process (refusals, dry runs, reports, one training run);
    what a command starts (workers, servers) are still processes of their own. What the
    command changes in this process is put back: working directory, environment, import
    path and the user's modules, signal handlers, trust, logging, warnings."""
    import contextlib
    import importlib
    import io
    import logging
    import re
    import signal
    import warnings

    from sweeper import signals, trust
    from sweeper.cli import main

    if any(re.fullmatch(r"trainer=ddp|trainer\.strategy=ddp\w*|trainer\.devices=([2-9]|\d\d+)", a) for a in args):
        # Lightning starts DDP ranks by running this process's command line again
        return cli(cwd, *args, fresh=True)

    out, err = io.StringIO(), io.StringIO()
    saved = (os.getcwd(), dict(os.environ), list(sys.path), list(sys.argv), set(trust._trusted),
             list(signals._received), set(sys.modules))
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)}
    root = logging.getLogger()
    logging_state = (list(root.handlers), root.level)
    _forget_stores()  # a relative store URI (sqlite:///mlflow.db) means this cwd's file
    _forget_project_modules(set())  # another test's project may have had a module of the same name
    importlib.invalidate_caches()  # a project's modules written a moment ago are found
    try:
        os.chdir(cwd)
        for name in ("SWEEPER_DDP_CONFIG", "SWEEPER_PROJECT_DIR"):  # a fresh command has neither
            os.environ.pop(name, None)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                code = main(list(args))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        _forget_stores()
        os.chdir(saved[0])
        os.environ.clear()
        os.environ.update(saved[1])
        sys.path[:] = saved[2]
        sys.argv[:] = saved[3]
        trust._trusted.clear()
        trust._trusted.update(saved[4])
        signals._received[:] = saved[5]
        _forget_project_modules(saved[6])
        for number, handler in handlers.items():
            signal.signal(number, handler)
        root.handlers[:] = logging_state[0]
        root.setLevel(logging_state[1])
    return subprocess.CompletedProcess(["sweeper", *args], code, out.getvalue(), err.getvalue())


def _forget_project_modules(keep: set[str]) -> None:
    """Drop the modules (but those in ``keep``) that come from neither the libraries,
    sweeper nor the tests: a user project's, imported from its folder."""
    kept = (sys.prefix, sys.base_prefix, str(REPO))
    for name in set(sys.modules) - keep:
        where = str(getattr(sys.modules.get(name), "__file__", None) or "")
        if where and not where.startswith(kept):
            del sys.modules[name]


def _forget_stores() -> None:
    """Finish every MLflow write of this process and drop the stores MLflow and sweeper
    keep per URI string, so that a relative URI is opened afresh in the next folder."""
    tracking = sys.modules.get("sweeper.tracking.mlflow")
    if tracking is not None:
        tracking._drain_all_writers()
        tracking._shared.clear()
    if "mlflow" in sys.modules:
        from mlflow.tracking._model_registry.registry import ModelRegistryStoreRegistry
        from mlflow.tracking._tracking_service.registry import TrackingStoreRegistry

        TrackingStoreRegistry._get_store_with_resolved_uri.cache_clear()
        ModelRegistryStoreRegistry._get_store_with_resolved_uri.cache_clear()
        for name in ("mlflow.store.tracking.sqlalchemy_store", "mlflow.store.model_registry.sqlalchemy_store",
                     "mlflow.store.jobs.sqlalchemy_store"):
            store = getattr(sys.modules.get(name), "SqlAlchemyStore", None)
            engines = getattr(store, "_engine_map", None)
            if engines:  # engines by URI string: a relative sqlite:/// path is the first folder's
                for engine in engines.values():
                    engine.dispose()
                engines.clear()


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
    """Run ``sweeper ARGS`` in ``tmp_path`` (a fresh working directory): in this process
    (:func:`in_process`), or with ``fresh=True`` as ``python -m sweeper`` in a new one."""

    def run(*args: str, cwd: Path | None = None, timeout: float = 300,
            fresh: bool = False) -> subprocess.CompletedProcess[str]:
        if not fresh:
            return in_process(cwd or tmp_path, *args)
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


def cli(cwd: Path, *args: str, timeout: float = 600, fresh: bool = False) -> subprocess.CompletedProcess[str]:
    """Run ``sweeper ARGS`` in ``cwd``: in this process (:func:`in_process`), or with
    ``fresh=True`` as ``python -m sweeper`` in a new one."""
    if not fresh:
        return in_process(cwd, *args)
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


@pytest.fixture(autouse=True, scope="session")
def _one_migrated_mlflow_schema(tmp_path_factory):
    """A new SQLite MLflow store made in this process is a copy of one migrated once per
    session, instead of a second of MLflow's migrations each time. A command run as a
    process of its own (a worker, ``cli(..., fresh=True)``) migrates as a user's does."""
    import sqlite3

    template = tmp_path_factory.mktemp("mlflow-schema") / "mlflow.db"
    patched: list[tuple[object, object]] = []

    def install() -> None:
        import mlflow.store.db.utils as db_utils
        import mlflow.store.model_registry.sqlalchemy_store as registry_store
        from mlflow.tracking import MlflowClient

        MlflowClient(tracking_uri=f"sqlite:///{template}").search_experiments()  # migrated here, once
        migrate = db_utils._initialize_tables

        def initialize(engine):  # type: ignore[no-untyped-def]
            path = engine.url.database
            if engine.url.get_backend_name() != "sqlite" or not path or path == ":memory:":
                return migrate(engine)
            source, target = sqlite3.connect(template), sqlite3.connect(path)
            try:
                source.backup(target)  # SQLite's own copy, safe beside the engine's open connection
            finally:
                source.close()
                target.close()
            return None

        for module in (db_utils, registry_store):
            patched.append((module, module._initialize_tables))
            module._initialize_tables = initialize

    install()
    yield
    for module, original in patched:
        module._initialize_tables = original


@pytest.fixture(autouse=True)
def _signals_as_they_were():
    """A test leaves Ctrl-C and SIGTERM as it found them: Lightning ignores SIGINT once it
    has handled a KeyboardInterrupt, and a child process started later would inherit
    that and never stop on Ctrl-C."""
    import signal

    numbers = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)
    before = {n: signal.getsignal(n) for n in numbers}
    yield
    for number, handler in before.items():
        if signal.getsignal(number) is not handler:
            signal.signal(number, handler)


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
_IMPLY_INTEGRATION = ("slow", "ddp", "postgres", "slurm", "browser", "processes")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("ddp") and item.get_closest_marker("processes") is None:
            item.add_marker(pytest.mark.processes)  # DDP ranks are processes of their own
        if any(item.get_closest_marker(name) for name in _IMPLY_INTEGRATION) \
                and item.get_closest_marker("integration") is None:
            item.add_marker(pytest.mark.integration)
