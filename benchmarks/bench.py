"""sweeper benchmarks: framework overhead, pruning payoff, worker scaling, start-up, tracking cost.

    python benchmarks/bench.py                 # everything, default sizes
    python benchmarks/bench.py overhead startup --repeats 3

Each comparison runs in one invocation, alternating the contenders, and reports the
median of the repeats and ratios. Prints tables headed by a description of the machine.
Nothing here asserts a target: the tables are the result.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SWEEPER = [sys.executable, "-m", "sweeper"]
# the `sweeper` command as a user runs it (the console script next to this interpreter)
ENTRY_POINT = ([str(Path(sys.executable).parent / "sweeper")]
               if (Path(sys.executable).parent / "sweeper").exists() else SWEEPER)


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB, {gpu}; Python {platform.python_version()}, "
            f"torch {torch.__version__}, threads {torch.get_num_threads()}")


def table(title: str, headers: list[str], rows: list[list[object]]) -> None:
    cells = [[f"{v:.4f}" if isinstance(v, float) else str(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    print(f"\n### {title}\n")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in cells:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")
    sys.stdout.flush()


# --------------------------------------------------------------------------- data


def write_synthetic_idx(root: Path, n_train: int = 10_000, n_test: int = 2_000, seed: int = 0) -> None:
    """28x28 images in 10 classes: a class-specific blob pattern plus noise (MNIST layout)."""
    from sweeper.data import write_idx
    from sweeper.data.mnist import FILES

    rng = np.random.default_rng(seed)
    prototypes = rng.random((10, 28, 28)) ** 3 * 255

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 10, n)
        x = 0.6 * prototypes[y] + rng.normal(0, 60, (n, 28, 28))
        return np.clip(x, 0, 255).astype(np.uint8), y.astype(np.uint8)

    root.mkdir(parents=True, exist_ok=True)
    (xtr, ytr), (xte, yte) = make(n_train), make(n_test)
    for key, arr in (("train_images", xtr), ("train_labels", ytr), ("test_images", xte), ("test_labels", yte)):
        write_idx(root / f"{FILES[key]}.gz", arr)


WORKLOADS = {
    "mlp-digits": ["model=mlp", "data=digits", "data.batch_size=64"],
    "cnn-28x28": ["model=cnn", "data=mnist", "data.batch_size=128", "data.val_size=1000"],
}


# ---------------------------------------------------------------------- overhead


def _cfg(overrides: list[str], root: Path, uri: str):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    from sweeper.paths import conf_dir

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, "trainer.accelerator=cpu", "progress_bar=false",
                                          f"tracking.uri={uri}", f"data.root={root}"]
                      if "data=mnist" in overrides else
                      [*overrides, "trainer.accelerator=cpu", "progress_bar=false", f"tracking.uri={uri}"])
    with open_dict(cfg):
        cfg.pop("hydra", None)
    return cfg


def plain_loop(cfg) -> float:
    """(a) the same model, data, epochs and seed in a hand-written PyTorch loop: train,
    validate every epoch, test once at the end."""
    import torch
    import torch.nn.functional as F
    from hydra.utils import instantiate

    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    dm = instantiate(cfg.data, _convert_="all")
    dm.setup()
    net = instantiate(cfg.model, _convert_="all", input_shape=list(dm.input_shape), num_outputs=dm.num_classes)
    opt = instantiate(cfg.optimizer, _convert_="all")(net.parameters())

    def accuracy(batches) -> float:
        net.eval()
        with torch.no_grad():
            correct = total = 0
            for x, y in batches:
                correct += (net(x).argmax(1) == y).sum().item()
                total += len(y)
        return correct / total

    for _ in range(cfg.trainer.max_epochs):
        net.train()
        for x, y in dm.train_dataloader():
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(x), y).backward()
            opt.step()
        accuracy(dm.val_dataloader())
    accuracy(dm.test_dataloader())
    return time.perf_counter() - start


def lightning_floor(cfg) -> float:
    """(L) the same model and data in a bare Lightning ``Trainer.fit`` and ``test``: no
    logger, checkpoint, callbacks or sanity check. What Lightning itself costs."""
    import pytorch_lightning as pl

    from sweeper.training.build import build_datamodule, build_module
    from sweeper.training.quiet import quiet_lightning

    quiet_lightning()
    start = time.perf_counter()
    pl.seed_everything(cfg.seed, verbose=False)
    dm = build_datamodule(cfg)
    module = build_module(cfg, dm).module
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=cfg.trainer.max_epochs, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, use_distributed_sampler=False)
    trainer.fit(module, datamodule=dm)
    trainer.test(module, datamodule=dm, verbose=False)
    return time.perf_counter() - start


def sweeper_train(cfg, out: Path) -> float:
    """(b) `sweeper train` in-process: run_training with MLflow tracking and checkpoints."""
    from sweeper.training import run_training

    start = time.perf_counter()
    run_training(cfg, out)
    return time.perf_counter() - start


class Timed:
    """Sums the wall time spent in chosen functions, split by whether the training
    thread waited for it or a background thread ran it. Nested timed calls count once."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = {}
        self._undo: list[Callable[[], None]] = []
        self._depth = threading.local()

    def wrap(self, owner: object, name: str, label: str) -> None:
        original = getattr(owner, name)
        timer = self

        def timed(*args, **kwargs):
            if getattr(timer._depth, "n", 0):
                return original(*args, **kwargs)
            timer._depth.n = 1
            t = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                timer._depth.n = 0
                where = "blocking" if threading.current_thread() is threading.main_thread() else "background"
                key = f"{label} {where}"
                timer.spent[key] = timer.spent.get(key, 0.0) + time.perf_counter() - t

        setattr(owner, name, timed)
        self._undo.append(lambda: setattr(owner, name, original))

    def restore(self) -> None:
        for undo in reversed(self._undo):
            undo()

    def reset(self) -> None:
        self.spent.clear()


