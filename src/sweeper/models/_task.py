"""What every task LightningModule shares: the network, the optimizer and scheduler
factories, plain-data hyperparameters, the epoch's training loss and divergence.

A task module (:class:`~sweeper.models.Classifier`, :class:`~sweeper.models.Regressor`,
:class:`~sweeper.models.Autoencoder`) wraps a network and says how to train and score
it. The class attributes tell the training layer what to monitor and which metrics
exist, :meth:`TaskModule.net_outputs` how wide the network must be for a data module,
and :meth:`TaskModule.write_report` which evaluation files to write.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
from torch import nn

from sweeper.errors import DataError, DivergedError
from sweeper.models._base import TARGET, _builtin, build, callable_from_spec, callable_spec, is_plain

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., Any]


def _net_spec(net: nn.Module) -> dict[str, Any] | None:
    spec = getattr(net, "spec", None)
    if spec is None:
        return None
    if not isinstance(spec, Mapping) or TARGET not in spec:
        raise TypeError(
            f"{type(net).__name__}.spec must be a mapping with a {TARGET!r} key naming the "
            f"class, like {{'{TARGET}': 'pkg.mod.Class', **kwargs}}; got {spec!r}"
        )
    plain = _builtin(spec)
    if not is_plain(plain):
        raise TypeError(
            f"{type(net).__name__}.spec must hold only plain data (str, int, float, bool, None, "
            f"lists, dicts) so checkpoints load with weights_only=True; got {spec!r}"
        )
    return plain


def resolve_net(
    net: nn.Module | Mapping[str, Any] | None, owner: str
) -> tuple[nn.Module, dict[str, Any] | None]:
    """The network and its plain-data spec (None when it has none)."""
    if net is None:
        raise TypeError(
            f"{owner} got net=None: the checkpoint was saved from a network without a spec; "
            f"pass the same architecture: {owner}.load_from_checkpoint(path, net=MyNet(...))"
        )
    if isinstance(net, Mapping):
        spec = _builtin(net)
        module = build(spec, f"the network spec given to {owner} (from a checkpoint or model file)")
        # The module's own spec, when it has one, is canonical (old keys renamed).
        return module, _net_spec(module) or spec
    if isinstance(net, nn.Module):
        return net, _net_spec(net)
    raise TypeError(
        f"net must be a torch.nn.Module (e.g. sweeper.models.MLP) or a spec like "
        f"{{'{TARGET}': 'pkg.mod.Class', **kwargs}}, got {type(net).__name__}"
    )


def _factory(value: Callable[..., Any] | Mapping[str, Any] | None, role: str) -> Callable[..., Any] | None:
    return callable_from_spec(value, role) if isinstance(value, Mapping) else value


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the file-only Agg backend (reports run on headless workers)."""
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - matplotlib is a dependency
        raise ImportError("writing reports needs matplotlib: pip install matplotlib") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


