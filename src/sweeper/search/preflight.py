"""Checks a sweep runs before any study, run or trial exists.

A config that would fail inside every trial (an unknown group option, a key missing
from one model family, a value a constructor refuses, a data folder without files, an
accelerator the machine lacks) stops the command with one line instead of failing
trial after trial. Every combination of searched config groups is composed, and the
data module, model, optimizer and trainer are built from it, with the ends of each
searched range and every searched choice tried on the pieces they configure.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from sweeper.config import validate_train_config
from sweeper.errors import ConfigError, SweeperError
from sweeper.search.plan import STATIC_METRICS
from sweeper.search.settings import SearchSettings
from sweeper.search.space import Param, SearchSpace

MAX_COMBINATIONS = 24  # beyond this, each group option is checked with the others at their base
MAX_BUILDS = 200

_ABSENT = object()


def check_metrics(settings: SearchSettings, epoch_metrics: tuple[str, ...] | None) -> None:
    """The first metric is logged every epoch (prunable); the others exist.

    ``epoch_metrics`` is None for a user's own LightningModule: what it logs is known only
    once it trains, and the first epoch checks it.
    """
    if epoch_metrics is None:
        settings.check_directions()
        return
    first, rest = settings.metrics[0], settings.metrics[1:]
    if first not in epoch_metrics:
        raise ConfigError(
            f"search.metric: '{first}' is not logged every epoch by this task; choose one of "
            f"{', '.join(epoch_metrics)}"
        )
    for metric in rest:
        if metric not in epoch_metrics + STATIC_METRICS:
            raise ConfigError(
                f"search.metric: unknown metric '{metric}'; choose from "
                f"{', '.join(epoch_metrics + STATIC_METRICS)}"
            )
    settings.check_directions()


def _strip(cfg: DictConfig) -> DictConfig:
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.pop("search", None)
        cfg.pop("hydra", None)
    return cfg


def _variants(
    space: SearchSpace, base: DictConfig, overrides: list[str]
) -> Iterator[tuple[dict[str, str], DictConfig]]:
    """``(group choices, composed config)`` for the combinations of searched groups."""
    from sweeper.composition import compose, group_options

    groups = space.group_params
    for p in groups:
        options = group_options(p.key)
        for choice in p.choices:
            if choice not in options:
                raise ConfigError(
                    f"search.params.{p.key}: no option '{choice}' in group '{p.key}'; "
                    f"choose from {', '.join(options)}"
                )
    yield {}, _strip(base)
    if not groups:
        return
    combos: list[dict[str, str]] = [{}]
    for p in groups:  # in declaration order, so a `when` sees the choices made before it
        grown = []
        for combo in combos:
            if p.active(combo):
                grown += [{**combo, p.key: choice} for choice in p.choices]
            else:
                grown.append(combo)
        combos = grown
    if len(combos) > MAX_COMBINATIONS:
        combos = [{p.key: choice} for p in groups for choice in p.choices]
    for combo in combos:
        yield combo, _strip(compose("sweep", [*overrides, *(f"{k}={v}" for k, v in combo.items())]))


def _probes(p: Param) -> list[Any]:
    if p.kind == "categorical":
        return list(p.choices)
    if p.kind == "int":
        return sorted({int(v) for v in p.bounds()})
    return sorted({float(v) for v in p.bounds()})


def check_trials(space: SearchSpace, cfg: DictConfig, overrides: list[str], settings: SearchSettings,
                 devices: bool = True) -> None:
    """Compose and build what the sweep's trials will, short of training. Raises the
    first problem as :class:`ConfigError` naming the searched key or option. ``devices``
    False leaves out the trainer (its accelerator is checked where the trials run)."""
    from sweeper.training.build import check_trainer, preflight, task_epoch_metrics

    searched_groups = {p.key: p for p in space.group_params}
    keys = [p for p in space.params if not p.is_group]
    builds = 0
    loaded: set[str] = set()  # data configs whose files and first batch were checked
    trainers: set[str] = set()
    first = True
    for combo, variant in _variants(space, cfg, overrides):
        where = ", ".join(f"{k}={v}" for k, v in combo.items()) or "the base config"
        for p in keys:
            group = p.key.split(".", 1)[0]
            if group in searched_groups and group not in combo:
                continue  # checked in the variants that choose this group
            if not p.active({**combo}) and any(k in combo for k, _ in p.when):
                continue
            if OmegaConf.select(variant, p.key, default=_ABSENT) is _ABSENT:
                hint = (
                    f"; search it only where it exists, e.g. when: {{{group}: <option>}}"
                    if group in searched_groups
                    else "; check the spelling against `sweeper sweep --cfg job`"
                )
                raise ConfigError(f"search.params.{p.key}: key not in {where}{hint}")
        probes: list[tuple[str, Any]] = [("", None)]
        for p in keys:
            if not p.active(combo) and any(k in combo for k, _ in p.when):
                continue
            if p.key.split(".", 1)[0] in searched_groups and p.key.split(".", 1)[0] not in combo:
                continue
            values = p.optuna_choices() if p.encoded else _probes(p)
            probes += [(p.key, p.decode(v) if p.encoded else v) for v in values]
        for key, value in probes:
            if builds >= MAX_BUILDS:
                return
            trial_cfg = variant.copy()
            if key:
                OmegaConf.update(trial_cfg, key, value, merge=False)
            label = f"search.params.{key}={value!r} ({where})" if key else where
            try:
                validate_train_config(trial_cfg)
                data = OmegaConf.to_container(trial_cfg.data, resolve=True)
                data_key = json.dumps(data, sort_keys=True, default=str)
                built = preflight(trial_cfg, check_batches=data_key not in loaded)
                loaded.add(data_key)
                trainer = OmegaConf.to_container(trial_cfg.trainer, resolve=True)
                trainer_key = json.dumps(trainer, sort_keys=True, default=str)
                if devices and trainer_key not in trainers:
                    check_trainer(trial_cfg)
                    trainers.add(trainer_key)
            except SweeperError as exc:
                raise ConfigError(f"{exc}" + (f" [with {label}]" if key or combo else "")) from None
            if first:
                check_metrics(settings, task_epoch_metrics(built))
                first = False
            builds += 1
