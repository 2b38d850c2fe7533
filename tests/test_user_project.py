"""A user's own project: their config folder, data module, networks and LightningModule.

Each test writes a project folder the way a user would (``conf/`` with config groups and
an experiment, Python modules beside it), runs the command line there, and checks
from MLflow and Optuna what really ran.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from tests.conftest import cli, mlflow_runs

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[1]


def readme_file(name: str) -> str:
    """The README's example file ``name``: the fenced block whose first line is ``# name``."""
    text = (REPO / "README.md").read_text()
    for block in re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S):
        first, _, rest = block.partition("\n")
        if first.strip() == f"# {name}":
            return rest
    raise AssertionError(f"README has no example file {name}")


SEQUENCE_DATA = '''
import numpy as np

from sweeper.data import ArrayDataModule


class UpDown(ArrayDataModule):
    """Random walks of 12 steps x 3 features; the class is whether feature 0 ends up."""

    task = "classification"

    def load_arrays(self):
        rng = np.random.default_rng(0)
        x = rng.normal(size=(300, 12, 3)).cumsum(axis=1)
        return x, (x[:, -1, 0] > 0).astype(np.int64)
'''

USER_MODELS = '''
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn


class TinyNet(nn.Module):
    """A user's own network: no sweeper base class."""

    def __init__(self, input_shape, num_outputs, width=16):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(int(torch.tensor(input_shape).prod()), width),
                                  nn.ReLU(), nn.Linear(width, num_outputs))

    def forward(self, x):
        return self.body(x)


class LitWine(pl.LightningModule):
    """A user's own LightningModule: its own loss, optimiser and metrics."""

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
        self.log("val/loss", F.cross_entropy(logits, y))
        self.log("val/acc", (logits.argmax(1) == y).float().mean())

    def test_step(self, batch, batch_idx):
        x, y = batch
        self.log("test/acc", (self(x).argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)
'''

FILES = {
    "winedata.py": readme_file("winedata.py"),  # the README's example, as a user copies it
    "conf/data/wine.yaml": readme_file("conf/data/wine.yaml"),
    "usermodels.py": USER_MODELS,
    "seqdata.py": SEQUENCE_DATA,
    "conf/data/updown.yaml": """
        _target_: seqdata.UpDown
        batch_size: 32
        seed: ${seed}
    """,
    "conf/model/tiny.yaml": """
        _target_: usermodels.TinyNet
        width: 16
    """,
    "conf/model/litwine.yaml": """
        _target_: usermodels.LitWine
        width: 16
        lr: 0.01
    """,
    "conf/experiment/wine_mlp.yaml": """
        # @package _global_
        defaults:
          - override /data: wine
          - override /model: mlp
          - override /search/params: none
        trainer:
          max_epochs: 2
        search:
          n_trials: 2
          register_model: false
          params:
            optimizer.lr: {type: float, low: 1.0e-3, high: 3.0e-2, log: true}
            model.hidden_sizes: {choices: [[16], [32]]}
    """,
    "conf/search/pruner/always.yaml": """
        # prunes every trial at its first report: deterministic, for tests
        _target_: optuna.pruners.ThresholdPruner
        lower: 2.0
    """,
}


def write_project(root: Path) -> Path:
    for name, text in FILES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return root


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write_project(tmp_path / "project")


def _trials(runs: list) -> list:
    return [r for r in runs if r.data.tags.get("sweeper.role") == "trial"]


def _uri(root: Path) -> str:
    return f"sqlite:///{root / 'mlflow.db'}"


