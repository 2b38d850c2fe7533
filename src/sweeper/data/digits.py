"""scikit-learn's bundled 8×8 handwritten digits (1,797 images, no download)."""

from __future__ import annotations

import functools

import numpy as np
from sklearn.datasets import load_digits

from sweeper.data.arrays import ArrayDataModule


class DigitsDataModule(ArrayDataModule):
    """Seeded, stratified train/val/test split of the digits set, standardised with
    the train split's mean and standard deviation (one value each over all pixels, so
    the always-blank border pixels stay constant rather than being divided by zero).

    Args:
        batch_size: training batch size.
        val_fraction: share of all images held out for validation.
        test_fraction: share of all images held out for testing.
        seed: seeds the split and the shuffling.
        eval_batch_size: batch size for validation and test.
        num_workers: loader processes that cut batches (0: in the training process).
        pin_memory: batches in pinned memory, for fast asynchronous copies to a GPU.
        persistent_workers: keep the loader processes between epochs (needs num_workers >= 1).
    """

    task = "classification"
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
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
    ) -> None:
        super().__init__(
            batch_size=batch_size,
            val_fraction=val_fraction,
            test_fraction=test_fraction,
            seed=seed,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            pin_memory=pin_memory,
            persistent_workers=persistent_workers,
        )

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        images, labels = _digits()
        return images.reshape(-1, *self.input_shape), labels

    def _statistics(self, x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return x_train.mean(), x_train.std()


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    """The bundled dataset, read once per process (a sweep's trials share it)."""
    images, labels = load_digits(return_X_y=True)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels
