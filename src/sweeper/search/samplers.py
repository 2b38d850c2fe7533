"""The sampler and pruner of a study, built from ``search.sampler`` / ``search.pruner``.

The coordinator builds both once before anything of the study exists, so a bad argument
is one line naming the key; each worker builds its own (a sampler keeps state).
"""

from __future__ import annotations

from typing import Any

import optuna
from omegaconf import DictConfig

from sweeper.config import as_dict
from sweeper.errors import ConfigError


class GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler without its call to ``study.stop()`` once the grid is used up.

    ``Study.stop`` only works inside ``study.optimize``; our workers ask and tell, and a
    grid sweep's length is already capped at the grid's size.
    """

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        return None


def _build(node: DictConfig, group: str, **kwargs: Any) -> Any:
    from hydra.utils import instantiate

    try:
        return instantiate(node, _convert_="all", **kwargs)
    except Exception as exc:
        cause = exc.__cause__ or exc
        args = {k: v for k, v in (as_dict(node) or {}).items() if k != "_target_"}
        shown = ", ".join(f"{k}={v!r}" for k, v in args.items())
        first = " ".join(str(cause).split())[:300]
        raise ConfigError(
            f"search.{group}: cannot build {node.get('_target_')}({shown}): {first}; fix its "
            f"arguments (search.{group}.<argument>=...) or choose another search.{group}"
        ) from None


def build_sampler(node: DictConfig, grid: dict[str, list[Any]] | None = None, seed: int | None = None) -> Any:
    """The sampler of ``search.sampler``; ``grid``: the search space for a grid sampler;
    ``seed`` replaces the configured seed."""
    kwargs: dict[str, Any] = {}
    if seed is not None and "seed" in node:
        kwargs["seed"] = seed
    if str(node.get("_target_", "")).endswith("GridSampler"):
        kwargs["search_space"] = grid or {}
    return _build(node, "sampler", **kwargs)


def build_pruner(node: DictConfig, multi_objective: bool = False) -> Any:
    """The pruner of ``search.pruner`` (None for a multi-objective study: Optuna cannot prune it)."""
    pruner = _build(node, "pruner")
    return None if multi_objective else pruner
