"""``sweeper sweep --dry-run``: every check a sweep makes, then its plan, and nothing else.

The plan says what the sweep would search (each parameter with the Optuna distribution
its trials draw from), how (sampler, pruner, metric, trials, workers and threads, the
launcher), where (both stores), and what it would create or resume. Nothing is
created: no folder, no study, no run, no job; an existing study is read, not repaired.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from omegaconf import DictConfig

from sweeper.config import as_dict, without_password
from sweeper.errors import SweeperError
from sweeper.reports.tables import table
from sweeper.search.checks import checked
from sweeper.search.launch import trial_devices
from sweeper.search.processes import runs_inline, worker_threads
from sweeper.search.progress import say
from sweeper.search.records import FINISHED_ATTR, study_folder
from sweeper.search.settings import SearchSettings
from sweeper.search.storage import default_storage
from sweeper.search.study import check_resumable, peek_study, study_config
from sweeper.search.trials import counts


def _arguments(node: DictConfig) -> str:
    data = as_dict(node) or {}
    target = str(data.get("_target_", "?")).rsplit(".", 1)[-1]
    shown = ", ".join(f"{k}={v!r}" for k, v in data.items() if k != "_target_")
    return f"{target}({shown})"


def _writable_at(folder: Path) -> None:
    """The folder could be created and written, judged from its nearest existing parent."""
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise SweeperError(f"cannot write the study folder {folder} ({probe} is not a writable folder); "
                           "run from a folder you can write, or free that path")


def dry_run(cfg: DictConfig, overrides: list[str], settings: SearchSettings, argv: list[str]) -> int:
    """Check the sweep as :func:`~sweeper.search.sweep.run_sweep` would, print its plan,
    return 0; raise the error the sweep would raise."""
    if settings.launcher.remote:
        from sweeper.search.launch import check_reachable

        check_reachable(settings.launcher, settings.storage, str(cfg.tracking.uri) if cfg.tracking.enabled else None)
    space, base, n_trials, points = checked(cfg, overrides, settings, devices=not settings.launcher.remote)
    study_dir = study_folder(settings.study_name)
    storage_url = settings.storage or default_storage(study_dir)
    if settings.storage is None:
        _writable_at(study_dir)
    existing = peek_study(storage_url, settings.study_name)
    if existing is not None:
        check_resumable(existing, settings, space, study_config(base, cfg.search, space))

    say(f"dry run of study '{settings.study_name}': every check passed; nothing was created")
    rows = [[p.key, repr(p.distribution())
             + (f" when {', '.join(f'{k} in {list(v)}' for k, v in p.when)}" if p.when else "")]
            for p in space.params]
    say(table(["parameter", "Optuna distribution"], rows) if rows else "parameters: none (every trial the same)")
    directions = ", ".join(f"{m} ({d})" for m, d in zip(settings.metrics, settings.directions, strict=True))
    say(f"metric:    {directions}")
    say(f"trials:    {n_trials}" + (f" (search.n_trials={settings.n_trials})" if n_trials != settings.n_trials else "")
        + (f", {len(points)} start point(s) first" if points else "")
        + (f", stop after {settings.timeout:g}s" if settings.timeout else ""))
    say(f"sampler:   {settings.sampler_name}: {_arguments(cfg.search.sampler)}")
    pruner = "not used (multi-objective)" if settings.multi_objective else _arguments(cfg.search.pruner)
    say(f"pruner:    {settings.pruner_name}: {pruner}")
    launcher = settings.launcher
    if launcher.remote:
        say(f"workers:   {launcher.name}: {launcher.jobs} job(s) x {launcher.workers_per_job} worker(s) "
            "(nothing submitted)")
    else:
        threads = worker_threads(settings.workers, settings.threads)
        inline = runs_inline(settings.workers, settings.worker_process, trial_devices(cfg.trainer), cfg.trainer)
        who = "1 worker in this command's process" if inline else f"{settings.workers} worker process(es)"
        say(f"workers:   {who} x {threads} torch thread(s) on "
            f"{cfg.trainer.accelerator}, {cfg.trainer.devices} device(s) per trial")
    if existing is None:
        say(f"optuna:    {without_password(storage_url)}: a new study '{settings.study_name}' would be created")
    else:
        c = counts(existing.get_trials(deepcopy=False))
        state = ("finished: a run reports it and changes nothing"
                 if existing.user_attrs.get(FINISHED_ATTR) and c["DONE"] >= n_trials
                 else f"would resume: {c['DONE']} of {n_trials} trials finished")
        say(f"optuna:    {without_password(storage_url)}: study '{settings.study_name}' exists, {state}")
    if cfg.tracking.enabled:
        say(f"mlflow:    {without_password(str(cfg.tracking.uri))}, experiment '{cfg.tracking.experiment}': "
            "one parent run, one child run per trial"
            + (f"; the best model registered as '{settings.study_name}'" if settings.register_model else ""))
    else:
        say("mlflow:    off (tracking.enabled=false)")
    say(f"folder:    {study_dir} (plan, worker logs, trial checkpoints, best config, plots)")
    say("run it:    sweeper sweep " + " ".join(shlex.quote(a) for a in argv))
    return 0

