"""Regressor and Autoencoder, and what every task module shares: checkpoints that restore
with no arguments, plain-data hyperparameters, divergence, the training-layer attributes."""

from __future__ import annotations

import csv
import functools
import math

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from sweeper.data import ArrayDataModule, DiabetesDataModule, DigitsDataModule
from sweeper.errors import DivergedError
from sweeper.models import CNN, MLP, RNN, TASKS, Autoencoder, Classifier, Regressor, TaskModule


class ValLosses(pl.Callback):
    """val/loss after each training epoch (not the sanity check)."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def on_validation_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.values.append(float(trainer.callback_metrics["val/loss"]))


class TwoTargets(ArrayDataModule):
    """y = two linear functions of x: a 2-target regression."""

    task = "regression"

    def load_arrays(self):
        rng = np.random.default_rng(0)
        x = rng.normal(size=(120, 5))
        return x, np.stack([x[:, 0] - x[:, 1], 2 * x[:, 2]], axis=1)


def test_task_registry_and_training_layer_attributes():
    assert {
        "classification": Classifier,
        "regression": Regressor,
        "autoencoder": Autoencoder,
    } == TASKS
    for name, cls in TASKS.items():
        assert issubclass(cls, TaskModule) and cls.task == name
        assert cls.default_mode in ("max", "min") and cls.default_monitor in cls.epoch_metrics
    assert (Classifier.default_monitor, Classifier.default_mode) == ("val/acc", "max")
    assert (Regressor.default_monitor, Regressor.default_mode) == ("val/loss", "min")
    assert (Autoencoder.default_monitor, Autoencoder.default_mode) == ("val/loss", "min")


def test_net_outputs_follow_the_data_module_and_task_arguments():
    assert Classifier.net_outputs(DigitsDataModule()) == 10
    assert Regressor.net_outputs(DiabetesDataModule()) == 1
    assert Regressor.net_outputs(TwoTargets()) == 2
    assert Autoencoder.net_outputs(DigitsDataModule(), latent_dim=5) == 5
    assert Autoencoder.net_outputs(DigitsDataModule()) == 16  # the constructor's default


def test_regressor_trains_on_diabetes_and_val_loss_falls(make_trainer):
    dm = DiabetesDataModule(seed=0)
    model = Regressor(
        MLP(dm.input_shape, dm.num_targets, hidden_sizes=[32]),
        optimizer=functools.partial(torch.optim.Adam, lr=0.05),
    )
    losses = ValLosses()
    trainer = make_trainer(callbacks=[losses])
    trainer.fit(model, datamodule=dm)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert set(Regressor.epoch_metrics) <= set(metrics)
    assert all(math.isfinite(metrics[k]) for k in Regressor.epoch_metrics)
    assert len(losses.values) == 2 and losses.values[1] < losses.values[0]
    (result,) = trainer.test(model, datamodule=dm, verbose=False)
    assert {"test/loss", "test/mse", "test/mae", "test/r2"} == set(result)
    assert all(math.isfinite(v) for v in result.values())
    # the epoch MSE and the metric agree, and MAE <= RMSE
    assert result["test/loss"] == pytest.approx(result["test/mse"], rel=1e-4)
    assert result["test/mae"] <= math.sqrt(result["test/mse"]) + 1e-6


def test_regressor_with_1d_targets_does_not_broadcast():
    model = Regressor(MLP((3,), 1, hidden_sizes=[]))
    x, y = torch.randn(6, 3), torch.randn(6)
    pred, target = model._predict(x, y)
    assert pred.shape == target.shape == (6,)
    loss = model.training_step((x, y), 0)
    assert loss.item() == pytest.approx(((model(x)[:, 0] - y) ** 2).mean().item(), rel=1e-5)
    with pytest.raises(ValueError, match=r"num_outputs = the data's num_targets"):
        Regressor(MLP((3,), 2, hidden_sizes=[]))._predict(x, y)


def test_regressor_fits_several_targets(make_trainer, tmp_path):
    dm = TwoTargets(batch_size=16)
    model = Regressor(MLP(dm.input_shape, dm.num_targets, hidden_sizes=[]),
                      optimizer=functools.partial(torch.optim.Adam, lr=0.05))  # fmt: skip
    trainer = make_trainer(max_epochs=5)
    trainer.fit(model, datamodule=dm)
    (result,) = trainer.test(model, datamodule=dm, verbose=False)
    assert result["test/r2"] > 0.5  # a linear model finds a linear target
    paths = model.write_report(dm, tmp_path)
    rows = list(csv.DictReader((tmp_path / "predictions.csv").open()))
    assert list(rows[0]) == ["sample", "true_0", "predicted_0", "true_1", "predicted_1"]
    assert len(rows) == len(dm.splits["test"][1])
    assert [p.name for p in paths] == ["predicted_vs_true.png", "predictions.csv"]


def test_regressor_report_lists_true_and_predicted_test_values(make_trainer, tmp_path):
    dm = DiabetesDataModule()
    model = Regressor(MLP(dm.input_shape, 1, hidden_sizes=[8]))
    make_trainer(max_epochs=1).fit(model, datamodule=dm)
    paths = model.write_report(dm, tmp_path)
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths)
    rows = list(csv.DictReader((tmp_path / "predictions.csv").open()))
    x_test, y_test = dm.splits["test"]
    assert list(rows[0]) == ["sample", "true", "predicted"]
    assert [float(r["true"]) for r in rows] == pytest.approx(y_test.tolist(), rel=1e-5)
    assert [float(r["predicted"]) for r in rows] == pytest.approx(
        model.predict(x_test)[:, 0].tolist(), rel=1e-4
    )


@pytest.mark.parametrize(
    "make_dm, make_encoder",
    [
        (
            functools.partial(DigitsDataModule, batch_size=128),
            lambda shape: CNN(shape, 8, channels=[4]),
        ),
        (DiabetesDataModule, lambda shape: MLP(shape, 8, hidden_sizes=[16])),
    ],
    ids=["images", "features"],
)
def test_autoencoder_trains_logs_and_reports(make_dm, make_encoder, make_trainer, tmp_path):
    dm = make_dm()
    model = Autoencoder(make_encoder(dm.input_shape), latent_dim=8, decoder_hidden_sizes=[16],
                        optimizer=functools.partial(torch.optim.Adam, lr=0.01))  # fmt: skip
    losses = ValLosses()
    trainer = make_trainer(callbacks=[losses])
    trainer.fit(model, datamodule=dm)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    assert set(Autoencoder.epoch_metrics) <= set(metrics)
    assert all(math.isfinite(metrics[k]) for k in Autoencoder.epoch_metrics)
    assert losses.values[1] < losses.values[0]
    (result,) = trainer.test(model, datamodule=dm, verbose=False)
    assert {"test/loss", "test/mse", "test/mae"} == set(result)
    x_test = dm.splits["test"][0]
    assert model.predict(x_test).shape == x_test.shape

    paths = model.write_report(dm, tmp_path)
    assert [p.name for p in paths] == ["reconstructions.png", "reconstruction_error.csv"]
    assert paths[0].stat().st_size > 0
    errors = [float(r["mse"]) for r in csv.DictReader(paths[1].open())]
    assert len(errors) == len(x_test) and min(errors) >= 0
    assert np.mean(errors) == pytest.approx(result["test/mse"], rel=1e-3)


def test_autoencoder_takes_bare_x_batches_and_checks_the_latent_size():
    model = Autoencoder(RNN((5, 2), 3, hidden_size=4), latent_dim=3)
    x = torch.randn(4, 5, 2)
    assert model(x).shape == (4, 5, 2)
    assert model.training_step(x, 0).ndim == 0
    assert model.training_step((x, torch.zeros(4)), 0).ndim == 0  # y ignored
    with pytest.raises(ValueError, match="build the encoder with num_outputs=4"):
        Autoencoder(MLP((3,), 3), latent_dim=4)


class DiabetesAsSequences(DiabetesDataModule):
    """The 10 diabetes features as 5 steps of 2, to train an RNN regressor on sequences."""

    input_shape = (5, 2)

    def load_arrays(self):
        x, y = super().load_arrays()
        return x.reshape(-1, 5, 2), y


NETS = {
    "classification": (
        DigitsDataModule,
        lambda dm: Classifier(CNN(dm.input_shape, 10, channels=[4])),
    ),
    "regression": (
        DiabetesAsSequences,
        lambda dm: Regressor(RNN(dm.input_shape, 1, hidden_size=4)),
    ),
    "autoencoder": (
        DigitsDataModule,
        lambda dm: Autoencoder(
            MLP(dm.input_shape, 4, hidden_sizes=[8]), latent_dim=4, decoder_hidden_sizes=[8, 8]
        ),
    ),
}


@pytest.mark.parametrize("task", list(NETS))
def test_checkpoints_restore_with_no_arguments_and_load_weights_only(task, make_trainer, tmp_path):
    make_dm, make_model = NETS[task]
    dm = make_dm()
    model = make_model(dm)
    trainer = make_trainer(max_epochs=1, limit_train_batches=3, limit_val_batches=1)
    trainer.fit(model, datamodule=dm)
    path = tmp_path / f"{task}.ckpt"
    trainer.save_checkpoint(path)

    restored = TASKS[task].load_from_checkpoint(path)
    assert type(restored) is type(model) and restored.hparams == model.hparams
    model.eval(), restored.eval()
    x = dm.splits["test"][0]
    with torch.no_grad():
        assert torch.equal(model(x), restored(x))
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["hyper_parameters"]["net"] == model.net.spec


class SpecNet(nn.Module):
    """A user's own network with a plain-data spec."""

    def __init__(self, features: int, outputs: int) -> None:
        super().__init__()
        self.linear = nn.Linear(features, outputs)
        self.spec = {"_target_": f"{__name__}.SpecNet", "features": features, "outputs": outputs}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


