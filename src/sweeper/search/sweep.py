"""``sweeper sweep``: set up (or resume) a study, run its workers, report the result.

The coordinator checks everything first (settings, search space, storage), so bad
input stops before a study, a run or a folder exists. Then it opens the study and its
MLflow parent run, starts ``search.workers`` worker processes that pull trials until
``n_trials`` are finished, shows one progress line, and at the end prints the best
trials, writes the best configuration, tests the best checkpoint and registers it.
"""

from __future__ import annotations

import json
import os
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, open_dict

from sweeper.composition import without_searchpath
from sweeper.config import composed_form, redacted, validate_train_config, without_password
from sweeper.errors import ConfigError, SweeperError
from sweeper.search.plan import SweepPlan
from sweeper.search.preflight import check_trials
from sweeper.search.processes import WorkerPool, worker_envs, worker_threads
from sweeper.search.records import METRICS_ATTR, PARENT_ATTR, SPACE_ATTR, TARGET_ATTR
from sweeper.search.report import Progress, table, trials_table
from sweeper.search.settings import SearchSettings, mask_url, parse_settings
from sweeper.search.space import SearchSpace, parse_space
from sweeper.search.storage import default_storage, open_storage, study_lock
from sweeper.search.trials import (
    RUN_ID_ATTR,
    close_finished_trial_runs,
    counts,
    fail_child_run,
    recover_stale,
)
from sweeper.signals import EXIT_CTRL_C, EXIT_SIGTERM, interrupt_reason, terminated
from sweeper.tracking.stores import store_exists

log = logging.getLogger(__name__)

CV_ATTR = "sweeper.cv_folds"
EXIT_FAILURES, EXIT_CONFIG = 3, 4


def _say(message: str) -> None:
    print(message, flush=True)


# ------------------------------------------------------------------------ checking


# -------------------------------------------------------------------------- study


def open_study(settings: SearchSettings, storage: Any, space: SearchSpace) -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=settings.study_name,
        storage=storage,
        directions=list(settings.directions),
        load_if_exists=True,
    )
    stored_directions = [d.name.lower() for d in study.directions]
    if stored_directions != list(settings.directions):
        raise ConfigError(
            f"search.direction: study '{settings.study_name}' was created with "
            f"{stored_directions}, not {list(settings.directions)}; directions cannot change, "
            "start a new study with search.study_name=<new name>"
        )
    attrs = study.user_attrs
    signature = space.signature()
    if SPACE_ATTR in attrs and not settings.force:
        if attrs[SPACE_ATTR] != signature:
            old = json.loads(attrs[SPACE_ATTR])
            new = json.loads(signature)
            changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise ConfigError(
                f"search.params: study '{settings.study_name}' was run with another search space "
                f"(differs in {', '.join(changed)}); start a new study with "
                "search.study_name=<new name> or resume anyway with search.force=true"
            )
        if attrs.get(METRICS_ATTR) != list(settings.metrics):
            raise ConfigError(
                f"search.metric: study '{settings.study_name}' optimises {attrs.get(METRICS_ATTR)}, "
                f"not {list(settings.metrics)}; start a new study with search.study_name=<new name> "
                "or resume anyway with search.force=true"
            )
        if attrs.get(CV_ATTR, 1) != settings.cv_folds:
            raise ConfigError(
                f"search.cv.folds: study '{settings.study_name}' scored trials on "
                f"{attrs.get(CV_ATTR, 1)} fold(s), not {settings.cv_folds}; start a new study with "
                "search.study_name=<new name> or resume anyway with search.force=true"
            )
    study.set_user_attr(SPACE_ATTR, signature)
    study.set_user_attr(METRICS_ATTR, list(settings.metrics))
    study.set_user_attr(CV_ATTR, settings.cv_folds)
    return study


def parent_run(tracker: Any, study: Any, settings: SearchSettings, storage_url: str, space: SearchSpace) -> str:
    """The study's MLflow parent run: reused when the study resumes, created otherwise."""
    from mlflow.exceptions import MlflowException

    run_id = study.user_attrs.get(PARENT_ATTR)
    if run_id:
        try:
            run = tracker.client.get_run(run_id)
            if run.info.lifecycle_stage == "active" and run.info.experiment_id == tracker.experiment_id:
                tracker.client.update_run(run_id, status="RUNNING")
                return run_id
        except MlflowException:
            pass
    found = tracker.client.search_runs(
        [tracker.experiment_id],
        filter_string=f"tags.study = '{settings.study_name}' and tags.`sweeper.role` = 'parent'",
        max_results=1,
    )
    if found:
        run_id = found[0].info.run_id
        tracker.client.update_run(run_id, status="RUNNING")
    else:
        run_id = tracker.start_run(
            settings.study_name,
            {
                "sweeper.role": "parent",
                "study": settings.study_name,
                "sampler": settings.sampler_name,
                "pruner": settings.pruner_name,
                "storage": mask_url(storage_url),
                "metric": ",".join(settings.metrics),
                "direction": ",".join(settings.directions),
                "mlflow.source.name": "sweeper sweep",
            },
        )
        tracker.log_params(run_id, {f"search.{p.key}": json.dumps(p.describe()) for p in space.params})
    study.set_user_attr(PARENT_ATTR, run_id)
    return run_id


