"""Cross-validation folds on the in-memory data modules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_wine

from sweeper.data import ArrayDataModule, DiabetesDataModule, DigitsDataModule, InMemoryDataModule


class WineData(ArrayDataModule):
    task = "classification"

    def load_arrays(self):
        return load_wine(return_X_y=True)


class Numbered(InMemoryDataModule):
    """The generic base: sample i holds the value i, so rows can be followed; no classes."""

    input_shape = (1,)

    def _load(self):
        x = torch.arange(100, dtype=torch.float32)[:, None]
        y = torch.arange(100, dtype=torch.float32)
        return {"train": (x[:60], y[:60]), "val": (x[60:80], y[60:80]), "test": (x[80:], y[80:])}


@pytest.mark.parametrize(
    "make", [WineData, DiabetesDataModule, DigitsDataModule], ids=lambda c: c.__name__
)
@pytest.mark.parametrize("folds", [3, 5])
def test_val_folds_partition_the_pool_and_never_touch_test(make, folds):
    dm = make(seed=2)
    dm.setup()
    original = {k: v.copy() for k, v in dm.indices.items()}
    pool = set(original["train"]) | set(original["val"])
    seen: list[int] = []
    for index in range(folds):
        dm.set_fold(index, folds)
        train, val = (set(dm.indices[k]) for k in ("train", "val"))
        assert train | val == pool and not train & val
        assert np.array_equal(dm.indices["test"], original["test"])
        assert len(dm.splits["val"][1]) == len(val) and len(dm.splits["train"][1]) == len(train)
        assert len(val) == pytest.approx(len(pool) / folds, abs=1)
        seen += list(val)
    assert sorted(seen) == sorted(pool)  # disjoint folds covering the pool exactly
    assert not set(seen) & set(original["test"])


def test_folds_are_stratified_for_classification():
    dm = WineData(seed=0)
    dm.setup()
    _, y = load_wine(return_X_y=True)
    pool = np.concatenate([dm.indices["train"], dm.indices["val"]])
    expected = np.bincount(y[pool]) / 4
    for index in range(4):
        dm.set_fold(index, 4)
        counts = np.bincount(dm.splits["val"][1].numpy(), minlength=3)
        assert np.abs(counts - expected).max() <= 1


def test_folds_restandardise_on_the_fold_train_part():
    x, _ = load_wine(return_X_y=True)
    dm = WineData(seed=0)
    dm.setup()
    dm.set_fold(1, 3)
    train = x[dm.indices["train"]]
    assert torch.allclose(dm.mean, torch.tensor(train.mean(0), dtype=torch.float32))
    assert torch.allclose(dm.splits["train"][0].mean(0), torch.zeros(13), atol=1e-4)
    for split in ("val", "test"):  # scored splits use the fold's training statistics
        raw = torch.tensor(x[dm.indices[split]], dtype=torch.float32)
        assert torch.allclose(dm.splits[split][0], (raw - dm.mean) / dm.std, atol=1e-5)


def test_same_seed_same_folds_and_none_restores_the_split():
    dm, twin = WineData(seed=3), WineData(seed=3)
    dm.setup()
    before = {k: (x.clone(), y.clone()) for k, (x, y) in dm.splits.items()}
    mean = dm.mean.clone()
    dm.set_fold(2, 5)
    twin.set_fold(2, 5)  # works before setup()
    assert np.array_equal(dm.indices["val"], twin.indices["val"])
    assert dm.fold == (2, 5)
    dm.set_fold(4, 5)  # from one fold straight to another
    assert not set(dm.indices["val"]) & set(twin.indices["val"])
    dm.set_fold(None, 5)
    assert dm.fold is None and torch.equal(dm.mean, mean)
    for k, (x, y) in before.items():
        assert torch.equal(dm.splits[k][0], x) and torch.equal(dm.splits[k][1], y)


def test_loaders_serve_the_fold():
    dm = WineData(batch_size=500, seed=0)
    dm.set_fold(0, 3)
    _, y_train = next(iter(dm.train_dataloader()))
    _, y_val = next(iter(dm.val_dataloader()))
    assert len(y_train) == len(dm.indices["train"]) and len(y_val) == len(dm.indices["val"])


def test_generic_module_folds_pool_train_and_val_only():
    dm = Numbered(seed=0)
    vals = []
    for index in range(4):
        dm.set_fold(index, 4)
        train, val = (set(dm.splits[k][1].int().tolist()) for k in ("train", "val"))
        assert train | val == set(range(80)) and not train & val
        assert torch.equal(dm.splits["test"][1], torch.arange(80, 100, dtype=torch.float32))
        vals += sorted(val)
    assert sorted(vals) == list(range(80))
    dm.set_fold(None, 4)
    assert torch.equal(dm.splits["val"][1], torch.arange(60, 80, dtype=torch.float32))


@pytest.mark.parametrize(
    "index, folds, message",
    [(0, 1, "folds must be an int >= 2"), (3, 3, r"in \[0, 3\)"), (-1, 3, r"in \[0, 3\)"),
     (0, 2.5, "folds must be an int"), (0, 1000, "more than the")],
)  # fmt: skip
def test_bad_fold_arguments(index, folds, message):
    with pytest.raises(ValueError, match=message):
        WineData().set_fold(index, folds)
