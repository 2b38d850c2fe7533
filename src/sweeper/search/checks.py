"""The checks a sweep makes before anything exists: settings, space, config, trials and
both stores. ``sweeper sweep`` runs them before it opens the study; ``--dry-run`` runs
them and prints the plan instead."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, open_dict

from sweeper.composition import without_searchpath
from sweeper.config import validate_train_config
from sweeper.errors import ConfigError
from sweeper.search.control import start_points
from sweeper.search.distinct import space_size
from sweeper.search.preflight import check_trials
from sweeper.search.progress import say
from sweeper.search.records import study_folder
from sweeper.search.samplers import build_pruner, build_sampler
from sweeper.search.settings import SearchSettings
from sweeper.search.space import parse_space
from sweeper.search.storage import check_storage_url, default_storage
from sweeper.tracking.stores import check_store


def check_tracking(uri: str) -> None:
    """The tracking store answers, checked without creating anything in it."""
    from sweeper.tracking.mlflow import check_server

    if uri.startswith(("http://", "https://")):
        check_server(uri)
    else:
        check_store(uri, "tracking.uri", "fix tracking.uri, start the server, or turn tracking off with tracking=none")


def storage_url(settings: SearchSettings) -> str:
    """The study's Optuna storage: ``search.storage``, else its journal file."""
    return settings.storage or default_storage(study_folder(settings.study_name))


def check_basics(cfg: DictConfig, settings: SearchSettings) -> tuple[Any, DictConfig]:
    """The checks that need no model, torch or Lightning, made first so that their errors
    come in about a second: the space, the training config, and both stores answering.
    Returns the space and the base config (no search, no hydra)."""
    space = parse_space(settings.params)
    base = cfg.copy()
    with open_dict(base):
        base.pop("search", None)
        base.pop("hydra", None)
    validate_train_config(base)
    if settings.cv_folds > 1 and settings.multi_objective:
        raise ConfigError("search.cv.folds: cross-validation scores one metric; drop the extra "
                          "search.metric entries or set search.cv.folds=1")
    check_stores(cfg, settings, storage_url(settings))
    return space, base


def checked(cfg: DictConfig, overrides: list[str], settings: SearchSettings,
            devices: bool) -> tuple[Any, DictConfig, int, list[Any]]:
    """Every check of the sweep's settings, space, config, stores and trials, before
    anything exists: the space, the base config (no search, no hydra), the trials to run
    and the start points."""
    space, base = check_basics(cfg, settings)
    # a remote launcher's jobs check devices on the nodes that have them
    check_trials(space, cfg, without_searchpath(overrides), settings, devices=devices)
    grid = space.grid() if str(cfg.search.sampler.get("_target_", "")).endswith("GridSampler") else None
    # built once here so that a bad argument stops the sweep before anything exists
    build_sampler(cfg.search.sampler, grid)
    build_pruner(cfg.search.pruner)
    points = start_points(settings, space)
    n_trials = settings.n_trials
    if grid is not None:
        size = 1
        for values in grid.values():
            size *= len(values)
        if size < n_trials:
            say(f"grid has {size} points: running {size} trials, not {n_trials}")
            n_trials = size
    elif not settings.allow_repeats and (finite := space_size(space)) is not None and finite < n_trials:
        say(f"the search space has {finite} points: running {finite} trials, not {n_trials} "
            "(search.allow_repeats=true runs points again)")
        n_trials = finite
    if settings.multi_objective and settings.pruner_name not in ("none", "custom"):
        say("multi-objective study: Optuna cannot prune it, so search.pruner is not used")
    return space, base, n_trials, points


def check_stores(cfg: DictConfig, settings: SearchSettings, storage_url: str) -> None:
    """Both stores answer, checked without writing either."""
    if cfg.tracking.enabled:
        check_tracking(str(cfg.tracking.uri))
    if settings.storage is not None:
        check_storage_url(storage_url)
        check_store(storage_url, "search.storage", "check the URL and that the server is up, or leave "
                    "search.storage unset for the embedded journal file")
