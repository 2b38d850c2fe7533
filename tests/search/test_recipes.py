"""Every shipped experiment recipe, sampler and pruner composes and checks out."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import open_dict

from sweeper.config import validate_train_config
from sweeper.paths import conf_dir
from sweeper.search.preflight import check_trials
from sweeper.search.settings import parse_settings
from sweeper.search.space import parse_space

REPO = Path(__file__).resolve().parents[2]
RECIPES = sorted(p.stem for p in (REPO / "experiments").glob("*.yaml"))
SAMPLERS = sorted(p.stem for p in (conf_dir() / "search" / "sampler").glob("*.yaml"))
PRUNERS = sorted(p.stem for p in (conf_dir() / "search" / "pruner").glob("*.yaml"))


def test_there_are_recipes_for_each_family_and_across_families():
    assert {"digits_mlp", "digits_cnn", "digits_rnn", "digits_families"} <= set(RECIPES)
    assert {"diabetes_mlp", "diabetes_cv", "digits_autoencoder"} <= set(RECIPES)  # other tasks


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_composes_and_its_search_space_checks_out(recipe):
    text = (REPO / "experiments" / f"{recipe}.yaml").read_text()
    assert any(f"#   sweeper sweep experiment={recipe}" == line for line in text.splitlines()[:5])
    assert "RESULT" not in text, "the recipe must state the result it reached"
    overrides = [f"experiment={recipe}"]
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("sweep", overrides=overrides)
        with open_dict(cfg):
            cfg.search.study_name = recipe
        settings = parse_settings(cfg.search, None, cfg.monitor, cfg.monitor_mode)
        space = parse_space(settings.params)
        check_trials(space, cfg, overrides, settings)  # builds data, model, optimizer, trainer
        base = cfg.copy()
        with open_dict(base):
            base.pop("search")
        validate_train_config(base)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_every_sampler_instantiates(sampler):
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("sweep", overrides=[f"search/sampler={sampler}"])
    kwargs = {"search_space": {"x": [1, 2]}} if sampler == "grid" else {}
    obj = instantiate(cfg.search.sampler, **kwargs)
    assert type(obj).__name__.lower().startswith(sampler[:2]) or sampler in ("gp", "qmc", "nsga2")


@pytest.mark.parametrize("pruner", PRUNERS)
def test_every_pruner_instantiates(pruner):
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose("sweep", overrides=[f"search/pruner={pruner}"])
    obj = instantiate(cfg.search.pruner)
    assert hasattr(obj, "prune")


def test_workers_split_threads_and_gpus(monkeypatch):
    from sweeper.errors import ConfigError
    from sweeper.search.processes import worker_envs

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    envs = worker_envs(2, "gpu", 1)
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0", "1"]  # one each, disjoint
    assert [e["CUDA_VISIBLE_DEVICES"] for e in worker_envs(2, "gpu", 1, 2)] == ["0,1", "2,3"]  # devices=2
    with pytest.raises(ConfigError, match=r"search.workers=3 x trainer.devices=2 needs 6 GPUs.*shows 4"):
        worker_envs(3, "gpu", 1, 2)
    envs = worker_envs(3, "auto", 1)
    assert [e["CUDA_VISIBLE_DEVICES"] for e in envs] == ["0", "1", "2"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5")
    with pytest.raises(ConfigError, match=r"lower search\.workers or trainer\.devices"):
        worker_envs(2, "gpu", 1)
    assert [e["CUDA_VISIBLE_DEVICES"] for e in worker_envs(2, "auto", 1)] == ["5", "5"]  # auto: shared
    assert all("CUDA_VISIBLE_DEVICES" not in e for e in worker_envs(2, "cpu", 1))
    assert all(int(e["OMP_NUM_THREADS"]) >= 1 for e in envs)
