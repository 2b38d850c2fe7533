"""Sampler adjustments for an ask-and-tell loop."""

from __future__ import annotations

from typing import Any

import optuna


class GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler without its call to ``study.stop()`` once the grid is used up.

    ``Study.stop`` only works inside ``study.optimize``; our workers ask and tell, and a
    grid sweep's length is already capped at the grid's size.
    """

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        return None
