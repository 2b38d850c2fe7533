"""Reuse without Hydra: plain constructor arguments, plain Trainer, checkpoint round trip."""

from __future__ import annotations

import functools

import pytorch_lightning as pl
import torch

from sweeper.data import DigitsDataModule
from sweeper.models import CNN, MLP, RNN, Classifier


def _trainer(tmp_path, **kwargs) -> pl.Trainer:
    options = dict(
        accelerator="cpu",
        max_epochs=2,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    return pl.Trainer(**{**options, **kwargs})


def test_plain_trainer_trains_and_checkpoint_restores_exact_predictions(tmp_path):
    dm = DigitsDataModule(batch_size=32, seed=1)
    model = Classifier(
        CNN(dm.input_shape, dm.num_classes, channels=[8, 16]),
        optimizer=functools.partial(torch.optim.SGD, lr=0.05, momentum=0.9, nesterov=True),
        scheduler=functools.partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5),
    )
    trainer = _trainer(tmp_path)
    trainer.fit(model, datamodule=dm)
    assert trainer.callback_metrics["val/acc"] > 0.5  # well above chance (0.1) after 2 epochs
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)

    restored = Classifier.load_from_checkpoint(path)  # no arguments needed
    x, _ = dm.splits["test"]
    assert torch.equal(model.predict(x), restored.predict(x))
    assert isinstance(restored.net, CNN) and restored.net.spec == model.net.spec
    opt = restored.configure_optimizers()
    assert isinstance(opt["optimizer"], torch.optim.SGD)
    assert opt["optimizer"].defaults["nesterov"] is True
    assert isinstance(opt["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.StepLR)


def test_checkpoint_holds_only_plain_data(tmp_path):
    dm = DigitsDataModule()
    model = Classifier(MLP(dm.input_shape, dm.num_classes, hidden_sizes=[8]))
    trainer = _trainer(tmp_path, max_steps=1)
    trainer.fit(model, datamodule=dm)
    path = tmp_path / "m.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)  # fails if hparams pickled code objects
    assert ckpt["hyper_parameters"]["net"]["_target_"] == "sweeper.models.mlp.MLP"
    assert ckpt["hyper_parameters"]["optimizer"] is None


def test_test_step_reports_macro_metrics(tmp_path):
    dm = DigitsDataModule()
    model = Classifier(RNN(dm.input_shape, dm.num_classes, hidden_size=16))
    trainer = _trainer(tmp_path, max_epochs=1)
    trainer.fit(model, datamodule=dm)
    (result,) = trainer.test(model, datamodule=dm, verbose=False)
    assert {"test/acc", "test/f1", "test/precision", "test/recall", "test/loss"} <= set(result)
    assert all(0.0 <= result[k] <= 1.0 for k in ("test/acc", "test/f1"))


def test_classifier_accepts_a_spec_dict():
    spec = MLP((1, 8, 8), 10, hidden_sizes=[4]).spec
    model = Classifier(spec, optimizer={"_target_": "torch.optim.Adam", "lr": 0.01})
    assert isinstance(model.net, MLP)
    assert model.configure_optimizers().defaults["lr"] == 0.01