def sweep_worker(overrides: list[str], root: Path, work: Path):
    """A sweep worker on a fresh study and MLflow parent run, in this process: the code
    path of every trial of `sweeper sweep` (ask, compose the trial's config, train with the
    pruning callback and an MLflow child run, tell). The searched value is the default
    learning rate and the pruner never prunes, so each trial does the same work as (a)."""
    import optuna
    from hydra import initialize_config_dir

    from sweeper.paths import conf_dir
    from sweeper.search.plan import SweepPlan
    from sweeper.search.settings import parse_settings
    from sweeper.search.storage import default_storage, open_storage
    from sweeper.search.worker import Worker, compose_sweep
    from sweeper.tracking.mlflow import shared_tracker

    work.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    extra = [f"data.root={root}"] if "data=mnist" in overrides else []
    base = [*overrides, *extra, "trainer.accelerator=cpu", f"tracking.uri={uri}", "search.n_trials=1000",
            "search.study_name=bench", "search/pruner=none", "search/params=none",
            "+search.params.optimizer.lr={choices:[0.001]}"]
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3").__enter__()
    cfg = compose_sweep(base)
    settings = parse_settings(cfg.search, {"search/sampler": "tpe", "search/pruner": "none"})
    storage_url = default_storage(work)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.create_study(study_name="bench", storage=open_storage(storage_url), direction="maximize")
    from dataclasses import asdict

    tracker = shared_tracker(uri, "sweeper")
    parent = tracker.start_run("bench", {"sweeper.role": "parent"})
    plan = SweepPlan(study_name="bench", storage=storage_url, study_dir=str(work), overrides=base,
                     choices={}, settings=asdict(settings), parent_run_id=parent,
                     started_at=time.time() - 1)
    return Worker(plan, 0)


