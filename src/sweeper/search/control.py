"""Study control: the points a study tries first (``search.enqueue``,
``search.warm_start``) and the rules that end it before ``n_trials``
(``search.patience``/``search.min_delta``, ``search.epoch_budget``).

The stop rules are a pure function of the study's trials, so every worker and the
coordinator, on any machine, reach the same answer from the same store.
"""

from __future__ import annotations

from typing import Any

from optuna.trial import FrozenTrial, TrialState

from sweeper.errors import ConfigError
from sweeper.search.records import study_folder
from sweeper.search.settings import SearchSettings
from sweeper.search.space import SearchSpace
from sweeper.search.storage import default_storage, open_storage
from sweeper.tracking.stores import mask_url

FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED)


def start_points(settings: SearchSettings, space: SearchSpace) -> list[dict[str, Any]]:
    """Optuna parameters of the points to try first: ``search.enqueue`` in order, then
    the best ``search.warm_start.top`` trials of ``search.warm_start.study``. Checked
    against the search space before anything of the study exists."""
    points = [space.encode(values, f"search.enqueue[{i}]") for i, values in enumerate(settings.enqueue)]
    if settings.warm_start_study:
        points += _best_of(settings, space)
    return points


def _best_of(settings: SearchSettings, space: SearchSpace) -> list[dict[str, Any]]:
    import optuna

    name = settings.warm_start_study
    assert name is not None
    url = settings.warm_start_storage or settings.storage
    if url is None:
        journal_dir = study_folder(name)
        if not (journal_dir / "optuna.journal").is_file():
            raise ConfigError(f"search.warm_start.study: no study '{name}' under {journal_dir.parent}; "
                              "name a study run from this folder, or give search.warm_start.storage")
        url = default_storage(journal_dir)
    try:
        other = optuna.load_study(study_name=name, storage=open_storage(url))
    except KeyError:
        raise ConfigError(f"search.warm_start.study: no study '{name}' in {mask_url(url)}; "
                          "check the name with `sweeper compare`, or give search.warm_start.storage") from None
    if len(other.directions) != 1:
        raise ConfigError(f"search.warm_start.study: '{name}' is multi-objective; it has no single "
                          "ranking to take the best trials from")
    complete = [t for t in other.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.values]
    maximize = other.direction.name == "MAXIMIZE"
    complete.sort(key=lambda t: t.values[0], reverse=maximize)
    by_key = {p.key: p for p in space.params}
    points = []
    for trial in complete[: settings.warm_start_top]:
        # the shared keys only, and only values this space can hold
        shared = {k: v for k, v in trial.params.items() if k in by_key}
        values = space.decode(shared)
        try:
            points.append(space.encode(values, f"search.warm_start (trial #{trial.number} of '{name}')"))
        except ConfigError:
            continue
    return points


def enqueue_points(study: Any, points: list[dict[str, Any]]) -> int:
    """Queue the start points not tried yet (call under the study's lock); returns how
    many were queued. A point already in the study, in any state, is skipped."""
    before = len(study.get_trials(deepcopy=False))
    for params in points:
        study.enqueue_trial(params, skip_if_exists=True)
    return len(study.get_trials(deepcopy=False)) - before


def epochs_used(trials: list[FrozenTrial]) -> int:
    """Epochs the study's trials have trained, finished or not."""
    total = 0
    for t in trials:
        if t.state in (TrialState.WAITING,):
            continue
        epochs = t.user_attrs.get("epochs")
        total += int(epochs) if isinstance(epochs, int) else len(t.intermediate_values)
    return total


def stop_reason(trials: list[FrozenTrial], settings: SearchSettings) -> tuple[str, str] | None:
    """``(outcome, message)`` when a stop rule ends the study, else None.

    * ``search.epoch_budget``: the trials have trained that many epochs in all (no new
      trial starts; those running finish).
    * ``search.patience`` K: the last K finished trials (pruned ones count) brought no
      improvement of the best value by at least ``search.min_delta`` (strictly better
      when it is 0). Trials are taken in the order they finished.
    """
    if settings.epoch_budget is not None:
        used = epochs_used(trials)
        if used >= settings.epoch_budget:
            return ("epoch budget", f"the trials trained {used} epochs (search.epoch_budget={settings.epoch_budget})")
    if settings.patience is not None:
        finished = sorted((t for t in trials if t.state in FINISHED_STATES and t.datetime_complete),
                          key=lambda t: (t.datetime_complete, t.number))
        sign = 1.0 if settings.directions[0] == "maximize" else -1.0
        best: float | None = None
        since = 0
        for t in finished:
            if t.state == TrialState.COMPLETE and t.values:
                value = sign * t.values[0]
                gain = None if best is None else value - best
                if gain is None or (gain >= settings.min_delta and gain > 0):
                    best, since = value, 0
                    continue
            since += 1
        if best is not None and since >= settings.patience:
            by = f" by at least {settings.min_delta:g}" if settings.min_delta else ""
            return ("plateau", (f"no improvement of {settings.metrics[0]}{by} in the last {since} "
                                f"finished trials (search.patience={settings.patience})"))
    return None