@pytest.mark.parametrize("how", [pytest.param("-cd", marks=pytest.mark.slow), "./conf"])
def test_an_experiment_in_a_user_folder_sweeps_exactly_what_it_asks(project, how):
    # -cd given explicitly, or the project's ./conf picked up without any flag
    flags = ["-cd", "conf"] if how == "-cd" else []
    out = cli(project, "sweep", *flags, "experiment=wine_mlp", "trainer.accelerator=cpu")
    assert out.returncode == 0, out.stderr + out.stdout
    trials = _trials(mlflow_runs(_uri(project)))
    assert len(trials) == 2
    for run in trials:  # params, tags and the network's class all say the same
        assert run.data.tags["state"] == "COMPLETE"
        assert run.data.params["model"] == "mlp" and run.data.params["data"] == "wine"
        assert run.data.tags["model_class"] == "sweeper.models.mlp.MLP"
        assert run.data.tags["model_family"] == "mlp"
        assert run.data.tags["data_class"] == "winedata.WineDataModule"
        assert run.data.params["model.hidden_sizes"] in ("[16]", "[32]")
        assert run.info.status == "FINISHED"
    # later, `sweeper evaluate` re-scores the best trial with the project's own data module
    out = cli(project, "evaluate", "wine_mlp")
    assert out.returncode == 0, out.stderr + out.stdout
    scored = [r for r in _trials(mlflow_runs(_uri(project))) if "eval/wine/test/acc" in r.data.metrics]
    assert len(scored) == 1 and 0.0 <= scored[0].data.metrics["eval/wine/test/acc"] <= 1.0


@pytest.mark.slow
def test_a_worker_that_composes_another_config_stops_before_any_trial(project, tmp_path, monkeypatch, capsys):
    """The coordinator's config is the contract: a worker that cannot reproduce it (here
    the config folder changed under it) refuses to train anything."""
    import json

    import optuna

    from sweeper.search.worker import EXIT_CONFIG, worker_main

    out = cli(project, "sweep", "experiment=wine_mlp", "trainer.accelerator=cpu")
    assert out.returncode == 0, out.stderr + out.stdout
    plan_file = project / "outputs" / "sweeps" / "wine_mlp" / "plan.json"
    plan = json.loads(plan_file.read_text())
    plan["settings"]["n_trials"] = 4  # two more trials to run
    wine = project / "conf" / "data" / "wine.yaml"
    wine.write_text(wine.read_text().replace("batch_size: 32", "batch_size: 16"))
    monkeypatch.syspath_prepend(str(project))
    changed = tmp_path / "plan.json"
    changed.write_text(json.dumps(plan))
    monkeypatch.chdir(project)
    assert worker_main(str(changed), 0) == EXIT_CONFIG
    storage = f"journal:///{project / 'outputs' / 'sweeps' / 'wine_mlp' / 'optuna.journal'}"
    from sweeper.search.storage import open_storage

    study = optuna.load_study(study_name="wine_mlp", storage=open_storage(storage))
    assert len(study.trials) == 2  # nothing was asked, nothing trained
    assert "data.batch_size is 16, not 32" in capsys.readouterr().err


def test_a_user_file_that_a_shipped_one_would_hide_is_refused(project):
    (project / "conf" / "model" / "mlp.yaml").write_text("_target_: usermodels.TinyNet\n")
    out = cli(project, "train", "model=mlp")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "conf/model/mlp.yaml: has the name of sweeper's own model=mlp" in out.stderr


def test_a_missing_experiment_is_an_error_not_the_defaults(project):
    out = cli(project, "sweep", "experiment=wine_mpl", "trainer.accelerator=cpu")
    assert out.returncode == 2
    assert "experiment=wine_mpl: no such option" in out.stderr and "wine_mlp" in out.stderr
    assert "Traceback" not in out.stderr
    assert not [p for p in project.glob("outputs/sweeps/*") if p.is_dir()]  # no study folder
    assert not (project / "mlflow.db").exists()


