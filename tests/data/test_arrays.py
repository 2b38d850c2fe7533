"""ArrayDataModule: a data module from two arrays; DiabetesDataModule built on it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_diabetes, load_wine

from sweeper.data import ArrayDataModule, DiabetesDataModule, check_datamodule
from sweeper.errors import DataError


class WineData(ArrayDataModule):
    task = "classification"

    def load_arrays(self):
        return load_wine(return_X_y=True)


class Arrays(ArrayDataModule):
    """Serves the arrays it is given."""

    def __init__(self, x, y, task="classification", **kwargs) -> None:
        self.task = task
        super().__init__(**kwargs)
        self.x, self.y = x, y
        self.loads = 0

    def load_arrays(self):
        self.loads += 1
        return self.x, self.y


def test_wine_shape_and_classes_are_known_before_setup():
    dm = WineData()
    assert dm.input_shape == (13,) and dm.num_classes == 3
    assert dm.splits == {} and not hasattr(dm, "num_targets")
    check_datamodule(dm, "classification")


def test_split_is_seeded_stratified_and_typed():
    _, y = load_wine(return_X_y=True)
    dm = WineData(val_fraction=0.2, test_fraction=0.2, seed=1)
    dm.setup()
    rows = np.concatenate([dm.indices[k] for k in ("train", "val", "test")])
    assert sorted(rows.tolist()) == list(range(len(y)))  # a partition of the rows
    assert len(dm.indices["test"]) == pytest.approx(0.2 * len(y), abs=1)
    overall = np.bincount(y) / len(y)
    for name, (xs, ys) in dm.splits.items():
        assert xs.dtype == torch.float32 and ys.dtype == torch.int64 and xs.shape[1:] == (13,)
        assert torch.equal(ys, torch.from_numpy(y[dm.indices[name]]))
        assert np.abs(np.bincount(ys.numpy(), minlength=3) / len(ys) - overall).max() < 0.05

    again, other = WineData(val_fraction=0.2, test_fraction=0.2, seed=1), WineData(seed=2)
    again.setup(), other.setup()
    assert np.array_equal(again.indices["val"], dm.indices["val"])
    assert not np.array_equal(other.indices["val"], dm.indices["val"])


def test_standardised_with_train_statistics_only():
    x, _ = load_wine(return_X_y=True)
    dm = WineData(seed=0)
    dm.setup()
    train = x[dm.indices["train"]]
    assert torch.allclose(dm.mean, torch.tensor(train.mean(0), dtype=torch.float32))
    assert torch.allclose(dm.std, torch.tensor(train.std(0), dtype=torch.float32))
    x_train = dm.splits["train"][0]
    assert torch.allclose(x_train.mean(0), torch.zeros(13), atol=1e-4)
    assert torch.allclose(x_train.std(0, unbiased=False), torch.ones(13), atol=1e-4)
    # val and test use the train statistics, so they are not exactly standardised themselves
    x_val = dm.splits["val"][0]
    expected = (torch.tensor(x[dm.indices["val"]], dtype=torch.float32) - dm.mean) / dm.std
    assert torch.allclose(x_val, expected, atol=1e-5)
    assert x_val.mean(0).abs().max() > 1e-3


def test_standardize_false_keeps_values():
    x, _ = load_wine(return_X_y=True)
    dm = WineData(standardize=False)
    dm.setup()
    assert torch.equal(
        dm.splits["test"][0], torch.tensor(x[dm.indices["test"]], dtype=torch.float32)
    )
    assert dm.mean is None


def test_constant_feature_does_not_divide_by_zero():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(60, 2)), np.full((60, 1), 7.0)], axis=1)
    dm = Arrays(x, np.arange(60) % 2)
    dm.setup()
    assert dm.std[2] == 1.0
    assert torch.isfinite(dm.splits["train"][0]).all()
    assert torch.all(dm.splits["val"][0][:, 2] == 0)


def test_arrays_are_loaded_once():
    dm = Arrays(np.zeros((40, 3)) + np.arange(40)[:, None], np.arange(40) % 2)
    dm.input_shape, dm.num_classes, dm.setup(), dm.set_fold(0, 2)
    assert dm.loads == 1


@pytest.mark.parametrize(
    "y, expected",
    [
        (np.arange(30) % 3 + 1, r"labels must be 0..K-1 with K >= 2, got \{1, 2, 3\}; encode them"),
        (np.array(["a", "b", "c"] * 10), "encode them"),
        (np.zeros(30, dtype=int), r"got \{0\}"),
        (np.arange(30) % 3 + 0.5, "integer labels 0..K-1: encode them"),
        (np.zeros((30, 2), dtype=int), r"labels of shape \(30, 2\); expected \(N,\)"),
        (np.arange(29) % 3, r"x \(30, 4\) and y \(29,\)"),
    ],
)
def test_bad_labels_tell_how_to_fix_them(y, expected):
    dm = Arrays(np.zeros((30, 4)), y)
    with pytest.raises(DataError, match=expected):
        _ = dm.num_classes


def test_regression_targets_and_num_targets():
    x = np.random.default_rng(0).normal(size=(50, 4, 3))  # any sample shape
    one = Arrays(x, x.sum(axis=(1, 2)), task="regression")
    two = Arrays(x, x[:, :2, 0], task="regression")
    assert one.num_targets == 1 and two.num_targets == 2
    assert one.input_shape == (4, 3) and not hasattr(one, "num_classes")
    two.setup()
    assert two.splits["train"][1].dtype == torch.float32 and two.splits["train"][1].shape[1] == 2
    check_datamodule(one, "regression")
    check_datamodule(two, "regression")


def test_bad_task_and_fractions_are_rejected():
    with pytest.raises(ValueError, match="task must be one of classification, regression"):
        Arrays(np.zeros((4, 1)), np.zeros(4), task="ranking")
    with pytest.raises(ValueError, match="val_fraction"):
        WineData(val_fraction=0.5, test_fraction=0.5)


def test_diabetes_is_a_ready_regression_module():
    _, y = load_diabetes(return_X_y=True)
    dm = DiabetesDataModule(seed=0)
    assert dm.input_shape == (10,) and dm.num_targets == 1 and dm.task == "regression"
    assert dm.batch_size == 32
    dm.setup()
    assert sum(len(v[1]) for v in dm.splits.values()) == 442
    y_test = dm.splits["test"][1]
    assert y_test.dtype == torch.float32 and y_test.shape == (len(dm.indices["test"]),)
    assert torch.allclose(y_test, torch.tensor(y[dm.indices["test"]], dtype=torch.float32))
    xb, yb = next(iter(dm.train_dataloader()))
    assert xb.shape == (32, 10) and yb.shape == (32,)
