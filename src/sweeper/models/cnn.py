"""Convolutional network: blocks of conv → (batch norm) → ReLU → pool, then a linear head."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from sweeper.models._base import Backbone

POOLS = ("max", "avg", "none")


class CNN(Backbone):
    """Small VGG-style CNN.

    Args:
        input_shape: ``(channels, height, width)`` of one image; feature vectors and
            sequences belong to :class:`~sweeper.models.MLP` and :class:`~sweeper.models.RNN`.
        num_outputs: size of the output (class logits, regression targets or latent code).
        channels: output channels of each conv block.
        kernel_size: odd kernel size; convolutions keep the spatial size.
        pool: ``max``, ``avg`` or ``none``; a 2×2 pool follows each block while the map is
            at least 2×2.
        dropout: dropout probability before the linear head.
        batch_norm: add batch normalisation after each convolution.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int,
        channels: Sequence[int] = (32, 64),
        kernel_size: int = 3,
        pool: str = "max",
        dropout: float = 0.0,
        batch_norm: bool = True,
    ) -> None:
        super().__init__(input_shape, num_outputs)
        if len(self.input_shape) != 3:
            raise ValueError(
                f"CNN takes input_shape (channels, height, width), got {self.input_shape}; "
                "use model=mlp for feature vectors or model=rnn for sequences (steps, features)"
            )
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {', '.join(POOLS)}, got {pool!r}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
        if not channels:
            raise ValueError("channels must name at least one conv block")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self._record(
            channels=channels,
            kernel_size=kernel_size,
            pool=pool,
            dropout=dropout,
            batch_norm=batch_norm,
        )
        in_ch, height, width = self.input_shape
        blocks: list[nn.Module] = []
        for out_ch in channels:
            out_ch = int(out_ch)
            blocks.append(
                nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2, bias=not batch_norm)
            )
            if batch_norm:
                blocks.append(nn.BatchNorm2d(out_ch))
            blocks.append(nn.ReLU())
            if pool != "none" and min(height, width) >= 2:
                blocks.append(nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2))
                height, width = height // 2, width // 2
            in_ch = out_ch
        self.features = nn.Sequential(*blocks)
        head: list[nn.Module] = [nn.Flatten()]
        if dropout > 0:
            head.append(nn.Dropout(dropout))
        head.append(nn.Linear(in_ch * height * width, self.num_outputs))
        self.head = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.head(self.features(x))
