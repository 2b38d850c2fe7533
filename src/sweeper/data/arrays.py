"""A data module from two NumPy arrays: write ``load_arrays`` and get seeded, stratified,
standardised train/val/test splits (and cross-validation folds)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
from sklearn.model_selection import train_test_split

from sweeper.data._base import InMemoryDataModule
from sweeper.errors import DataError

TASKS = ("classification", "regression")


class ArrayDataModule(InMemoryDataModule):
    """In-memory data from ``load_arrays() -> (x, y)``; subclasses set ``task``.

    Example, a complete data module::

        class WineData(ArrayDataModule):
            task = "classification"
            class_names = ("cultivar 0", "cultivar 1", "cultivar 2")  # optional

            def load_arrays(self):
                return sklearn.datasets.load_wine(return_X_y=True)

    ``x`` has one row per sample, of any shape (``(N, features)``, ``(N, T, F)``,
    ``(N, C, H, W)``); ``y`` holds class labels ``0..K-1`` (classification) or targets
    ``(N,)`` / ``(N, num_targets)`` (regression). The split is seeded and, for
    classification, stratified; ``x`` is standardised per feature with the train split's
    mean and standard deviation (kept as ``self.mean`` and ``self.std``; a constant
    feature gets std 1), cast to float32; ``y`` to int64 (classification) or float32
    (regression). ``input_shape``, ``num_classes`` / ``num_targets`` are known before
    :meth:`setup`: the arrays are loaded on first use and kept.

    Cross-validation folds (:meth:`set_fold`) restandardise on each fold's train part, so
    no statistic ever sees a sample the model is scored on.

    Args:
        batch_size: training batch size.
        val_fraction: share of all samples held out for validation.
        test_fraction: share of all samples held out for testing.
        seed: seeds the split, the folds and the shuffling.
        eval_batch_size: batch size for validation and test.
        standardize: standardise ``x`` (set False for data already scaled).
        num_workers: loader processes that cut batches (0: in the training process).
        pin_memory: batches in pinned memory, for fast asynchronous copies to a GPU.
        persistent_workers: keep the loader processes between epochs (needs num_workers >= 1).
    """

    task: ClassVar[str] = "classification"
    class_names: Sequence[str] | None = None

    def __init__(
        self,
        batch_size: int = 64,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        seed: int = 0,
        eval_batch_size: int = 1024,
        standardize: bool = True,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
    ) -> None:
        super().__init__(batch_size=batch_size, eval_batch_size=eval_batch_size, seed=seed,
                         num_workers=num_workers, pin_memory=pin_memory, persistent_workers=persistent_workers)
        if self.task not in TASKS:
            raise ValueError(
                f"{type(self).__name__}.task must be one of {', '.join(TASKS)}, got {self.task!r}"
            )
        if not (
            0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1
        ):
            raise ValueError(
                "val_fraction and test_fraction must be in (0, 1) and sum to less than 1, "
                f"got {val_fraction} and {test_fraction}"
            )
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.standardize = bool(standardize)
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None
        # Row numbers into load_arrays()'s x and y of each split (of the current fold).
        self.indices: dict[str, np.ndarray] = {}
        self._unfolded_indices: dict[str, np.ndarray] = {}
        self._cache: tuple[np.ndarray, np.ndarray] | None = None

    def load_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(x, y)``: one row per sample. Called once; the result is kept."""
        raise NotImplementedError(f"{type(self).__name__} must implement load_arrays()")

    # -- the arrays, checked once ----------------------------------------------------

    def _arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if self._cache is None:
            x, y = self.load_arrays()
            self._cache = self._check(np.asarray(x), np.asarray(y))
        return self._cache

    def _check(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        name = type(self).__name__
        if x.ndim < 2 or len(x) != len(y):
            raise DataError(
                f"data: {name}.load_arrays() must return x (N, *sample_shape) and y with N rows, "
                f"got x {x.shape} and y {y.shape}"
            )
        if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
            raise DataError(f"data: {name} gives x of dtype {x.dtype}; x must be real numbers")
        if self.task == "regression":
            if y.ndim not in (1, 2) or not np.issubdtype(y.dtype, np.number):
                raise DataError(
                    f"data: {name} gives regression targets of shape {y.shape} and dtype "
                    f"{y.dtype}; expected numbers of shape (N,) or (N, num_targets)"
                )
            return x, y
        if y.ndim != 1:
            raise DataError(f"data: {name} gives labels of shape {y.shape}; expected (N,)")
        whole = np.issubdtype(y.dtype, np.integer) or (
            np.issubdtype(y.dtype, np.number) and np.array_equal(y, np.round(y))
        )
        if not whole:
            raise DataError(
                f"data: {name} gives labels of dtype {y.dtype}; classification needs integer "
                "labels 0..K-1: encode them (sklearn.preprocessing.LabelEncoder().fit_transform(y))"
            )
        classes = np.unique(y)
        if len(classes) < 2 or not np.array_equal(classes, np.arange(len(classes))):
            shown = ", ".join(str(c) for c in classes[:10]) + (", ..." if len(classes) > 10 else "")
            raise DataError(
                f"data: {name} labels must be 0..K-1 with K >= 2, got {{{shown}}}; encode them "
                "(sklearn.preprocessing.LabelEncoder().fit_transform(y))"
            )
        return x, y

    @property
    def input_shape(self) -> tuple[int, ...]:  # type: ignore[override]
        """Shape of one sample of ``x``."""
        return tuple(int(d) for d in self._arrays()[0].shape[1:])

    @property
    def num_classes(self) -> int:
        """Number of classes K (labels are 0..K-1); classification only."""
        if self.task != "classification":
            # AttributeError, so hasattr() and getattr(..., None) see no classes
            raise AttributeError(
                f"{type(self).__name__} is a {self.task} data module: no num_classes"
            )
        return int(self._arrays()[1].max()) + 1

    @property
    def num_targets(self) -> int:
        """Number of regression targets: 1 for a 1-D ``y``; regression only."""
        if self.task != "regression":
            raise AttributeError(
                f"{type(self).__name__} is a {self.task} data module: no num_targets"
            )
        y = self._arrays()[1]
        return 1 if y.ndim == 1 else int(y.shape[1])

    @property
    def target_mean(self) -> list[float]:
        """Mean of each regression target over the train split (the fold's, after
        :meth:`set_fold`); regression only. ``y`` itself stays in its own units."""
        return self._target_statistics()[0]

    @property
    def target_std(self) -> list[float]:
        """Standard deviation of each target over the train split (1 where constant)."""
        return self._target_statistics()[1]

    def _target_statistics(self) -> tuple[list[float], list[float]]:
        if self.task != "regression":
            raise AttributeError(f"{type(self).__name__} is a {self.task} data module: no target scale")
        self.setup()
        return self._target_scale

    # -- splits -----------------------------------------------------------------------

    def _load(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        _, y = self._arrays()
        classify = self.task == "classification"
        idx = np.arange(len(y))
        rest, test = train_test_split(
            idx,
            test_size=self.test_fraction,
            stratify=y if classify else None,
            random_state=self.seed,
        )
        train, val = train_test_split(
            rest,
            test_size=self.val_fraction / (1 - self.test_fraction),
            stratify=y[rest] if classify else None,
            random_state=self.seed,
        )
        self._unfolded_indices = {"train": train, "val": val, "test": test}
        return self._splits_at(self._unfolded_indices)

    def _fold_splits(
        self,
        base: dict[str, tuple[torch.Tensor, torch.Tensor]],
        train_pos: np.ndarray,
        val_pos: np.ndarray,
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Rebuild from the raw arrays, standardised on the fold's train part."""
        pool = np.concatenate([self._unfolded_indices["train"], self._unfolded_indices["val"]])
        return self._splits_at(
            {"train": pool[train_pos], "val": pool[val_pos], "test": self._unfolded_indices["test"]}
        )

    def set_fold(self, index: int | None, folds: int) -> None:
        super().set_fold(index, folds)
        if index is None:  # back to the original split, with its own statistics
            self.splits = self._splits_at(self._unfolded_indices)

    def _statistics(self, x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation used to standardise, from the train rows only."""
        mean = x_train.mean(axis=0)
        std = x_train.std(axis=0)
        return mean, np.where(std > 0, std, 1.0).astype(x_train.dtype)  # constant features

    def _splits_at(
        self, indices: dict[str, np.ndarray]
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Tensors of the rows in ``indices``, standardised with the ``train`` rows' statistics."""
        x, y = self._arrays()
        x = x.astype(np.float32, copy=False)
        if self.standardize:
            mean, std = self._statistics(x[indices["train"]])
            x = (x - mean) / std
            self.mean = torch.as_tensor(mean, dtype=torch.float32)
            self.std = torch.as_tensor(std, dtype=torch.float32)
        y = y.astype(np.int64 if self.task == "classification" else np.float32, copy=False)
        if self.task == "regression":  # the train rows' target scale, for the regressor
            y_train = y[indices["train"]].reshape(len(indices["train"]), -1)
            spread = y_train.std(axis=0)
            self._target_scale = ([float(v) for v in y_train.mean(axis=0)],
                                  [float(v) if v > 0 else 1.0 for v in spread])
        self.indices = {name: np.asarray(rows) for name, rows in indices.items()}
        # Fancy indexing copies, so the tensors never share the (maybe read-only) cache.
        return {
            name: (torch.from_numpy(x[rows]), torch.from_numpy(y[rows]))
            for name, rows in self.indices.items()
        }
