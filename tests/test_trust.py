"""No code runs from a file: what checkpoints, registered models and recorded configs may
make sweeper build (sweeper.trust)."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch

from sweeper import trust
from sweeper.models import MLP, Classifier


@pytest.fixture(autouse=True)
def _no_trust_between_tests(monkeypatch):
    monkeypatch.delenv(trust.ENV, raising=False)
    saved = set(trust._trusted)
    trust._trusted.clear()
    yield
    trust._trusted.clear()
    trust._trusted.update(saved)


def _checkpoint(tmp_path, hparams):
    import pytorch_lightning as pl

    model = Classifier(MLP(input_shape=(64,), num_outputs=10, hidden_sizes=[8]))
    trainer = pl.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.strategy.connect(model)
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    ckpt["hyper_parameters"] = hparams(dict(ckpt["hyper_parameters"]))
    torch.save(ckpt, path)
    return path


@pytest.mark.parametrize("where", ["net", "optimizer", "scheduler"])
def test_a_tampered_checkpoint_runs_no_command(tmp_path, where):
    marker = tmp_path / "pwned"
    evil = {"_target_": "subprocess.run", "args": f"touch {marker}", "shell": True}

    def tamper(h):
        h[where] = {**(h[where] or {}), **evil} if where == "net" else evil
        return h

    path = _checkpoint(tmp_path, tamper)
    with pytest.raises(trust.UntrustedError, match=r"'subprocess\.run'.*refused without importing it") as err:
        Classifier.load_from_checkpoint(path, weights_only=True)
    assert "\n" not in str(err.value) and "the file was altered" in str(err.value)
    assert not marker.exists()


def test_names_are_checked_for_what_they_are_asked_to_be():
    assert trust.resolve("sweeper.models.cnn.CNN", "network").__name__ == "CNN"
    assert trust.resolve("sweeper.models.Classifier", "task").__name__ == "Classifier"
    assert trust.resolve("torch.optim.adam.Adam", "optimizer") is torch.optim.Adam
    assert trust.resolve("torch.optim.lr_scheduler.StepLR", "scheduler") is torch.optim.lr_scheduler.StepLR
    assert trust.resolve("sweeper.data.DigitsDataModule", "data").__name__ == "DigitsDataModule"
    assert trust.resolve("pytorch_lightning.Trainer", "trainer").__name__ == "Trainer"
    assert trust.resolve("torch.nn.Linear", "network") is torch.nn.Linear
    for path, role in [("sweeper.cli.main", "task"),             # sweeper's, but not a model
                       ("sweeper.__main__.main", "task"),        # importing it would run the CLI
                       ("sweeper.models.build", "network"),      # a function of a shipped module
                       ("sweeper.models.Classifier", "network"),  # a task is not a network
                       ("torch.optim.lr_scheduler.LambdaLR", "optimizer"),
                       ("torch.hub.load", "optimizer"), ("torch.hub.load", "network"),
                       ("torch.nn.functional.relu", "network"),  # torch's, but not a layer
                       ("torch.nn.Linear", "optimizer"),
                       ("builtins.eval", "network"), ("os.system", "data"), ("not a name", "network")]:
        before = set(sys.modules)
        with pytest.raises(trust.UntrustedError):
            trust.resolve(path, role)
        assert not {m for m in set(sys.modules) - before if m.startswith(("sweeper.cli", "sweeper.__main__"))}


def test_trusted_modules_are_built_from_files(tmp_path, monkeypatch):
    (tmp_path / "tinynets.py").write_text(textwrap.dedent("""
        import torch
        class TinyNet(torch.nn.Module):
            def __init__(self, input_shape, num_outputs, width=4):
                super().__init__()
                self.spec = {"_target_": "tinynets.TinyNet", "input_shape": list(input_shape),
                             "num_outputs": num_outputs, "width": width}
                self.body = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, width),
                                                torch.nn.ReLU(), torch.nn.Linear(width, num_outputs))
            def forward(self, x):
                return self.body(x)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    net = {"_target_": "tinynets.TinyNet", "input_shape": [64], "num_outputs": 10, "width": 4}
    with pytest.raises(trust.UntrustedError, match="SWEEPER_TRUSTED_MODULES=tinynets"):
        Classifier(net=net)
    assert "tinynets" not in sys.modules  # refused before its module was imported
    monkeypatch.setenv(trust.ENV, "tinynets")
    assert type(Classifier(net=net).net).__name__ == "TinyNet"
    monkeypatch.delenv(trust.ENV)
    with pytest.raises(trust.UntrustedError):
        Classifier(net=net)
    trust.trust("tinynets")  # the Python spelling
    assert type(Classifier(net=net).net).__name__ == "TinyNet"
    with pytest.raises(Exception, match="not a module name"):
        trust.trust("os; rm -rf /")


def test_a_recorded_config_is_checked_and_the_users_own_config_is_trusted():
    stored = {"model": {"_target_": "sweeper.models.MLP"}, "data": {"_target_": "sweeper.data.DigitsDataModule"},
              "task": {"_target_": "sweeper.models.Classifier"}, "optimizer": {"_target_": "torch.optim.Adam"},
              "trainer": {"_target_": "pytorch_lightning.Trainer"}}
    trust.check_config(stored, "run x's config.yaml")
    bad = {**stored, "data": {"_target_": "winedata.WineDataModule"}}
    with pytest.raises(trust.UntrustedError, match=r"run x's config.yaml \(data._target_\) names 'winedata"):
        trust.check_config(bad, "run x's config.yaml")
    trust.trust_config({"data": {"_target_": "winedata.WineDataModule"}, "trusted_modules": ["mymodels"]})
    assert set(trust.trusted_modules()) == {"winedata", "mymodels"}
    # the user's config names sweeper's and torch's classes: those stay checked by kind
    trust.trust_config(stored)
    assert set(trust.trusted_modules()) == {"winedata", "mymodels"}


def test_the_trust_flag_and_the_project_config_folder_reach_the_commands_and_their_servers(tmp_path, monkeypatch):
    """``--trust a,b --trust c`` and the modules that ``./conf`` names are trusted in this
    process and handed to the servers it starts ($SWEEPER_TRUSTED_MODULES)."""
    import argparse

    from sweeper.cli._args import apply_trust, trust_args

    conf = tmp_path / "conf" / "data"
    conf.mkdir(parents=True)
    (conf / "wine.yaml").write_text("_target_: winedata.WineDataModule\nbatch_size: 16\n")
    (tmp_path / "conf" / "extra.yaml").write_text("trusted_modules: [mynets]\n")
    (tmp_path / "conf" / "broken.yaml").write_text("a: [unclosed\n")  # reported by the command that composes it
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SWEEPER_CONFIG_DIR", raising=False)
    parser = argparse.ArgumentParser()
    trust_args(parser)
    apply_trust(parser.parse_args(["--trust", "pkg_a,pkg_b", "--trust", "pkg_c"]))
    assert set(trust.trusted_modules()) == {"pkg_a", "pkg_b", "pkg_c", "winedata", "mynets"}
    import os

    assert set(os.environ[trust.ENV].split(",")) == {"pkg_a", "pkg_b", "pkg_c", "winedata", "mynets"}
    (tmp_path / "winedata.py").write_text("import pytorch_lightning as pl\n"
                                          "class WineDataModule(pl.LightningDataModule):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    trust.check("winedata.WineDataModule", "data")  # trusted now: imported and checked
    with pytest.raises(trust.UntrustedError):
        trust.check("otherdata.Data", "data")
