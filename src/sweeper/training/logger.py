"""The Lightning logger of a training run: epoch metrics into the run's MLflow record."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pytorch_lightning.loggers.logger import Logger
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from sweeper.tracking.mlflow import MlflowTracker


class MlflowLogger(Logger):
    """Lightning logger that sends epoch metrics to an existing MLflow run.

    Hyperparameters are not logged here: the run's parameters are the resolved config,
    logged once by whoever created the run. The step of each metric is the epoch.
    """

    def __init__(self, tracker: MlflowTracker, run_id: str) -> None:
        super().__init__()
        self.tracker = tracker
        self.run_id = run_id

    @property
    def name(self) -> str:
        return "mlflow"

    @property
    def version(self) -> str:
        return self.run_id

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        return None

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        metrics = dict(metrics)
        epoch = metrics.pop("epoch", None)
        step = int(epoch) if epoch is not None else int(step or 0)
        self.tracker.log_metrics(self.run_id, metrics, step=step)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        return None  # the run's owner ends it (and waits for its writes) with end_run
