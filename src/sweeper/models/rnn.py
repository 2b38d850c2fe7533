"""Recurrent network over sequences, or over images read row by row."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from sweeper.models._base import Backbone

CELLS: dict[str, type[nn.LSTM | nn.GRU | nn.RNN]] = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


class RNN(Backbone):
    """LSTM/GRU/Elman network over a sequence; the final hidden state feeds a linear head.

    Two input layouts:

    - ``input_shape=(T, F)``: sequences of ``T`` steps of ``F`` features; batches are
      ``(N, T, F)``.
    - ``input_shape=(C, H, W)``: images, read row by row as ``H`` steps of ``C * W``
      features; batches are ``(N, C, H, W)``.

    The final hidden state of the last layer (both directions when bidirectional) feeds
    the head.

    Args:
        input_shape: ``(steps, features)`` of one sequence or ``(channels, height, width)``
            of one image.
        num_outputs: size of the output (class logits, regression targets or latent code).
        cell: ``lstm``, ``gru`` or ``rnn``.
        hidden_size: features in the hidden state.
        num_layers: stacked recurrent layers.
        bidirectional: also read the sequence backwards.
        dropout: dropout between stacked layers (needs ``num_layers > 1``).
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int,
        cell: str = "lstm",
        hidden_size: int = 64,
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(input_shape, num_outputs)
        if len(self.input_shape) not in (2, 3):
            raise ValueError(
                "RNN takes input_shape (steps, features) for sequences or (channels, height, "
                f"width) for images, got {self.input_shape}; use model=mlp for feature vectors"
            )
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}, got {cell!r}")
        if hidden_size < 1 or num_layers < 1:
            raise ValueError("hidden_size and num_layers must be >= 1")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self._record(
            cell=cell,
            hidden_size=hidden_size,
            num_layers=num_layers,
            bidirectional=bidirectional,
            dropout=dropout,
        )
        if len(self.input_shape) == 3:
            channels, _, width = self.input_shape
            step_features = channels * width
        else:
            step_features = self.input_shape[1]
        self.rnn = CELLS[cell](
            input_size=step_features,
            hidden_size=hidden_size,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        directions = 2 if bidirectional else 1
        self.head = nn.Linear(hidden_size * directions, self.num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        n = x.shape[0]
        if x.dim() == 4:  # image rows become the steps
            _, c, h, w = x.shape
            seq = x.permute(0, 2, 1, 3).reshape(n, h, c * w)
        else:
            seq = x
        _, hidden = self.rnn(seq)
        if isinstance(hidden, tuple):  # LSTM returns (h_n, c_n)
            hidden = hidden[0]
        directions = 2 if self.rnn.bidirectional else 1
        last = hidden[-directions:]  # last layer, every direction: (directions, N, hidden)
        return self.head(last.permute(1, 0, 2).reshape(n, -1))
