"""Reading a study back from its Optuna storage, as the same record MLflow reading gives.

Optuna holds every trial's state, value, epochs and parameters, and opening a journal
file needs neither MLflow nor Lightning, so ``sweeper compare`` on a local study answers
in about a second even for thousands of trials.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sweeper.errors import SweeperError
from sweeper.tracking.studies import StudyRecord, TrialRecord

SPACE_ATTR, METRICS_ATTR, PARENT_ATTR = "sweeper.space", "sweeper.metrics", "sweeper.parent_run_id"
CV_ATTR = "sweeper.cv_folds"
CONFIG_ATTR = "sweeper.config"  # what defines the study's trials, compared on resume
FINISHED_ATTR = "sweeper.finished"  # outcome of the sweep that ended the study
FINISHED_DONE_ATTR = "sweeper.finished_trials"  # trials done when it did: their best was tested once
TARGET_ATTR = "sweeper.n_trials"  # trials the latest `sweeper sweep` of the study aimed for
_STATE = {"FAIL": "FAILED"}  # Optuna's state names, as MLflow records them


def sweeps_dir(cwd: Path | None = None) -> Path:
    return (Path.cwd() if cwd is None else cwd) / "outputs" / "sweeps"


def study_folder(name: str, cwd: Path | None = None) -> Path:
    """Where study ``name``'s files live: ``./outputs/sweeps/<name>`` (absolute)."""
    return (sweeps_dir(cwd) / name).resolve()


def local_journal(name: str | None, cwd: Path | None = None) -> Path | None:
    """The embedded journal of study ``name`` under ``./outputs/sweeps`` (or of the study
    written last, when ``name`` is None), if there is one."""
    root = sweeps_dir(cwd)
    if name is not None:
        path = root / name / "optuna.journal"
        return path if path.is_file() else None
    journals = [p for p in root.glob("*/optuna.journal") if p.is_file()]
    return max(journals, key=lambda p: p.stat().st_mtime) if journals else None


def load_record(storage_url: str, name: str | None) -> StudyRecord:
    """``name`` (or the study started last) in an Optuna storage, as a :class:`StudyRecord`."""
    import optuna

    from sweeper.search.storage import open_storage
    from sweeper.tracking.stores import require_store

    require_store(storage_url, "--storage", "give the storage URL the sweep used (search.storage)")
    storage = open_storage(storage_url)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    summaries = optuna.get_all_study_summaries(storage, include_best_trial=False)
    if not summaries:
        raise SweeperError(f"no study in {storage_url}; run `sweeper sweep` first")
    if name is None:
        dated = [s for s in summaries if s.datetime_start is not None] or summaries
        name = max(dated, key=lambda s: s.datetime_start or 0).study_name
    elif name not in {s.study_name for s in summaries}:
        known = ", ".join(sorted(s.study_name for s in summaries))
        raise SweeperError(f"no study '{name}' in {storage_url}; recorded studies: {known}")
    study = optuna.load_study(study_name=name, storage=storage)
    return study_record(study)


def study_record(study: Any) -> StudyRecord:
    from optuna.trial import TrialState

    from sweeper.search.trials import RUN_ID_ATTR, trial_duration

    attrs = study.user_attrs
    metrics = attrs.get(METRICS_ATTR) or ["value"]
    direction = study.directions[0].name.lower()
    searched = sorted(json.loads(attrs[SPACE_ATTR])) if SPACE_ATTR in attrs else []
    trials = study.get_trials(deepcopy=False)
    record = StudyRecord(
        name=study.study_name,
        parent_run_id=attrs.get(PARENT_ATTR, ""),
        metric=metrics[0],
        direction=direction,
        status=_status(trials, attrs.get(TARGET_ATTR)),
        start_time=int(min((t.datetime_start.timestamp() for t in trials if t.datetime_start), default=0) * 1000),
        searched=searched,
    )
    pick = max if direction == "maximize" else min
    for t in trials:
        if t.state == TrialState.WAITING:
            continue
        if t.state == TrialState.COMPLETE and t.values:
            value = t.values[0]
        else:  # a stopped or running trial: its best epoch so far
            value = pick(t.intermediate_values.values()) if t.intermediate_values else None
        epochs = t.user_attrs.get("epochs", len(t.intermediate_values) or None)
        record.trials.append(TrialRecord(
            number=t.number,
            state=_STATE.get(t.state.name, t.state.name),
            value=value,
            params={k: str(t.params[k]) if k in t.params else "-" for k in searched},
            epochs=int(epochs) if epochs is not None else None,
            duration_s=trial_duration(t),
            run_id=str(t.user_attrs.get(RUN_ID_ATTR, "")),
        ))  # fmt: skip
    return record


def _status(trials: list[Any], target: int | None) -> str:
    states = [t.state.name for t in trials]
    if "RUNNING" in states:
        return "RUNNING"
    done = sum(s in ("COMPLETE", "PRUNED") for s in states)
    if target is not None and done < int(target):
        return "INCOMPLETE"
    return "FINISHED"
