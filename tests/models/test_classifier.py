"""Reuse without Hydra: plain constructor arguments, plain Trainer, checkpoint round trip."""

from __future__ import annotations

import csv
import functools

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from sweeper.data import DigitsDataModule
from sweeper.models import CNN, MLP, RNN, Classifier


def test_plain_trainer_trains_and_checkpoint_restores_exact_predictions(tmp_path, make_trainer):
    dm = DigitsDataModule(batch_size=32, seed=1)
    model = Classifier(
        CNN(dm.input_shape, dm.num_classes, channels=[8, 16]),
        optimizer=functools.partial(torch.optim.SGD, lr=0.05, momentum=0.9, nesterov=True),
        scheduler=functools.partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5),
    )
    trainer = make_trainer()
    trainer.fit(model, datamodule=dm)
    assert trainer.callback_metrics["val/acc"] > 0.5  # well above chance (0.1) after 2 epochs
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)

    restored = Classifier.load_from_checkpoint(path)  # no arguments needed
    x, _ = dm.splits["test"]
    assert torch.equal(model.predict(x), restored.predict(x))
    assert isinstance(restored.net, CNN) and restored.net.spec == model.net.spec
    assert restored.num_classes == 10
    opt = restored.configure_optimizers()
    assert isinstance(opt["optimizer"], torch.optim.SGD)
    assert opt["optimizer"].defaults["nesterov"] is True
    assert isinstance(opt["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.StepLR)


def test_checkpoint_holds_only_plain_data(tmp_path, make_trainer):
    dm = DigitsDataModule()
    model = Classifier(MLP(dm.input_shape, dm.num_classes, hidden_sizes=[8]))
    trainer = make_trainer(max_steps=1)
    trainer.fit(model, datamodule=dm)
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)  # fails if hparams pickled code objects
    assert ckpt["hyper_parameters"]["net"]["_target_"] == "sweeper.models.mlp.MLP"
    assert ckpt["hyper_parameters"]["optimizer"] is None
    assert ckpt["hyper_parameters"]["num_classes"] == 10


def test_a_checkpoint_whose_network_spec_has_an_unknown_argument_is_refused_not_guessed(tmp_path, make_trainer):
    dm = DigitsDataModule()
    model = Classifier(MLP(dm.input_shape, dm.num_classes, hidden_sizes=[8]))
    path = tmp_path / "odd.ckpt"
    trainer = make_trainer(max_steps=1)
    trainer.fit(model, datamodule=dm)
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    ckpt["hyper_parameters"]["net"]["num_classes"] = ckpt["hyper_parameters"]["net"].pop("num_outputs")
    torch.save(ckpt, path)
    with pytest.raises(TypeError, match="num_classes"):
        Classifier.load_from_checkpoint(path)


def test_test_step_reports_macro_metrics(make_trainer):
    dm = DigitsDataModule()
    model = Classifier(RNN(dm.input_shape, dm.num_classes, hidden_size=16))
    trainer = make_trainer(max_epochs=1)
    trainer.fit(model, datamodule=dm)
    assert set(Classifier.epoch_metrics) <= set(trainer.callback_metrics)
    (result,) = trainer.test(model, datamodule=dm, verbose=False)
    assert {"test/acc", "test/f1", "test/precision", "test/recall", "test/loss"} <= set(result)
    assert all(0.0 <= result[k] <= 1.0 for k in ("test/acc", "test/f1"))


def test_classifier_accepts_a_spec_dict():
    spec = MLP((1, 8, 8), 10, hidden_sizes=[4]).spec
    model = Classifier(spec, optimizer={"_target_": "torch.optim.Adam", "lr": 0.01})
    assert isinstance(model.net, MLP)
    assert model.configure_optimizers().defaults["lr"] == 0.01


def test_any_module_works_and_the_class_count_comes_from_where_it_can(make_trainer, tmp_path):
    def net():
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))

    assert Classifier(net(), num_classes=10).num_classes == 10
    with_spec = net()
    with_spec.spec = {"_target_": "x.Y", "num_outputs": 10}  # what the training layer records
    assert Classifier(with_spec).num_classes == 10
    with pytest.raises(ValueError, match="num_classes >= 2"):
        Classifier(net(), num_classes=1)

    dm = DigitsDataModule()
    model = Classifier(net(), optimizer=functools.partial(torch.optim.Adam, lr=0.05))
    # the net says nothing about its width: the first logits tell
    assert model.num_classes is None
    trainer = make_trainer(max_epochs=1)
    trainer.fit(model, datamodule=dm)
    assert model.num_classes == 10 and trainer.callback_metrics["val/acc"] > 0.5
    (result,) = trainer.test(model, datamodule=dm, verbose=False)
    assert 0 <= result["test/f1"] <= 1
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    assert torch.load(path, weights_only=True)["hyper_parameters"]["num_classes"] == 10
    restored = Classifier.load_from_checkpoint(path, net=net())
    x = dm.splits["test"][0]
    assert torch.equal(model.predict(x), restored.predict(x))
    assert len(Classifier(net()).write_report(dm, tmp_path / "report")) == 3


