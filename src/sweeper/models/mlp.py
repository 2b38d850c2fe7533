"""Multi-layer perceptron on flattened samples (feature vectors, sequences or images)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from sweeper.models._base import Backbone

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
}


def make_activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; choose one of {', '.join(sorted(ACTIVATIONS))}"
        ) from None


class MLP(Backbone):
    """Fully connected network. ``hidden_sizes=()`` gives multinomial logistic regression.

    Args:
        input_shape: shape of one sample, any layout: ``(features,)``, ``(steps, features)``,
            ``(channels, height, width)``…; the network sees ``prod(input_shape)`` inputs.
        num_outputs: size of the output (class logits, regression targets or latent code).
        hidden_sizes: width of each hidden layer.
        activation: one of ``relu, gelu, tanh, silu, elu, leaky_relu``.
        dropout: dropout probability after each hidden activation.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_outputs: int,
        hidden_sizes: Sequence[int] = (128, 64),
        activation: str = "relu",
        dropout: float = 0.0,
    ) -> None:
        super().__init__(input_shape, num_outputs)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self._record(hidden_sizes=hidden_sizes, activation=activation, dropout=dropout)
        width = math.prod(self.input_shape)
        layers: list[nn.Module] = [nn.Flatten()]
        for size in hidden_sizes:
            layers += [nn.Linear(width, int(size)), make_activation(activation)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = int(size)
        layers.append(nn.Linear(width, self.num_outputs))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        return self.layers(x)
