"""The LightningModule that trains an encoder and an MLP decoder to reconstruct the input."""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError, MetricCollection

from sweeper.models._task import OptimizerFactory, SchedulerFactory, TaskModule, pyplot
from sweeper.models.mlp import MLP

SHOWN = 8  # test samples drawn in reconstructions.png


class Autoencoder(TaskModule):
    """Reconstruction (mean squared error) through a latent code of ``latent_dim`` numbers.

    ``net`` is the encoder: a network with ``num_outputs == latent_dim`` (any
    :class:`~sweeper.models.Backbone`: ``MLP``, ``CNN``, ``RNN``). The module adds its own
    MLP decoder, latent → ``decoder_hidden_sizes`` (ReLU) → ``prod(input_shape)``, reshaped
    to the encoder's ``input_shape`` (read from ``net.input_shape`` or from its spec).

    Batches are ``(x, y)`` (``y`` ignored) or ``x``. Logs per epoch ``train/loss``,
    ``val/loss`` (MSE), ``val/mae`` and, when testing, ``test/loss``, ``test/mse``,
    ``test/mae``. Metrics are synchronised across DDP ranks.

    Args:
        net: the encoder, its ``spec``, or any ``nn.Module`` with an ``input_shape``
            attribute (see :class:`~sweeper.models.TaskModule` for checkpoints of modules
            without a spec).
        optimizer: factory taking the parameters. Default: Adam, lr 1e-3.
        scheduler: optional factory taking the optimizer; stepped per epoch.
        latent_dim: size of the code between encoder and decoder.
        decoder_hidden_sizes: widths of the decoder's hidden layers.

    ``Autoencoder.load_from_checkpoint(path)`` needs no arguments when the net has a spec.
    """

    task = "autoencoder"
    default_monitor = "val/loss"
    default_mode = "min"
    epoch_metrics = ("train/loss", "val/loss", "val/mae")

    def __init__(
        self,
        net: nn.Module | Mapping[str, Any] | None,
        optimizer: OptimizerFactory | Mapping[str, Any] | None = None,
        scheduler: SchedulerFactory | Mapping[str, Any] | None = None,
        latent_dim: int = 16,
        decoder_hidden_sizes: Sequence[int] = (64,),
    ) -> None:
        if int(latent_dim) < 1:
            raise ValueError(f"latent_dim must be >= 1, got {latent_dim}")
        super().__init__(
            net,
            optimizer,
            scheduler,
            latent_dim=int(latent_dim),
            decoder_hidden_sizes=[int(h) for h in decoder_hidden_sizes],
        )
        encoder_outputs = getattr(self.net, "num_outputs", None)
        if encoder_outputs is not None and encoder_outputs != latent_dim:
            raise ValueError(
                f"Autoencoder: the encoder gives {encoder_outputs} outputs but latent_dim is "
                f"{latent_dim}; build the encoder with num_outputs={latent_dim}"
            )
        shape = getattr(self.net, "input_shape", None)
        spec = self.hparams["net"]
        if shape is None and spec is not None and "input_shape" in spec:
            shape = spec["input_shape"]
        if shape is None:
            raise ValueError(
                f"Autoencoder cannot tell the input shape: the encoder {type(self.net).__name__} "
                "has no input_shape attribute or spec entry; give it one"
            )
        self.input_shape = tuple(int(d) for d in shape)
        self.latent_dim = int(latent_dim)
        self.decoder = nn.Sequential(
            MLP(
                (self.latent_dim,),
                math.prod(self.input_shape),
                hidden_sizes=decoder_hidden_sizes,
                activation="relu",
            ),
            nn.Unflatten(1, self.input_shape),
        )
        self.val_metrics = MetricCollection({"mae": MeanAbsoluteError()}, prefix="val/")
        self.test_metrics = MetricCollection(
            {"mse": MeanSquaredError(), "mae": MeanAbsoluteError()}, prefix="test/"
        )

    @classmethod
    def net_outputs(cls, datamodule: Any, **task_kwargs: Any) -> int:
        """The encoder's output size: the ``latent_dim`` argument (default 16)."""
        if "latent_dim" in task_kwargs:
            return int(task_kwargs["latent_dim"])
        return int(inspect.signature(cls).parameters["latent_dim"].default)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent codes ``(N, latent_dim)``."""
        z = self.net(x)
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(
                f"Autoencoder: the encoder gives shape {tuple(z.shape)}, expected "
                f"(N, {self.latent_dim}); build it with num_outputs=latent_dim"
            )
        return z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstructions, shaped like ``x``."""
        return self.decoder(self.encode(x))

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstructions of a batch of inputs, in eval mode."""
        was_training = self.training
        self.eval()
        try:
            return self(x.to(self.device))
        finally:
            self.train(was_training)

    def _step(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, _ = self.split_batch(batch)
        recon = self(x)
        return x, recon, F.mse_loss(recon, x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, _, loss = self._step(batch)
        self.accumulate_train(loss, len(x))
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, recon, loss = self._step(batch)
        self.log("val/loss", loss, on_epoch=True, sync_dist=True, batch_size=len(x))
        self.val_metrics.update(recon.reshape(-1), x.reshape(-1))

    def on_validation_epoch_end(self) -> None:
        self.log_dict(self.val_metrics.compute(), sync_dist=True)
        self.val_metrics.reset()

    def test_step(self, batch: Any, batch_idx: int) -> None:
        x, recon, loss = self._step(batch)
        self.log("test/loss", loss, on_epoch=True, sync_dist=True, batch_size=len(x))
        self.test_metrics.update(recon.reshape(-1), x.reshape(-1))

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_metrics.compute(), sync_dist=True)
        self.test_metrics.reset()

    def write_report(self, datamodule: Any, out_dir: Path) -> list[Path]:
        """``reconstructions.png`` (the first 8 test inputs above their reconstructions;
        ``(C, H, W)`` inputs as images, others as line plots) and
        ``reconstruction_error.csv`` (per-sample MSE) on the test split."""
        x, recon = self.over_test_split(datamodule, lambda x, y: (x, self(x)))
        x, recon = x.float(), recon.float()
        errors = (recon - x).pow(2).reshape(len(x), -1).mean(dim=1)

        plt = pyplot()
        import pandas as pd

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        csv = out_dir / "reconstruction_error.csv"
        pd.DataFrame({"mse": errors.numpy()}).to_csv(csv, index_label="sample", float_format="%.6g")

        shown = min(SHOWN, len(x))
        fig, axes = plt.subplots(2, shown, figsize=(1.8 * shown, 4), squeeze=False)
        image = len(self.input_shape) == 3
        for i in range(shown):
            low = float(min(x[i].min(), recon[i].min()))
            high = float(max(x[i].max(), recon[i].max()))
            for row, sample in ((0, x[i]), (1, recon[i])):
                ax = axes[row, i]
                if image:
                    _show_image(ax, sample, low, high)
                else:  # a sequence (T, F) draws one line per feature
                    ax.plot(sample.reshape(sample.shape[0], -1).numpy())
                    ax.set_ylim(low, high)
                    ax.tick_params(labelsize="x-small")
            axes[0, i].set_title(f"#{i} mse {errors[i]:.3g}", fontsize="small")
        axes[0, 0].set_ylabel("input")
        axes[1, 0].set_ylabel("reconstruction")
        fig.suptitle("Reconstructions (test split)")
        png = out_dir / "reconstructions.png"
        fig.savefig(png, dpi=110, bbox_inches="tight")
        plt.close(fig)
        return [png, csv]


def _show_image(ax: Any, sample: torch.Tensor, low: float, high: float) -> None:
    """Draw a ``(C, H, W)`` tensor: grey for one channel, colour for three, else channel mean."""
    if sample.shape[0] == 3:
        scaled = ((sample - low) / max(high - low, 1e-12)).clamp(0, 1)
        ax.imshow(scaled.permute(1, 2, 0).numpy())
    else:
        grey = sample[0] if sample.shape[0] == 1 else sample.mean(dim=0)
        ax.imshow(grey.numpy(), cmap="gray", vmin=low, vmax=high)
    ax.set_xticks([])
    ax.set_yticks([])
