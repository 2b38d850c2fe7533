"""Checks on the composed training config, run once before anything is built.

Problems name the override key to fix, and all of them are reported at once.
"""

from __future__ import annotations

from typing import Any, cast

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sweeper.errors import ConfigError
from sweeper.schema import Setting, Table, is_int
from sweeper.tracking.stores import without_password

ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")


def _devices(v: Any) -> bool:
    if v == "auto" or (is_int(v) and (v >= 1 or v == -1)):
        return True
    if isinstance(v, str):
        return all(part.strip().isdigit() for part in v.split(",") if part.strip()) and v != ""
    return isinstance(v, list) and len(v) > 0 and all(is_int(d) and d >= 0 for d in v)


_ABSENT = "the module takes no such argument"  # keys that a user's data module or optimizer may not have

# The training config's checked keys; their defaults come from the chosen group options.
TRAIN = Table("", [
    Setting("seed", "int", 0, "seeds Python, numpy and torch", wanted="an integer", example="seed=0"),
    Setting("data.batch_size", "int", 64, "samples per batch", low=1, wanted="a positive integer",
            example="data.batch_size=64"),
    Setting("optimizer.lr", "number", 0.001, "learning rate", low=0, above=True, wanted="a positive number",
            example="optimizer.lr=0.001"),
    Setting("optimizer.weight_decay", "number", 0.0, "weight decay", low=0, null=_ABSENT,
            example="optimizer.weight_decay=0"),
    Setting("data.num_workers", "int", 0, "loader worker processes", low=0, null=_ABSENT,
            wanted="an integer >= 0 (0: batches in the training process)", example="data.num_workers=4"),
    Setting("data.pin_memory", "bool", False, "pinned host memory for GPU copies", null=_ABSENT,
            example="data.pin_memory=true"),
    Setting("data.persistent_workers", "bool", False, "loader workers kept between epochs", null=_ABSENT,
            example="data.persistent_workers=true"),
    Setting("trainer.max_epochs", "int", 10, "epochs to train", low=1, wanted="a positive integer",
            example="trainer.max_epochs=10"),
    Setting("trainer.devices", "custom", "auto", "devices per run",
            wanted="a positive integer, -1, 'auto' or a list of device ids", valid=_devices,
            example="trainer.devices=1"),
    Setting("trainer.accelerator", "choice", "auto", "where to train", choices=ACCELERATORS,
            example="trainer.accelerator=cpu"),
    Setting("trainer.strategy", "custom", "auto", "Lightning's strategy", wanted="a strategy name",
            valid=lambda v: isinstance(v, str) and v != "", example="trainer.strategy=ddp"),
    Setting("monitor", "custom", "val/acc", "the metric checkpoints and pruning watch",
            wanted="a logged metric such as val/acc", valid=lambda v: isinstance(v, str) and "/" in v,
            example="monitor=val/loss"),
    Setting("monitor_mode", "choice", "max", "whether higher or lower is better", choices=("min", "max"),
            wanted="min or max", example="monitor_mode=max"),
    Setting("tracking.enabled", "bool", True, "record the run in MLflow", example="tracking=none"),
])

REQUIRED_GROUPS = ("model", "data", "optimizer", "trainer")


def validate_train_config(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` listing every invalid key of a training config."""
    problems: list[str] = []
    for group in REQUIRED_GROUPS:
        node = cfg.get(group)  # a missing group is what we report, not a default
        if not isinstance(node, DictConfig) or "_target_" not in node:
            problems.append(f"{group}: no {group} is selected; choose one with {group}=<option>")
    for key, setting in TRAIN.settings.items():
        try:
            value = OmegaConf.select(cfg, key, throw_on_missing=True)
        except OmegaConfBaseException as exc:
            problems.append(f"{key}: cannot resolve ({exc}); set it explicitly, e.g. {setting.example}")
            continue
        if not setting.ok(value):
            problems.append(setting.problem(TRAIN.prefix, value))
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
