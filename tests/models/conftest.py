"""A plain Lightning Trainer for the model tests: CPU, quiet, no logger."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Train the tiny test models on one thread.

    With two threads, a second busy process on a two-core machine makes every op wait at
    OpenMP barriers: the same 2-epoch fit takes 2 to 15 s instead of 0.3 s.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def make_trainer(tmp_path: Path) -> Callable[..., pl.Trainer]:
    def make(**kwargs: object) -> pl.Trainer:
        options = {
            "accelerator": "cpu",
            "max_epochs": 2,
            "logger": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "enable_checkpointing": False,
            "default_root_dir": tmp_path,
        }
        return pl.Trainer(**{**options, **kwargs})

    return make
