"""Lightning callbacks the training layer offers to the layers above it.

:class:`PruningCallback` reports the monitored metric after every validation epoch to
a ``report`` function that the caller supplies (a sweep supplies one that asks its
Optuna trial), and stops training when that function says so. It works with DDP:
rank 0 holds the reporter and decides, the decision is broadcast, and every rank stops
through ``trainer.should_stop`` (not an exception), so processes leave ``fit`` together.

A trial that reaches its last epoch is never pruned: stopping it then saves nothing, and
its value would be lost. A time cap (``time_limit_s``) stops a trial that runs too long;
it is checked after every validation epoch and, on one device, after every batch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from pytorch_lightning.callbacks import Callback

from sweeper.errors import ConfigError


class PruningCallback(Callback):
    """Report ``monitor`` after every validation epoch; stop when ``report`` says so.

    Args:
        monitor: metric logged by the module, e.g. ``val/acc``.
        report: ``report(value, epoch, final) -> bool``, true to stop now; ``final`` is true
            after the last epoch (the answer is then ignored). ``None`` on the other DDP
            ranks (they only take part in the broadcast) and where nothing can prune
            (non-finite values still stop training).
        time_limit_s: stop training once it has run this long (None: no cap).

    After ``fit``, ``pruned`` tells whether training was stopped, ``reason`` why, and
    ``timed_out`` whether the time cap stopped it.
    """

    def __init__(
        self,
        monitor: str,
        report: Callable[[float, int, bool], bool] | None = None,
        time_limit_s: float | None = None,
    ) -> None:
        self.monitor = monitor
        self.report = report
        self.time_limit_s = time_limit_s
        self.pruned = False
        self.timed_out = False
        self.reason: str | None = None
        self._started = time.monotonic()

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self._started = time.monotonic()

    def _over_time(self) -> bool:
        return self.time_limit_s is not None and time.monotonic() - self._started > self.time_limit_s

    def _stop_for_time(self, trainer: Any) -> None:
        self.pruned = self.timed_out = True
        self.reason = (f"stopped by search.trial_timeout={self.time_limit_s:g}s at epoch "
                       f"{trainer.current_epoch}")
        trainer.should_stop = True

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        # One device only: under DDP the ranks must agree, which the validation-end
        # broadcast does.
        if not self.pruned and trainer.world_size == 1 and self._over_time():
            self._stop_for_time(trainer)

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking or self.pruned:
            return
        decision = False
        reason = None
        timed_out = False
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
            max_epochs = trainer.max_epochs
            final = max_epochs is not None and max_epochs > 0 and epoch >= max_epochs - 1
            if not math.isfinite(value):
                decision, reason = True, f"{self.monitor} is {value} at epoch {epoch}"
            elif self.report is not None and self.report(value, epoch, final) and not final:
                decision = True
                reason = f"pruned at epoch {epoch} with {self.monitor}={value:.4f}"
            elif not final and self._over_time():
                decision, timed_out = True, True
        decision, timed_out = trainer.strategy.broadcast((decision, timed_out), src=0)
        if timed_out:
            self._stop_for_time(trainer)
        elif decision:
            self.pruned = True
            self.reason = reason or "pruned by rank 0"
            trainer.should_stop = True
