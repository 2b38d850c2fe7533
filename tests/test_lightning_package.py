"""Projects written against the ``lightning`` package (``import lightning as L``).

sweeper installs ``pytorch_lightning``; the two packages' classes do not mix. These tests
use the real ``lightning`` package: a user's ``lightning`` module and data module train,
sweep and run DDP in sweeper, and sweeper's own modules fit with ``lightning.Trainer``.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from tests.conftest import cli, mlflow_runs
from tests.test_user_project import readme_file, write_project

lightning = pytest.importorskip("lightning")

LIT_PROJECT = '''
import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.datasets import load_wine
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class WineData(L.LightningDataModule):
    """A hand-written data module, as Lightning's documentation writes one."""

    input_shape = (13,)
    num_classes = 3

    def __init__(self, batch_size=32, seed=0):
        super().__init__()
        self.batch_size, self.seed = batch_size, seed

    def setup(self, stage=None):
        x, y = load_wine(return_X_y=True)
        order = np.random.default_rng(self.seed).permutation(len(x))
        x, y = x[order].astype(np.float32), y[order]
        mean, std = x[:120].mean(0), x[:120].std(0)
        x = (x - mean) / std
        self.parts = [TensorDataset(torch.tensor(x[a:b]), torch.tensor(y[a:b]))
                      for a, b in ((0, 120), (120, 150), (150, None))]

    def train_dataloader(self):
        return DataLoader(self.parts[0], batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.parts[1], batch_size=64)

    def test_dataloader(self):
        return DataLoader(self.parts[2], batch_size=64)


class LitWine(L.LightningModule):
    def __init__(self, width=16, lr=0.01):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(13, width), nn.ReLU(), nn.Linear(width, 3))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        self.log("val/loss", F.cross_entropy(logits, y), sync_dist=True)
        self.log("val/acc", (logits.argmax(1) == y).float().mean(), sync_dist=True)

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test/acc", (self(x).argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
'''

PL_DATA = '''
import pytorch_lightning as pl


class OldData(pl.LightningDataModule):
    input_shape = (13,)
    num_classes = 3

    def __init__(self, batch_size=32):
        super().__init__()
        self.batch_size = batch_size