@pytest.mark.slow
def test_own_network_and_own_lightning_module_train_and_sweep(project, monkeypatch):
    common = ["trainer.accelerator=cpu", "trainer.max_epochs=2", "data=wine"]
    out = cli(project, "train", "model=tiny", *common)
    assert out.returncode == 0, out.stderr + out.stdout
    out = cli(project, "sweep", "model=litwine", *common, "search.n_trials=2",
              "search.register_model=false", "search/pruner=always", "search.study_name=lit")
    assert out.returncode == 0, out.stderr + out.stdout
    runs = mlflow_runs(_uri(project))
    (tiny,) = [r for r in runs if r.data.tags.get("model_class") == "usermodels.TinyNet"]
    assert tiny.data.tags["state"] == "COMPLETE" and "test/acc" in tiny.data.metrics
    lit = _trials(runs)
    assert len(lit) == 2 and all(r.data.tags["model_class"] == "usermodels.LitWine" for r in lit)
    assert all(r.data.tags["task"] == "custom" for r in lit)
    # the user's module logs val/acc every epoch: it was reported, and pruned at epoch 0
    assert all(r.data.tags["state"] == "PRUNED" and r.data.tags["epochs"] == "1" for r in lit)
    # the user's network restores from its checkpoint by name, with no arguments, once its
    # module is trusted: a checkpoint naming an unknown class is refused before any import
    from sweeper.models import Classifier
    from sweeper.trust import UntrustedError

    ckpt = next(Path(tiny.data.tags["output_dir"]).glob("checkpoints/*.ckpt"))
    import sys

    sys.path.insert(0, str(project))
    try:
        monkeypatch.delenv("SWEEPER_TRUSTED_MODULES", raising=False)
        with pytest.raises(UntrustedError, match="SWEEPER_TRUSTED_MODULES=usermodels"):
            Classifier.load_from_checkpoint(str(ckpt))
        assert "usermodels" not in sys.modules
        monkeypatch.setenv("SWEEPER_TRUSTED_MODULES", "usermodels")
        model = Classifier.load_from_checkpoint(str(ckpt))
    finally:
        sys.path.remove(str(project))
    assert type(model.net).__name__ == "TinyNet"


def test_the_rnn_reads_sequences_of_steps_and_features(project):
    out = cli(project, "train", "data=updown", "model=rnn", "trainer.accelerator=cpu",
              "trainer.max_epochs=3", "optimizer.lr=0.01")
    assert out.returncode == 0, out.stderr + out.stdout
    (run,) = mlflow_runs(_uri(project))
    assert run.data.params["data.input_shape"] == "[12, 3]"  # (T, F): a sequence, not rows
    assert run.data.tags["model_class"] == "sweeper.models.rnn.RNN"
    assert run.data.metrics["test/acc"] > 0.8  # the sign of a walk's end is easy to read


@pytest.mark.slow
@pytest.mark.ddp
def test_user_modules_train_under_ddp(project):
    """DDP ranks re-run the command line: they must import the project's modules too."""
    out = cli(project, "train", "data=wine", "model=tiny", "trainer=ddp", "trainer.accelerator=cpu",
              "trainer.devices=2", "trainer.max_epochs=2")
    assert out.returncode == 0, out.stderr + out.stdout
    (run,) = mlflow_runs(_uri(project))
    assert run.data.tags["model_class"] == "usermodels.TinyNet" and run.info.status == "FINISHED"
    assert run.data.params["trainer.devices"] == "2"


@pytest.mark.slow
def test_cross_validation_sweep_records_folds_and_prunes_between_them(project):
    common = ["data=wine", "model=mlp", "trainer.accelerator=cpu", "trainer.max_epochs=2",
              "search.n_trials=2", "search.cv.folds=3", "search.register_model=false"]
    out = cli(project, "sweep", *common, "search/pruner=none", "search.study_name=cv")
    assert out.returncode == 0, out.stderr + out.stdout
    out = cli(project, "sweep", *common, "search/pruner=always", "search.study_name=cvpruned")
    assert out.returncode == 0, out.stderr + out.stdout
    runs = mlflow_runs(_uri(project))
    parents = {r.data.tags["study"]: r.info.run_id for r in runs if r.data.tags.get("sweeper.role") == "parent"}
    by_parent: dict[str, list] = {}
    for r in runs:
        by_parent.setdefault(r.data.tags.get("mlflow.parentRunId"), []).append(r)
    for trial in by_parent[parents["cv"]]:
        folds = by_parent[trial.info.run_id]
        assert sorted(int(f.data.tags["fold"]) for f in folds) == [0, 1, 2]
        scores = [f.data.metrics["best/val/acc"] for f in folds]
        mean = trial.data.metrics["cv/val/acc/mean"]
        assert mean == pytest.approx(sum(scores) / 3, abs=1e-6)
        assert trial.data.metrics["best/val/acc"] == pytest.approx(mean, abs=1e-6)
        assert "cv/val/acc/std" in trial.data.metrics and trial.data.tags["state"] == "COMPLETE"
    for trial in by_parent[parents["cvpruned"]]:  # reported after fold 0, pruned there
        assert trial.data.tags["state"] == "PRUNED"
        assert len(by_parent[trial.info.run_id]) == 1


