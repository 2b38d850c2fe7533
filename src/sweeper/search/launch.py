"""A sweep's workers elsewhere: SLURM array jobs (through submitit) and Kubernetes pods.

Each job runs the very ``sweeper sweep`` command the user typed, with
``search/launcher=local`` and ``search.workers=<workers_per_job>``: one member of the
multi-machine mode, which already finishes a study with exactly ``n_trials``, recovers a
lost machine and handles SIGTERM. The submitting command checks what needs no compute
node (the config, the space, the stores every node must reach), opens the study and its
parent run once, submits, then follows the study from its storage until the jobs end.
Device checks run in the jobs, on the nodes that have the devices.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sweeper.errors import ConfigError, SweeperError
from sweeper.search.settings import LauncherSettings, SearchSettings

# Storage URLs of servers every node can reach; other schemes are files on some disk.
SERVER_SCHEMES = ("postgresql", "postgres", "mysql", "mariadb", "oracle", "mssql", "cockroachdb")
TRACKING_SERVERS = ("http", "https", "databricks", *SERVER_SCHEMES)
JOB_LOGS = "jobs"  # submitit's folder under the study folder: scripts, pickles, one log per job
SUBMISSIONS = "jobs.jsonl"  # under the study folder: one line per submission (ids, log folder)
POLL_S = 2.0


def _scheme(url: str) -> str:
    return url.split(":", 1)[0].split("+", 1)[0].lower() if "://" in url else ""


def check_reachable(launcher: LauncherSettings, storage: str | None, tracking_uri: str | None) -> None:
    """Refuse stores a compute node cannot reach: the study storage must be a server (or a
    file on a shared file system, said with ``shared_filesystem``), the tracking store too."""
    if (storage is None or _scheme(storage) not in SERVER_SCHEMES) and not launcher.shared_filesystem:
        where = "the embedded journal file" if storage is None else repr(storage)
        raise ConfigError(
            f"search.storage: jobs on other nodes cannot share {where}; use a server every node "
            "reaches (search.storage=postgresql://user@host/db), or, if this folder is on a shared "
            "file system, say so: search.launcher.shared_filesystem=true"
        )
    if tracking_uri is not None and _scheme(tracking_uri) not in TRACKING_SERVERS and not launcher.shared_filesystem:
        raise ConfigError(
            f"tracking.uri: jobs on other nodes cannot share {tracking_uri!r}; use a tracking server "
            "(tracking.uri=http://host:5000) or a database, or, if it is on a shared file system, "
            "search.launcher.shared_filesystem=true (or turn tracking off with tracking=none)"
        )


def _drop(argv: Sequence[str]) -> list[str]:
    """The user's arguments without what the launcher decides for each job."""
    kept = []
    for arg in argv:
        key = arg.lstrip("+~").split("=", 1)[0]
        if key in ("search/launcher", "search.launcher", "search.workers") or key.startswith("search.launcher."):
            continue
        kept.append(arg)
    return kept


def job_argv(argv: Sequence[str], launcher: LauncherSettings, settings: SearchSettings) -> list[str]:
    """The ``sweeper sweep`` arguments each job runs: the user's, as a local member."""
    extra = ["search/launcher=local", f"search.workers={launcher.workers_per_job}"]
    if settings.threads is None:
        extra.append(f"search.threads={max(1, cpus_per_task(launcher, settings) // launcher.workers_per_job)}")
    return [*_drop(argv), *extra]


def cpus_per_task(launcher: LauncherSettings, settings: SearchSettings) -> int:
    return launcher.cpus_per_task or launcher.workers_per_job * (settings.threads or 1)


def trial_devices(trainer: Any) -> int:
    """Devices one trial trains on: ``trainer.devices`` when it is a count (or a list)."""
    devices = trainer.get("devices", 1)
    if isinstance(devices, bool):
        return 1
    if isinstance(devices, int):
        return max(1, devices)
    if isinstance(devices, str) and devices.strip().isdigit():
        return max(1, int(devices))
    if isinstance(devices, str) and "," in devices:
        return len([d for d in devices.split(",") if d.strip()])
    try:
        return max(1, len(list(devices)))
    except TypeError:
        return 1


def gpus_per_node(launcher: LauncherSettings, trainer: Any) -> int | None:
    if launcher.gpus_per_node is not None:
        return launcher.gpus_per_node
    if str(trainer.get("accelerator", "cpu")) in ("gpu", "cuda"):
        return launcher.workers_per_job * trial_devices(trainer)
    return None


# --------------------------------------------------------------------------- the job