def sweep_trial(worker) -> float:
    """(c) one trial of a running sweep, from asking Optuna to telling it the result."""
    start = time.perf_counter()
    claimed = worker._claim()
    assert not isinstance(claimed, str), claimed
    worker._run_trial(*claimed)
    return time.perf_counter() - start


def bench_overhead(args: argparse.Namespace) -> None:
    import mlflow.tracking
    import optuna

    import sweeper.search.worker as sworker

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        root = tmp_path / "synthetic"
        write_synthetic_idx(root)
        rows, costs = [], []
        for workload, overrides in WORKLOADS.items():
            epochs = args.epochs
            ov = [*overrides, f"trainer.max_epochs={epochs}"]
            cfg = _cfg(ov, root, f"sqlite:///{tmp_path / f'{workload}.db'}")
            worker = sweep_worker(ov, root, tmp_path / f"c-{workload}")
            # warm-up, untimed: first-call imports and caches of every contender
            plain_loop(cfg), lightning_floor(cfg), sweeper_train(cfg, tmp_path / f"b-{workload}-warm")
            sweep_trial(worker)
            times: dict[str, list[float]] = {"a": [], "L": [], "b": [], "c": []}
            shares: list[dict[str, float]] = []
            timed = Timed()
            for name in ("create_run", "log_batch", "set_terminated", "log_artifact", "log_artifacts"):
                timed.wrap(mlflow.tracking.MlflowClient, name, "mlflow")
            for name in ("ask", "tell", "get_trials"):
                timed.wrap(optuna.Study, name, "optuna")
            for name in ("report", "should_prune", "set_user_attr", "suggest_float", "suggest_categorical",
                         "suggest_int"):
                timed.wrap(optuna.Trial, name, "optuna")
            timed.wrap(sworker, "recover_stale", "optuna")
            try:
                for rep in range(args.repeats):  # alternate the contenders
                    times["a"].append(plain_loop(cfg))
                    times["L"].append(lightning_floor(cfg))
                    times["b"].append(sweeper_train(cfg, tmp_path / f"b-{workload}-{rep}"))
                    worker.tracker.flush()  # (b)'s background writes end before (c) starts
                    timed.reset()
                    total = sweep_trial(worker)
                    worker.tracker.flush()
                    times["c"].append(total)
                    shares.append({**timed.spent, "trial": total})
            finally:
                timed.restore()
            med = {k: statistics.median(v) for k, v in times.items()}
            rows.append([workload, epochs, med["a"], med["L"], med["b"], med["c"], med["L"] / med["a"],
                         med["b"] / med["a"], med["c"] / med["a"], med["c"] / med["L"]])

            def m(key: str, shares: list[dict[str, float]] = shares) -> float:
                return statistics.median(s.get(key, 0.0) for s in shares)

            blocking = m("mlflow blocking") + m("optuna blocking")
            costs.append([workload, m("trial"), m("mlflow blocking"), m("optuna blocking"),
                          blocking / m("trial") * 100, m("mlflow background")])
        table(f"Trial overhead (seconds, median of {args.repeats}; (a) hand-written loop, (L) bare Lightning fit + "
              "test, (b) sweeper train in-process, (c) one trial of a running sweep with Optuna and MLflow)",
              ["workload", "epochs", "(a) loop", "(L) Lightning", "(b) train", "(c) trial", "(L)/(a)", "(b)/(a)",
               "(c)/(a)", "(c)/(L)"], rows)
        table("Tracking cost inside one sweep trial (seconds, median): calls the trial waits for, "
              "and MLflow writes done by the background writer meanwhile",
              ["workload", "trial", "MLflow (waited)", "Optuna (waited)", "waited share %",
               "MLflow (background)"], costs)


# ----------------------------------------------------------------------- pruning


def _sweep_cli(cwd: Path, args: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    out = subprocess.run([*SWEEPER, "sweep", *args], cwd=cwd, capture_output=True, text=True,
                         env={**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})})
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return time.perf_counter() - start


