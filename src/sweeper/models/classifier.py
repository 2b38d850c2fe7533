"""The LightningModule that trains a network as a classifier."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

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

from sweeper.models._task import OptimizerFactory, SchedulerFactory, TaskModule, pyplot


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


class Classifier(TaskModule):
    """Cross-entropy classification around a network giving logits ``(N, num_classes)``.

    Logs per epoch ``train/loss``, ``train/acc``, ``val/loss``, ``val/acc``, ``val/f1`` and,
    when testing, ``test/loss``, ``test/acc``, ``test/precision``, ``test/recall``,
    ``test/f1`` (macro averages). Metrics are synchronised across DDP ranks. Batches are
    ``(x, y)`` with integer class indices ``y`` of shape ``(N,)``.

    Args:
        net: a :class:`~sweeper.models.Backbone` (``MLP``, ``CNN``, ``RNN``), its ``spec``,
            or any ``nn.Module`` (see :class:`~sweeper.models.TaskModule` for checkpoints
            of modules without a spec).
        optimizer: factory taking the parameters, e.g.
            ``functools.partial(torch.optim.SGD, lr=0.05, momentum=0.9)``. Default: Adam, lr 1e-3.
        scheduler: optional factory taking the optimizer, e.g.
            ``functools.partial(torch.optim.lr_scheduler.StepLR, step_size=5)``; stepped per epoch.
        num_classes: number of classes; default ``net.num_outputs``, else the spec's
            ``num_outputs``, else the width of the first logits seen.

    ``Classifier.load_from_checkpoint(path)`` needs no arguments when the net has a spec.
    """

    task = "classification"
    default_monitor = "val/acc"
    default_mode = "max"
    epoch_metrics = ("train/loss", "train/acc", "val/loss", "val/acc", "val/f1")
    train_sum_names = ("train/acc",)

    def __init__(
        self,
        net: nn.Module | Mapping[str, Any] | None,
        optimizer: OptimizerFactory | Mapping[str, Any] | None = None,
        scheduler: SchedulerFactory | Mapping[str, Any] | None = None,
        num_classes: int | None = None,
    ) -> None:
        super().__init__(net, optimizer, scheduler)
        spec = self.hparams["net"] or {}
        for known in (
            num_classes,
            getattr(self.net, "num_outputs", None),
            spec.get("num_outputs"),
        ):
            if known is not None:
                break
        # None: a network that does not say its width; the first logits tell (_metrics_for).
        self._set_num_classes(known)

    def _set_num_classes(self, num_classes: Any) -> None:
        if num_classes is None:
            self.hparams["num_classes"] = None
            self.val_metrics = self.test_metrics = None
            return
        if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 2:
            raise ValueError(f"a classifier needs num_classes >= 2, got {num_classes!r}")
        self.hparams["num_classes"] = int(num_classes)  # the resolved count, for checkpoints
        self.val_metrics = _metrics(int(num_classes), "val/")
        self.test_metrics = _metrics(int(num_classes), "test/")

    def _metrics_for(self, stage: str, logits: torch.Tensor) -> MetricCollection:
        if self.hparams["num_classes"] is None:
            self._set_num_classes(logits.shape[1])
            assert self.val_metrics is not None and self.test_metrics is not None
            self.val_metrics.to(self.device)
            self.test_metrics.to(self.device)
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        assert metrics is not None  # set with num_classes
        return metrics

    @classmethod
    def data_kwargs(cls, datamodule: Any) -> dict[str, Any]:
        return {"num_classes": int(datamodule.num_classes)}

    @classmethod
    def net_outputs(cls, datamodule: Any, **task_kwargs: Any) -> int:
        return int(datamodule.num_classes)

    @property
    def num_classes(self) -> int | None:
        """Number of classes; None until the first batch for a net that does not say."""
        return self.hparams["num_classes"]

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Class indices for a batch of inputs, in eval mode."""
        was_training = self.training
        self.eval()
        try:
            return self(x.to(self.device)).argmax(dim=1)
        finally:
            self.train(was_training)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = self._xy(batch)
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        self.accumulate_train(loss, y.numel(), (logits.detach().argmax(1) == y).sum())
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = self._xy(batch)
        logits = self(x)
        self.log(
            "val/loss", F.cross_entropy(logits, y), on_epoch=True, sync_dist=True, batch_size=len(y)
        )
        self._metrics_for("val", logits).update(logits, y)

    def on_validation_epoch_end(self) -> None:
        if self.val_metrics is None:  # no validation batch ran
            return
        values = self.val_metrics.compute()
        self.log_dict({k: values[k] for k in ("val/acc", "val/f1")}, sync_dist=True)
        self.val_metrics.reset()

    def test_step(self, batch: Any, batch_idx: int) -> None:
        x, y = self._xy(batch)
        logits = self(x)
        self.log(
            "test/loss",
            F.cross_entropy(logits, y),
            on_epoch=True,
            sync_dist=True,
            batch_size=len(y),
        )
        self._metrics_for("test", logits).update(logits, y)

    def on_test_epoch_end(self) -> None:
        if self.test_metrics is None:
            return
        self.log_dict(self.test_metrics.compute(), sync_dist=True)
        self.test_metrics.reset()

    def write_report(self, datamodule: Any, out_dir: Path) -> list[Path]:
        """Confusion matrix (``confusion_matrix.png``) and per-class precision/recall/F1
        (``per_class.csv``, ``per_class.html``) on the test split.

        Class names come from ``datamodule.class_names`` when it has them, else ``"0"``,
        ``"1"``, …
        """
        widths: set[int] = set()

        def step(x: torch.Tensor, y: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
            if y is None:
                raise ValueError("the classification report needs (x, y) test batches, got x alone")
            logits = self(x)
            widths.add(int(logits.shape[1]))
            return y, logits.argmax(dim=1)

        y_true, y_pred = self.over_test_split(datamodule, step)
        num_classes = self.num_classes or max(widths)
        names = getattr(datamodule, "class_names", None)
        if not names or len(names) != num_classes:
            names = [str(i) for i in range(num_classes)]
        return per_class_report(
            y_true.numpy(), y_pred.numpy(), [str(n) for n in names], Path(out_dir)
        )


def per_class_report(y_true: Any, y_pred: Any, class_names: list[str], out_dir: Path) -> list[Path]:
    """Confusion matrix PNG and per-class precision/recall/F1 table (CSV and HTML)."""
    plt = pyplot()
    import pandas as pd
    from sklearn.metrics import ConfusionMatrixDisplay, classification_report

    out_dir.mkdir(parents=True, exist_ok=True)
    labels = list(range(len(class_names)))
    display = ConfusionMatrixDisplay.from_predictions(
        y_true, y_pred, labels=labels, display_labels=class_names, cmap="Blues", colorbar=False
    )
    display.ax_.set_title("Confusion matrix (test split)")
    display.figure_.set_size_inches(7, 6)
    png = out_dir / "confusion_matrix.png"
    display.figure_.savefig(png, dpi=110, bbox_inches="tight")
    plt.close(display.figure_)
    report = classification_report(
        y_true, y_pred, labels=labels, target_names=class_names, output_dict=True, zero_division=0
    )
    table = pd.DataFrame(report).T.rename(columns={"f1-score": "f1"})
    table["support"] = table["support"].astype(int)
    csv = out_dir / "per_class.csv"
    table.to_csv(csv, float_format="%.4f")
    html = out_dir / "per_class.html"
    html.write_text(table.to_html(float_format=lambda v: f"{v:.4f}", border=0))
    return [png, csv, html]
