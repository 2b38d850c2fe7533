"""``sweeper sweep``: set up (or resume) a study, run its workers, report the result.

The story of a sweep, each step in its own module: the checks (:mod:`.settings`,
:mod:`.space`, :mod:`.preflight`) stop bad input before a study, a run or a folder
exists; the study and its MLflow parent run are opened (:mod:`.study`), abandoned
trials recovered (:mod:`.trials`); ``search.workers`` worker processes
(:mod:`.processes`, :mod:`.worker`) pull trials until ``n_trials`` are finished while
one progress line is shown (:mod:`.progress`); the end of the study (:mod:`.finish`)
reports the best trials, tests the best checkpoint and registers it.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict

from sweeper.composition import without_searchpath
from sweeper.config import composed_form, redacted, without_password
from sweeper.errors import SweeperError
from sweeper.search.checks import check_basics, checked
from sweeper.search.control import enqueue_points, stop_reason
from sweeper.search.finish import StudyEnd, finish, report_finished
from sweeper.search.launch import trial_devices
from sweeper.search.plan import SweepPlan
from sweeper.search.processes import InlineWorker, WorkerPool, runs_inline, worker_envs, worker_threads
from sweeper.search.progress import Progress, say
from sweeper.search.records import FINISHED_ATTR, FINISHED_DONE_ATTR, TARGET_ATTR, study_folder
from sweeper.search.settings import SearchSettings, parse_settings
from sweeper.search.storage import default_storage, open_storage, study_lock
from sweeper.search.study import open_study, parent_run, study_config
from sweeper.search.trials import (
    close_finished_trial_runs,
    counts,
    record_outcome,
    recover_stale,
)
from sweeper.signals import EXIT_CTRL_C, EXIT_SIGTERM, interrupt_reason, terminated
from sweeper.tracking.fresh_store import FreshStore, imports_ahead
from sweeper.tracking.stores import store_exists

log = logging.getLogger(__name__)

EXIT_FAILURES, EXIT_CONFIG = 3, 4
STUDY_ENDS = ("complete", "plateau", "epoch budget")  # the study is finished: a re-run changes nothing
FINISHED_OUTCOMES = (*STUDY_ENDS, "timeout")  # the parent run ends FINISHED


def _writable(folder: Path) -> None:
    """The study folder exists and takes files, or one line says why not."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise SweeperError(
            f"cannot write the study folder {folder} ({exc.strerror or exc}); run from a folder you "
            "can write, or free that path"
        ) from None


# --------------------------------------------------------------------------- main


def _worker_error(study_dir: Path) -> str:
    """The last ``sweeper: error:`` line a worker wrote to its log."""
    for path in sorted(study_dir.glob("worker_*.log")):
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.startswith("sweeper: error: ")]
        if lines:
            return lines[-1][len("sweeper: error: "):]
    return "a sweep worker could not compose the sweep's config"


def _ended(code: int) -> str:
    if code < 0:
        import signal

        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def run_sweep(
    cfg: DictConfig, choices: dict[str, str], overrides: list[str], sources: list[dict[str, str]],
    argv: list[str] | None = None, dry_run: bool = False, end: StudyEnd | None = None,
) -> int:
    """Run (or resume) the study described by a composed ``sweep.yaml`` config; with
    ``dry_run``, check it and print its plan instead (:mod:`.dry_run`), creating nothing.

    ``sources`` is the Hydra search path it was composed with; workers compose from it.
    The workers start first and load their libraries while the sweep is checked and
    its study opened; they are ended unused if it never begins. ``end``: what is done
    with the finished study's best trial and its plots, once per study (the command's
    :data:`sweeper.best_model.STEPS`); without it, neither is made. With a remote
    ``search.launcher`` (SLURM, Kubernetes) the workers are jobs running ``argv`` (the
    command's own arguments) instead, submitted once the study exists.
    """
    if cfg.search.study_name is None:
        with open_dict(cfg):
            cfg.search.study_name = choices.get("experiment") or "default"
    settings = parse_settings(cfg.search, choices, cfg.get("monitor"), cfg.get("monitor_mode"))
    if dry_run:
        from sweeper.search.dry_run import dry_run as plan_only

        return plan_only(cfg, overrides, settings, argv or [])
    # what needs no model is refused before any worker, job or import of torch starts
    check_basics(cfg, settings)
    if settings.launcher.remote:
        from sweeper.search.launch import check_reachable

        check_reachable(settings.launcher, settings.storage,
                        str(cfg.tracking.uri) if cfg.tracking.enabled else None)
        early = None
        if settings.launcher.name == "slurm":
            from sweeper.search.launch import submit_slurm

            # Like the local workers, the jobs start (and load their libraries) while the
            # sweep is checked here; they are cancelled, their files removed, if it never begins.
            early = submit_slurm(argv or [], settings, cfg.trainer, study_folder(settings.study_name))
        try:
            return _run_sweep(cfg, choices, overrides, sources, settings, None, 1, argv or [], end, early)
        finally:
            if early is not None and not early[0].handed_over:
                early[0].withdraw()
    accelerator = str(cfg.trainer.accelerator)
    threads = worker_threads(settings.workers, settings.threads)
    envs = worker_envs(settings.workers, accelerator, threads, trial_devices(cfg.trainer))
    pool: WorkerPool | InlineWorker
    if runs_inline(settings.workers, settings.worker_process, trial_devices(cfg.trainer), cfg.trainer):
        pool = InlineWorker(envs[0])  # one process for the whole sweep
    else:
        pool = WorkerPool(envs, preload_tracking=bool(cfg.tracking.enabled),
                          warm_up={"overrides": without_searchpath(overrides), "sources": sources,
                                   "tracking_store_exists": bool(cfg.tracking.enabled)
                                   and store_exists(cfg.tracking.uri)})
    try:
        return _run_sweep(cfg, choices, overrides, sources, settings, pool, threads, argv or [], end)
    finally:
        pool.close()