def _study(cwd: Path, name: str):
    import optuna

    from sweeper.search.storage import default_storage, open_storage

    storage = open_storage(default_storage(cwd / "outputs" / "sweeps" / name))
    return optuna.load_study(study_name=name, storage=storage)


# pruner contenders: the shipped options, and variants given as overrides
PRUNERS: dict[str, list[str]] = {
    "none": ["search/pruner=none"],
    "median": ["search/pruner=median"],
    "median (warm-up 1)": ["search/pruner=median", "search.pruner.n_warmup_steps=1"],
    "median (5 startup)": ["search/pruner=median", "search.pruner.n_startup_trials=5"],
    "percentile 25": ["search/pruner=median", "++search.pruner._target_=optuna.pruners.PercentilePruner",
                      "++search.pruner.percentile=25.0"],
    "patient median": ["search/pruner=none", "++search.pruner._target_=optuna.pruners.PatientPruner",
                       "++search.pruner.wrapped_pruner={_target_:optuna.pruners.MedianPruner,"
                       "n_startup_trials:5,n_warmup_steps:2}", "++search.pruner.patience=1"],
    "successive_halving": ["search/pruner=successive_halving"],
    "successive_halving (min 2)": ["search/pruner=successive_halving", "search.pruner.min_resource=2"],
    "successive_halving (min 3)": ["search/pruner=successive_halving", "search.pruner.min_resource=3"],
    "hyperband": ["search/pruner=hyperband"],
}


def _seconds_to(study, target: float) -> float | None:
    """Seconds from the study's first trial until a finished trial reached ``target``."""
    done = sorted((t for t in study.trials if t.datetime_complete and t.value is not None),
                  key=lambda t: t.datetime_complete)
    if not done:
        return None
    start = min(t.datetime_start for t in study.trials if t.datetime_start)
    for t in done:
        if t.state.name == "COMPLETE" and t.value >= target - 1e-9:
            return (t.datetime_complete - start).total_seconds()
    return None


def bench_pruning(args: argparse.Namespace) -> None:
    """Best value, epochs trained and seconds to the unpruned best, per pruner."""
    from optuna.trial import TrialState

    workloads = {"cnn": ["model=cnn"],
                 # late epochs matter: plain SGD on the MLP keeps improving to its last epoch
                 "mlp-sgd": ["model=mlp", "optimizer=sgd",
                             "search.params.optimizer.lr=\"tag(log, interval(0.001, 0.1))\""]}
    chosen = [w for w in args.workloads.split(",") if w]
    names = [n for n in PRUNERS if not args.pruners or n in args.pruners.split(",")]
    for workload in chosen:
        rows, raw = [], []
        results: dict[str, list[tuple[float, int, int, float | None]]] = {n: [] for n in names}
        with tempfile.TemporaryDirectory() as tmp:
            for seed in range(args.seeds):
                walls: dict[str, float] = {}
                studies = {}
                for pruner in names:  # alternate the contenders within each seed
                    name = f"p-{len(raw)}"
                    wall = _sweep_cli(Path(tmp), [*workloads[workload], f"trainer.max_epochs={args.prune_epochs}",
                                                  f"search.n_trials={args.trials}", f"search.seed={seed}",
                                                  *PRUNERS[pruner], f"search.study_name={name}",
                                                  "search.workers=1", "search.register_model=false",
                                                  "tracking=none"])
                    studies[pruner] = _study(Path(tmp), name)
                    walls[pruner] = wall
                    raw.append([seed, pruner])
                target = studies["none"].best_value if "none" in studies else None
                for pruner, study in studies.items():
                    epochs = sum(len(t.intermediate_values) for t in study.trials)
                    pruned = sum(t.state == TrialState.PRUNED for t in study.trials)
                    reach = _seconds_to(study, target) if target is not None else None
                    results[pruner].append((study.best_value, epochs, pruned, reach))
                    shown = "-" if reach is None else round(reach, 1)
                    raw[raw.index([seed, pruner])] = [seed, pruner, study.best_value, epochs, pruned, shown,
                                                      round(walls[pruner], 1)]
                    print(f"  {workload} seed {seed} {pruner}: best {study.best_value:.4f}, {epochs} epochs, "
                          f"{pruned} pruned, reached none's best at {reach}, {walls[pruner]:.0f} s", flush=True)
        base = results.get("none") or next(iter(results.values()))
        base_best = statistics.median(r[0] for r in base)
        base_epochs = statistics.median(r[1] for r in base)
        base_reach = statistics.median(r[3] for r in base if r[3] is not None)
        for pruner, res in results.items():
            best = statistics.median(r[0] for r in res)
            epochs = statistics.median(r[1] for r in res)
            worst_gap = max((nb[0] - r[0]) * 100 for r, nb in zip(res, base))
            reached = [r[3] for r in res if r[3] is not None]
            rows.append([pruner, best, (best - base_best) * 100, worst_gap, int(epochs), epochs / base_epochs,
                         f"{len(reached)}/{len(res)}",
                         statistics.median(reached) / base_reach if reached else "-"])
        table(f"Pruning payoff ({workload}): {args.trials}-trial TPE sweeps, {args.prune_epochs} epochs max, "
              f"median over {args.seeds} seeds",
              ["pruner", "best val/acc", "vs none (points)", "worst seed vs none (points)", "epochs trained",
               "epochs vs none", "seeds reaching none's best", "seconds to it vs none"], rows)
        table(f"Pruning payoff per seed ({workload}; wall seconds for information)",
              ["seed", "pruner", "best val/acc", "epochs", "pruned", "s to none's best", "wall s"], raw)


