"""Bookkeeping on a study's trials: counting, stale-trial recovery, retries."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from sweeper.search.liveness import DEFAULT_TIMEOUT_S, HEARTBEAT_ATTR, WORKER_ATTR, is_alive

FAILURE_ATTR = "sweeper.failure"  # one-line reason
FAILURE_KIND_ATTR = "sweeper.failure_kind"  # error | abandoned | interrupted | diverged
ATTEMPT_ATTR = "sweeper.attempt"
PRUNED_BY_ATTR = "sweeper.pruned_by"  # pruner | trial_timeout | diverged
TRIAL_LOG = "trial.log"  # a trial's output, in its folder and as an artifact of its run
RUN_ID_ATTR = "mlflow_run_id"
DONE_STATES = (TrialState.COMPLETE, TrialState.PRUNED)


def counts(trials: list[FrozenTrial]) -> Counter[str]:
    c: Counter[str] = Counter(t.state.name for t in trials)
    c["DONE"] = c["COMPLETE"] + c["PRUNED"]
    return c


def trial_duration(trial: FrozenTrial) -> float | None:
    """A trial's duration in seconds, one figure in every report and in both stores: what
    its training run measured (``duration_s``, also the ``duration_s`` tag of its MLflow
    run), else, for a trial that never finished training, its start to its end."""
    measured = trial.user_attrs.get("duration_s")
    if measured is not None:
        return float(measured)
    if trial.datetime_start and trial.datetime_complete:
        return (trial.datetime_complete - trial.datetime_start).total_seconds()
    return None


def is_stale(trial: FrozenTrial, now: float | None = None, timeout: float = DEFAULT_TIMEOUT_S) -> bool:
    now = time.time() if now is None else now
    worker = trial.user_attrs.get(WORKER_ATTR)
    if worker is None:  # asked but never claimed: the asking process died at once
        started = trial.datetime_start.timestamp() if trial.datetime_start else now
        return now - started > timeout
    return not is_alive(worker, trial.user_attrs.get(HEARTBEAT_ATTR), now, timeout)


def fail_trial(storage: Any, study_id: int, trial: FrozenTrial, reason: str, kind: str) -> bool:
    """Fail a RUNNING trial; False when it finished meanwhile (its worker, or another
    machine recovering it, got there first)."""
    from optuna.exceptions import UpdateFinishedTrialError

    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
    if storage.get_trial(trial_id).state != TrialState.RUNNING:
        return False
    try:
        storage.set_trial_user_attr(trial_id, FAILURE_ATTR, reason)
        storage.set_trial_user_attr(trial_id, FAILURE_KIND_ATTR, kind)
        return bool(storage.set_trial_state_values(trial_id, TrialState.FAIL))
    except UpdateFinishedTrialError:
        return False


def maybe_retry(study: Any, trial: FrozenTrial, retries: int) -> bool:
    """Queue ``trial``'s parameters again unless it used up ``retries``."""
    attempt = int(trial.user_attrs.get(ATTEMPT_ATTR, 1))
    if attempt > retries or not trial.params:
        return False
    study.enqueue_trial(
        dict(trial.params),
        user_attrs={ATTEMPT_ATTR: attempt + 1, "sweeper.retry_of": trial.number},
        skip_if_exists=False,
    )
    return True


