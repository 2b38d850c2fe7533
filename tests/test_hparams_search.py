"""``sweeper sweep hparams_search=NAME``: a lightning-hydra-template file written for the
Hydra Optuna sweeper plugin runs as sweeper's own overrides, or is refused in one line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from sweeper.errors import ConfigError
from sweeper.hparams_search import translate, translate_file
from tests.conftest import cli

# lightning-hydra-template's configs/hparams_search/mnist_optuna.yaml, verbatim
TEMPLATE = """
# @package _global_

# example hyperparameter optimization of some experiment with Optuna:
# python train.py -m hparams_search=mnist_optuna experiment=example

defaults:
  - override /hydra/sweeper: optuna

# choose metric which will be optimized by Optuna
# make sure this is the correct name of some metric logged in lightning module!
optimized_metric: "val/acc_best"

# here we define Optuna hyperparameter search
# it optimizes for value returned from function with @hydra.main decorator
# docs: https://hydra.cc/docs/next/plugins/optuna_sweeper
hydra:
  mode: "MULTIRUN" # set hydra to multirun by default if this config is attached

  sweeper:
    _target_: hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper

    # storage URL to persist optimization results
    # for example, you can use SQLite if you set 'sqlite:///example.db'
    storage: null

    # name of the study to persist optimization results
    study_name: null

    # number of parallel workers
    n_jobs: 1

    # 'minimize' or 'maximize' the objective
    direction: maximize

    # total number of runs that will be executed
    n_trials: 20

    # choose Optuna hyperparameter sampler
    # you can choose bayesian sampler (tpe), random search (without optimization), grid sampler, and others
    # docs: https://optuna.readthedocs.io/en/stable/reference/samplers.html
    sampler:
      _target_: optuna.samplers.TPESampler
      seed: 1234
      n_startup_trials: 10 # number of random sampling runs before optimization starts

    # define hyperparameter search space
    params:
      model.optimizer.lr: interval(0.0001, 0.1)
      data.batch_size: choice(32, 64, 128, 256)
      model.net.lin1_size: choice(64, 128, 256)
      model.net.lin2_size: choice(64, 128, 256)
      model.net.lin3_size: choice(32, 64, 128, 256)
"""

# the same file for sweeper's shipped configs, with a key of its own
DIGITS = """
# @package _global_
defaults:
  - override /hydra/sweeper: optuna
  - override /model: mlp
optimized_metric: val/acc
trainer:
  max_epochs: 2
hydra:
  mode: MULTIRUN
  sweeper:
    _target_: hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper
    storage: null
    study_name: digits_hos
    n_jobs: 1
    direction: maximize
    n_trials: 3
    sampler:
      _target_: optuna.samplers.TPESampler
      seed: 1234
      n_startup_trials: 2
    params:
      optimizer.lr: interval(0.0001, 0.1)
      data.batch_size: choice(32, 64, 128)
      model.hidden_sizes: choice([64], [128, 64])
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    folder = tmp_path / "conf" / "hparams_search"
    folder.mkdir(parents=True)
    (folder / "mnist_optuna.yaml").write_text(TEMPLATE.lstrip())
    (folder / "digits_optuna.yaml").write_text(DIGITS.lstrip())
    return tmp_path


def test_the_templates_file_translates_to_sweepers_settings(project):
    overrides = translate_file(project / "conf" / "hparams_search" / "mnist_optuna.yaml")
    assert overrides == [
        "search.metric=val/acc_best", "search.workers=1", "search.direction=maximize", "search.n_trials=20",
        "search/sampler=tpe", "search.seed=1234", "++search.sampler.n_startup_trials=10", "search/params=none",
        '++search.params.model.optimizer.lr="interval(0.0001, 0.1)"',
        '++search.params.data.batch_size="choice(32, 64, 128, 256)"',
        '++search.params.model.net.lin1_size="choice(64, 128, 256)"',
        '++search.params.model.net.lin2_size="choice(64, 128, 256)"',
        '++search.params.model.net.lin3_size="choice(32, 64, 128, 256)"',
    ]
    # the command line wins over the file
    argv, note = translate(["hparams_search=mnist_optuna", "search.n_trials=5"], project / "conf")
    assert "search.n_trials=20" not in argv and argv[-1] == "search.n_trials=5"
    assert note.startswith("hparams_search=mnist_optuna (a Hydra Optuna sweeper file) runs as: search.metric=")


@pytest.mark.parametrize(("extra", "message"), [
    ({"custom_search_space": "my.module.fn"},
     "hydra.sweeper.custom_search_space has no sweeper equivalent; write the space as search.params entries"),
    ({"sampler": {"_target_": "optuna.samplers.BruteForceSampler"}},
     "hydra.sweeper.sampler._target_: optuna.samplers.BruteForceSampler has no sampler config in sweeper"),
    ({"_target_": "some.OtherSweeper"}, "is not the Optuna sweeper plugin"),
])
def test_what_has_no_equivalent_is_refused_in_one_line(project, extra, message):
    path = project / "conf" / "hparams_search" / "odd.yaml"
    data = yaml.safe_load(DIGITS)
    data["hydra"]["sweeper"].update(extra)
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"odd\.yaml") as info:
        translate_file(path)
    assert message in str(info.value)


@pytest.mark.integration
def test_the_file_composes_what_it_says_and_the_templates_keys_are_checked(project):
    out = cli(project, "sweep", "hparams_search=digits_optuna", "search.n_trials=2", "--cfg", "job")
    assert out.returncode == 0, out.stderr
    cfg = yaml.safe_load(out.stdout)
    search = cfg["search"]
    assert search["seed"] == 1234 and search["sampler"]["n_startup_trials"] == 2
    assert search["sampler"]["_target_"] == "optuna.samplers.TPESampler"
    assert search["n_trials"] == 2 and search["metric"] == "val/acc" and search["direction"] == "maximize"
    assert search["study_name"] == "digits_hos" and search["workers"] == 1
    assert search["params"] == {"optimizer": {"lr": "interval(0.0001, 0.1)"},
                                "data": {"batch_size": "choice(32, 64, 128)"},
                                "model": {"hidden_sizes": "choice([64], [128, 64])"}}
    assert cfg["model"]["_target_"] == "sweeper.models.MLP" and cfg["trainer"]["max_epochs"] == 2
    assert "runs as: model=mlp search.metric=val/acc" in out.stderr

    # the template's own file, verbatim: its keys are the template's configs', not these
    out = cli(project, "sweep", "hparams_search=mnist_optuna")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("hparams_search=mnist_optuna (a Hydra Optuna sweeper file)")
    assert lines[1].startswith("sweeper: error: search.params.model.optimizer.lr: key not in the base config")
    assert not (project / "outputs").exists() and not (project / "mlflow.db").exists()

    out = cli(project, "sweep", "hparams_search=nope")
    assert out.returncode == 2 and "hparams_search=nope: no nope.yaml in" in out.stderr


@pytest.mark.integration
def test_a_file_that_selects_the_plugin_another_way_is_refused_with_the_way_to_run_it(project):
    (project / "conf" / "experiment").mkdir()
    (project / "conf" / "experiment" / "hos.yaml").write_text(textwrap.dedent("""
        # @package _global_
        defaults:
          - override /hydra/sweeper: optuna
    """))
    out = cli(project, "sweep", "experiment=hos")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "search.params" in out.stderr and "search.metric" in out.stderr
    assert "sweeper sweep hparams_search=NAME" in out.stderr


@pytest.mark.slow
def test_a_template_file_runs_its_study(project):
    import optuna

    out = cli(project, "sweep", "hparams_search=digits_optuna", "search.n_trials=2", "search.register_model=false",
              "trainer.accelerator=cpu")
    assert out.returncode == 0, out.stderr + out.stdout
    journal = project / "outputs" / "sweeps" / "digits_hos" / "optuna.journal"
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    study = optuna.load_study(study_name="digits_hos", storage=storage)
    trials = study.get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    lr = trials[0].distributions["optimizer.lr"]
    assert isinstance(lr, optuna.distributions.FloatDistribution) and (lr.low, lr.high, lr.log) == (1e-4, 0.1, False)
    assert trials[0].distributions["data.batch_size"].choices == (32, 64, 128)
