"""scikit-learn's bundled 8×8 handwritten digits (1,797 images, no download)."""

from __future__ import annotations

import functools

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from sweeper.data._base import InMemoryDataModule


class DigitsDataModule(InMemoryDataModule):
    """Seeded, stratified train/val/test split of the digits set, standardised with
    the train split's mean and standard deviation.

    Args:
        batch_size: training batch size.
        val_fraction: share of all images held out for validation.
        test_fraction: share of all images held out for testing.
        seed: seeds the split and the shuffling.
        eval_batch_size: batch size for validation and test.
    """

    input_shape = (1, 8, 8)
    num_classes = 10
    class_names = tuple(str(d) for d in range(10))

    def __init__(
        self,
        batch_size: int = 64,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        seed: int = 0,
        eval_batch_size: int = 1024,
    ) -> None:
        super().__init__(batch_size=batch_size, eval_batch_size=eval_batch_size, seed=seed)
        if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
            raise ValueError(
                "val_fraction and test_fraction must be in (0, 1) and sum to less than 1, "
                f"got {val_fraction} and {test_fraction}"
            )
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction

    def _load(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        images, labels = _digits()
        images = images.astype(np.float32).reshape(-1, *self.input_shape)
        idx = np.arange(len(labels))
        rest, test = train_test_split(
            idx, test_size=self.test_fraction, stratify=labels, random_state=self.seed
        )
        train, val = train_test_split(
            rest,
            test_size=self.val_fraction / (1 - self.test_fraction),
            stratify=labels[rest],
            random_state=self.seed,
        )
        mean, std = images[train].mean(), images[train].std()
        images = (images - mean) / std
        x = torch.from_numpy(images)
        y = torch.from_numpy(labels.astype(np.int64))
        return {name: (x[part], y[part]) for name, part in (("train", train), ("val", val), ("test", test))}


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    """The bundled dataset, read once per process (a sweep's trials share it)."""
    images, labels = load_digits(return_X_y=True)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels
