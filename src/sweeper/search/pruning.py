"""What a sweep plugs into the training layer's pruning callback: its Optuna trial."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def trial_reporter(trial: Any) -> Callable[[float, int], bool]:
    """``report(value, step) -> prune?`` for :class:`sweeper.training.callbacks.PruningCallback`."""

    def report(value: float, step: int) -> bool:
        trial.report(value, step=step)
        return bool(trial.should_prune())

    return report


def pruning_callback(trial: Any | None, monitor: str) -> Any:
    """The training layer's pruning callback, reporting to ``trial`` (None: never prunes)."""
    from sweeper.training.callbacks import PruningCallback

    return PruningCallback(
        monitor,
        report=trial_reporter(trial) if trial is not None else None,
    )