def recover_stale(
    study: Any,
    storage: Any,
    retries: int,
    on_failed: Callable[[FrozenTrial], None] | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> list[int]:
    """Fail RUNNING trials whose worker is gone, queue their retries; return their numbers.

    Callers hold the study's lock, so two processes never recover the same trial twice."""
    study_id = storage.get_study_id_from_name(study.study_name)
    recovered = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not is_stale(trial, timeout=timeout):
            continue
        reason = "abandoned: its worker stopped (killed or crashed) while training"
        if not fail_trial(storage, study_id, trial, reason, "abandoned"):
            continue
        if on_failed is not None:
            on_failed(storage.get_trial(trial._trial_id))
        maybe_retry(study, trial, retries)
        recovered.append(trial.number)
    return recovered


def mlflow_outcome(trial: FrozenTrial) -> tuple[dict[str, Any], str]:
    """A finished trial's record in MLflow, derived from Optuna's: the run's ``state``
    tag, its reason and epochs, and the run status.

    ======================================  ==========  ===========  ==================
    Optuna                                  ``state``   run status   reason tag
    ======================================  ==========  ===========  ==================
    COMPLETE                                COMPLETE    FINISHED     -
    PRUNED (by the pruner)                  PRUNED      FINISHED     ``prune_reason``
    PRUNED (``search.trial_timeout``)       PRUNED      FINISHED     ``prune_reason``
    PRUNED (diverged: a non-finite loss)    PRUNED      FINISHED     ``prune_reason``
    FAIL, kind ``error``                    FAILED      FAILED       ``failure_reason``
    FAIL, kind ``abandoned`` (worker gone)  FAILED      FAILED       ``failure_reason``
    FAIL, kind ``interrupted`` (Ctrl-C,     FAILED      KILLED       ``failure_reason``
    SIGTERM)
    ======================================  ==========  ===========  ==================

    A PRUNED run's ``pruned_by`` tag says which (``pruner``, ``trial_timeout``,
    ``diverged``); the pruner never stops a trial after its last epoch, so a PRUNED trial
    always stopped early. A retried trial is a new trial (``sweeper.retry_of``) with a
    run of its own.
    """
    attrs = trial.user_attrs
    epochs = attrs.get("epochs", len(trial.intermediate_values) or None)
    duration = trial_duration(trial)
    state = trial.state.name
    common = {"epochs": epochs, "duration_s": round(duration, 3) if duration is not None else None}
    if state == "COMPLETE":
        return {"state": "COMPLETE", **common}, "FINISHED"
    if state == "PRUNED":
        reason = attrs.get("prune_reason") or attrs.get(FAILURE_ATTR)
        return {"state": "PRUNED", "prune_reason": reason, **common,
                "pruned_by": attrs.get(PRUNED_BY_ATTR, "pruner")}, "FINISHED"
    kind = attrs.get(FAILURE_KIND_ATTR, "error")
    tags = {"state": "FAILED", "failure_reason": attrs.get(FAILURE_ATTR, "failed"), "failure_kind": kind,
            **common}
    return tags, "KILLED" if kind == "interrupted" else "FAILED"


def record_outcome(tracker: Any, trial: FrozenTrial, run_id: str | None = None) -> None:
    """The one writer of a sweep trial's outcome in MLflow: mirror the finished Optuna
    trial onto its run and end the run. Never blocks the sweep, never raises."""
    run_id = run_id or trial.user_attrs.get(RUN_ID_ATTR)
    if tracker is None or not run_id or trial.state.name in ("RUNNING", "WAITING"):
        return
    tags, status = mlflow_outcome(trial)
    try:
        tracker.set_tags(run_id, tags)
        tracker.end_run(run_id, status, wait=False)  # callers may hold the study's lock
    except Exception as exc:  # the run may live in another store
        import logging

        logging.getLogger(__name__).warning("could not record trial %s on MLflow run %s: %s",
                                            trial.number, run_id, exc)


def close_finished_trial_runs(tracker: Any, study: Any) -> list[str]:
    """End the MLflow runs still RUNNING whose Optuna trial has finished.

    A worker ends a trial's run in the background once the trial is told; a worker that
    is killed right after (SIGKILL, out of memory) leaves that run RUNNING. One killed
    between creating the run and recording its id in Optuna leaves a run that only its
    tags (study, trial number) point to: it is found by them. Runs of trials still
    RUNNING in Optuna are left alone (another machine may be training them). Returns
    the ids of the runs it ended.
    """
    trials = study.get_trials(deepcopy=False)
    by_number = {t.number: t for t in trials}
    try:
        running = tracker.client.search_runs(
            [tracker.experiment_id],
            f"attributes.status = 'RUNNING' and tags.study = '{study.study_name}' "
            "and tags.`sweeper.role` = 'trial'",
            max_results=5000,
        )
    except Exception as exc:  # the store may be unreachable; the sweep's results stand
        import logging

        logging.getLogger(__name__).warning("could not look for unfinished MLflow runs: %s", exc)
        return []
    closed = []
    for run in running:
        try:
            trial = by_number.get(int(run.data.tags.get("trial_number", -1)))
        except ValueError:
            continue
        if trial is None or trial.state.name in ("RUNNING", "WAITING"):
            continue
        if trial.user_attrs.get(RUN_ID_ATTR) == run.info.run_id:
            record_outcome(tracker, trial, run.info.run_id)
        else:  # a run Optuna never heard of: its worker died before recording it
            tracker.set_tags(run.info.run_id, {
                "state": "FAILED", "failure_kind": "abandoned",
                "failure_reason": "abandoned: its worker stopped before the trial recorded this run"})
            tracker.end_run(run.info.run_id, "FAILED", wait=False)  # as any abandoned trial's run
        closed.append(run.info.run_id)
    if closed:
        tracker.flush()
    return closed