# ----------------------------------------------------------------------- workers


def bench_workers(args: argparse.Namespace) -> None:
    """One worker in the command's process (the default), one worker in a process of its
    own (search.worker_process=true), and two workers, alternating in one invocation."""
    layouts = {"1 (in the command's process)": ["search.workers=1"],
               "1 (a process of its own)": ["search.workers=1", "search.worker_process=true"],
               "2": ["search.workers=2"]}
    per: dict[str, list[float]] = {name: [] for name in layouts}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for i, (layout, extra) in enumerate(layouts.items()):
                name = f"w{i}-{rep}"
                _sweep_cli(Path(tmp), ["model=mlp", "trainer.max_epochs=10", f"search.n_trials={args.worker_trials}",
                                       *extra, f"search.study_name={name}",
                                       "search/pruner=none", "search.register_model=false", "tracking=none"])
                trials = _study(Path(tmp), name).trials
                first = min(t.datetime_start for t in trials)
                last = max(t.datetime_complete for t in trials)
                per[layout].append(len(trials) / ((last - first).total_seconds() / 60))
    one = statistics.median(per["1 (in the command's process)"])
    rows = [[layout, statistics.median(v), statistics.median(v) / one] for layout, v in per.items()]
    table(f"Worker scaling: trials per minute (MLP on digits, 10 epochs, {args.worker_trials} trials, "
          f"median of {args.repeats})", ["workers", "trials/min", "against one in the command's process"], rows)


# ----------------------------------------------------------------------- startup