class TaskModule(pl.LightningModule):
    """Base of the task modules.

    Args:
        net: the network: a sweeper :class:`~sweeper.models.Backbone`, a plain-data spec
            ``{"_target_": "pkg.mod.Class", **kwargs}`` (built with
            :func:`~sweeper.models.build`) or any other ``nn.Module``. A module with a
            ``spec`` attribute (plain data, same form) is recorded by it; a module without
            one trains fine, but ``load_from_checkpoint`` then needs ``net=`` (the same
            architecture) passed.
        optimizer: factory taking the parameters, e.g.
            ``functools.partial(torch.optim.SGD, lr=0.05, momentum=0.9)``, or its spec.
            Default: Adam, lr 1e-3.
        scheduler: optional factory taking the optimizer, e.g.
            ``functools.partial(torch.optim.lr_scheduler.StepLR, step_size=5)``, or its
            spec; stepped per epoch.
        **hparams: the subclass's own plain constructor arguments, stored in checkpoints.

    Checkpoints store only plain data (the network's spec, the factories' names and
    keyword arguments, the task's arguments), so ``Cls.load_from_checkpoint(path)`` needs
    no arguments and ``torch.load(path, weights_only=True)`` reads them.
    """

    task: ClassVar[str]
    default_monitor: ClassVar[str]
    default_mode: ClassVar[str]
    epoch_metrics: ClassVar[tuple[str, ...]]
    # Per-epoch train means logged besides train/loss, from the extra sums a subclass
    # passes to ``accumulate_train``.
    train_sum_names: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        net: nn.Module | Mapping[str, Any] | None,
        optimizer: OptimizerFactory | Mapping[str, Any] | None = None,
        scheduler: SchedulerFactory | Mapping[str, Any] | None = None,
        **hparams: Any,
    ) -> None:
        super().__init__()
        module, spec = resolve_net(net, type(self).__name__)
        self.net: nn.Module = module
        self.optimizer_factory = _factory(optimizer, "optimizer")
        self.scheduler_factory = _factory(scheduler, "scheduler")
        self.save_hyperparameters(
            {
                "net": spec,
                "optimizer": callable_spec(self.optimizer_factory),
                "scheduler": callable_spec(self.scheduler_factory),
                **_builtin(hparams),
            },
            logger=False,
        )
        self.diverged: str | None = None
        self.diverged_epochs: int | None = None  # epochs trained when the loss went non-finite
        self._train_sums: torch.Tensor | None = None  # loss * n, n, extra sums over the epoch

    @classmethod
    def net_outputs(cls, datamodule: Any, **task_kwargs: Any) -> int:
        """Output size the network needs for ``datamodule`` (and these task arguments)."""
        raise NotImplementedError

    @classmethod
    def data_kwargs(cls, datamodule: Any) -> dict[str, Any]:
        """Constructor arguments the data module determines (plain data, saved in the
        checkpoint): the classifier's class count, the regressor's target scale."""
        return {}

    def write_report(self, datamodule: Any, out_dir: Path) -> list[Path]:
        """Write evaluation files on the test split of ``datamodule``; returns their paths."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @staticmethod
    def split_batch(batch: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(x, y)`` from a batch ``(x, y)``, ``(x,)`` or ``x`` (then ``y`` is None)."""
        if isinstance(batch, torch.Tensor):
            return batch, None
        if isinstance(batch, (tuple, list)) and len(batch) in (1, 2):
            return batch[0], batch[1] if len(batch) == 2 else None
        raise ValueError(
            f"expected batches (x, y) or x, got a {type(batch).__name__}"
            + (f" of {len(batch)} items" if isinstance(batch, (tuple, list)) else "")
        )

    def _xy(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.split_batch(batch)
        if y is None:
            raise ValueError(f"{type(self).__name__} needs (x, y) batches, got x alone")
        return x, y

    # -- the epoch's training loss, summed on the device -------------------------------

    def accumulate_train(self, loss: torch.Tensor, count: int, *sums: torch.Tensor) -> None:
        """Add one step's mean ``loss`` over ``count`` samples (and extra sums) to the epoch.

        Summed on the device and logged once per epoch: a per-step ``self.log`` costs more
        than a small model's whole step.
        """
        with torch.no_grad():
            # float32 whatever the training precision; the count is filled on the device
            # (no host-to-device copy, so no stream sync)
            n = torch.full((), float(count), device=loss.device, dtype=torch.float32)
            row = torch.stack([loss.detach().float() * n, n, *(s.detach().float() for s in sums)])
            self._train_sums = row if self._train_sums is None else self._train_sums + row

    def on_train_epoch_start(self) -> None:
        self._train_sums = None

    def on_train_epoch_end(self) -> None:
        if self._train_sums is None:
            return
        sums = self.trainer.strategy.reduce(self._train_sums, reduce_op="sum")  # all ranks' samples
        self._train_sums = None
        means = sums / sums[1]
        loss = means[0]
        logged = {"train/loss": loss}
        logged.update(zip(self.train_sum_names, means[2:]))
        self.log_dict(logged)
        # Checked once per epoch, on the all-rank mean, so no step pays for a device sync.
        # Stopping through should_stop (not an exception) lets DDP ranks leave together;
        # ``check_diverged`` raises after fit.
        if not torch.isfinite(loss):
            self.diverged = (
                f"training diverged: train/loss is {loss.item()} at epoch {self.current_epoch}; "
                "lower optimizer.lr or add gradient clipping (trainer.gradient_clip_val=1.0)"
            )
            self.diverged_epochs = self.current_epoch + 1
            self.trainer.should_stop = True

    def check_diverged(self) -> None:
        """Raise :class:`DivergedError` if the last ``fit`` stopped on a non-finite loss."""
        if self.diverged:
            raise DivergedError(self.diverged, epochs=self.diverged_epochs)

    # -- evaluation helpers ---------------------------------------------------------

    @torch.no_grad()
    def over_test_split(
        self,
        datamodule: Any,
        fn: Callable[[torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, ...]],
    ) -> list[torch.Tensor]:
        """Run ``fn(x, y)`` in eval mode on every batch of ``datamodule.test_dataloader()``
        and concatenate each returned tensor over the batches (on the CPU)."""
        was_training = self.training
        self.eval()
        parts: list[tuple[torch.Tensor, ...]] = []
        try:
            for batch in datamodule.test_dataloader():
                x, y = self.split_batch(batch)
                x = x.to(self.device)
                y = y.to(self.device) if y is not None else None
                parts.append(tuple(t.detach().cpu() for t in fn(x, y)))
        finally:
            self.train(was_training)
        if not parts:
            raise DataError(
                f"data: {type(datamodule).__name__}.test_dataloader() gave no batches; "
                "the report needs a non-empty test split"
            )
        return [torch.cat(column) for column in zip(*parts)]

    def configure_optimizers(self) -> Any:
        factory = self.optimizer_factory or callable_from_spec({TARGET: "torch.optim.Adam"})
        assert factory is not None  # a spec with a target gives a callable
        optimizer = factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"},
        }
