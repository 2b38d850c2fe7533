"""The LightningModule that trains any :class:`~sweeper.models.Backbone` as a classifier."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from sweeper.errors import DivergedError
from sweeper.models._base import Backbone, build, callable_from_spec, callable_spec

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., Any]


def _metrics(num_classes: int, prefix: str) -> MetricCollection:
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "precision": MulticlassPrecision(num_classes, average="macro"),
            "recall": MulticlassRecall(num_classes, average="macro"),
            "f1": MulticlassF1Score(num_classes, average="macro"),
        },
        prefix=prefix,
    )


class Classifier(pl.LightningModule):
    """Cross-entropy classification around a backbone network.

    Logs per epoch ``train/loss``, ``train/acc``, ``val/loss``, ``val/acc``, ``val/f1`` and,
    when testing, ``test/acc``, ``test/precision``, ``test/recall``, ``test/f1`` (macro
    averages). Metrics are synchronised across DDP ranks.

    Args:
        net: a :class:`~sweeper.models.Backbone` (``MLP``, ``CNN``, ``RNN``) or its ``spec``.
        optimizer: factory taking the parameters, e.g.
            ``functools.partial(torch.optim.SGD, lr=0.05, momentum=0.9)``. Default: Adam, lr 1e-3.
        scheduler: optional factory taking the optimizer, e.g.
            ``functools.partial(torch.optim.lr_scheduler.StepLR, step_size=5)``; stepped per epoch.

    The checkpoint stores only plain data (the network's spec and the factories' names and
    keyword arguments), so ``Classifier.load_from_checkpoint(path)`` needs no arguments.
    """

    def __init__(
        self,
        net: Backbone | Mapping[str, Any],
        optimizer: OptimizerFactory | Mapping[str, Any] | None = None,
        scheduler: SchedulerFactory | Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(net, Mapping):
            net = build(net)
        if not isinstance(net, Backbone):
            raise TypeError(f"net must be a sweeper Backbone or its spec, got {type(net).__name__}")
        self.net: nn.Module = net
        self.optimizer_factory = (
            callable_from_spec(optimizer) if isinstance(optimizer, Mapping) else optimizer
        )
        self.scheduler_factory = (
            callable_from_spec(scheduler) if isinstance(scheduler, Mapping) else scheduler
        )
        self.save_hyperparameters(
            {
                "net": net.spec,
                "optimizer": callable_spec(self.optimizer_factory),
                "scheduler": callable_spec(self.scheduler_factory),
            },
            logger=False,
        )
        num_classes = net.num_classes
        self.diverged: str | None = None
        self._train_sums: torch.Tensor | None = None  # loss * n, correct, n over the epoch
        self.val_metrics = _metrics(num_classes, "val/")
        self.test_metrics = _metrics(num_classes, "test/")

    @property
    def num_classes(self) -> int:
        return self.net.num_classes  # type: ignore[return-value]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Class indices for a batch of images, in eval mode."""
        was_training = self.training
        self.eval()
        try:
            return self(x.to(self.device)).argmax(dim=1)
        finally:
            self.train(was_training)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        # Summed on the device and logged once per epoch: a per-step ``self.log`` costs
        # more than a small model's whole step.
        with torch.no_grad():
            # float32 whatever the training precision; the count is filled on the device
            # (no host-to-device copy, so no stream sync)
            n = torch.full((), float(y.numel()), device=loss.device, dtype=torch.float32)
            sums = torch.stack([loss.detach().float() * n, (logits.argmax(1) == y).sum().float(), n])
            self._train_sums = sums if self._train_sums is None else self._train_sums + sums
        return loss

    def on_train_epoch_start(self) -> None:
        self._train_sums = None

    def on_train_epoch_end(self) -> None:
        if self._train_sums is None:
            return
        sums = self.trainer.strategy.reduce(self._train_sums, reduce_op="sum")  # all ranks' samples
        self._train_sums = None
        loss, acc = sums[0] / sums[2], sums[1] / sums[2]
        self.log_dict({"train/loss": loss, "train/acc": acc})
        # Checked once per epoch, on the all-rank mean, so no step pays for a device sync.
        # Stopping through should_stop (not an exception) lets DDP ranks leave together;
        # ``check_diverged`` raises after fit.
        if not torch.isfinite(loss):
            self.diverged = (
                f"training diverged: train/loss is {loss.item()} at epoch {self.current_epoch}; "
                "lower optimizer.lr or add gradient clipping (trainer.gradient_clip_val=1.0)"
            )
            self.trainer.should_stop = True

    def check_diverged(self) -> None:
        """Raise :class:`DivergedError` if the last ``fit`` stopped on a non-finite loss."""
        if self.diverged:
            raise DivergedError(self.diverged)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val/loss", F.cross_entropy(logits, y), on_epoch=True, sync_dist=True)
        self.val_metrics.update(logits, y)

    def on_validation_epoch_end(self) -> None:
        values = self.val_metrics.compute()
        self.log_dict({k: values[k] for k in ("val/acc", "val/f1")}, sync_dist=True)
        self.val_metrics.reset()

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("test/loss", F.cross_entropy(logits, y), on_epoch=True, sync_dist=True)
        self.test_metrics.update(logits, y)

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_metrics.compute(), sync_dist=True)
        self.test_metrics.reset()

    def configure_optimizers(self) -> Any:
        factory = self.optimizer_factory or callable_from_spec({"_target_": "torch.optim.Adam"})
        optimizer = factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
