"""Every sampler and pruner the configs ship runs a tiny study end to end, and so do
``search.timeout`` and a rerun with the same seed (instantiating them is not enough)."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from tests.conftest import cli

pytestmark = pytest.mark.slow

TINY = ["model=mlp", "trainer.accelerator=cpu", "trainer.max_epochs=2", "tracking=none", "search.register_model=false"]


def _study(root: Path, name: str = "default") -> optuna.Study:
    journal = root / "outputs" / "sweeps" / name / "optuna.journal"
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    return optuna.load_study(study_name=name, storage=storage)


def _states(study: optuna.Study) -> list[str]:
    return [t.state.name for t in study.get_trials()]


@pytest.mark.parametrize("sampler", ["cmaes", "gp", "qmc", "random"])
def test_each_single_objective_sampler_runs_a_study(tmp_path, sampler):
    out = cli(tmp_path, "sweep", *TINY, f"search/sampler={sampler}", "search/pruner=none", "search.n_trials=3")
    assert out.returncode == 0, out.stderr + out.stdout
    study = _study(tmp_path)
    assert _states(study) == ["COMPLETE"] * 3
    assert len({t.params["optimizer.lr"] for t in study.trials}) == 3  # three distinct points
    assert f"sampler {sampler}" in out.stdout


def test_nsga2_runs_a_multi_objective_study_and_records_its_pareto_front(tmp_path):
    out = cli(tmp_path, "sweep", *TINY, "search/sampler=nsga2", "search.metric=[val/acc,model/num_parameters]",
              "search.n_trials=4", "+search.params.model.hidden_sizes=[[16],[64]]")
    assert out.returncode == 0, out.stderr + out.stdout
    study = _study(tmp_path)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert _states(study) == ["COMPLETE"] * 4  # Optuna cannot prune a multi-objective study
    front = study.best_trials
    assert front and "Pareto front:" in out.stdout
    table = out.stdout.split("Pareto front:", 1)[1]
    assert all(f"\n{t.number} " in table for t in front)


@pytest.mark.parametrize("pruner", ["successive_halving", "hyperband", "median"])
def test_each_epoch_pruner_runs_a_study(tmp_path, pruner):
    out = cli(tmp_path, "sweep", *TINY, f"search/pruner={pruner}", "search.n_trials=6", "trainer.max_epochs=3",
              "search/sampler=random")
    assert out.returncode == 0, out.stderr + out.stdout
    study = _study(tmp_path)
    states = _states(study)
    assert len(states) == 6 and set(states) <= {"COMPLETE", "PRUNED"}, states
    for trial in study.trials:  # the pruner saw every validation epoch it was asked about
        epochs = sorted(trial.intermediate_values)
        assert epochs == list(range(len(epochs))) and epochs, trial.number
        if trial.state.name == "COMPLETE":
            assert epochs == [0, 1, 2]


def test_wilcoxon_prunes_between_cross_validation_folds(tmp_path):
    out = cli(tmp_path, "sweep", *TINY, "search/pruner=wilcoxon", "search.cv.folds=3", "search.n_trials=4",
              "trainer.max_epochs=1", "search/sampler=random")
    assert out.returncode == 0, out.stderr + out.stdout
    study = _study(tmp_path)
    states = _states(study)
    assert len(states) == 4 and set(states) <= {"COMPLETE", "PRUNED"}, states
    for trial in study.trials:  # one step per fold but the last (its score is the trial's value)
        assert set(trial.intermediate_values) <= {0, 1}
        if trial.state.name == "COMPLETE":
            assert sorted(trial.intermediate_values) == [0, 1]


def test_search_timeout_starts_no_trial_after_it(tmp_path):
    out = cli(tmp_path, "sweep", *TINY, "search.timeout=2", "search.n_trials=200", "trainer.max_epochs=1",
              "search/pruner=none")
    assert out.returncode == 0, out.stderr + out.stdout
    study = _study(tmp_path)
    assert 1 <= len(study.trials) < 200 and "RUNNING" not in _states(study)
    assert "search.timeout reached; run the same command to continue study 'default'" in out.stdout
    first = min(t.datetime_start for t in study.trials)
    assert all((t.datetime_start - first).total_seconds() < 2 + 1 for t in study.trials)


def test_the_same_seed_and_config_give_the_same_first_trial(tmp_path):
    values = []
    for run in ("a", "b"):
        folder = tmp_path / run
        folder.mkdir()
        out = cli(folder, "sweep", *TINY, "search.n_trials=1", "search/pruner=none")
        assert out.returncode == 0, out.stderr + out.stdout
        (trial,) = _study(folder).trials
        values.append((trial.params, trial.value))
    assert values[0] == values[1]
    out = cli(tmp_path / "a", "sweep", *TINY, "search.n_trials=1", "search/pruner=none", "search.seed=1",
              "search.study_name=other")
    assert out.returncode == 0, out.stderr + out.stdout
    assert _study(tmp_path / "a", "other").trials[0].params != values[0][0]  # another seed, another point