def bench_startup(args: argparse.Namespace) -> None:
    """``--help``, and a one-trial sweep to its first trial asked and told, with the
    single worker in the command's process and in a process of its own, alternating."""
    helps: list[float] = []
    layouts = {"one process": [], "a worker process": ["search.worker_process=true"]}
    firsts: dict[str, list[float]] = {k: [] for k in layouts}
    done: dict[str, list[float]] = {k: [] for k in layouts}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            t = time.perf_counter()
            subprocess.run([*ENTRY_POINT, "--help"], capture_output=True, check=True)
            helps.append(time.perf_counter() - t)
            for i, (layout, extra) in enumerate(layouts.items()):
                name = f"s{i}-{rep}"
                t0 = time.time()
                _sweep_cli(Path(tmp), ["model=mlp", "trainer.max_epochs=1", "search.n_trials=1", "tracking=none",
                                       f"search.study_name={name}", "search.register_model=false", *extra])
                trial = _study(Path(tmp), name).trials[0]
                firsts[layout].append(trial.datetime_start.timestamp() - t0)
                done[layout].append(trial.datetime_complete.timestamp() - t0)
    rows = [["sweeper --help", statistics.median(helps)]]
    for layout in layouts:
        rows += [[f"sweeper sweep to the first trial asked of Optuna ({layout})", statistics.median(firsts[layout])],
                 [f"sweeper sweep to the first trial told, 1 MLP epoch ({layout})", statistics.median(done[layout])]]
    table(f"Start-up (seconds, median of {args.repeats})", ["what", "seconds"], rows)


REFUSALS = [
    ("settings", ["search.n_trials=0"]),
    ("settings (data key)", ["data.batch_size=64.5"]),
    ("search space", ["+search.params.model.dropout={type: float, low: 0.0, high: 1.5}", "model=mlp"]),
    ("storage URL", ["search.storage=nonsense"]),
    ("PostgreSQL refusing connections", ["search.storage=postgresql://u:p@127.0.0.1:9/db"]),
    ("tracking server down", ["tracking.uri=http://127.0.0.1:9"]),
    ("config folder missing", ["-cd", "/nonexistent/conf"]),
    ("YAML syntax error", ["data=broken"]),
    ("model building (RNN cell)", ["model=rnn", "model.cell=transformer"]),
]


