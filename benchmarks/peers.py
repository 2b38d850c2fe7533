"""sweeper beside the tools a user would use instead, on the same sweep.

    python benchmarks/peers.py                       # both workloads, every contender found
    python benchmarks/peers.py --workloads cnn --repeats 3
    python benchmarks/peers.py --contenders script sweeper

Same data (sweeper's digits split, seed 0), model, search space (lr log-uniform 1e-4..0.1,
batch size 16..256), TPE seeded 0, trial count and epochs for everyone; pruning where the
contender has it (median for Optuna and sweeper, ASHA for Ray Tune; the Hydra sweeper has
none). Contenders run alternately, each in a fresh folder with its own MLflow store
(``sqlite:///mlflow.db``), and the tables give medians of the repeats.

Ray Tune and hydra-optuna-sweeper live in their own virtual environments (the Hydra
sweeper needs optuna<3): see benchmarks/peers/README.md; a contender whose interpreter
is missing is skipped with a line that says so.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
PEERS = REPO / "benchmarks" / "peers"

WORKLOADS = {
    # name: (model, trials, epochs)
    "cnn": ("cnn", 20, 10),
    "mlp": ("mlp", 50, 1),
}


@dataclass
class Contender:
    name: str
    pruning: str  # "none" or the pruner's name
    python: str
    argv: list[str]  # {model} {trials} {epochs} are filled in
    records: str  # "jsonl" (the contender writes PEER_RECORDS) or "optuna" (sweeper's journal)
    workloads: tuple[str, ...] = ("cnn", "mlp")


def contenders(args: argparse.Namespace) -> list[Contender]:
    me = sys.executable
    sweep = ["-m", "sweeper", "sweep", "model={model}", "search.n_trials={trials}",
             "trainer.max_epochs={epochs}", "search.study_name=peer"]
    out = [
        Contender("script", "none", me, [str(PEERS / "optuna_script.py"), "--model", "{model}", "--trials",
                                         "{trials}", "--epochs", "{epochs}"], "jsonl"),
        Contender("script", "median", me, [str(PEERS / "optuna_script.py"), "--model", "{model}", "--trials",
                                           "{trials}", "--epochs", "{epochs}", "--pruner", "median"], "jsonl",
                  ("cnn",)),
        Contender("hydra-optuna-sweeper", "none", args.hydra_python,
                  [str(PEERS / "hydra_app" / "train.py"), "-m", "hydra.sweeper.n_trials={trials}", "model={model}",
                   "epochs={epochs}"], "jsonl"),
        Contender("ray-tune", "none", args.ray_python,
                  [str(PEERS / "ray_tune.py"), "--model", "{model}", "--trials", "{trials}", "--epochs",
                   "{epochs}"], "jsonl"),
        Contender("ray-tune", "asha", args.ray_python,
                  [str(PEERS / "ray_tune.py"), "--model", "{model}", "--trials", "{trials}", "--epochs",
                   "{epochs}", "--scheduler", "asha"], "jsonl", ("cnn",)),
        Contender("sweeper", "none", me, [*sweep, "search/pruner=none"], "optuna"),
        Contender("sweeper", "median", me, sweep, "optuna", ("cnn",)),
    ]
    return [c for c in out if not args.contenders or c.name in args.contenders]


@dataclass
class Result:
    wall: float
    fit: float
    trials: int
    epochs: int
    best: float
    to_best: float
    first_start: float
    after_last: float
    peak_mib: float
    mlflow: str
    extra: dict[str, float] = field(default_factory=dict)


class PeakMemory(threading.Thread):
    """The largest resident memory of a process and all its descendants, summed."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.done = pid, 0, threading.Event()

    def run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self.done.is_set():
            total = 0
            try:
                for p in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        total += p.memory_info().rss
            except psutil.Error:
                break
            self.peak = max(self.peak, total)
            self.done.wait(0.2)


