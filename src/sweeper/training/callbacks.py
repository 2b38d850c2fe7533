"""Lightning callbacks the training layer offers to the layers above it.

:class:`PruningCallback` reports the monitored metric after every validation epoch to
a ``report`` function that the caller supplies (a sweep supplies one that asks its
Optuna trial), and stops training when that function says so. It works with DDP:
rank 0 holds the reporter and decides, the decision is broadcast, and every rank stops
through ``trainer.should_stop`` (not an exception), so processes leave ``fit`` together.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from pytorch_lightning.callbacks import Callback

from sweeper.errors import ConfigError


class PruningCallback(Callback):
    """Report ``monitor`` after every validation epoch; stop when ``report`` says so.

    Args:
        monitor: metric logged by the module, e.g. ``val/acc``.
        report: ``report(value, epoch) -> bool``, true to stop now. ``None`` on the other
            DDP ranks (they only take part in the broadcast) and where nothing can prune
            (non-finite values still stop training).

    After ``fit``, ``pruned`` tells whether training was stopped, and ``reason`` why.
    """

    def __init__(
        self,
        monitor: str,
        report: Callable[[float, int], bool] | None = None,
    ) -> None:
        self.monitor = monitor
        self.report = report
        self.pruned = False
        self.reason: str | None = None

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking or self.pruned:
            return
        decision = False
        reason = None
        if trainer.is_global_zero:
            value = trainer.callback_metrics.get(self.monitor)
            if value is None:
                raise ConfigError(
                    f"search.metric: '{self.monitor}' is not logged by the model; it logs "
                    f"{', '.join(sorted(trainer.callback_metrics)) or 'nothing'} (self.log in "
                    "validation_step or on_validation_epoch_end)"
                )
            value = float(value)
            epoch = trainer.current_epoch
            if not math.isfinite(value):
                decision, reason = True, f"{self.monitor} is {value} at epoch {epoch}"
            elif self.report is not None and self.report(value, epoch):
                decision = True
                reason = f"pruned at epoch {epoch} with {self.monitor}={value:.4f}"
        decision = bool(trainer.strategy.broadcast(decision, src=0))
        if decision:
            self.pruned = True
            self.reason = reason or "pruned by rank 0"
            trainer.should_stop = True
