"""Every shipped config composes and instantiates; bad values are rejected up front."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from sweeper.config import validate_train_config
from sweeper.errors import ConfigError
from sweeper.paths import conf_dir
from sweeper.training.build import build_datamodule, build_module
from tests.conftest import compose_train

GROUPS = {
    group: sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))
    for group in ("task", "model", "data", "optimizer", "scheduler", "trainer", "tracking")
}
# what an option needs beside it to make sense (regression data wants the regression task)
COMPANIONS = {
    ("data", "diabetes"): ["task=regression", "model=mlp"],
    ("task", "regression"): ["data=diabetes", "model=mlp"],
    ("task", "autoencoder"): ["model=mlp"],
}


def test_shipped_groups_are_complete():
    assert GROUPS["model"] == ["cnn", "mlp", "rnn"]
    assert GROUPS["data"] == ["diabetes", "digits", "fashion_mnist", "mnist"]
    assert GROUPS["task"] == ["autoencoder", "classification", "regression"]
    assert GROUPS["optimizer"] == ["adam", "adamw", "sgd"]
    assert GROUPS["scheduler"] == ["cosine", "none", "step"]
    assert GROUPS["trainer"] == ["cpu", "ddp", "default", "gpu"]
    assert GROUPS["tracking"] == ["mlflow", "none"]


def test_defaults_are_digits_cnn_adam():
    cfg = compose_train()
    assert cfg.data._target_.endswith("DigitsDataModule")
    assert cfg.model._target_ == "sweeper.models.CNN"
    assert cfg.optimizer._target_ == "torch.optim.Adam"
    assert cfg.tracking.uri == "sqlite:///mlflow.db"
    for key in ("optimizer.lr", "optimizer.weight_decay", "data.batch_size", "trainer.max_epochs",
                "trainer.accelerator", "trainer.devices", "trainer.strategy", "seed",
                "tracking.uri", "tracking.experiment"):
        assert OmegaConf.select(cfg, key) is not None, key


@pytest.mark.parametrize(
    "group, option", [(g, o) for g, options in GROUPS.items() for o in options]
)
def test_every_option_composes_validates_and_instantiates(group, option):
    cfg = compose_train([f"{group}={option}", *COMPANIONS.get((group, option), [])])
    validate_train_config(cfg)
    from hydra.utils import instantiate

    if group == "trainer":
        if option in ("gpu", "ddp"):  # accelerator needs hardware / processes; check the arguments
            assert cfg.trainer.strategy in ("auto", "ddp")
            return
        trainer = instantiate(cfg.trainer, logger=False, enable_progress_bar=False)
        assert trainer.max_epochs == cfg.trainer.max_epochs
        return
    dm = build_datamodule(cfg)
    module = build_module(cfg, dm).module
    optimizer = module.configure_optimizers()
    if group == "scheduler" and option != "none":
        assert optimizer["lr_scheduler"]["scheduler"] is not None
    if group == "optimizer":
        assert type(optimizer).__name__.lower() == option


@pytest.mark.parametrize(
    "override, key",
    [
        ("data.batch_size=0", "data.batch_size"),
        ("data.batch_size=abc", "data.batch_size"),
        ("data.batch_size=1.5", "data.batch_size"),
        ("optimizer.lr=0", "optimizer.lr"),
        ("optimizer.lr=-0.1", "optimizer.lr"),
        ("optimizer.lr=fast", "optimizer.lr"),
        ("optimizer.weight_decay=-1", "optimizer.weight_decay"),
        ("trainer.max_epochs=0", "trainer.max_epochs"),
        ("trainer.devices=0", "trainer.devices"),
        ("trainer.accelerator=quantum", "trainer.accelerator"),
        ("seed=abc", "seed"),
        ("monitor_mode=up", "monitor_mode"),
        ("data.num_workers=-1", "data.num_workers"),
        ("data.num_workers=two", "data.num_workers"),
        ("data.pin_memory=maybe", "data.pin_memory"),
        ("data.persistent_workers=true", "data.persistent_workers=true needs loader workers"),
        ("tracking.experiment=''", "tracking.experiment"),
    ],
)
def test_validation_names_the_key(override, key):
    cfg = compose_train([override])
    with pytest.raises(ConfigError) as info:
        validate_train_config(cfg)
    assert str(info.value).startswith(key)


def test_validation_reports_all_problems_at_once():
    cfg = compose_train(["data.batch_size=0", "optimizer.lr=-1"])
    with pytest.raises(ConfigError) as info:
        validate_train_config(cfg)
    assert len(info.value.problems) == 2