def bench_refusals(args: argparse.Namespace) -> None:
    """Seconds from the command to its one-line error, and whether torch was imported."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        (cwd / "conf" / "data").mkdir(parents=True)
        (cwd / "conf" / "data" / "broken.yaml").write_text("_target_: x.Y\nbatch_size: [32\n")
        for label, extra in REFUSALS:
            times, lines = [], ""
            for _ in range(args.repeats):
                t = time.perf_counter()
                out = subprocess.run([*ENTRY_POINT, "sweep", *extra], cwd=cwd, capture_output=True, text=True)
                times.append(time.perf_counter() - t)
                lines = out.stderr.strip().splitlines()[-1][:70] if out.stderr.strip() else f"exit {out.returncode}"
            traced = subprocess.run([*ENTRY_POINT, "sweep", *extra], cwd=cwd, capture_output=True, text=True,
                                    env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"})
            torch = any(line.rstrip().endswith("| torch") for line in traced.stderr.splitlines())
            rows.append([label, statistics.median(times), "yes" if torch else "no", lines])
    table(f"Refusals: command to one-line error (seconds, median of {args.repeats})",
          ["error", "seconds", "imports torch", "message"], rows)


# ----------------------------------------------------------------------- scale


def _tree_rss(pid: int) -> dict[int, int]:
    """Resident bytes of a process's children (the sweep's workers), by pid."""
    import psutil

    try:
        return {c.pid: c.memory_info().rss for c in psutil.Process(pid).children(recursive=True)}
    except psutil.Error:
        return {}


def bench_scale(args: argparse.Namespace) -> None:
    """A long study: trials/min per 100-trial window, worker memory over time, `sweeper compare`."""
    n = args.scale_trials
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        name = "scale"
        # learning rate only: a search that converges on small batches would make later
        # trials cost more, and the table would show the search, not sweeper
        cmd = [*SWEEPER, "sweep", "model=mlp", "trainer.max_epochs=1", f"search.n_trials={n}",
               "search.workers=2", f"search.study_name={name}", "search/pruner=none", "~search.params.data"]
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONWARNINGS": "ignore"})
        samples: list[tuple[float, dict[int, int]]] = []
        while proc.poll() is None:
            samples.append((time.perf_counter() - start, _tree_rss(proc.pid)))
            time.sleep(2.0)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr.read()[-2000:])
        trials = sorted(_study(cwd, name).trials, key=lambda t: t.datetime_complete)
        t0 = min(t.datetime_start for t in trials)
        rows = []
        for lo in range(0, len(trials), 100):
            window = trials[lo:lo + 100]
            begin = trials[lo - 1].datetime_complete if lo else t0
            minutes = (window[-1].datetime_complete - begin).total_seconds() / 60
            spans = [(t.datetime_complete - t.datetime_start).total_seconds() for t in window]
            fits = [t.user_attrs.get("duration_s", 0.0) for t in window]
            rows.append([f"{lo + 1}-{lo + len(window)}", len(window) / minutes, statistics.median(spans),
                         statistics.median(fits), statistics.median(s - f for s, f in zip(spans, fits))])
        table(f"Scale: {n}-trial study of the 1-epoch MLP (learning rate searched, batch 64), 2 workers, "
              f"TPE, MLflow on SQLite (wall {wall:.0f} s)",
              ["trials", "trials/min", "median trial s", "median training s", "median rest of trial s"], rows)
        # worker memory: the largest worker's resident size over the run, by fifths
        mem_rows = []
        steady = [(t, max(r.values())) for t, r in samples if len(r) >= 2]
        for i in range(5):
            part = steady[i * len(steady) // 5:(i + 1) * len(steady) // 5]
            if part:
                mem_rows.append([f"{part[0][0]:.0f}-{part[-1][0]:.0f} s",
                                 max(m for _, m in part) / 2**20])
        table("Scale: largest process of the sweep, resident MiB, by fifth of the run",
              ["elapsed", "MiB"], mem_rows)
        compare = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            subprocess.run([*ENTRY_POINT, "compare", name], cwd=cwd, capture_output=True, check=True)
            compare.append(time.perf_counter() - t)
        table(f"Scale: `sweeper compare {name}` on {len(trials)} trials (median of {args.repeats})",
              ["what", "seconds"], [["sweeper compare", statistics.median(compare)]])


# ----------------------------------------------------------------------- threads

_FIT = """
import sys, time
sys.path.insert(0, {peers!r})
import pytorch_lightning as pl
from common import build, trainer_kwargs
pl.seed_everything(0, verbose=False)
times = []
for rep in range({repeats} + 1):
    module, data = build({model!r}, 0.003, {batch})
    trainer = pl.Trainer(**trainer_kwargs({epochs}), logger=False, enable_checkpointing=False)
    t = time.perf_counter()
    trainer.fit(module, datamodule=data)
    times.append(time.perf_counter() - t)