def test_write_report_uses_the_test_split_and_class_names(tmp_path, make_trainer):
    dm = DigitsDataModule()
    model = Classifier(MLP(dm.input_shape, dm.num_classes, hidden_sizes=[16]))
    make_trainer(max_epochs=1).fit(model, datamodule=dm)
    paths = model.write_report(dm, tmp_path / "report")
    assert [p.name for p in paths] == ["confusion_matrix.png", "per_class.csv", "per_class.html"]
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths)
    rows = {r[""]: r for r in csv.DictReader(paths[1].open())}
    assert [str(d) for d in range(10)] == [k for k in rows if k.isdigit()]
    _, y_test = dm.splits["test"]
    assert sum(int(rows[str(d)]["support"]) for d in range(10)) == len(y_test)
    accuracy = (model.predict(dm.splits["test"][0]) == y_test).float().mean().item()
    assert float(rows["accuracy"]["precision"]) == pytest.approx(accuracy, abs=1e-4)
    assert "<table" in paths[2].read_text()


class _Loaders(pl.LightningDataModule):
    """A data module built from torch DataLoaders, with no class_names and no splits."""

    input_shape = (4,)
    num_classes = 3

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(30, 4, generator=g)
        self.y = torch.arange(30) % 3

    def train_dataloader(self):
        return DataLoader(TensorDataset(self.x, self.y), batch_size=8)

    val_dataloader = test_dataloader = train_dataloader


def test_write_report_works_on_any_data_module_and_numbers_unnamed_classes(tmp_path):
    dm = _Loaders()
    model = Classifier(MLP(dm.input_shape, dm.num_classes, hidden_sizes=[]))
    paths = model.write_report(dm, tmp_path)
    rows = {r[""]: r for r in csv.DictReader((tmp_path / "per_class.csv").open())}
    assert {"0", "1", "2"} <= set(rows) and int(rows["0"]["support"]) == 10
    assert len(paths) == 3


def test_rnn_learns_a_sequence_task(make_trainer):
    """Class = whether feature 0 rises or falls over the steps: needs the step order."""
    import numpy as np

    from sweeper.data import ArrayDataModule

    class Trends(ArrayDataModule):
        task = "classification"

        def load_arrays(self):
            rng = np.random.default_rng(0)
            y = rng.integers(0, 2, 400)
            slope = np.where(y == 1, 1.0, -1.0)[:, None] * np.linspace(-1, 1, 6)
            x = np.stack([slope, rng.normal(size=(400, 6))], axis=2)  # (N, T=6, F=2)
            return x + 0.3 * rng.normal(size=x.shape), y

    dm = Trends(batch_size=32)
    assert dm.input_shape == (6, 2)
    model = Classifier(RNN(dm.input_shape, dm.num_classes, cell="gru", hidden_size=8),
                       optimizer=functools.partial(torch.optim.Adam, lr=0.02))  # fmt: skip
    trainer = make_trainer(max_epochs=3)
    trainer.fit(model, datamodule=dm)
    assert trainer.callback_metrics["val/acc"] > 0.9
