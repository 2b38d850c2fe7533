"""Shared pieces of the in-memory image data modules.

The data sets here are small enough to live in memory as tensors, so batches are
cut by indexing whole tensors: no per-sample Python work in the training loop.
"""

from __future__ import annotations

from collections.abc import Iterator

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

    def _indices(self) -> torch.Tensor:
        n = len(self.x)
        rank, world = _rank_and_world()
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed + self._passes)
            order = torch.randperm(n, generator=gen)
            per_rank = -(-n // world)
            if per_rank * world > n:
                order = torch.cat([order, order[: per_rank * world - n]])
            return order[rank::world]
        return torch.arange(rank, n, world)

    def __len__(self) -> int:
        rank, world = _rank_and_world()
        n = len(self.x)
        per_rank = -(-n // world) if self.shuffle else len(range(rank, n, world))
        return -(-per_rank // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        idx = self._indices()
        self._passes += 1
        if not self.shuffle and len(idx) == len(self.x):
            for start in range(0, len(idx), self.batch_size):
                yield self.x[start : start + self.batch_size], self.y[start : start + self.batch_size]
            return
        for start in range(0, len(idx), self.batch_size):
            b = idx[start : start + self.batch_size]
            yield self.x[b], self.y[b]


class InMemoryDataModule(pl.LightningDataModule):
    """Base for data modules whose splits fit in memory as float tensors ``(N, C, H, W)``.

    Subclasses implement :meth:`_load` returning the three normalised splits; this class
    serves them as batches. ``input_shape``, ``num_classes`` and ``class_names`` are known
    before :meth:`setup`, so a model can be built first.
    """

    input_shape: tuple[int, int, int]
    num_classes: int
    class_names: tuple[str, ...]

    def __init__(self, batch_size: int = 64, eval_batch_size: int = 1024, seed: int = 0) -> None:
        super().__init__()
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size)
        self.seed = int(seed)
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def _load(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            self.splits = self._load()

    def _batches(self, split: str, train: bool) -> TensorBatches:
        self.setup()
        x, y = self.splits[split]
        size = self.batch_size if train else self.eval_batch_size
        return TensorBatches(x, y, size, shuffle=train, seed=self.seed)

    def train_dataloader(self) -> TensorBatches:
        return self._batches("train", train=True)

    def val_dataloader(self) -> TensorBatches:
        return self._batches("val", train=False)

    def test_dataloader(self) -> TensorBatches:
        return self._batches("test", train=False)

    def predict_dataloader(self) -> TensorBatches:
        return self._batches("test", train=False)
