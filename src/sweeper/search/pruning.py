"""What a sweep plugs into the training layer's pruning callback: its Optuna trial."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sweeper.search.liveness import HEARTBEAT_ATTR


def trial_reporter(trial: Any) -> Callable[[float, int], bool]:
    """``report(value, step) -> prune?`` for :class:`sweeper.training.callbacks.PruningCallback`."""

    def report(value: float, step: int) -> bool:
        trial.report(value, step=step)
        return bool(trial.should_prune())

    return report


def trial_heartbeat(trial: Any) -> Callable[[], None]:
    """Stamps the trial so other machines can tell it from one whose worker died."""
    return lambda: trial.set_user_attr(HEARTBEAT_ATTR, time.time())


def pruning_callback(trial: Any | None, monitor: str, heartbeat: Any | None = None) -> Any:
    """The training layer's pruning callback, reporting to ``trial`` (None: never prunes)."""
    from sweeper.training.callbacks import PruningCallback

    return PruningCallback(
        monitor,
        report=trial_reporter(trial) if trial is not None else None,
        heartbeat=trial_heartbeat(heartbeat) if heartbeat is not None else None,
    )
