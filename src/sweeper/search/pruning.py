"""What a sweep plugs into the training layer's pruning callback: its Optuna trial."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def trial_reporter(trial: Any) -> Callable[[float, int, bool], bool]:
    """``report(value, step, final) -> prune?`` for
    :class:`sweeper.training.callbacks.PruningCallback`: every value is reported, the
    pruner is not asked after the last step (a trial that used its whole budget is never
    pruned)."""

    def report(value: float, step: int, final: bool) -> bool:
        trial.report(value, step=step)
        return not final and bool(trial.should_prune())

    return report


def pruning_callback(trial: Any | None, monitor: str, time_limit_s: float | None = None) -> Any:
    """The training layer's pruning callback, reporting to ``trial`` (None: never prunes)."""
    from sweeper.training.callbacks import PruningCallback

    return PruningCallback(
        monitor,
        report=trial_reporter(trial) if trial is not None else None,
        time_limit_s=time_limit_s,
    )
