"""What every peer contender shares: sweeper's own data module and networks, built with
plain constructor arguments (no Hydra), so all contenders train the very same model on
the very same split; and the record each contender writes of its trials."""

from __future__ import annotations

import functools
import json
import os
import time
from pathlib import Path
from typing import Any

SPACE = {"lr": (1e-4, 1e-1), "batch_size": [16, 32, 64, 128, 256]}
SEED = 0


def build(model: str, lr: float, batch_size: int) -> tuple[Any, Any]:
    """(LightningModule, LightningDataModule) for one trial, as `sweeper sweep` builds them
    with `model=<model>`: digits split seeded 0, Adam, the config's default network."""
    import torch

    from sweeper.data import DigitsDataModule
    from sweeper.models import CNN, MLP, Classifier

    data = DigitsDataModule(batch_size=batch_size, seed=SEED)
    data.setup()
    if model == "cnn":
        net = CNN(input_shape=data.input_shape, num_outputs=10, channels=[32, 64], kernel_size=3,
                  pool="max", dropout=0.1, batch_norm=True)
    else:
        net = MLP(input_shape=data.input_shape, num_outputs=10, hidden_sizes=[128, 64], dropout=0.1)
    module = Classifier(net, optimizer=functools.partial(torch.optim.Adam, lr=lr))
    return module, data


def trainer_kwargs(epochs: int) -> dict[str, Any]:
    return {"accelerator": "cpu", "devices": 1, "max_epochs": epochs, "enable_progress_bar": False,
            "enable_model_summary": False, "log_every_n_steps": 50}


class Records:
    """JSON lines of trials: start and end (epoch seconds), seconds in ``fit``, epochs
    trained, best value, state. Appended, so a killed run keeps them. A contender that
    cannot tell when its trial ends (Ray stops a trial from outside) writes one line per
    epoch with the trial's id; the last line of each id counts."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path or os.environ.get("PEER_RECORDS", "trials.jsonl"))

    def add(self, start: float, fit_s: float, epochs: int, value: float | None, state: str,
            trial: str | None = None) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"start": start, "end": time.time(), "fit_s": fit_s, "epochs": epochs,
                                "value": value, "state": state, "trial": trial}) + "\n")