# ------------------------------------------------------------------------ the end


def best_trials(study: Any) -> list[Any]:
    from optuna.trial import TrialState

    if not any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        return []
    return [study.best_trial] if len(study.directions) == 1 else list(study.best_trials)


def finish(study: Any, plan: SweepPlan, tracker: Any, space: SearchSpace, outcome: str) -> None:
    settings = plan.search
    study_dir = Path(plan.study_dir)
    c = counts(study.get_trials(deepcopy=False))
    param_keys = [p.key for p in space.params]
    _say("")
    _say(trials_table(study, settings.metrics, param_keys))
    _say(f"\ntrials: {c['COMPLETE']} complete, {c['PRUNED']} pruned, {c['FAIL']} failed "
         f"(study '{settings.study_name}' in {mask_url(plan.storage)})")
    best = best_trials(study)
    if settings.multi_objective and best:
        _say("\nPareto front:")
        _say(table(["#", *settings.metrics, *param_keys],
                   [[t.number, *t.values, *[t.params.get(k) for k in param_keys]] for t in best]))
    summary_tags: dict[str, Any] = {
        "trials_complete": c["COMPLETE"], "trials_pruned": c["PRUNED"], "trials_failed": c["FAIL"],
        "n_trials": settings.n_trials, "outcome": outcome,
    }  # fmt: skip
    summary_metrics: dict[str, float] = {
        "trials/complete": c["COMPLETE"], "trials/pruned": c["PRUNED"], "trials/failed": c["FAIL"],
    }  # fmt: skip
    if best:
        top = best[0]
        values = space.decode(top.params)
        for metric, value in zip(settings.metrics, top.values):
            summary_metrics[f"best/{metric}"] = value
        summary_tags["best_trial"] = top.number
        summary_tags.update({f"best.{k}": v for k, v in values.items()})
        config_file = Path(top.user_attrs.get("config", ""))
        if config_file.is_file():
            best_cfg = yaml.safe_load(config_file.read_text())
            best_cfg.update(test=True, progress_bar=True)
            best_cfg["tracking"]["log_checkpoint"] = True
            target = study_dir / "best_config.yaml"
            target.write_text(
                f"# Best trial #{top.number} of study '{settings.study_name}' "
                f"({', '.join(f'{m}={v:.4f}' for m, v in zip(settings.metrics, top.values))}).\n"
                f"# Reproduce: sweeper train --config-path {study_dir.resolve()} --config-name best_config\n"
                + yaml.safe_dump(best_cfg, sort_keys=False)
            )
            _say(f"\nbest trial #{top.number}: "
                 + ", ".join(f"{m}={v:.4f}" for m, v in zip(settings.metrics, top.values))
                 + " with " + ", ".join(f"{k}={v}" for k, v in values.items()))
            _say(f"best config: {target}")
            _say(f"reproduce:   sweeper train --config-path {study_dir.resolve()} --config-name best_config")
        checkpoint = top.user_attrs.get("checkpoint")
        if settings.cv_folds > 1:
            _say(f"search.cv.folds={settings.cv_folds}: each fold trained its own model, so none is "
                 "tested or registered; train the best configuration with the command above")
        if checkpoint and Path(checkpoint).is_file() and config_file.is_file():
            from sweeper.training.evaluate import evaluate_checkpoint

            evaluation = evaluate_checkpoint(config_file, checkpoint, study_dir / "evaluation")
            test = evaluation.metrics
            _say("test split: " + ", ".join(f"{k}={v:.4f}" for k, v in sorted(test.items()) if k != "test/loss"))
            summary_metrics.update(test)
            child = top.user_attrs.get(RUN_ID_ATTR)
            if tracker is not None and child and not _run_exists(tracker, child):
                _say(f"the best trial's MLflow run {child} is not in {tracker.uri} (deleted, or another "
                     "store): its test metrics are not logged and no model is registered")
                child = None
            registered = _registered_version(tracker, settings.study_name, child) if child else None
            if registered:
                _say(f"model '{settings.study_name}' version {registered} is this best trial's already: "
                     "nothing registered again")
                summary_tags["registered_model"] = f"{settings.study_name}/{registered}"
            elif tracker is not None and child:
                tracker.log_metrics(child, test)
                tracker.log_artifact(child, checkpoint, "checkpoints")
                tracker.log_artifacts(child, study_dir / "evaluation", "evaluation")
                if plan.parent_run_id:
                    tracker.log_artifacts(plan.parent_run_id, study_dir / "evaluation", "evaluation")
                if settings.register_model:
                    from sweeper.tracking.mlflow import register_model

                    version = register_model(tracker.uri, child, evaluation.module,
                                             evaluation.input_shape, settings.study_name)
                    summary_tags["registered_model"] = f"{settings.study_name}/{version}"
                    _say(f"registered model '{settings.study_name}' version {version}")
    if c["DONE"]:
        from sweeper.reports.plots import write_study_plots

        plots = write_study_plots(study, study_dir / "plots", settings.metrics[0], param_keys)
        if plots and tracker is not None and plan.parent_run_id:
            tracker.log_artifacts(plan.parent_run_id, study_dir / "plots", "plots")
    if tracker is not None and plan.parent_run_id:
        # queued behind everything above; run_sweep's end_run of the parent waits for all
        tracker.log_metrics(plan.parent_run_id, summary_metrics, step=c["DONE"])
        tracker.set_tags(plan.parent_run_id, summary_tags)  # one write with the metrics
        if (study_dir / "best_config.yaml").is_file():
            tracker.log_artifact(plan.parent_run_id, study_dir / "best_config.yaml")


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


def _run_exists(tracker: Any, run_id: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        return tracker.client.get_run(run_id).info.lifecycle_stage == "active"
    except MlflowException:
        return False


def _registered_version(tracker: Any, name: str, run_id: str) -> str | None:
    """The version of model ``name`` already registered from ``run_id``, if any."""
    if tracker is None:
        return None
    from mlflow.exceptions import MlflowException

    try:
        found = tracker.client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    except MlflowException:
        return None
    return str(max(int(v.version) for v in found)) if found else None


# --------------------------------------------------------------------------- main


def _worker_error(study_dir: Path) -> str:
    """The last ``sweeper: error:`` line a worker wrote to its log."""
    for path in sorted(study_dir.glob("worker_*.log")):
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.startswith("sweeper: error: ")]
        if lines:
            return lines[-1][len("sweeper: error: "):]
    return "a sweep worker could not compose the sweep's config"


def run_sweep(
    cfg: DictConfig, choices: dict[str, str], overrides: list[str], sources: list[dict[str, str]]
) -> int:
    """Run (or resume) the study described by a composed ``sweep.yaml`` config.

    ``sources`` is the Hydra search path it was composed with; workers compose from it.
    The workers start first and load their libraries while the sweep is checked and
    its study opened; they are ended unused if it never begins.
    """
    if cfg.search.study_name is None:
        with open_dict(cfg):
            cfg.search.study_name = choices.get("experiment") or "default"
    settings = parse_settings(cfg.search, choices, cfg.get("monitor"), cfg.get("monitor_mode"))
    accelerator = str(cfg.trainer.accelerator)
    threads = worker_threads(settings.workers, settings.threads)
    pool = WorkerPool(worker_envs(settings.workers, accelerator, threads), preload_tracking=bool(cfg.tracking.enabled),
                      warm_up={"overrides": without_searchpath(overrides), "sources": sources,
                               "tracking_store_exists": bool(cfg.tracking.enabled) and store_exists(cfg.tracking.uri)})
    try:
        return _run_sweep(cfg, choices, overrides, sources, settings, pool, threads)
    finally:
        pool.close()


def _run_sweep(
    cfg: DictConfig, choices: dict[str, str], overrides: list[str], sources: list[dict[str, str]],
    settings: SearchSettings, pool: WorkerPool, threads: int,
) -> int:
    space = parse_space(settings.params)
    base = cfg.copy()
    with open_dict(base):
        base.pop("search", None)
        base.pop("hydra", None)
    validate_train_config(base)
    if settings.cv_folds > 1 and settings.multi_objective:
        raise ConfigError("search.cv.folds: cross-validation scores one metric; drop the extra "
                          "search.metric entries or set search.cv.folds=1")
    check_trials(space, cfg, without_searchpath(overrides), settings)
    n_trials = settings.n_trials
    if settings.sampler_name == "grid":
        size = 1
        for values in space.grid().values():
            size *= len(values)
        if size < n_trials:
            _say(f"grid has {size} points: running {size} trials, not {n_trials}")
            n_trials = size
    if settings.multi_objective and settings.pruner_name not in ("none", "custom"):
        _say("multi-objective study: Optuna cannot prune it, so search.pruner is not used")

    study_dir = (Path.cwd() / "outputs" / "sweeps" / settings.study_name).resolve()
    storage_url = settings.storage or default_storage(study_dir)
    if settings.storage is None:  # the journal goes there
        _writable(study_dir)
    storage = open_storage(storage_url)
    _writable(study_dir)
    study = open_study(settings, storage, space)

    tracker = None
    if cfg.tracking.enabled:
        from sweeper.tracking.mlflow import MlflowTracker

        tracker = MlflowTracker(cfg.tracking.uri, cfg.tracking.experiment)

    def mark_child(trial: Any, reason: str) -> None:
        fail_child_run(tracker, trial, reason)

    with study_lock(storage_url, settings.study_name):
        recovered = recover_stale(study, storage, settings.retries, mark_child, settings.heartbeat_timeout)
    if tracker is not None:
        close_finished_trial_runs(tracker, study)
    if recovered:
        _say(f"marked {len(recovered)} abandoned trial(s) FAILED: {', '.join(f'#{n}' for n in recovered)}"
             + (" (their parameters are queued again)" if settings.retries else ""))
    parent = None
    if tracker is not None:
        # one parent run per study, however many machines start at once
        with study_lock(storage_url, settings.study_name):
            parent = parent_run(tracker, study, settings, storage_url, space)
    study.set_user_attr(TARGET_ATTR, n_trials)
    if tracker is not None and parent:
        tracker.set_tags(parent, {"n_trials": n_trials, "outcome": "running"})

    done_before = counts(study.get_trials(deepcopy=False))["DONE"]
    if done_before:
        _say(f"resuming study '{settings.study_name}': {done_before} of {n_trials} trials already finished")
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
    )
    plan_file = study_dir / "plan.json"
    plan.save(plan_file)
    _say(f"study '{settings.study_name}': {n_trials} trials, {settings.workers} worker(s) "
         f"x {threads} thread(s), "
         f"sampler {settings.sampler_name}, pruner {settings.pruner_name}; logs in {study_dir}")
    progress = Progress(settings.study_name, n_trials, settings.workers, settings.metrics[0])
    if done_before >= n_trials:
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
    if interrupted or any(code in (EXIT_CTRL_C, EXIT_SIGTERM) for code in codes):
        outcome = "interrupted"
    elif any(code == EXIT_CONFIG for code in codes):
        outcome = "config mismatch"
    elif any(code == EXIT_FAILURES for code in codes):
        outcome = "too many failures"
    elif any(code not in (0, None) for code in codes):
        outcome = "worker error"
    elif settings.timeout and counts(study.get_trials(deepcopy=False))["DONE"] < n_trials:
        outcome = "timeout"
    else:
        outcome = "complete"
    try:
        # one machine at a time: the best model is tested and registered once per study
        with study_lock(storage_url, settings.study_name):
            finish(study, plan, tracker, space, outcome)
    finally:
        if tracker is not None and parent:
            status = {"complete": "FINISHED", "timeout": "FINISHED", "interrupted": "KILLED"}.get(outcome, "FAILED")
            tracker.set_tags(parent, {"outcome": outcome})
            tracker.end_run(parent, status)  # after the parent's queued writes
    if outcome == "interrupted":
        _say(f"{interrupt_reason()}; run the same command to resume study '{settings.study_name}'")
        return 143 if terminated() or EXIT_SIGTERM in codes else EXIT_CTRL_C
    if outcome == "too many failures":
        reasons = [t.user_attrs.get("sweeper.failure") for t in study.get_trials(deepcopy=False)
                   if t.state.name == "FAIL" and t.user_attrs.get("sweeper.failure_kind") == "error"]
        raise SweeperError(
            f"search stopped: more than {settings.max_failure_rate:.0%} of trials failed "
            f"(search.max_failure_rate); last error: {reasons[-1] if reasons else 'unknown'}"
        )
    if outcome == "config mismatch":
        raise SweeperError(f"{_worker_error(study_dir)}; see {study_dir}/worker_*.log")
    if outcome == "worker error":
        raise SweeperError(f"a sweep worker crashed (exit codes {codes}); see {study_dir}/worker_*.log")
    if outcome == "timeout":
        _say(f"search.timeout reached; run the same command to continue study '{settings.study_name}'")
    return 0