class SweepJob:
    """What each array task runs (pickled by submitit, called on the node): the sweep
    command as a child process with its own ``SWEEPER_HOST``. SIGTERM and SIGUSR2 reach
    the child and its workers from SLURM directly; the running trial is saved and
    queued again. With ``requeue`` a job stopped by its time limit or by preemption is
    submitted again (submitit calls :meth:`checkpoint`)."""

    def __init__(self, argv: list[str], cwd: str, requeue: bool, grace_s: int) -> None:
        self.argv, self.cwd, self.requeue, self.grace_s = argv, cwd, requeue, grace_s
        self._proc: subprocess.Popen[bytes] | None = None

    def __call__(self, index: int) -> int:
        job = os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID")
        task = os.environ.get("SLURM_ARRAY_TASK_ID", str(index))
        who = f"slurm{job}_{task}" if job else f"job{os.getpid()}_{task}"  # submitit's local executor
        env = {**os.environ, "SWEEPER_HOST": f"{socket.gethostname()}-{who}", "PYTHONUNBUFFERED": "1"}
        # submitit bypasses SIGTERM in this process; the child gets it from SLURM itself
        self._proc = subprocess.Popen([sys.executable, "-m", "sweeper", "sweep", *self.argv], cwd=self.cwd, env=env)
        while True:
            try:
                return self._proc.wait()
            except KeyboardInterrupt:
                self._proc.send_signal(signal.SIGTERM)

    def _stop_child(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # when the child did not get the signal itself
            try:
                proc.wait(timeout=max(5, self.grace_s - 10))
            except subprocess.TimeoutExpired:
                proc.kill()

    def checkpoint(self, index: int) -> Any:
        """SIGUSR2 (time limit near, or preemption): the child saves its trial and stops;
        the job is then submitted again when ``requeue`` is set."""
        self._stop_child()
        if not self.requeue:
            return None
        from submitit.helpers import DelayedSubmission

        self._proc = None
        return DelayedSubmission(self, index)


# --------------------------------------------------------------------------- submitting


def _slurm_executor(folder: Path, launcher: LauncherSettings, settings: SearchSettings, trainer: Any,
                    name: str) -> Any:
    try:
        import submitit
    except ImportError:
        raise SweeperError("search/launcher=slurm submits through submitit, which is not installed: "
                           "pip install 'sweeper[slurm]'") from None
    import shutil

    if shutil.which("sbatch") is None:
        raise SweeperError("search/launcher=slurm: sbatch is not on PATH; run the command on a SLURM "
                           "login node (or use search/launcher=local)")
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)  # the pickled jobs hold the command line
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=3 if launcher.requeue else 0)
    params: dict[str, Any] = {
        "job_name": f"sweeper-{name}",
        "time": launcher.timeout_min,
        "nodes": 1,
        "ntasks_per_node": 1,
        "cpus_per_task": cpus_per_task(launcher, settings),
        "signal_delay_s": launcher.signal_delay_s,
        "array_parallelism": launcher.array_parallelism or launcher.jobs,
        "setup": list(launcher.setup),
        "additional_parameters": dict(launcher.additional_parameters),
        "stderr_to_stdout": True,
    }
    if launcher.partition:
        params["partition"] = launcher.partition
    gpus = gpus_per_node(launcher, trainer)
    if gpus:
        params["gpus_per_node"] = gpus
    if launcher.mem_gb:
        params["mem"] = f"{int(launcher.mem_gb * 1024)}MB"
    executor.update_parameters(**params)
    return executor


def sbatch_options(executor: Any) -> list[str]:
    """The ``#SBATCH`` lines the jobs are submitted with (for the user to see)."""
    return [ln for ln in executor._make_submission_file_text("true", "0").splitlines() if ln.startswith("#SBATCH")]


def _active(job_ids: Sequence[str]) -> dict[str, str]:
    """SLURM's state of each job still queued or running (``squeue``; sacct needs slurmdbd)."""
    array_ids = sorted({j.split("_", 1)[0] for j in job_ids})
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-j", ",".join(array_ids), "-o", "%i %T"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return dict.fromkeys(job_ids, "UNKNOWN")
    if out.returncode != 0 and "Invalid job id" not in out.stderr:
        return dict.fromkeys(job_ids, "UNKNOWN")
    states = dict(line.split(None, 1) for line in out.stdout.splitlines() if " " in line)
    return {j: states[j] for j in job_ids if j in states}


def _result(job: Any) -> int | None:
    """The exit code the job's sweep ended with (None: no result, e.g. killed)."""
    from submitit.core.utils import pickle_load

    path = Path(job.paths.result_pickle)
    if not path.is_file():
        return None
    try:
        outcome, value = pickle_load(path)
    except Exception:
        return None
    return int(value) if outcome == "success" and isinstance(value, int) else None


def last_error(logs: Sequence[Path]) -> str | None:
    for path in logs:
        if path.is_file():
            lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.startswith("sweeper: error: ")]
            if lines:
                return lines[-1][len("sweeper: error: "):]
    return None


