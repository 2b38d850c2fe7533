"""check_datamodule: each missing or bad piece gives one line naming the module and the fix."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from sweeper.data import TASKS, DataModule, DiabetesDataModule, DigitsDataModule, check_datamodule
from sweeper.errors import DataError
from sweeper.models import TASKS as MODEL_TASKS


class FakeData(pl.LightningDataModule):
    """Serves one fixed batch; attributes given as keyword arguments."""

    def __init__(self, batch=None, **attributes) -> None:
        super().__init__()
        self.batch = batch if batch is not None else (torch.randn(4, 13), torch.tensor([0, 1, 2, 0]))
        for key, value in attributes.items():
            setattr(self, key, value)
        self.calls: list[str] = []

    def prepare_data(self) -> None:
        self.calls.append("prepare_data")

    def setup(self, stage=None) -> None:
        self.calls.append(f"setup:{stage}")

    def train_dataloader(self):
        return [self.batch]

    def val_dataloader(self):
        return [self.batch]

    def test_dataloader(self):
        return [self.batch]


class WineData(FakeData):
    pass


class NoTestLoader(pl.LightningDataModule):
    input_shape = (13,)
    num_classes = 3

    def train_dataloader(self):
        return []

    def val_dataloader(self):
        return []


def message(dm, task, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        check_datamodule(dm, task, **kwargs)
    text = str(info.value)
    assert "\n" not in text and text.startswith("data: ")
    return text


def test_the_documented_example_message():
    assert message(WineData(input_shape=(13,)), "classification") == (
        "data: WineData has no num_classes; a classification data module sets num_classes "
        "(an int >= 2) before setup()"
    )


def test_shipped_modules_follow_the_contract():
    digits, diabetes = DigitsDataModule(), DiabetesDataModule()
    check_datamodule(digits, "classification")
    check_datamodule(digits, "autoencoder")
    check_datamodule(diabetes, "regression")
    check_datamodule(diabetes, "autoencoder")
    assert isinstance(digits, DataModule) and isinstance(diabetes, DataModule)
    assert set(TASKS) == set(MODEL_TASKS)


def test_a_good_fake_passes_and_batches_are_checked_after_prepare_and_setup():
    dm = FakeData(input_shape=(13,), num_classes=3, class_names=["a", "b", "c"])
    check_datamodule(dm, "classification")
    assert dm.calls == ["prepare_data", "setup:fit"]
    lazy = FakeData(input_shape=(13,), num_classes=3)
    check_datamodule(lazy, "classification", check_batches=False)
    assert lazy.calls == []


def test_unknown_task_lists_the_known_ones():
    text = message(FakeData(input_shape=(13,)), "segmentation")
    assert "'segmentation'" in text and "classification, regression, autoencoder" in text


def test_missing_loader_is_named():
    text = message(NoTestLoader(), "classification")
    assert text.startswith("data: NoTestLoader has no test_dataloader();")
    assert "train_dataloader()" in text and "val_dataloader()" in text


@pytest.mark.parametrize(
    "attributes, task, expected",
    [
        ({}, "autoencoder", "FakeData has no input_shape; a data module sets input_shape"),
        ({"input_shape": (0, 13)}, "autoencoder", "FakeData.input_shape must be a tuple of positive ints"),
        ({"input_shape": 13}, "autoencoder", "got 13"),
        ({"input_shape": (13,), "num_classes": 1}, "classification", "FakeData.num_classes must be an int >= 2, got 1"),
        ({"input_shape": (13,), "num_classes": 3.0}, "classification", "num_classes must be an int >= 2"),
        ({"input_shape": (13,), "num_classes": 3, "class_names": ["a", "b"]}, "classification",
         "FakeData.class_names must be 3 strings"),
        ({"input_shape": (13,)}, "regression",
         "FakeData has no num_targets; a regression data module sets num_targets"),
        ({"input_shape": (13,), "num_targets": 0}, "regression", "FakeData.num_targets must be an int >= 1, got 0"),
    ],
)  # fmt: skip
def test_missing_or_bad_attributes(attributes, task, expected):
    assert expected in message(FakeData(**attributes), task, check_batches=False)


N = 4
X = torch.randn(N, 13)
LABELS = torch.tensor([0, 1, 2, 0])


@pytest.mark.parametrize(
    "batch, task, expected",
    [
        (X, "classification", "FakeData.train_dataloader() must give batches (x, y), got a Tensor"),
        ((X, LABELS, LABELS), "classification", "must give batches (x, y), got a tuple of 3 items"),
        ({"x": X}, "autoencoder", "must give batches (x, y) or x, got a dict"),
        ((X.numpy(), LABELS), "classification", "gives x as a ndarray; x must be a torch.Tensor"),
        ((X.long(), LABELS), "classification", "gives x of dtype torch.int64; x must be a floating tensor"),
        ((torch.randn(N, 12), LABELS), "classification",
         "gives x of shape (4, 12); expected (N, 13), i.e. (N, *input_shape) with input_shape (13,)"),
        ((torch.randn(N, 1, 13), LABELS), "classification", "gives x of shape (4, 1, 13); expected (N, 13)"),
        ((X, LABELS.float()), "classification", "gives y of dtype torch.float32; classification needs integer"),
        ((X, LABELS[:, None]), "classification",
         "gives y of shape (4, 1) for x of 4 samples; classification needs (4,)"),
        ((X, torch.tensor([0, 1, 2, 3])), "classification",
         "gives labels in [0, 3]; classification needs labels in [0, num_classes) = [0, 3)"),
        ((X, torch.tensor([-1, 0, 1, 2])), "classification", "gives labels in [-1, 2]"),
        ((X, LABELS), "regression", "gives y of dtype torch.int64; regression needs floating targets"),
        ((X, torch.randn(N, 3)), "regression",
         "gives y of shape (4, 3) for x of 4 samples; regression with num_targets=1 needs (4,) or (4, 1)"),
    ],
)  # fmt: skip
def test_bad_batches_name_what_was_expected_and_received(batch, task, expected):
    dm = FakeData(batch=batch, input_shape=(13,), num_classes=3, num_targets=1)
    text = message(dm, task)
    assert text.startswith("data: FakeData.train_dataloader() ") and expected in text


@pytest.mark.parametrize(
    "batch, num_targets",
    [((X, torch.randn(N)), 1), ((X, torch.randn(N, 1)), 1), ((X, torch.randn(N, 2)), 2)],
)
def test_regression_targets_may_be_1d_or_2d(batch, num_targets):
    check_datamodule(FakeData(batch=batch, input_shape=(13,), num_targets=num_targets), "regression")


def test_two_targets_must_be_2d():
    dm = FakeData(batch=(X, torch.randn(N)), input_shape=(13,), num_targets=2)
    assert "regression with num_targets=2 needs (4, 2)" in message(dm, "regression")


@pytest.mark.parametrize("batch", [X, (X,), [X, LABELS]])
def test_autoencoder_batches_may_be_x_alone(batch):
    check_datamodule(FakeData(batch=batch, input_shape=(13,)), "autoencoder")


def test_empty_train_loader_is_reported():
    class Empty(FakeData):
        def train_dataloader(self):
            return []

    text = message(Empty(input_shape=(13,), num_classes=3), "classification")
    assert text == "data: Empty.train_dataloader() gave no batches; the train split must not be empty"