def _records_jsonl(path: Path) -> list[dict]:
    rows: dict[object, dict] = {}
    for i, line in enumerate(path.read_text().splitlines() if path.exists() else []):
        row = json.loads(line)
        rows[row.get("trial") or i] = row  # the last line of a trial id counts
    return list(rows.values())


def _records_optuna(cwd: Path) -> list[dict]:
    import optuna

    from sweeper.search.storage import default_storage, open_storage

    study = optuna.load_study(study_name="peer",
                              storage=open_storage(default_storage(cwd / "outputs" / "sweeps" / "peer")))
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.datetime_complete is None:
            continue
        values = list(t.intermediate_values.values())
        rows.append({"start": t.datetime_start.timestamp(), "end": t.datetime_complete.timestamp(),
                     "fit_s": t.user_attrs.get("duration_s", 0.0), "epochs": len(values),
                     "value": max(values) if values else None, "state": t.state.name})
    return rows


def _mlflow_summary(db: Path) -> str:
    if not db.exists():
        return "no store"
    con = sqlite3.connect(db)
    try:
        runs = con.execute("select count(*) from runs").fetchone()[0]
        nested = con.execute("select count(distinct run_uuid) from tags where key='mlflow.parentRunId'").fetchone()[0]
        running = con.execute("select count(*) from runs where status='RUNNING'").fetchone()[0]
        points = con.execute("select count(*) from metrics").fetchone()[0]
        models = con.execute("select count(*) from model_versions").fetchone()[0]
    finally:
        con.close()
    parents = runs - nested if nested else 0
    parts = [f"{runs} runs", f"{parents} parent" if nested else "no parent", f"{points} metric points"]
    if models:
        parts.append(f"{models} model version")
    if running:
        parts.append(f"{running} RUNNING")
    return ", ".join(parts)


def run_one(c: Contender, workload: str, work: Path) -> Result:
    model, trials, epochs = WORKLOADS[workload]
    cwd = Path(tempfile.mkdtemp(prefix=f"{c.name}-{c.pruning}-{workload}-", dir=work))
    argv = [a.format(model=model, trials=trials, epochs=epochs) for a in c.argv]
    env = {**os.environ, "PEER_RECORDS": str(cwd / "trials.jsonl"), "PWD": str(cwd),
           "PYTHONWARNINGS": "ignore"}
    t0 = time.time()
    with open(cwd / "output.log", "w") as log:
        proc = subprocess.Popen([c.python, *argv], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        memory = PeakMemory(proc.pid)
        memory.start()
        code = proc.wait()
    t1 = time.time()
    memory.done.set()
    memory.join()
    if code != 0:
        tail = (cwd / "output.log").read_text(errors="replace")[-1500:]
        raise RuntimeError(f"{c.name} ({c.pruning}) exited {code}:\n{tail}")
    rows = _records_jsonl(cwd / "trials.jsonl") if c.records == "jsonl" else _records_optuna(cwd)
    finished = [r for r in rows if r["value"] is not None]
    best = max(r["value"] for r in finished)
    to_best = min(r["end"] for r in finished if r["value"] >= best - 1e-9) - t0
    return Result(
        wall=t1 - t0, fit=sum(r["fit_s"] for r in rows), trials=len(rows),
        epochs=sum(r["epochs"] for r in rows), best=best, to_best=to_best,
        first_start=min(r["start"] for r in rows) - t0, after_last=t1 - max(r["end"] for r in rows),
        peak_mib=memory.peak / 2**20, mlflow=_mlflow_summary(cwd / "mlflow.db"),
    )


def _cells(row: list[object]) -> list[object]:
    """Four decimals below 1 (accuracies), one above (seconds, MiB)."""
    return [f"{v:.4f}" if isinstance(v, float) and abs(v) < 1 else f"{v:.1f}" if isinstance(v, float) else v
            for v in row]


def versions(c: Contender) -> str:
    code = ("import importlib.metadata as m\n"
            "out=[]\n"
            "for p in ('torch','pytorch-lightning','optuna','mlflow','ray','hydra-core','hydra-optuna-sweeper'):\n"
            "    try: out.append(p+' '+m.version(p))\n"
            "    except m.PackageNotFoundError: pass\n"
            "print(', '.join(out))")
    return subprocess.run([c.python, "-c", code], capture_output=True, text=True).stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", nargs="*", default=list(WORKLOADS), choices=list(WORKLOADS))
    ap.add_argument("--contenders", nargs="*", default=None,
                    choices=["script", "hydra-optuna-sweeper", "ray-tune", "sweeper"])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--trials", type=int, default=None, help="override every workload's trial count")
    ap.add_argument("--epochs", type=int, default=None, help="override every workload's epochs")
    ap.add_argument("--ray-python", default=str(REPO / ".venv-ray" / "bin" / "python"))
    ap.add_argument("--hydra-python", default=str(REPO / ".venv-hydra" / "bin" / "python"))
    args = ap.parse_args()
    for name, (model, trials, epochs) in WORKLOADS.items():
        WORKLOADS[name] = (model, args.trials or trials, args.epochs or epochs)
    sys.path.insert(0, str(REPO / "benchmarks"))
    from bench import machine, table

    print(f"machine: {machine()}")
    todo = []
    for c in contenders(args):
        if not Path(c.python).exists():
            print(f"skipped {c.name} ({c.pruning}): no interpreter at {c.python}; see benchmarks/peers/README.md")
            continue
        todo.append(c)
    seen = set()
    for c in todo:
        if c.python not in seen:
            seen.add(c.python)
            print(f"{c.name}: {versions(c)}")
    results: dict[tuple[str, str, str], list[Result]] = {}
    with tempfile.TemporaryDirectory(prefix="sweeper-peers-") as tmp:
        for rep in range(args.repeats):
            for workload in args.workloads:
                for c in todo:  # alternate the contenders within each repeat
                    if workload not in c.workloads:
                        continue
                    r = run_one(c, workload, Path(tmp))
                    results.setdefault((workload, c.name, c.pruning), []).append(r)
                    print(f"  [{rep + 1}/{args.repeats}] {workload} {c.name} ({c.pruning}): {r.wall:.1f} s wall, "
                          f"{r.fit:.1f} s fit, {r.epochs} epochs, best {r.best:.4f}, peak {r.peak_mib:.0f} MiB",
                          flush=True)
    for workload in args.workloads:
        model, trials, epochs = WORKLOADS[workload]
        rows = []
        ref = {p: statistics.median(r.wall for r in results[(w, n, p)])
               for (w, n, p) in results if w == workload and n == "sweeper"}
        for (w, name, pruning), rs in results.items():
            if w != workload:
                continue
            med = lambda attr, rs=rs: statistics.median(getattr(r, attr) for r in rs)  # noqa: E731
            wall = med("wall")
            base = ref.get(pruning) or ref.get("none")
            rows.append([name, pruning, wall, f"{wall / base:.2f}" if base else "-", med("fit"),
                         wall - med("fit"), med("trials") / (wall / 60), int(med("epochs")), med("best"),
                         med("to_best"), med("first_start"), med("after_last"), med("peak_mib"), rs[-1].mlflow])
        rows = [_cells(r) for r in rows]
        table(f"{workload}: {trials} trials of {model}, {epochs} epoch(s), median of {args.repeats} "
              f"(wall / sweeper: against sweeper with the same pruning, else sweeper without)",
              ["contender", "pruning", "wall s", "wall / sweeper", "sum of fit s", "outside fit s", "trials/min",
               "epochs", "best val/acc", "s to best", "s to 1st trial", "s after last", "peak MiB",
               "MLflow records"], rows)


if __name__ == "__main__":
    main()