class SlurmLaunch:
    """The jobs of one submission, followed from the submitting command."""

    def __init__(self, jobs: list[Any], folder: Path, created: Sequence[Path] = ()) -> None:
        self.jobs, self.folder = jobs, folder
        self.created = list(created)  # folders the submission made, innermost first
        self.handed_over = False

    def hand_over(self, study_dir: Path) -> None:
        """The sweep was checked and its study opened: the jobs are its workers now."""
        self.handed_over = True
        _record_submission(study_dir, self)

    def withdraw(self) -> None:
        """The sweep never began: cancel the jobs and remove every file they and their
        submission made, so that a refused command leaves nothing behind."""
        self.cancel()
        for job in self.ids:
            for path in self.folder.glob(f"{job.split('_', 1)[0]}_*"):
                path.unlink(missing_ok=True)
        _remove_created(self.created)

    @property
    def ids(self) -> list[str]:
        return [str(j.job_id) for j in self.jobs]

    @property
    def logs(self) -> list[Path]:
        return [Path(j.paths.stdout) for j in self.jobs]

    def active(self) -> dict[str, str]:
        return _active(self.ids)

    def results(self) -> list[int | None]:
        return [_result(j) for j in self.jobs]

    def cancel(self) -> None:
        """SLURM ends the jobs as it does at a time limit: SIGTERM, then after KillWait SIGKILL."""
        subprocess.run(["scancel", *sorted({i.split("_", 1)[0] for i in self.ids})],
                       capture_output=True, timeout=60, check=False)


def submit_slurm(argv: Sequence[str], settings: SearchSettings, trainer: Any,
                 study_dir: Path) -> tuple[SlurmLaunch, list[str]]:
    """Submit ``jobs`` array tasks running the sweep; returns them and the sbatch options."""
    launcher = settings.launcher
    folder = Path(launcher.folder).resolve() if launcher.folder else study_dir / JOB_LOGS
    created = [p for p in (folder, *folder.parents) if not p.exists()]
    executor = _slurm_executor(folder, launcher, settings, trainer, settings.study_name)
    job = SweepJob(job_argv(argv, launcher, settings), os.getcwd(), launcher.requeue, launcher.signal_delay_s)
    options = sbatch_options(executor)
    try:
        jobs = executor.map_array(job, list(range(launcher.jobs)))
    except Exception as exc:  # sbatch refused (partition, account, limits)
        _remove_created(created)
        message = " ".join(str(exc).split())
        raise SweeperError(f"sbatch refused the jobs: {message[-400:]}; check search.launcher.partition, "
                           "timeout_min and additional_parameters") from None
    return SlurmLaunch(jobs, folder, created), options


def _remove_created(created: Sequence[Path]) -> None:
    """Remove the folders a submission made (innermost first): the jobs' folder with what
    is in it, the ones above it only when nothing else is in them."""
    import shutil

    for index, folder in enumerate(created):
        if index == 0:
            shutil.rmtree(folder, ignore_errors=True)
            continue
        try:
            folder.rmdir()
        except OSError:
            return  # something else is in it


def _record_submission(study_dir: Path, launch: SlurmLaunch) -> None:
    """Append the submission to the study folder's list, which ``sweeper logs --jobs`` reads."""
    line = {"submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "host": socket.gethostname(),
            "folder": str(launch.folder), "jobs": {i: str(p) for i, p in zip(launch.ids, launch.logs)}}
    study_dir.mkdir(parents=True, exist_ok=True)
    with open(study_dir / SUBMISSIONS, "a") as out:
        out.write(json.dumps(line) + "\n")


def submissions(study_dir: Path) -> list[dict[str, Any]]:
    """The study's submissions, oldest first (unreadable lines skipped)."""
    path = study_dir / SUBMISSIONS
    if not path.is_file():
        return []
    found = []
    for text in path.read_text(errors="replace").splitlines():
        try:
            line = json.loads(text)
        except ValueError:
            continue
        if isinstance(line, dict) and isinstance(line.get("jobs"), dict):
            found.append(line)
    return found


def follow(launch: SlurmLaunch, update: Any, poll_s: float = POLL_S) -> tuple[list[int | None], bool]:
    """Show progress until every job has left the queue. Ctrl-C (or SIGTERM) cancels the
    jobs; their trials end interrupted and are queued again. Returns the jobs' exit codes
    and whether it was cancelled."""
    from sweeper.search.progress import say

    cancelled = False
    while True:
        try:
            update()
            if not launch.active():
                return launch.results(), cancelled
            time.sleep(poll_s)
        except KeyboardInterrupt:
            if cancelled:
                continue
            cancelled = True
            say(f"\ncancelling jobs {', '.join(launch.ids)}: their running trials end interrupted and "
                "are tried again when the study resumes")
            launch.cancel()


def describe_jobs(launch: SlurmLaunch, study: str) -> str:
    first = launch.ids[0].split("_", 1)[0]
    return (f"jobs {', '.join(launch.ids)}; logs: {launch.folder}/{first}_<task>_0_log.out (`sweeper logs "
            f"{study} --job {first}`); watch with `squeue -j {first}`, stop with `scancel {first}`")


def shell_line(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)
