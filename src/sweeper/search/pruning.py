"""Pruning from inside Lightning: report each validation epoch, stop when Optuna says so.

``optuna-integration``'s callback targets ``lightning.pytorch``; this one works with
``pytorch_lightning`` and with DDP: rank 0 holds the trial, reports and decides, and the
decision is broadcast so every rank stops after the same epoch. Stopping goes through
``trainer.should_stop`` (not an exception), so DDP processes leave ``fit`` together and
cleanly.
"""

from __future__ import annotations

import math
import time
from typing import Any

from pytorch_lightning.callbacks import Callback

from sweeper.search.liveness import HEARTBEAT_ATTR

HEARTBEAT_EVERY_S = 30.0


class PruningCallback(Callback):
    """Report ``monitor`` to an Optuna trial after every validation epoch.

    Args:
        trial: the Optuna trial on rank 0; ``None`` on the other DDP ranks, which only
            take part in the broadcast (and in multi-objective studies, which Optuna
            cannot prune; non-finite values still stop the trial).
        monitor: metric logged by the module, e.g. ``val/acc``.
        heartbeat: a trial to stamp with a heartbeat now and then, so other machines
            can tell a live trial from one whose worker died.

    After ``fit``, ``pruned`` tells whether the trial was stopped, and ``reason`` why.
    """

    def __init__(self, trial: Any | None, monitor: str, heartbeat: Any | None = None) -> None:
        self.trial = trial
        self.monitor = monitor
        self.heartbeat = heartbeat
        self.pruned = False
        self.reason: str | None = None
        self._last_beat = time.time()

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking or self.pruned:
            return
        if self.heartbeat is not None and time.time() - self._last_beat > HEARTBEAT_EVERY_S:
            self._last_beat = time.time()
            self.heartbeat.set_user_attr(HEARTBEAT_ATTR, self._last_beat)
        decision = False
        reason = None
        if trainer.is_global_zero:
            value = trainer.callback_metrics.get(self.monitor)
            if value is None:
                raise KeyError(
                    f"search.metric '{self.monitor}' was not logged; logged metrics are "
                    f"{', '.join(sorted(trainer.callback_metrics))}"
                )
            value = float(value)
            epoch = trainer.current_epoch
            if not math.isfinite(value):
                decision, reason = True, f"{self.monitor} is {value} at epoch {epoch}"
            elif self.trial is not None:
                self.trial.report(value, step=epoch)
                if self.trial.should_prune():
                    decision = True
                    reason = f"pruned at epoch {epoch} with {self.monitor}={value:.4f}"
        decision = bool(trainer.strategy.broadcast(decision, src=0))
        if decision:
            self.pruned = True
            self.reason = reason or "pruned by rank 0"
            trainer.should_stop = True