def _run_sweep(
    cfg: DictConfig, choices: dict[str, str], overrides: list[str], sources: list[dict[str, str]],
    settings: SearchSettings, pool: WorkerPool | InlineWorker | None, threads: int, argv: list[str],
    end: StudyEnd | None,
    early: Any = None,
) -> int:
    # A new SQLite MLflow store's schema is made on another core while the checks
    # import torch and Lightning; it appears only once they have passed.
    fresh = FreshStore.start(str(cfg.tracking.uri)) if cfg.tracking.enabled and imports_ahead() else None
    try:
        space, base, n_trials, points = checked(cfg, overrides, settings, devices=pool is not None)
        study_dir = study_folder(settings.study_name)
        storage_url = settings.storage or default_storage(study_dir)
        # Both stores were checked (check_basics) before either is written: a refused sweep
        # leaves no folder, no study and no run behind (the corrected command then starts afresh).
        if settings.storage is None:  # the journal goes there: the folder comes first
            _writable(study_dir)
            storage = open_storage(storage_url)
        else:  # a bad URL must not leave a folder behind
            storage = open_storage(storage_url)
            _writable(study_dir)
        study = open_study(settings, storage, space, study_config(base, cfg.search, space))
        trials = study.get_trials(deepcopy=False)
        c = counts(trials)
        stop = stop_reason(trials, settings)
        if study.user_attrs.get(FINISHED_ATTR) and not c["RUNNING"] and (c["DONE"] >= n_trials or stop):
            report_finished(study, settings, space, storage_url, n_trials, stop)
            return 0  # a finished study: both stores stay as they are

        tracker = None
        if cfg.tracking.enabled:
            from sweeper.tracking.mlflow import MlflowTracker

            if fresh is not None:
                fresh.place()
            tracker = MlflowTracker(cfg.tracking.uri, cfg.tracking.experiment)
    finally:
        if fresh is not None:
            fresh.discard()

    def mark_child(trial: Any) -> None:
        record_outcome(tracker, trial)

    with study_lock(storage_url, settings.study_name):
        recovered = recover_stale(study, storage, settings.retries, mark_child, settings.heartbeat_timeout)
    if tracker is not None:
        close_finished_trial_runs(tracker, study)
    if recovered:
        say(f"marked {len(recovered)} abandoned trial(s) FAILED: {', '.join(f'#{n}' for n in recovered)}"
             + (" (their parameters are queued again)" if settings.retries else ""))
    parent = None
    if tracker is not None:
        # one parent run per study, however many machines start at once
        with study_lock(storage_url, settings.study_name):
            parent = parent_run(tracker, study, settings, storage_url, space)
    if points:
        with study_lock(storage_url, settings.study_name):
            queued = enqueue_points(study, points)
        say(f"queued {queued} start point(s) to try first"
             + (f" ({len(points) - queued} already in the study)" if queued < len(points) else ""))
    study.set_user_attr(TARGET_ATTR, n_trials)
    if tracker is not None and parent:
        tracker.set_tags(parent, {"n_trials": n_trials, "outcome": "running"})

    if pool is None:
        return _launch(cfg, settings, study, space, storage_url, study_dir, n_trials, argv, tracker, parent, early)

    trials = study.get_trials(deepcopy=False)
    done_before = counts(trials)["DONE"]
    stop = stop_reason(trials, settings)
    if done_before:
        say(f"resuming study '{settings.study_name}': {done_before} of {n_trials} trials already finished")
    started = time.time()
    worker_overrides = without_searchpath(overrides)
    plan = SweepPlan(  # without passwords: workers get them by pipe (WorkerPool.go)
        study_name=settings.study_name,
        storage=without_password(storage_url),
        study_dir=str(study_dir),
        overrides=redacted(worker_overrides),
        choices={k: v for k, v in choices.items() if not k.startswith(("search/", "experiment"))},
        settings=redacted({**asdict(settings), "n_trials": n_trials}),
        parent_run_id=parent,
        tracking_enabled=bool(cfg.tracking.enabled),
        started_at=started - 1.0,
        deadline=started + settings.timeout if settings.timeout else None,
        threads=threads,
        config_sources=sources,
        base_config=redacted(composed_form(base)),
        space=space.to_data(),
    )
    plan_file = study_dir / "plan.json"
    plan.save(plan_file)
    say(f"study '{settings.study_name}': {n_trials} trials, {settings.workers} worker(s) "
         f"x {threads} thread(s), "
         f"sampler {settings.sampler_name}, pruner {settings.pruner_name}; logs in {study_dir}")
    progress = Progress(settings.study_name, n_trials, settings.workers, settings.metrics[0], pool.console)
    codes: list[int | None]  # None: a worker that had not exited
    if done_before >= n_trials or stop:
        codes, interrupted = [0], False  # nothing left to run: report the finished study
    else:
        pool.go(plan_file, study_dir, storage_url, worker_overrides)
        codes, interrupted = pool.wait(lambda: progress.update(study))
        progress.update(study)
        progress.close()

    with study_lock(storage_url, settings.study_name):
        recover_stale(study, storage, settings.retries, mark_child, settings.heartbeat_timeout)
    if tracker is not None:
        close_finished_trial_runs(tracker, study)
    # What the study reached decides; a worker lost on the way is a warning when the
    # others finished the study.
    final = study.get_trials(deepcopy=False)
    stop = stop_reason(final, settings)
    if counts(final)["DONE"] >= n_trials:
        outcome = "complete"
    elif stop is not None:
        outcome = stop[0]
        say(f"search stopped early: {stop[1]}")
    elif interrupted or any(code in (EXIT_CTRL_C, EXIT_SIGTERM) for code in codes):
        outcome = "interrupted"
    elif any(code == EXIT_CONFIG for code in codes):
        outcome = "config mismatch"
    elif any(code == EXIT_FAILURES for code in codes):
        outcome = "too many failures"
    elif any(code not in (0, None) for code in codes):
        outcome = "worker error"
    elif settings.timeout:
        outcome = "timeout"
    else:
        outcome = "complete"
    lost = [(i, code) for i, code in enumerate(codes) if code not in (0, None)]
    if lost and outcome in STUDY_ENDS:
        say("warning: " + ", ".join(f"worker {i} ended early ({_ended(code)})" for i, code in lost)
            + f"; the other workers finished the study (see {study_dir}/worker_*.log)")
    try:
        # one machine at a time, and once per study: the first machine to end the study
        # tests the best model, registers it and draws the plots; the others report it
        with study_lock(storage_url, settings.study_name):
            done = counts(study.get_trials(deepcopy=False))["DONE"]
            if outcome in STUDY_ENDS and study.user_attrs.get(FINISHED_ATTR) \
                    and study.user_attrs.get(FINISHED_DONE_ATTR) == done:
                say("")  # another machine finished these very trials a moment ago
                report_finished(study, settings, space, storage_url, n_trials, stop, by_another=True)
            else:
                finish(study, plan, tracker, space, outcome, end)
                if outcome in STUDY_ENDS:
                    study.set_user_attr(FINISHED_ATTR, outcome)
                    study.set_user_attr(FINISHED_DONE_ATTR, done)
    finally:
        if tracker is not None and parent:
            status = "KILLED" if outcome == "interrupted" else "FINISHED" if outcome in FINISHED_OUTCOMES else "FAILED"
            tracker.set_tags(parent, {"outcome": outcome})
            tracker.end_run(parent, status)  # after the parent's queued writes
    if outcome == "interrupted":
        say(f"{interrupt_reason()}; run the same command to resume study '{settings.study_name}'")
        return EXIT_SIGTERM if terminated() or EXIT_SIGTERM in codes else EXIT_CTRL_C
    if outcome == "too many failures":
        reasons = [t.user_attrs.get("sweeper.failure") for t in study.get_trials(deepcopy=False)
                   if t.state.name == "FAIL" and t.user_attrs.get("sweeper.failure_kind") == "error"]
        cap = settings.n_trials * (settings.retries + 1)
        why = (f"{len(reasons)} trials failed, n_trials x (retries + 1) = {cap}"
               if len(reasons) >= cap else f"more than {settings.max_failure_rate:.0%} of trials failed")
        raise SweeperError(
            f"search stopped: {why} (search.max_failure_rate); last error: "
            f"{reasons[-1] if reasons else 'unknown'}"
        )
    if outcome == "config mismatch":
        raise SweeperError(f"{_worker_error(study_dir)}; see {study_dir}/worker_*.log")
    if outcome == "worker error":
        raise SweeperError(f"a sweep worker crashed (exit codes {codes}); see {study_dir}/worker_*.log")
    if outcome == "timeout":
        say(f"search.timeout reached; run the same command to continue study '{settings.study_name}'")
    return 0


