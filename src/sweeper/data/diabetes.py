"""scikit-learn's bundled diabetes regression set (442 patients, 10 features, no download)."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_diabetes

from sweeper.data.arrays import ArrayDataModule


class DiabetesDataModule(ArrayDataModule):
    """Disease progression one year after baseline (one target, about 25 to 346) from age,
    sex, BMI, blood pressure and six blood serum measurements.

    Seeded train/val/test split; features standardised with the train split's statistics;
    targets left in their own units, so ``val/loss`` (MSE) is in squared progression units.

    Args:
        batch_size: training batch size.
        val_fraction: share of all samples held out for validation.
        test_fraction: share of all samples held out for testing.
        seed: seeds the split and the shuffling.
        eval_batch_size: batch size for validation and test.
        num_workers: loader processes that cut batches (0: in the training process).
        pin_memory: batches in pinned memory, for fast asynchronous copies to a GPU.
        persistent_workers: keep the loader processes between epochs (needs num_workers >= 1).
    """

    task = "regression"

    def __init__(
        self,
        batch_size: int = 32,
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
        x, y = load_diabetes(return_X_y=True)
        return x, y
