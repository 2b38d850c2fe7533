"""The end of a sweep: the trials table, the best configuration, the parent run's
summary; and, once per study, the steps the command hands over (:class:`StudyEnd`: the
best checkpoint tested and registered, the study's plots)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sweeper.reports.tables import table
from sweeper.search.plan import SweepPlan
from sweeper.search.progress import say, trials_table
from sweeper.search.space import SearchSpace
from sweeper.search.storage import optuna_commands
from sweeper.search.trials import RUN_ID_ATTR, counts
from sweeper.tracking.stores import mask_url


@dataclass(frozen=True)
class StudyEnd:
    """What the command does with a finished study, called here once per study
    (``sweeper sweep`` hands over :data:`sweeper.best_model.STEPS`).

    ``test(config_file, checkpoint, folder)``: the best checkpoint scored on the test split;
    an evaluation with ``metrics``, ``module`` and ``datamodule``.
    ``register(tracking_uri, run_id, evaluation, name)``: the model registered from that
    run; its version and a line on the inputs it takes.
    ``plots(study, folder, metric, param_keys)``: the study's plots written to ``folder``.
    """

    test: Callable[[Path, str, Path], Any]
    register: Callable[[str, str, Any, str], tuple[str, str]]
    plots: Callable[[Any, Path, str, list[str]], list[Path]]


def best_trials(study: Any) -> list[Any]:
    from optuna.trial import TrialState

    if not any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
        return []
    return [study.best_trial] if len(study.directions) == 1 else list(study.best_trials)


def say_optuna_commands(storage_url: str, study_name: str) -> None:
    dashboard, trials = optuna_commands(storage_url, study_name)
    server = "://" in storage_url and "@" in storage_url  # its password is never printed
    say(f"Optuna's own tools: {dashboard}   |   {trials}"
        + ("   (password from PGPASSWORD or ~/.pgpass)" if server else ""))


def finish(study: Any, plan: SweepPlan, tracker: Any, space: SearchSpace, outcome: str,
           end: StudyEnd | None) -> None:
    settings = plan.search
    study_dir = Path(plan.study_dir)
    c = counts(study.get_trials(deepcopy=False))
    param_keys = [p.key for p in space.params]
    say("")
    say(trials_table(study, settings.metrics, param_keys))
    say(f"\ntrials: {c['COMPLETE']} complete, {c['PRUNED']} pruned, {c['FAIL']} failed "
         f"(study '{settings.study_name}' in {mask_url(plan.storage)})")
    say_optuna_commands(plan.storage, settings.study_name)
    best = best_trials(study)
    if settings.multi_objective and best:
        say("\nPareto front:")
        say(table(["#", *settings.metrics, *param_keys],
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
            say(f"\nbest trial #{top.number}: "
                 + ", ".join(f"{m}={v:.4f}" for m, v in zip(settings.metrics, top.values))
                 + " with " + ", ".join(f"{k}={v}" for k, v in values.items()))
            say(f"best config: {target}")
            say(f"reproduce:   sweeper train --config-path {study_dir.resolve()} --config-name best_config")
        checkpoint = top.user_attrs.get("checkpoint")
        if settings.cv_folds > 1:
            say(f"search.cv.folds={settings.cv_folds}: each fold trained its own model, so none is "
                 "tested or registered; train the best configuration with the command above")
        if end is not None and checkpoint and Path(checkpoint).is_file() and config_file.is_file():
            evaluation = end.test(config_file, checkpoint, study_dir / "evaluation")
            test = evaluation.metrics
            say("test split: " + ", ".join(f"{k}={v:.4f}" for k, v in sorted(test.items()) if k != "test/loss"))
            summary_metrics.update(test)
            child = top.user_attrs.get(RUN_ID_ATTR)
            if tracker is not None and child and not _run_exists(tracker, child):
                say(f"the best trial's MLflow run {child} is not in {tracker.uri} (deleted, or another "
                     "store): its test metrics are not logged and no model is registered")
                child = None
            registered = _registered_version(tracker, settings.study_name, child) if child else None
            if registered:
                say(f"model '{settings.study_name}' version {registered} is this best trial's already: "
                     "nothing registered again")
                summary_tags["registered_model"] = f"{settings.study_name}/{registered}"
            elif tracker is not None and child:
                tracker.log_metrics(child, test)
                tracker.log_artifact(child, checkpoint, "checkpoints")
                tracker.log_artifacts(child, study_dir / "evaluation", "evaluation")
                if plan.parent_run_id:
                    tracker.log_artifacts(plan.parent_run_id, study_dir / "evaluation", "evaluation")
                if settings.register_model:
                    version, inputs = end.register(tracker.uri, child, evaluation, settings.study_name)
                    summary_tags["registered_model"] = f"{settings.study_name}/{version}"
                    say(f"registered model '{settings.study_name}' version {version}")
                    say(f"  its inputs: {inputs}")
    if end is not None and c["DONE"]:
        plots = end.plots(study, study_dir / "plots", settings.metrics[0], param_keys)
        if plots and tracker is not None and plan.parent_run_id:
            tracker.log_artifacts(plan.parent_run_id, study_dir / "plots", "plots")
    if tracker is not None and plan.parent_run_id:
        # queued behind everything above; run_sweep's end_run of the parent waits for all
        tracker.log_metrics(plan.parent_run_id, summary_metrics, step=c["DONE"])
        tracker.set_tags(plan.parent_run_id, summary_tags)  # one write with the metrics
        if (study_dir / "best_config.yaml").is_file():
            tracker.log_artifact(plan.parent_run_id, study_dir / "best_config.yaml")


def report_finished(study: Any, settings: Any, space: SearchSpace, storage_url: str, n_trials: int,
                    stop: tuple[str, str] | None, by_another: bool = False) -> None:
    """What a re-run of a finished study prints; it writes nothing to either store.
    ``by_another``: this process did not end the study (another machine or job did, and
    tested and registered its best model)."""
    from sweeper.search.records import FINISHED_ATTR

    c = counts(study.get_trials(deepcopy=False))
    param_keys = [p.key for p in space.params]
    say(trials_table(study, settings.metrics, param_keys))
    how = f"stopped early: {stop[1]}" if stop and c["DONE"] < n_trials else \
        f"outcome {study.user_attrs.get(FINISHED_ATTR)}"
    say(f"\nstudy '{settings.study_name}' is finished: {c['DONE']} of {n_trials} trials done, {how} "
         f"({c['COMPLETE']} complete, {c['PRUNED']} pruned, {c['FAIL']} failed; {mask_url(storage_url)})")
    say_optuna_commands(storage_url, settings.study_name)
    best = best_trials(study)
    if best:
        top = best[0]
        values = space.decode(top.params)
        say(f"best trial #{top.number}: "
             + ", ".join(f"{m}={v:.4f}" for m, v in zip(settings.metrics, top.values))
             + " with " + ", ".join(f"{k}={v}" for k, v in values.items()))
    if by_another:
        say("the best model was tested (and registered) once, by the process that finished the study")
        return
    say("nothing to run: raise search.n_trials (or the stop rule's limit) to search further, or start "
         "a new study with search.study_name=<new name>")


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