def _launch(cfg: DictConfig, settings: SearchSettings, study: Any, space: Any, storage_url: str, study_dir: Path,
            n_trials: int, argv: list[str], tracker: Any, parent: str | None, early: Any) -> int:
    """Hand the study to its jobs (submitted by :func:`run_sweep` while it was checked)
    and, with ``search.launcher.wait``, follow it to its end."""
    from sweeper.search import launch

    launcher = settings.launcher
    if launcher.name == "kubernetes":
        from sweeper.search.kubernetes import deliver

        return deliver(cfg, settings, argv, study_dir)
    jobs, options = early
    jobs.hand_over(study_dir)
    say(f"study '{settings.study_name}': {n_trials} trials, {launcher.jobs} SLURM job(s) x "
        f"{launcher.workers_per_job} worker(s), sampler {settings.sampler_name}, pruner {settings.pruner_name}")
    say("submitted " + launch.describe_jobs(jobs, settings.study_name))
    say("sbatch " + " ".join(o.split(None, 1)[1] for o in options if " " in o))
    if not launcher.wait:
        say(f"each job runs: sweeper sweep {launch.shell_line(launch.job_argv(argv, launcher, settings))}")
        say(f"see the trials with `sweeper compare {settings.study_name}`"
            + (f" (--storage {without_password(storage_url)})" if settings.storage else ""))
        return 0
    progress = Progress(settings.study_name, n_trials, launcher.jobs * launcher.workers_per_job, settings.metrics[0])
    codes, cancelled = launch.follow(jobs, lambda: progress.update(study))
    progress.update(study)
    progress.close()
    if cancelled:
        if tracker is not None and parent and tracker.client.get_run(parent).info.status == "RUNNING":
            tracker.set_tags(parent, {"outcome": "interrupted"})
            tracker.end_run(parent, "KILLED")
        say(f"{interrupt_reason()}: jobs cancelled; run the same command to resume study '{settings.study_name}'")
        return EXIT_SIGTERM if terminated() else EXIT_CTRL_C
    if study.user_attrs.get(FINISHED_ATTR):
        say("")
        stop = stop_reason(study.get_trials(deepcopy=False), settings)
        report_finished(study, settings, space, storage_url, n_trials, stop, by_another=True)
        say(f"jobs ended with exit codes {', '.join('?' if c is None else str(c) for c in codes)}; "
            f"their logs: {jobs.folder}")
        return 0
    c = counts(study.get_trials(deepcopy=False))
    why = launch.last_error(jobs.logs)
    raise SweeperError(
        f"the jobs ended before study '{settings.study_name}' finished ({c['DONE']} of {n_trials} trials done; "
        f"exit codes {', '.join('?' if x is None else str(x) for x in codes)})"
        + (f"; last error: {why}" if why else "")
        + f"; see `sweeper logs {settings.study_name} --jobs` ({jobs.folder}/*_log.out)"
    )
