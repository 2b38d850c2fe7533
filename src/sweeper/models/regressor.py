"""The LightningModule that trains a network as a regressor (mean squared error)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection, R2Score

from sweeper.models._task import OptimizerFactory, SchedulerFactory, TaskModule, pyplot

MAX_PLOTTED_TARGETS = 16  # one scatter panel each; more would be unreadable


def _metrics(prefix: str) -> MetricCollection:
    return MetricCollection(
        {"mse": MeanSquaredError(), "mae": MeanAbsoluteError(), "r2": R2Score()}, prefix=prefix
    )


class Regressor(TaskModule):
    """Mean-squared-error regression around a network giving ``(N, num_targets)``.

    Batches are ``(x, y)`` with floating targets ``y`` of shape ``(N,)`` (one target; the
    net then has ``num_outputs=1``) or ``(N, num_targets)``. Logs per epoch ``train/loss``,
    ``val/loss`` (MSE), ``val/mae``, ``val/r2`` and, when testing, ``test/loss``,
    ``test/mse``, ``test/mae``, ``test/r2`` (R² averaged uniformly over targets). Metrics
    are synchronised across DDP ranks.

    Args:
        net: a :class:`~sweeper.models.Backbone` built with ``num_outputs=num_targets``, its
            ``spec``, or any ``nn.Module`` (see :class:`~sweeper.models.TaskModule`).
        optimizer: factory taking the parameters. Default: Adam, lr 1e-3.
        scheduler: optional factory taking the optimizer; stepped per epoch.
        target_mean, target_std: the training targets' mean and standard deviation, one
            per target (:meth:`data_kwargs` reads them from the data module). The net then
            learns standardised targets, which lets one learning rate suit targets of any
            scale, while ``model(x)``, every ``val/*`` and ``test/*`` metric and the
            report stay in the data's own units. ``train/loss`` is the MSE of the
            standardised targets, the quantity the optimiser minimises.

    ``Regressor.load_from_checkpoint(path)`` needs no arguments when the net has a spec.
    """

    task = "regression"
    default_monitor = "val/loss"
    default_mode = "min"
    epoch_metrics = ("train/loss", "val/loss", "val/mae", "val/r2")
    target_mean: torch.Tensor  # buffers, registered in __init__
    target_std: torch.Tensor

    def __init__(
        self,
        net: nn.Module | Mapping[str, Any] | None,
        optimizer: OptimizerFactory | Mapping[str, Any] | None = None,
        scheduler: SchedulerFactory | Mapping[str, Any] | None = None,
        target_mean: Sequence[float] | None = None,
        target_std: Sequence[float] | None = None,
    ) -> None:
        mean = [float(v) for v in target_mean] if target_mean is not None else None
        std = [float(v) for v in target_std] if target_std is not None else None
        if (mean is None) != (std is None) or (mean is not None and len(mean) != len(std or [])):
            raise ValueError("target_mean and target_std go together, one value per target")
        if std is not None and not all(math.isfinite(v) and v > 0 for v in std):
            raise ValueError(f"target_std must be positive numbers, got {std}")
        super().__init__(net, optimizer, scheduler, target_mean=mean, target_std=std)
        scaled = mean is not None
        self.register_buffer("target_mean", torch.tensor(mean if scaled else [0.0]), persistent=False)
        self.register_buffer("target_std", torch.tensor(std if scaled else [1.0]), persistent=False)
        self.val_metrics = _metrics("val/")
        self.test_metrics = _metrics("test/")

    @classmethod
    def net_outputs(cls, datamodule: Any, **task_kwargs: Any) -> int:
        return int(datamodule.num_targets)

    @classmethod
    def data_kwargs(cls, datamodule: Any) -> dict[str, Any]:
        """The training targets' scale, when the data module knows it."""
        mean, std = getattr(datamodule, "target_mean", None), getattr(datamodule, "target_std", None)
        if mean is None or std is None:
            return {}
        return {"target_mean": [float(v) for v in torch.as_tensor(mean).reshape(-1)],
                "target_std": [float(v) for v in torch.as_tensor(std).reshape(-1)]}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Predictions in the data's units."""
        return self.net(x) * self.target_std + self.target_mean

    def _scaled(self, t: torch.Tensor) -> torch.Tensor:
        """Targets (or predictions) in the standardised units the net learns."""
        if t.dim() == 1:
            return (t - self.target_mean[0]) / self.target_std[0]
        return (t - self.target_mean) / self.target_std

    def _predict(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Predictions shaped like ``y``, and ``y`` in the predictions' dtype."""
        pred = self(x)
        # (N, 1) predictions for (N,) targets would broadcast to (N, N) in the loss.
        if y.dim() == 1 and pred.dim() == 2 and pred.shape[1] == 1:
            pred = pred[:, 0]
        if pred.shape != y.shape:
            raise ValueError(
                f"Regressor: the net predicts shape {tuple(pred.shape)} for targets of shape "
                f"{tuple(y.shape)}; build the net with num_outputs = the data's num_targets"
            )
        return pred, y.to(pred.dtype)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Predictions ``(N, num_outputs)`` for a batch of inputs, in eval mode."""
        was_training = self.training
        self.eval()
        try:
            return self(x.to(self.device))
        finally:
            self.train(was_training)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = self._xy(batch)
        pred, y = self._predict(x, y)
        loss = F.mse_loss(self._scaled(pred), self._scaled(y))
        self.accumulate_train(loss, len(y))
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = self._xy(batch)
        pred, y = self._predict(x, y)
        self.log("val/loss", F.mse_loss(pred, y), on_epoch=True, sync_dist=True, batch_size=len(y))
        self.val_metrics.update(pred, y)

    def on_validation_epoch_end(self) -> None:
        values = self.val_metrics.compute()
        self.log_dict({k: values[k] for k in ("val/mae", "val/r2")}, sync_dist=True)
        self.val_metrics.reset()

    def test_step(self, batch: Any, batch_idx: int) -> None:
        x, y = self._xy(batch)
        pred, y = self._predict(x, y)
        self.log("test/loss", F.mse_loss(pred, y), on_epoch=True, sync_dist=True, batch_size=len(y))
        self.test_metrics.update(pred, y)

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_metrics.compute(), sync_dist=True)
        self.test_metrics.reset()

    def write_report(self, datamodule: Any, out_dir: Path) -> list[Path]:
        """``predicted_vs_true.png`` (one scatter per target, first 16, with the y = x line)
        and ``predictions.csv`` (columns ``true``, ``predicted``; ``true_j``,
        ``predicted_j`` per target ``j`` when there are several) on the test split."""

        def step(x: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
            if y is None:
                raise ValueError("the regression report needs (x, y) test batches, got x alone")
            pred, target = self._predict(x, y)
            return target, pred

        y_true, y_pred = self.over_test_split(datamodule, step)
        true = y_true.float().reshape(len(y_true), -1).numpy()
        pred = y_pred.float().reshape(len(y_pred), -1).numpy()
        targets = true.shape[1]

        plt = pyplot()
        import pandas as pd

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        if targets == 1:
            table = pd.DataFrame({"true": true[:, 0], "predicted": pred[:, 0]})
        else:
            columns = {}
            for j in range(targets):
                columns[f"true_{j}"], columns[f"predicted_{j}"] = true[:, j], pred[:, j]
            table = pd.DataFrame(columns)
        csv = out_dir / "predictions.csv"
        table.to_csv(csv, index_label="sample", float_format="%.6g")

        shown = min(targets, MAX_PLOTTED_TARGETS)
        cols = min(shown, 4)
        rows = math.ceil(shown / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 4 * rows), squeeze=False)
        for j, ax in enumerate(axes.flat):
            if j >= shown:
                ax.axis("off")
                continue
            ax.scatter(true[:, j], pred[:, j], s=12, alpha=0.6)
            low = float(min(true[:, j].min(), pred[:, j].min()))
            high = float(max(true[:, j].max(), pred[:, j].max()))
            ax.plot([low, high], [low, high], color="black", linewidth=1, label="predicted = true")
            ax.set_xlabel("true")
            ax.set_ylabel("predicted")
            ax.set_title("Predicted vs true (test split)" if targets == 1 else f"target {j}")
            ax.legend(loc="upper left", fontsize="small")
        png = out_dir / "predicted_vs_true.png"
        fig.savefig(png, dpi=110, bbox_inches="tight")
        plt.close(fig)
        return [png, csv]
