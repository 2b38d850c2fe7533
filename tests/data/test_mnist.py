"""The IDX loaders, on small MNIST-format files written by the test."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from sweeper.data import FashionMNISTDataModule, MNISTDataModule, read_idx, write_idx
from sweeper.data.mnist import FILES
from sweeper.errors import DataError


def write_fake_mnist(root, n_train=60, n_test=20, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": (np.arange(n_test) % 10).astype(np.uint8),
    }
    for key, array in arrays.items():
        write_idx(root / f"{FILES[key]}{suffix}", array)
    return arrays


@pytest.mark.parametrize("suffix", [".gz", ""])
@pytest.mark.parametrize("array", [np.arange(24, dtype=np.uint8).reshape(2, 3, 4), np.arange(5, dtype=np.int32)])
def test_idx_round_trip(tmp_path, suffix, array):
    path = tmp_path / f"a.idx{suffix}"
    write_idx(path, array)
    back = read_idx(path)
    assert back.shape == array.shape and np.array_equal(back, array)


def test_idx_header_matches_the_published_format(tmp_path):
    path = tmp_path / "labels.gz"
    write_idx(path, np.array([7, 2, 1], dtype=np.uint8))
    with gzip.open(path) as f:
        raw = f.read()
    assert raw[:8] == bytes([0, 0, 8, 1, 0, 0, 0, 3])  # magic 0x00000801, count 3
    assert raw[8:] == bytes([7, 2, 1])


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_module_loads_generated_files(tmp_path, gz):
    arrays = write_fake_mnist(tmp_path / "mnist", gz=gz)
    dm = MNISTDataModule(root=tmp_path / "mnist", val_size=12, batch_size=16, seed=0)
    dm.prepare_data()
    dm.setup()
    assert [len(dm.splits[k][1]) for k in ("train", "val", "test")] == [48, 12, 20]
    x_test, y_test = dm.splits["test"]
    assert x_test.shape == (20, 1, 28, 28) and x_test.dtype == torch.float32
    assert torch.equal(y_test, torch.from_numpy(arrays["test_labels"].astype(np.int64)))
    # standardised with the train split's statistics; ordering of pixels preserved
    raw = arrays["test_images"][0].astype(np.float32).ravel()
    assert np.argsort(raw, kind="stable").tolist() == np.argsort(x_test[0].numpy().ravel(), kind="stable").tolist()
    assert abs(dm.splits["train"][0].mean().item()) < 1e-4
    xb, yb = next(iter(dm.train_dataloader()))
    assert xb.shape == (16, 1, 28, 28) and yb.shape == (16,)


def test_fraction_val_size_and_limit_train(tmp_path):
    write_fake_mnist(tmp_path / "f", n_train=100)
    dm = FashionMNISTDataModule(root=tmp_path / "f", val_size=0.25, limit_train=40)
    dm.setup()
    assert len(dm.splits["val"][1]) == 10 and len(dm.splits["train"][1]) == 30
    assert dm.class_names[0] == "T-shirt/top"


def test_missing_files_name_both_fixes(tmp_path):
    dm = MNISTDataModule(root=tmp_path / "nowhere")
    with pytest.raises(DataError) as info:
        dm.prepare_data()
    message = str(info.value)
    assert "train-images-idx3-ubyte.gz" in message
    assert "data.root" in message and "data.download=true" in message


def test_corrupt_files_are_reported(tmp_path):
    root = tmp_path / "mnist"
    write_fake_mnist(root)
    (root / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x63abc"))
    with pytest.raises(DataError, match="truncated or corrupt"):
        MNISTDataModule(root=root).setup()
    (root / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="cannot read IDX"):
        MNISTDataModule(root=root).setup()
