"""Shared pieces of the in-memory data modules.

The data sets here are small enough to live in memory as tensors, so batches are
cut by indexing whole tensors: no per-sample Python work in the training loop.
"""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist


def _rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class TensorBatches:
    """Iterable of ``(x, y)`` batches cut from two in-memory tensors.

    Under ``torch.distributed`` each rank sees its own shard. For training
    (``shuffle=True``) every rank gets the same number of batches, padding by
    repeating samples as ``DistributedSampler`` does; evaluation shards are exact, so
    synced metrics count every sample once. Each pass reshuffles with
    ``seed + pass number``, so runs are reproducible.
    """

    def __init__(
        self, x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool, seed: int = 0
    ) -> None:
        if len(x) != len(y):
            raise ValueError(f"x and y differ in length: {len(x)} vs {len(y)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self._passes = 0

    def indices(self, passes: int, rank: int, world: int) -> torch.Tensor:
        """The samples of pass ``passes`` on ``rank`` of ``world``, in order."""
        n = len(self.x)
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed + passes)
            order = torch.randperm(n, generator=gen)
            per_rank = -(-n // world)
            if per_rank * world > n:
                order = torch.cat([order, order[: per_rank * world - n]])
            return order[rank::world]
        return torch.arange(rank, n, world)

    def count(self, rank: int, world: int) -> int:
        """Batches per pass on ``rank`` of ``world``."""
        n = len(self.x)
        per_rank = -(-n // world) if self.shuffle else len(range(rank, n, world))
        return (per_rank + self.batch_size - 1) // self.batch_size

    def __len__(self) -> int:
        return self.count(*_rank_and_world())

    def batch(self, idx: torch.Tensor, number: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch ``number`` of a pass over ``idx``."""
        start = number * self.batch_size
        if not self.shuffle and len(idx) == len(self.x):
            return self.x[start : start + self.batch_size], self.y[start : start + self.batch_size]
        b = idx[start : start + self.batch_size]
        return self.x[b], self.y[b]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        rank, world = _rank_and_world()
        idx = self.indices(self._passes, rank, world)
        self._passes += 1
        for number in range(self.count(rank, world)):
            yield self.batch(idx, number)

    def loader(self, num_workers: int, pin_memory: bool, persistent_workers: bool) -> Any:
        """These batches through a torch ``DataLoader``: cut in ``num_workers`` worker
        processes and/or copied into pinned memory (for fast, asynchronous copies to a GPU),
        in the same order as iterating this object."""
        from torch.utils.data import DataLoader

        return DataLoader(
            _Batch(self), sampler=_Passes(self), batch_size=None, num_workers=num_workers,
            pin_memory=pin_memory, persistent_workers=persistent_workers and num_workers > 0,
        )  # fmt: skip


class _Passes(torch.utils.data.Sampler[tuple[int, int, int, int]]):
    """The keys of one pass's batches, drawn in the training process: ``(pass, rank,
    world, batch number)``, so that worker processes (which see no process group and
    keep no count of passes) cut exactly the batches iterating :class:`TensorBatches`
    would give."""

    def __init__(self, batches: TensorBatches) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[tuple[int, int, int, int]]:
        # a generator: the pass is counted when its first key is drawn (a DataLoader with
        # workers calls iter() twice before it draws any)
        rank, world = _rank_and_world()
        passes = self.batches._passes
        self.batches._passes += 1
        for number in range(self.batches.count(rank, world)):
            yield passes, rank, world, number


class _Batch(torch.utils.data.Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Batches of a :class:`TensorBatches` by key (see :class:`_Passes`)."""

    def __init__(self, batches: TensorBatches) -> None:
        self.batches = batches
        self._order: tuple[tuple[int, int, int], torch.Tensor] | None = None

    def __getitem__(self, key: tuple[int, int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        passes, rank, world, number = key
        if self._order is None or self._order[0] != (passes, rank, world):
            self._order = ((passes, rank, world), self.batches.indices(passes, rank, world))
        return self.batches.batch(self._order[1], number)


class InMemoryDataModule(pl.LightningDataModule):
    """Base for data modules whose splits fit in memory as tensors ``(N, *input_shape)``.

    Subclasses implement :meth:`_load` returning the three prepared splits; this class
    serves them as batches. ``input_shape`` (and ``num_classes`` or ``num_targets``) are
    known before :meth:`setup`, so a model can be built first.

    :meth:`set_fold` turns the train and val splits into cross-validation folds.
    """

    input_shape: tuple[int, ...]

    def __init__(self, batch_size: int = 64, eval_batch_size: int = 1024, seed: int = 0, num_workers: int = 0,
                 pin_memory: bool = False, persistent_workers: bool = False) -> None:
        super().__init__()
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if int(eval_batch_size) < 1:
            raise ValueError(f"eval_batch_size must be >= 1, got {eval_batch_size}")
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}")
        if persistent_workers and not num_workers:
            raise ValueError("persistent_workers=True needs num_workers >= 1")
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size)
        self.seed = int(seed)
        self.num_workers = int(num_workers)
        self.pin_memory = bool(pin_memory)
        self.persistent_workers = bool(persistent_workers)
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.fold: tuple[int, int] | None = None  # (index, folds) while a fold is set
        self._unfolded: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None

    def _load(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            self.splits = self._load()

    # -- cross-validation -----------------------------------------------------------

    def set_fold(self, index: int | None, folds: int) -> None:
        """Make fold ``index`` of ``folds`` the val split and the other folds the train split.

        The pool is this module's own train and val splits together; the test split is
        never part of a fold. The pool is cut with ``StratifiedKFold`` when the module has
        ``num_classes`` (classification), else ``KFold``, shuffled with the module's seed,
        so the same seed gives the same folds. ``set_fold(None, folds)`` restores the
        original split.

        Normalisation: this base reuses the tensors :meth:`_load` prepared, i.e. statistics
        of the original train split, which may include the fold's val samples. That is
        label-free and, for the image modules (one scalar mean and standard deviation over
        tens of thousands of images), negligible. Modules that keep their raw data override
        :meth:`_fold_splits` to recompute the statistics on the fold's train part
        (:class:`~sweeper.data.ArrayDataModule` does).
        """
        if isinstance(folds, bool) or not isinstance(folds, numbers.Integral) or folds < 2:
            raise ValueError(f"folds must be an int >= 2, got {folds!r}")
        if index is not None and (
            isinstance(index, bool)
            or not isinstance(index, numbers.Integral)
            or not 0 <= index < folds
        ):
            raise ValueError(f"fold index must be an int in [0, {folds}) or None, got {index!r}")
        self.setup()
        if self._unfolded is None:
            self._unfolded = self.splits
        if index is None:
            self.splits, self._unfolded, self.fold = self._unfolded, None, None
            return
        base = self._unfolded
        labels = torch.cat([base["train"][1], base["val"][1]]).numpy()
        if folds > len(labels):
            raise ValueError(
                f"folds={folds} is more than the {len(labels)} train and val samples to split"
            )
        from sklearn.model_selection import KFold, StratifiedKFold

        if getattr(self, "num_classes", None) is not None:
            splitter: KFold | StratifiedKFold = StratifiedKFold(
                folds, shuffle=True, random_state=self.seed
            )
        else:
            splitter = KFold(folds, shuffle=True, random_state=self.seed)
        train_pos, val_pos = next(itertools.islice(splitter.split(np.zeros(len(labels)), labels), int(index), None))
        self.splits = self._fold_splits(base, np.sort(train_pos), np.sort(val_pos))
        self.fold = (int(index), int(folds))

    def _fold_splits(
        self,
        base: dict[str, tuple[torch.Tensor, torch.Tensor]],
        train_pos: np.ndarray,
        val_pos: np.ndarray,
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """The fold's splits; positions index the pool ``base['train']`` then ``base['val']``."""
        x = torch.cat([base["train"][0], base["val"][0]])
        y = torch.cat([base["train"][1], base["val"][1]])
        train, val = torch.from_numpy(train_pos), torch.from_numpy(val_pos)
        return {"train": (x[train], y[train]), "val": (x[val], y[val]), "test": base["test"]}

    # -- batches ----------------------------------------------------------------------

    def _batches(self, split: str, train: bool) -> Any:
        """The split's batches: a :class:`TensorBatches` (cut in this process, the fastest
        for data in memory), or a ``DataLoader`` over it with ``num_workers`` or
        ``pin_memory`` set."""
        self.setup()
        x, y = self.splits[split]
        size = self.batch_size if train else self.eval_batch_size
        batches = TensorBatches(x, y, size, shuffle=train, seed=self.seed)
        if self.num_workers or self.pin_memory:
            return batches.loader(self.num_workers, self.pin_memory, self.persistent_workers)
        return batches

    def train_dataloader(self) -> Any:
        return self._batches("train", train=True)

    def val_dataloader(self) -> Any:
        return self._batches("val", train=False)

    def test_dataloader(self) -> Any:
        return self._batches("test", train=False)

    def predict_dataloader(self) -> Any:
        return self._batches("test", train=False)
