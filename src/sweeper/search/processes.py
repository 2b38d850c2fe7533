"""The worker processes of a sweep on this machine: their environment, start and end.

Workers are started first, before the coordinator checks the config and opens the
study, so that their seconds of imports (torch, Lightning, MLflow) overlap the
coordinator's own work. Each reads two lines on its stdin: what it may prepare while it
waits (the sweep's overrides and config folders, whether the MLflow store exists), and
then the plan's path, written once the study and the parent run exist. When the sweep stops before it
starts (bad input), the workers, which have done nothing but import, are ended at once.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TextIO

TICK_S = 1.0  # how often the coordinator redraws progress
POLL_S = 0.05  # how often it looks for ended workers


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: a worker gets SIGTERM when the coordinator dies, even by ``kill -9``; it then
    marks its trial and ends (see :mod:`sweeper.signals`)."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _gpu_count() -> int:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


def worker_threads(workers: int, requested: int | None = None) -> int:
    """Torch/OpenMP threads per worker: ``requested``, else the machine's cores split
    evenly, except on a machine busy with other work right now, where it is one.

    Measured (``python benchmarks/bench.py threads``): on an idle 2-core machine two
    threads fit the digits CNN 1.2x faster than one, but beside one busy process they
    were 2.2x slower than one thread, their OpenMP threads spinning against it; one
    thread loses nothing under load. Sleeping instead of spinning
    (``OMP_WAIT_POLICY=PASSIVE``) kept two threads steady under load but made them
    1.9x slower when idle, so it is not the default.
    """
    if requested:
        return requested
    even = max(1, (os.cpu_count() or 1) // workers)
    if even > 1 and others_running() >= 1:
        return 1
    return even


def others_running(samples: int = 5, gap_s: float = 0.01) -> float:
    """How many other tasks are runnable on this machine now (median of a few looks at
    ``/proc/loadavg``, less this process). Unlike the load average, which stays up for
    minutes after a previous job, it sees only work that competes now. Elsewhere than
    Linux: the 1-minute load average."""
    counts = []
    for i in range(samples):
        try:
            running = int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
        except (OSError, ValueError, IndexError):
            try:
                return os.getloadavg()[0]
            except OSError:
                return 0.0
        counts.append(running - 1)
        if i + 1 < samples:
            time.sleep(gap_s)
    return float(sorted(counts)[len(counts) // 2])


def worker_envs(workers: int, accelerator: str, threads: int, devices_per_trial: int = 1) -> list[dict[str, str]]:
    """Per-worker environment: ``threads`` torch/OpenMP threads each (a value the user
    exported wins), and on a GPU machine the GPUs split into disjoint sets of
    ``devices_per_trial`` (a trial asking for ``trainer.devices=k`` gets k of its own).
    With ``trainer.accelerator`` gpu/cuda, ``workers x devices_per_trial`` GPUs must be
    visible, else the sweep is refused; with ``auto`` workers share them round-robin
    when there are too few."""
    n = str(threads)
    envs = [{"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", n),
             "MKL_NUM_THREADS": os.environ.get("MKL_NUM_THREADS", n)} for _ in range(workers)]
    gpus = _gpu_count() if accelerator in ("auto", "gpu", "cuda") else 0
    need = workers * devices_per_trial
    if accelerator in ("gpu", "cuda") and gpus < need:
        from sweeper.errors import ConfigError

        raise ConfigError(
            f"search.workers={workers} x trainer.devices={devices_per_trial} needs {need} GPUs, and this "
            f"machine shows {gpus} (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); "
            "lower search.workers or trainer.devices"
        )
    if gpus and (workers > 1 or devices_per_trial < gpus):
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        ids = [d.strip() for d in visible.split(",") if d.strip()] if visible else [str(i) for i in range(gpus)]
        for i, env in enumerate(envs):
            if len(ids) >= need:
                mine = ids[i * devices_per_trial:(i + 1) * devices_per_trial]
            else:  # auto with too few: shared
                mine = [ids[(i * devices_per_trial + j) % len(ids)] for j in range(min(devices_per_trial, len(ids)))]
            env["CUDA_VISIBLE_DEVICES"] = ",".join(mine)
    return envs


def runs_inline(workers: int, worker_process: bool, devices_per_trial: int, trainer: Any) -> bool:
    """Whether the sweep's one worker runs in the command's own process: one worker, not
    asked for a process of its own, and trials on one device (Lightning starts DDP ranks
    by running the worker's command line again, so a DDP trial's worker is a process)."""
    ddp = devices_per_trial > 1 or "ddp" in str(trainer.get("strategy", ""))
    return workers == 1 and not worker_process and not ddp


def _console() -> TextIO:
    """Where the progress line goes while this process's own stdout and stderr go to a
    log: a copy of stderr's file descriptor (or stderr itself when it has none)."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return sys.stderr
    return os.fdopen(os.dup(fd), "w", buffering=1, encoding="utf-8", errors="replace")


