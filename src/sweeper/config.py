"""Checks on the composed training config, run once before anything is built.

Problems name the override key to fix, and all of them are reported at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sweeper.errors import ConfigError
from sweeper.tracking.stores import without_password

ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _positive_int(v: Any) -> bool:
    return _is_int(v) and v >= 1


def _positive_number(v: Any) -> bool:
    return _is_number(v) and v > 0


def _non_negative_number(v: Any) -> bool:
    return _is_number(v) and v >= 0


def _devices(v: Any) -> bool:
    if v == "auto" or (_is_int(v) and (v >= 1 or v == -1)):
        return True
    if isinstance(v, str):
        return all(part.strip().isdigit() for part in v.split(",") if part.strip()) and v != ""
    return isinstance(v, list) and len(v) > 0 and all(_is_int(d) and d >= 0 for d in v)


# keys that a data module or optimizer of the user's may not have
OPTIONAL = frozenset({"optimizer.weight_decay", "data.num_workers", "data.pin_memory", "data.persistent_workers"})

# key -> (check, what a valid value looks like, example fix)
RULES: dict[str, tuple[Callable[[Any], bool], str, str]] = {
    "seed": (_is_int, "an integer", "seed=0"),
    "data.batch_size": (_positive_int, "a positive integer", "data.batch_size=64"),
    "optimizer.lr": (_positive_number, "a positive number", "optimizer.lr=0.001"),
    "optimizer.weight_decay": (_non_negative_number, "a number >= 0", "optimizer.weight_decay=0"),
    "data.num_workers": (lambda v: _is_int(v) and v >= 0, "an integer >= 0 (0: batches in the training "
                         "process)", "data.num_workers=4"),
    "data.pin_memory": (lambda v: isinstance(v, bool), "true or false", "data.pin_memory=true"),
    "data.persistent_workers": (lambda v: isinstance(v, bool), "true or false", "data.persistent_workers=true"),
    "trainer.max_epochs": (_positive_int, "a positive integer", "trainer.max_epochs=10"),
    "trainer.devices": (_devices, "a positive integer, -1, 'auto' or a list of device ids",
                        "trainer.devices=1"),
    "trainer.accelerator": (lambda v: v in ACCELERATORS, f"one of {', '.join(ACCELERATORS)}",
                            "trainer.accelerator=cpu"),
    "trainer.strategy": (lambda v: isinstance(v, str) and v != "", "a strategy name",
                         "trainer.strategy=ddp"),
    "monitor": (lambda v: isinstance(v, str) and "/" in v, "a logged metric such as val/acc",
                "monitor=val/loss"),
    "monitor_mode": (lambda v: v in ("min", "max"), "min or max", "monitor_mode=max"),
    "tracking.enabled": (lambda v: isinstance(v, bool), "true or false", "tracking=none"),
}

REQUIRED_GROUPS = ("model", "data", "optimizer", "trainer")


def validate_train_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` listing every invalid key of a training config."""
    problems: list[str] = []
    for group in REQUIRED_GROUPS:
        node = cfg.get(group)  # a missing group is what we report, not a default
        if not isinstance(node, DictConfig) or "_target_" not in node:
            problems.append(f"{group}: no {group} is selected; choose one with {group}=<option>")
    for key, (check, wanted, fix) in RULES.items():
        try:
            value = OmegaConf.select(cfg, key, throw_on_missing=True)
        except OmegaConfBaseException as exc:
            problems.append(f"{key}: cannot resolve ({exc}); set it explicitly, e.g. {fix}")
            continue
        if value is None and key in OPTIONAL:
            continue
        if not check(value):
            problems.append(f"{key} must be {wanted}, got {value!r}; e.g. {fix}")
    if OmegaConf.select(cfg, "data.persistent_workers") is True and not OmegaConf.select(cfg, "data.num_workers"):
        problems.append("data.persistent_workers=true needs loader workers to keep; set data.num_workers=2 "
                        "(or more), or data.persistent_workers=false")
    tracking = cfg.get("tracking")
    if isinstance(tracking, DictConfig) and tracking.get("enabled"):
        for key in ("uri", "experiment"):
            value = tracking.get(key)
            if not isinstance(value, str) or not value:
                problems.append(
                    f"tracking.{key} must be a non-empty string, got {value!r}; "
                    "set it or turn tracking off with tracking=none"
                )
    if problems:
        raise ConfigError(problems)


def as_dict(node: Any, resolve: bool = True) -> dict[str, Any] | None:
    """``OmegaConf.to_container`` of a mapping node (its keys are names), None for any other node."""
    data = OmegaConf.to_container(node, resolve=resolve)
    return cast("dict[str, Any]", data) if isinstance(data, dict) else None


def resolved(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain data with every interpolation resolved (Hydra's own node
    dropped), fit to write or log: no password of any URL in it (see :func:`redacted`)."""
    data = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    if not isinstance(data, dict):
        raise ConfigError(f"the config must be a mapping, got {type(data).__name__}")
    data.pop("hydra", None)
    return redacted(data)


def redacted(tree: Any) -> Any:
    """``tree`` with :func:`without_password` applied to every string in it."""
    if isinstance(tree, dict):
        return {k: redacted(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [redacted(v) for v in tree]
    return without_password(tree) if isinstance(tree, str) else tree


def composed_form(cfg: DictConfig) -> dict[str, Any]:
    """The config as composed, interpolations left as written (``${now:…}`` or
    ``${oc.env:…}`` differ between processes; the files and overrides must not)."""
    data = OmegaConf.to_container(cfg, resolve=False)
    if not isinstance(data, dict):
        raise ConfigError(f"the config must be a mapping, got {type(data).__name__}")
    data.pop("hydra", None)
    return cast("dict[str, Any]", data)