@pytest.mark.slow
def test_regression_and_autoencoder_sweeps_minimise_their_loss(tmp_path):
    common = ["trainer.accelerator=cpu", "trainer.max_epochs=2", "search.n_trials=2", "search/pruner=none"]
    for recipe in ("diabetes_mlp", "digits_autoencoder"):
        out = cli(tmp_path, "sweep", f"experiment={recipe}", *common)
        assert out.returncode == 0, out.stderr + out.stdout
        assert f"registered model '{recipe}'" in out.stdout
    runs = mlflow_runs(_uri(tmp_path))
    parents = {r.data.tags["study"]: r for r in runs if r.data.tags.get("sweeper.role") == "parent"}
    assert parents["diabetes_mlp"].data.tags["direction"] == "minimize"
    assert parents["diabetes_mlp"].data.tags["metric"] == "val/loss"
    assert {"test/mse", "test/mae", "test/r2"} <= set(parents["diabetes_mlp"].data.metrics)
    assert {"test/mse", "test/mae"} <= set(parents["digits_autoencoder"].data.metrics)
    trials = _trials(runs)
    assert {r.data.tags["task"] for r in trials} == {"regression", "autoencoder"}
    for r in trials:
        best = min(v.value for v in _history(tmp_path, r.info.run_id, "val/loss"))
        assert r.data.metrics["best/val/loss"] == pytest.approx(best, rel=1e-5)
    evaluation = tmp_path / "outputs" / "sweeps"
    assert (evaluation / "diabetes_mlp" / "evaluation" / "predicted_vs_true.png").is_file()
    assert (evaluation / "digits_autoencoder" / "evaluation" / "reconstructions.png").is_file()
    assert not (evaluation / "diabetes_mlp" / "evaluation" / "confusion_matrix.png").exists()


def _history(root: Path, run_id: str, key: str) -> list:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=_uri(root)).get_metric_history(run_id, key)


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["model=rnn", "model.cell=transformer"], "cell must be one of lstm, gru, rnn"),
        pytest.param(["data=mnist"], "mnist", marks=pytest.mark.slow),
        (["+search.params.model.dropout={type: float, low: 0.0, high: 1.5}", "model=mlp"],
         "search.params.model.dropout=1.5"),
        pytest.param(["+search.params.optimizer.momentum=[0.9]"], "search.params.optimizer.momentum: key not in",
                     marks=pytest.mark.slow),
        (["task=regression"], "num_targets"),
        pytest.param(["search.metric=val/r2"], "search.metric", marks=pytest.mark.slow),
        pytest.param(["trainer.accelerator=gpu"], "trainer", marks=pytest.mark.skipif(
            _has_cuda(), reason="the machine has a GPU")),
    ],
)
def test_errors_that_would_fail_every_trial_stop_before_anything_exists(project, args, expected):
    out = cli(project, "sweep", "data=digits", "trainer.accelerator=cpu", *args, timeout=300)
    assert out.returncode == 2, out.stdout + out.stderr
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("sweeper: error: "), out.stderr
    assert expected in lines[0], lines[0]
    assert not [p for p in project.glob("outputs/sweeps/*") if p.is_dir()]  # no study folder
    assert not (project / "mlflow.db").exists()


def test_yaml_errors_get_one_line(project):
    (project / "conf" / "data" / "broken.yaml").write_text("_target_: winedata.WineDataModule\nbatch_size: [32\n")
    out = cli(project, "train", "data=broken")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "conf/data/broken.yaml:3:1: YAML syntax error" in out.stderr