def _fit_and_save(model, dm, make_trainer, path):
    trainer = make_trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1)
    trainer.fit(model, datamodule=dm)
    trainer.save_checkpoint(path)
    torch.load(path, weights_only=True)  # plain data whatever the net


@pytest.mark.parametrize(
    "net",
    [SpecNet(10, 1), {"_target_": "torch.nn.Linear", "in_features": 10, "out_features": 1}],
    ids=["module-with-spec", "spec-of-a-torch-class"],
)
def test_any_module_with_a_spec_restores_with_no_arguments(net, make_trainer, tmp_path, monkeypatch):
    monkeypatch.setenv("SWEEPER_TRUSTED_MODULES", __name__)  # the user's own network: trusted by name
    dm = DiabetesDataModule()
    model = Regressor(net)
    _fit_and_save(model, dm, make_trainer, tmp_path / "m.ckpt")
    restored = Regressor.load_from_checkpoint(tmp_path / "m.ckpt")
    x = dm.splits["test"][0]
    assert torch.equal(model.predict(x), restored.predict(x))


def test_a_module_without_a_spec_trains_but_loading_needs_net(make_trainer, tmp_path):
    dm = DiabetesDataModule()
    model = Regressor(nn.Sequential(nn.Linear(10, 4), nn.ReLU(), nn.Linear(4, 1)))
    assert model.hparams["net"] is None
    path = tmp_path / "m.ckpt"
    _fit_and_save(model, dm, make_trainer, path)
    with pytest.raises(TypeError, match=r"load_from_checkpoint\(path, net="):
        Regressor.load_from_checkpoint(path)
    restored = Regressor.load_from_checkpoint(
        path, net=nn.Sequential(nn.Linear(10, 4), nn.ReLU(), nn.Linear(4, 1))
    )
    x = dm.splits["test"][0]
    assert torch.equal(model.predict(x), restored.predict(x))