times = sorted(times[1:])  # the first fit warms up
print(times[len(times) // 2])
"""

THREAD_CHOICES = {
    "2 threads, OpenMP default": {"OMP_NUM_THREADS": "2"},
    "2 threads, OMP_WAIT_POLICY=PASSIVE": {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"},
    "2 threads, GOMP_SPINCOUNT=10000": {"OMP_NUM_THREADS": "2", "GOMP_SPINCOUNT": "10000"},
    "1 thread": {"OMP_NUM_THREADS": "1"},
}


def _fit_seconds(model: str, batch: int, epochs: int, env: dict[str, str], repeats: int) -> float:
    code = _FIT.format(peers=str(REPO / "benchmarks" / "peers"), repeats=repeats, model=model, batch=batch,
                       epochs=epochs)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_", "MKL_"))}
    out = subprocess.run([sys.executable, "-c", code], env={**clean, **env, "PYTHONWARNINGS": "ignore"},
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def bench_threads(args: argparse.Namespace) -> None:
    """Fit time of one small model by torch/OpenMP thread choice, on an idle machine and
    beside one busy process (another job on a shared machine)."""
    rows = []
    for model, batch, epochs in (("mlp", 64, 5), ("cnn", 64, 5)):
        for label, env in THREAD_CHOICES.items():
            idle = _fit_seconds(model, batch, epochs, env, args.repeats)
            hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
            try:
                loaded = _fit_seconds(model, batch, epochs, env, args.repeats)
            finally:
                hog.kill()
                hog.wait()
            rows.append([model, label, idle, loaded, loaded / idle])
            print(f"  {model} {label}: idle {idle:.3f} s, loaded {loaded:.3f} s", flush=True)
    table(f"Threads: seconds per fit ({epochs} epochs on digits, batch 64, median of {args.repeats}), idle and "
          "beside one busy process", ["model", "choice", "idle s", "loaded s", "loaded / idle"], rows)


# ----------------------------------------------------------------------- launch


def bench_launch(args: argparse.Namespace) -> None:
    """The SLURM launcher (needs a cluster: .ci/slurm-up): seconds from the command to
    the first trial told, local vs search/launcher=slurm; then trials per minute of one
    and two jobs (1 worker, 1 thread each) on the same kind of study."""
    import shutil

    if shutil.which("sbatch") is None:
        raise SystemExit("bench.py launch needs a SLURM cluster (bash .ci/slurm-up)")
    common = ["model=mlp", "trainer.max_epochs=1", "tracking=none", "search.register_model=false",
              "search/pruner=none", "search.threads=1"]
    slurm = ["search/launcher=slurm", "search.launcher.shared_filesystem=true"]
    firsts: dict[str, list[float]] = {"local": [], "slurm": []}
    per: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for how in ("local", "slurm"):
                name = f"first-{how}-{rep}"
                t0 = time.time()
                _sweep_cli(Path(tmp), [*common, "search.n_trials=1", f"search.study_name={name}",
                                       *([*slurm, "search.launcher.jobs=1"] if how == "slurm" else [])])
                firsts[how].append(_study(Path(tmp), name).trials[0].datetime_complete.timestamp() - t0)
            for jobs in (1, 2):
                name = f"jobs{jobs}-{rep}"
                _sweep_cli(Path(tmp), ["model=mlp", "trainer.max_epochs=10", "tracking=none", "search.threads=1",
                                       "search.register_model=false", "search/pruner=none",
                                       f"search.n_trials={args.worker_trials}", f"search.study_name={name}",
                                       *slurm, f"search.launcher.jobs={jobs}"])
                trials = _study(Path(tmp), name).trials
                first = min(t.datetime_start for t in trials)
                last = max(t.datetime_complete for t in trials)
                per[jobs].append(len(trials) / ((last - first).total_seconds() / 60))
    local, remote = statistics.median(firsts["local"]), statistics.median(firsts["slurm"])
    table(f"Launch: seconds from the command to the first trial told (median of {args.repeats})",
          ["launcher", "seconds", "added"], [["local", local, 0.0], ["slurm (1 job)", remote, remote - local]])
    one, two = statistics.median(per[1]), statistics.median(per[2])
    table(f"SLURM jobs: trials per minute (MLP, 10 epochs, {args.worker_trials} trials, 1 worker x 1 thread per job, "
          f"median of {args.repeats})", ["jobs", "trials/min", "speed-up"], [[1, one, 1.0], [2, two, two / one]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", nargs="*", default=["startup", "overhead", "workers", "pruning"],
                        choices=["startup", "refusals", "overhead", "workers", "pruning", "threads", "scale",
                                 "launch"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5, help="epochs per overhead run")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per pruner (pruning payoff)")
    parser.add_argument("--trials", type=int, default=40, help="trials per pruning sweep")
    parser.add_argument("--workloads", default="cnn,mlp-sgd", help="pruning workloads: cnn, mlp-sgd")
    parser.add_argument("--pruners", default="", help="pruning contenders, comma-separated (default: all)")
    parser.add_argument("--prune-epochs", type=int, default=10)
    parser.add_argument("--worker-trials", type=int, default=24)
    parser.add_argument("--scale-trials", type=int, default=1000)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    for which in args.which:
        globals()[f"bench_{which}"](args)


if __name__ == "__main__":
    main()
