"""MNIST and Fashion-MNIST from the standard IDX files in a local folder."""

from __future__ import annotations

import logging
import urllib.request
from pathlib import Path

import numpy as np
import torch

from sweeper.data._base import InMemoryDataModule
from sweeper.data.idx import read_idx
from sweeper.errors import DataError

log = logging.getLogger(__name__)

FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


class MNISTDataModule(InMemoryDataModule):
    """28×28 grey-scale digits read from the four IDX files in ``root``.

    Each file may be gzipped (``name.gz``) or plain. A seeded stratified share of the
    training images (``val_size``) becomes the validation split; the official test set
    is the test split. Images are scaled to [0, 1] and standardised with the train
    split's mean and standard deviation.

    Args:
        root: folder holding the IDX files.
        batch_size: training batch size.
        val_size: images held out from the training files for validation (count >= 1
            or fraction < 1).
        download: fetch missing files from ``mirrors`` in :meth:`prepare_data`.
        seed: seeds the split and the shuffling.
        eval_batch_size: batch size for validation and test.
        limit_train: keep only the first N training images (0 keeps all), for quick runs.
        num_workers: loader processes that cut batches (0: in the training process).
        pin_memory: batches in pinned memory, for fast asynchronous copies to a GPU.
        persistent_workers: keep the loader processes between epochs (needs num_workers >= 1).
    """

    input_shape = (1, 28, 28)
    num_classes = 10
    class_names = tuple(str(d) for d in range(10))
    name = "MNIST"
    mirrors: tuple[str, ...] = (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    )

    def __init__(
        self,
        root: str | Path = "data/mnist",
        batch_size: int = 128,
        val_size: float = 5000,
        download: bool = False,
        seed: int = 0,
        eval_batch_size: int = 2048,
        limit_train: int = 0,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
    ) -> None:
        super().__init__(batch_size=batch_size, eval_batch_size=eval_batch_size, seed=seed,
                         num_workers=num_workers, pin_memory=pin_memory, persistent_workers=persistent_workers)
        self.root = Path(root)
        self.val_size = val_size
        self.download = download
        self.limit_train = int(limit_train)

    def _find(self, stem: str) -> Path | None:
        for candidate in (self.root / f"{stem}.gz", self.root / stem):
            if candidate.is_file():
                return candidate
        return None

    def missing_files(self) -> list[str]:
        return [f"{stem}.gz" for stem in FILES.values() if self._find(stem) is None]

    def prepare_data(self) -> None:
        missing = self.missing_files()
        if missing and self.download:
            self._download(missing)
            missing = self.missing_files()
        if missing:
            raise DataError(
                f"{self.name} files not found in {self.root.resolve()}: {', '.join(missing)}. "
                "Put the IDX files there (set data.root=<folder>) or allow the download "
                "with data.download=true"
            )

    def _download(self, names: list[str]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for name in names:
            errors = []
            for mirror in self.mirrors:
                try:
                    log.info("downloading %s%s", mirror, name)
                    tmp = self.root / f"{name}.part"
                    urllib.request.urlretrieve(mirror + name, tmp)
                    tmp.replace(self.root / name)
                    break
                except OSError as exc:
                    errors.append(f"{mirror}: {exc}")
            else:
                raise DataError(f"could not download {name}: {'; '.join(errors)}")

    def _load(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        self.prepare_data()
        arrays = {}
        for key, stem in FILES.items():
            path = self._find(stem)
            assert path is not None  # prepare_data raised otherwise
            arrays[key] = read_idx(path)
        for part in ("train", "test"):
            images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
            if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
                raise DataError(
                    f"{self.root}: {part} images {images.shape} and labels {labels.shape} "
                    "do not match (expected (N, H, W) and (N,))"
                )
            if images.shape[1:] != self.input_shape[1:]:
                raise DataError(
                    f"{self.root}: {part} images are {images.shape[1:]}, expected "
                    f"{self.input_shape[1:]}"
                )
        x_train, y_train = arrays["train_images"], arrays["train_labels"].astype(np.int64)
        if self.limit_train:
            x_train, y_train = x_train[: self.limit_train], y_train[: self.limit_train]
        n_val = int(self.val_size if self.val_size >= 1 else round(self.val_size * len(y_train)))
        if not 0 < n_val < len(y_train):
            raise DataError(
                f"val_size={self.val_size} leaves no training or no validation images "
                f"out of {len(y_train)}"
            )
        order = np.random.default_rng(self.seed).permutation(len(y_train))
        val_idx, train_idx = order[:n_val], order[n_val:]
        x_train_f = x_train.astype(np.float32) / 255.0
        mean, std = float(x_train_f[train_idx].mean()), float(x_train_f[train_idx].std()) or 1.0

        def tensor(images: np.ndarray) -> torch.Tensor:
            scaled = images.astype(np.float32) / 255.0
            return torch.from_numpy((scaled - mean) / std).unsqueeze(1)

        x_all, y_all = tensor(x_train), torch.from_numpy(y_train)
        return {
            "train": (x_all[train_idx], y_all[train_idx]),
            "val": (x_all[val_idx], y_all[val_idx]),
            "test": (tensor(arrays["test_images"]), torch.from_numpy(arrays["test_labels"].astype(np.int64))),
        }


class FashionMNISTDataModule(MNISTDataModule):
    """Fashion-MNIST: same files and format as MNIST, ten clothing classes."""

    name = "Fashion-MNIST"
    class_names = (
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    )  # fmt: skip
    mirrors = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)

    def __init__(self, root: str | Path = "data/fashion_mnist", **kwargs: object) -> None:
        super().__init__(root=root, **kwargs)  # type: ignore[arg-type]