def test_a_spec_that_is_not_plain_data_is_refused():
    net = SpecNet(3, 1)
    net.spec = {"_target_": "x.Y", "activation": nn.ReLU()}
    with pytest.raises(TypeError, match="plain data"):
        Regressor(net)


class Exploding(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(10, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) * float("inf")


def test_non_finite_train_loss_stops_training_and_raises_diverged(make_trainer):
    dm = DiabetesDataModule()
    model = Regressor(Exploding())
    trainer = make_trainer(max_epochs=5, limit_val_batches=0)
    trainer.fit(model, datamodule=dm)
    assert trainer.current_epoch == 1  # stopped after the first epoch, not the fifth
    assert model.diverged and "train/loss" in model.diverged
    with pytest.raises(DivergedError, match=r"lower optimizer\.lr"):
        model.check_diverged()


def test_regressor_learns_standardised_targets_and_answers_in_the_data_units(tmp_path):
    """Diabetes targets run 25-346: with the train split's target scale, 10 epochs reach a
    fraction of the error that raw targets leave (measured: val MSE ~3.2e3 against ~2.7e4)."""
    import pytorch_lightning as pl

    from sweeper.data import DiabetesDataModule
    from sweeper.models import MLP, Regressor

    def fit(scaled: bool) -> tuple[Regressor, float, DiabetesDataModule]:
        pl.seed_everything(0, verbose=False)
        dm = DiabetesDataModule(batch_size=32, seed=0)
        kwargs = Regressor.data_kwargs(dm) if scaled else {}
        model = Regressor(MLP(dm.input_shape, 1, hidden_sizes=[64]), **kwargs)
        trainer = pl.Trainer(max_epochs=10, accelerator="cpu", logger=False, enable_progress_bar=False,
                             enable_model_summary=False, default_root_dir=str(tmp_path))
        trainer.fit(model, datamodule=dm)
        trainer.save_checkpoint(tmp_path / f"{scaled}.ckpt")
        return model, float(trainer.callback_metrics["val/loss"]), dm

    scaled, scaled_loss, dm = fit(True)
    _, raw_loss, _ = fit(False)
    assert scaled_loss < 0.3 * raw_loss
    stats = Regressor.data_kwargs(dm)
    y_train = dm.splits["train"][1]
    assert stats["target_mean"] == pytest.approx([float(y_train.mean())], rel=1e-5)
    assert stats["target_std"] == pytest.approx([float(y_train.std(unbiased=False))], rel=1e-4)
    x, y = dm.splits["test"]
    pred = scaled.predict(x).squeeze(1)
    assert abs(float(pred.mean()) - float(y.mean())) < 0.25 * float(y.std())  # data units
    restored = Regressor.load_from_checkpoint(str(tmp_path / "True.ckpt"))
    assert torch.equal(restored.predict(x), scaled.predict(x))


def test_fold_target_scale_comes_from_the_fold_train_part():
    from sweeper.data import DiabetesDataModule

    dm = DiabetesDataModule(seed=0)
    base = dm.target_mean
    dm.set_fold(1, 4)
    fold = dm.target_mean
    assert fold != base
    assert fold[0] == pytest.approx(float(dm.splits["train"][1].mean()), rel=1e-5)
    dm.set_fold(None, 4)
    assert dm.target_mean == base
    assert Classifier.data_kwargs(DigitsDataModule()) == {"num_classes": 10}