class InlineWorker:
    """The one worker of a ``search.workers=1`` sweep, run in the coordinator's own
    process: no second interpreter and no second copy of torch, Lightning and MLflow (the
    coordinator loaded them for its checks), no pipe. Its output goes to
    ``worker_0.log`` and each trial's to its ``trial.log``, as a worker process's would;
    the progress line, redrawn from another thread, stays on the terminal
    (:attr:`console`). Ctrl-C and SIGTERM reach the trial directly: it is marked and the
    worker returns the interrupt's exit code."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.started = False
        self.console = _console()
        self._plan: tuple[Path, Path, str, list[str]] | None = None

    def go(self, plan_file: Path, study_dir: Path, storage_url: str, overrides: list[str]) -> None:
        self._plan = (plan_file, study_dir, storage_url, overrides)
        self.started = True

    def wait(self, tick: Callable[[], None]) -> tuple[list[int | None], bool]:
        import threading

        from sweeper.search.plan import SweepPlan
        from sweeper.search.worker import run_inline
        from sweeper.signals import EXIT_CTRL_C, EXIT_SIGTERM

        assert self._plan is not None
        plan_file, study_dir, storage_url, overrides = self._plan
        plan = SweepPlan.load(plan_file)
        plan.storage, plan.overrides = storage_url, overrides  # the file holds them without passwords
        stop = threading.Event()

        def redraw() -> None:
            while not stop.wait(TICK_S):
                with contextlib.suppress(Exception):  # a storage read racing a write: next tick
                    tick()

        saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)  # CUDA_VISIBLE_DEVICES, thread counts
        thread = threading.Thread(target=redraw, name="sweeper-progress", daemon=True)
        thread.start()
        try:
            code = run_inline(plan, study_dir / "worker_0.log")
        finally:
            stop.set()
            thread.join()
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        return [code], code in (EXIT_CTRL_C, EXIT_SIGTERM)

    def close(self) -> None:
        if self.console is not sys.stderr:
            with contextlib.suppress(OSError):
                self.console.close()


class WorkerPool:
    """``search.workers`` processes of ``sweeper _worker``, started before the plan exists.

    Until :meth:`go` their output goes to a private temporary file (a worker that fails to
    import shows it there); from then on each writes ``worker_<i>.log`` in the study folder.
    """

    def __init__(self, envs: list[dict[str, str]], preload_tracking: bool,
                 warm_up: dict[str, Any] | None = None) -> None:
        self._tmp = Path(tempfile.mkdtemp(prefix="sweeper-workers-"))
        self.procs: list[subprocess.Popen[bytes]] = []
        self._early: list[IO[bytes]] = []
        self.console = sys.stderr
        for index, extra in enumerate(envs):
            early = open(self._tmp / f"worker_{index}.log", "w+b")  # noqa: SIM115 - closed in close()
            self._early.append(early)
            env = {**os.environ, **extra, "PYTHONUNBUFFERED": "1"}
            env.pop("SWEEPER_DDP_CONFIG", None)
            args = [sys.executable, "-m", "sweeper", "_worker", "-", str(index)]
            if not preload_tracking:
                args.append("--no-tracking")
            proc = subprocess.Popen(
                args, env=env, stdin=subprocess.PIPE, stdout=early, stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )  # fmt: skip
            # First line: what the worker may prepare while it waits (see worker.warm_up).
            assert proc.stdin is not None
            try:
                proc.stdin.write((json.dumps(warm_up or {}) + "\n").encode())
                proc.stdin.flush()
            except (BrokenPipeError, OSError):
                pass  # it has already ended; go() keeps what it printed
            self.procs.append(proc)
        self.started = False

    def go(self, plan_file: Path, study_dir: Path, storage_url: str, overrides: list[str]) -> None:
        """Hand every worker the plan: its trials begin. A worker that already ended
        (it could not import its libraries) leaves what it printed in its study log.

        The storage URL and the overrides travel here, through the pipe, as well as in
        the plan file without passwords: no file sweeper writes holds one."""
        line = (json.dumps({"plan": str(plan_file), "storage": storage_url, "overrides": overrides}) + "\n").encode()
        for index, proc in enumerate(self.procs):
            if proc.poll() is not None:
                with open(study_dir / f"worker_{index}.log", "a") as log:
                    log.write(self.early_output(index))
                continue
            self._send(proc, line)
        self.started = True

    @staticmethod
    def _send(proc: subprocess.Popen[bytes], data: bytes) -> None:
        assert proc.stdin is not None
        try:
            proc.stdin.write(data)
            proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass  # it has already ended; its exit code says why

    def early_output(self, index: int) -> str:
        """What worker ``index`` printed before it had the plan (import errors)."""
        handle = self._early[index]
        handle.flush()
        handle.seek(0)
        return handle.read().decode(errors="replace")

    def wait(self, tick: Callable[[], None]) -> tuple[list[int | None], bool]:
        """Wait for the workers to end, calling ``tick`` every :data:`TICK_S` seconds.

        Ctrl-C is passed on to them as SIGINT; each then marks its trial and exits.
        Returns the exit codes and whether the sweep was interrupted.
        """
        interrupted = False
        try:
            while any(p.poll() is None for p in self.procs):
                tick()
                deadline = time.monotonic() + TICK_S
                while time.monotonic() < deadline and any(p.poll() is None for p in self.procs):
                    time.sleep(POLL_S)
        except KeyboardInterrupt:
            interrupted = True
            self.interrupt()
        return [p.returncode for p in self.procs], interrupted

    def interrupt(self, grace_s: float = 120.0) -> None:
        from sweeper.signals import terminated

        sig = signal.SIGTERM if terminated() else signal.SIGINT
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(sig)
        deadline = time.time() + grace_s
        for p in self.procs:
            try:
                p.wait(timeout=max(1.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def close(self) -> None:
        """End workers that never got a plan (the sweep stopped before it began)."""
        if not self.started:
            for proc in self.procs:  # still importing, nothing of the study begun: end it now
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
        for handle in self._early:
            handle.close()
        shutil.rmtree(self._tmp, ignore_errors=True)
