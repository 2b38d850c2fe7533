"""LightningDataModules with plain constructor arguments.

``DigitsDataModule`` needs no files; ``MNISTDataModule`` and
``FashionMNISTDataModule`` read the standard IDX files from a folder.
"""

from sweeper.data._base import InMemoryDataModule, TensorBatches
from sweeper.data.digits import DigitsDataModule
from sweeper.data.idx import read_idx, write_idx
from sweeper.data.mnist import FashionMNISTDataModule, MNISTDataModule

__all__ = [
    "DigitsDataModule",
    "MNISTDataModule",
    "FashionMNISTDataModule",
    "InMemoryDataModule",
    "TensorBatches",
    "read_idx",
    "write_idx",
]