'''


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = write_project(tmp_path / "project")
    (root / "litproject.py").write_text(LIT_PROJECT)
    (root / "oldproject.py").write_text(PL_DATA)
    for name, text in {
        "conf/data/litwine.yaml": "_target_: litproject.WineData\nbatch_size: 32\nseed: ${seed}\n",
        "conf/data/old.yaml": "_target_: oldproject.OldData\nbatch_size: 32\n",
        "conf/model/lit.yaml": "_target_: litproject.LitWine\nwidth: 16\nlr: 0.01\n",
    }.items():
        (root / name).write_text(text)
    return root


def _uri(root: Path) -> str:
    return f"sqlite:///{root / 'mlflow.db'}"


def test_sweepers_modules_fit_with_lightning_trainer(tmp_path):
    import torch

    from sweeper import lightning as sl
    from sweeper.models import MLP, Classifier

    assert sl.MLP is MLP  # networks are plain torch modules, the same objects
    dm = sl.DigitsDataModule(batch_size=64)
    model = sl.Classifier(sl.MLP((1, 8, 8), 10, hidden_sizes=[32]), optimizer={"_target_": "torch.optim.Adam",
                                                                              "lr": 0.01})
    assert isinstance(model, lightning.LightningModule) and isinstance(dm, lightning.LightningDataModule)
    reports: list[tuple[float, int, bool]] = []
    pruning = sl.PruningCallback("val/acc", report=lambda v, e, f: reports.append((v, e, f)) or False)
    trainer = lightning.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_progress_bar=False,
                                callbacks=[pruning], default_root_dir=str(tmp_path))
    trainer.fit(model, datamodule=dm)
    assert [e for _, e, _ in reports] == [0, 1, 2] and reports[-1][2]  # the callback ran in lightning's loop
    (result,) = trainer.test(model, datamodule=dm, ckpt_path="best", verbose=False)
    assert result["test/acc"] > 0.8

    # the checkpoint loads with either package's class, with the same weights
    (ckpt,) = tmp_path.glob("**/*.ckpt")
    restored = Classifier.load_from_checkpoint(str(ckpt)).eval()
    assert type(restored) is Classifier
    x = torch.randn(5, 1, 8, 8)
    best = sl.Classifier.load_from_checkpoint(str(ckpt)).eval()
    assert torch.equal(restored(x), best(x))
    # and a rebased class is found again by name (DDP spawn and multiprocessing pickle it)
    assert type(pickle.loads(pickle.dumps(best))) is sl.Classifier

    # pytorch_lightning's trainer still trains the original classes, side by side
    import pytorch_lightning as pl

    from sweeper.data import DigitsDataModule

    pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_progress_bar=False,
               enable_checkpointing=False).fit(restored, datamodule=DigitsDataModule())


@pytest.mark.integration
def test_a_project_on_lightning_trains_and_sweeps(project):
    common = ["trainer.accelerator=cpu", "trainer.max_epochs=2"]
    # sweeper's task module (classification around its MLP) on the user's lightning data
    out = cli(project, "train", "model=mlp", "data=litwine", *common)
    assert out.returncode == 0, out.stderr + out.stdout
    # the user's lightning module on sweeper's data module, pruned by sweeper's callback
    out = cli(project, "sweep", "model=lit", "data=wine", *common, "search.n_trials=2",
              "search.register_model=false", "search/pruner=always", "search.study_name=pruned")
    assert out.returncode == 0, out.stderr + out.stdout
    # both of the user's lightning classes, through to the tested best model
    out = cli(project, "sweep", "model=lit", "data=litwine", *common, "search.n_trials=2",
              "search/pruner=none", "search.study_name=lit", "+search.params.model.width=[8,16]")
    assert out.returncode == 0, out.stderr + out.stdout
    assert "Traceback" not in out.stderr and "srun" not in out.stdout + out.stderr
    runs = mlflow_runs(_uri(project))
    (mlp,) = [r for r in runs if r.data.tags.get("model_class") == "sweeper.models.mlp.MLP"]
    assert mlp.data.tags["state"] == "COMPLETE" and mlp.data.metrics["test/acc"] > 0.5
    assert mlp.data.tags["data_class"] == "litproject.WineData"
    trials = {study: [r for r in runs if r.data.tags.get("sweeper.role") == "trial" and r.data.tags["study"] == study]
              for study in ("pruned", "lit")}
    assert [r.data.tags["state"] for r in trials["pruned"]] == ["PRUNED", "PRUNED"]
    assert all(r.data.tags["epochs"] == "1" for r in trials["pruned"])
    assert sorted(r.data.tags["state"] for r in trials["lit"]) == ["COMPLETE", "COMPLETE"]
    assert all(r.data.tags["model_class"] == "litproject.LitWine" for r in trials["lit"])
    assert any("test/acc" in r.data.metrics for r in trials["lit"]), [r.data.metrics for r in trials["lit"]]
    (parent,) = [r for r in runs if r.data.tags.get("sweeper.role") == "parent" and r.data.tags["study"] == "lit"]
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics, (parent.data.metrics, out.stdout)


@pytest.mark.integration
def test_user_classes_of_two_lightning_packages_are_refused_before_anything_exists(project):
    out = cli(project, "sweep", "model=lit", "data=old", "trainer.accelerator=cpu")
    assert out.returncode == 2, out.stdout + out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("sweeper: error: "), out.stderr
    assert "model._target_ derives from lightning.pytorch but data._target_ from pytorch_lightning" in lines[0]
    assert not (project / "outputs").exists() and not (project / "mlflow.db").exists()


@pytest.mark.slow
@pytest.mark.ddp
def test_lightning_modules_train_under_ddp(project):
    out = cli(project, "train", "model=lit", "data=litwine", "trainer=ddp", "trainer.accelerator=cpu",
              "trainer.devices=2", "trainer.max_epochs=2")
    assert out.returncode == 0, out.stderr + out.stdout
    (run,) = mlflow_runs(_uri(project))
    assert run.info.status == "FINISHED" and run.data.tags["model_class"] == "litproject.LitWine"
    assert run.data.params["trainer.devices"] == "2" and "test/acc" in run.data.metrics


def test_the_readme_example_for_lightning_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = readme_file("lightning_project.py")
    assert "import lightning as L" in code and "from sweeper.lightning import" in code
    namespace: dict = {}
    exec(compile(code, "lightning_project.py", "exec"), namespace)
    assert namespace["result"]["test/acc"] > 0.5
