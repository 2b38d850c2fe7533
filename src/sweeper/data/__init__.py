"""LightningDataModules with plain constructor arguments, and the contract they follow.

``DigitsDataModule`` (classification) and ``DiabetesDataModule`` (regression) need no
files; ``MNISTDataModule`` and ``FashionMNISTDataModule`` read the standard IDX files
from a folder. ``ArrayDataModule`` turns two NumPy arrays into a data module;
``check_datamodule`` checks any data module against the :class:`DataModule` contract.
"""

from __future__ import annotations

from sweeper.data._base import InMemoryDataModule, TensorBatches
from sweeper.data.arrays import ArrayDataModule
from sweeper.data.contract import TASKS, DataModule, check_datamodule
from sweeper.data.diabetes import DiabetesDataModule
from sweeper.data.digits import DigitsDataModule
from sweeper.data.idx import read_idx, write_idx
from sweeper.data.mnist import FashionMNISTDataModule, MNISTDataModule

__all__ = [
    "TASKS",
    "ArrayDataModule",
    "DataModule",
    "DiabetesDataModule",
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "InMemoryDataModule",
    "MNISTDataModule",
    "TensorBatches",
    "check_datamodule",
    "read_idx",
    "write_idx",
]
