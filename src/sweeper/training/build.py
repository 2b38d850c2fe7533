"""Turning a composed config into objects: data module, LightningModule, trainer.

The ``model`` group names either a network (any ``nn.Module``; the ``task`` group's
LightningModule trains it) or a whole ``LightningModule`` of the user's, used as it is.
Everything that can fail for a bad config fails here, as :class:`ConfigError` or
:class:`DataError` with one line naming the key, so :func:`preflight` can run the
same code before any trial exists.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sweeper.config import as_dict
from sweeper.errors import ConfigError, DataError, SweeperError
from sweeper.lightning_packages import choose, class_path, load, package_of, rebase
from sweeper.training.quiet import quiet_lightning


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__


def import_target(node: Any, group: str) -> Any:
    """The class or function a config node's ``_target_`` names."""
    from hydra.utils import get_object

    target = node.get("_target_") if isinstance(node, (DictConfig, Mapping)) else None
    if not isinstance(target, str) or not target:
        raise ConfigError(f"{group}._target_: missing; name a class, e.g. _target_: mypackage.MyClass")
    try:
        return get_object(target)
    except Exception as exc:
        cause = exc.__cause__ or exc
        raise ConfigError(
            f"{group}._target_: cannot import {target!r} ({type(cause).__name__}: {_short(cause)}); "
            "check the name, and that its module is in the working directory or installed"
        ) from None


def instantiate(node: DictConfig, group: str, package: str | None = None, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` with a one-line error naming the config group. With
    ``package`` (a Lightning package), Lightning classes of the other package that the
    node names, its own ``_target_`` and nested ones, are rebased on ``package``."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate as hydra_instantiate

    target = import_target(node, group)
    if package is not None:
        target = rebase(target, package) if isinstance(target, type) else target
    try:
        fast = _plain_call(node, target, kwargs)
        if fast is not None:
            return fast()
        if package is not None:
            data = _retarget(OmegaConf.to_container(node, resolve=True), package)
            data["_target_"] = target
            return hydra_instantiate(data, _convert_="all", **kwargs)
        return hydra_instantiate(node, _convert_="all", **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__ or exc
        raise ConfigError(f"{group}: {_short(cause)}; check the {group}.* keys (sweeper train --cfg job)") from exc
    except SweeperError:
        raise
    except Exception as exc:
        named = re.match(r"(\w+) (?:must|should)\b", str(exc))
        if named and named.group(1) in node:  # the constructor names its argument: name the key
            raise ConfigError(f"{group}.{named.group(1)}: {_short(exc)}") from exc
        raise ConfigError(f"{group}: {type(exc).__name__}: {_short(exc)}; check the {group}.* keys") from exc


def _retarget(value: Any, package: str) -> Any:
    """A plain config with each nested ``_target_`` naming a Lightning class of the other
    package replaced by that class rebased on ``package``."""
    from hydra.utils import get_object

    if isinstance(value, list):
        return [_retarget(v, package) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: _retarget(v, package) for k, v in value.items()}
    target = out.get("_target_")
    if isinstance(target, str):
        try:
            obj = get_object(target)
        except Exception:
            return out  # Hydra's own error names it
        if isinstance(obj, type) and package_of(obj) not in (None, package):
            out["_target_"] = rebase(obj, package)
    return out


def _no_targets(value: Any) -> bool:
    """Only dicts, lists and scalars, no nested ``_target_``."""
    if isinstance(value, dict):
        return "_target_" not in value and all(_no_targets(v) for v in value.values())
    if isinstance(value, list):
        return all(_no_targets(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))


def _plain_call(node: DictConfig, target: Any, kwargs: dict[str, Any]) -> Any:
    """What Hydra's instantiate would do for a node of plain values, as a call without
    its recursion (it costs a trial tens of milliseconds); None for anything else."""
    data = as_dict(node)
    if data is None or any(k.startswith("_") and k not in ("_target_", "_partial_") for k in data):
        return None

    args = {k: v for k, v in data.items() if not k.startswith("_")}
    if not _no_targets(args):
        return None
    if data.get("_partial_"):
        return lambda: functools.partial(target, **args, **kwargs)
    return lambda: target(**args, **kwargs)


def lightning_package(cfg: DictConfig) -> str:
    """The Lightning package a run of ``cfg`` trains with: that of the user's model or
    data module (``lightning.pytorch`` or ``pytorch_lightning``); sweeper's classes adapt."""
    return choose(import_target(cfg.model, "model"), import_target(cfg.data, "data"))


def build_datamodule(cfg: DictConfig) -> Any:
    return instantiate(cfg.data, "data", package=lightning_package(cfg))


def is_lightning_module(cls: Any) -> bool:
    """A LightningModule class of either Lightning package."""
    package = package_of(cls) if isinstance(cls, type) else None
    return package is not None and issubclass(cls, load(package).LightningModule)


def task_class(cfg: DictConfig) -> Any:
    """The task's LightningModule class (``task._target_``)."""
    from sweeper.models import TASKS

    cls = import_target(cfg.task, "task")
    if not isinstance(cls, type) or not getattr(cls, "task", None):
        raise ConfigError(
            f"task._target_: {cfg.task._target_} is not a sweeper task module; choose "
            f"task={'|'.join(TASKS)}"
        )
    return cls


@dataclass
class Built:
    """What :func:`build_module` made, and what it is."""

    module: Any
    task: str  # classification | regression | autoencoder | custom
    net_class: str  # the network's (or the user's LightningModule's) class, dotted


def _accepts(fn: Any, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def build_module(cfg: DictConfig, datamodule: Any) -> Built:
    """The LightningModule for ``cfg``: the user's own, or the task's around the network."""
    from torch import nn

    from sweeper.data import check_datamodule

    target = import_target(cfg.model, "model")
    if is_lightning_module(target):
        module = instantiate(cfg.model, "model")
        return Built(module, "custom", class_path(module))
    package = lightning_package(cfg)
    task_cls = rebase(task_class(cfg), package)
    check_datamodule(datamodule, task_cls.task, check_batches=False)
    task_cfg = as_dict(cfg.task)
    assert task_cfg is not None  # task_class took cfg.task's _target_, so it is a mapping
    task_kwargs = {k: v for k, v in task_cfg.items() if k != "_target_"}
    try:
        outputs = task_cls.net_outputs(datamodule, **task_kwargs)
    except TypeError as exc:
        raise ConfigError(f"task: {_short(exc)}; check the task.* keys") from None
    extra: dict[str, Any] = {}
    if _accepts(target, "input_shape"):
        extra["input_shape"] = [int(d) for d in datamodule.input_shape]
    if _accepts(target, "num_outputs"):
        extra["num_outputs"] = int(outputs)
    elif _accepts(target, "num_classes") and task_cls.task == "classification":
        extra["num_classes"] = int(outputs)
    net = instantiate(cfg.model, "model", **extra)
    if not isinstance(net, nn.Module):
        raise ConfigError(f"model._target_: {cfg.model._target_} made a {type(net).__name__}, not a torch nn.Module")
    if getattr(net, "spec", None) is None:
        spec = plain_spec(cfg.model, extra)
        if spec is not None:
            # lets the checkpoint rebuild the user's network by name (torch's stubs
            # allow only tensors and modules here; a plain attribute is fine)
            net.spec = spec  # type: ignore[assignment]
    optimizer = instantiate(cfg.optimizer, "optimizer")
    scheduler = instantiate(cfg.scheduler, "scheduler") if "_target_" in cfg.scheduler else None
    # what the data tells the task (class count, target scale); task.* keys win
    task_kwargs = {**task_cls.data_kwargs(datamodule), **task_kwargs}
    try:
        module = task_cls(net=net, optimizer=optimizer, scheduler=scheduler, **task_kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"task: {_short(exc)}; check the task.* and model.* keys") from None
    return Built(module, task_cls.task, class_path(net))


def plain_spec(node: DictConfig, extra: Mapping[str, Any]) -> dict[str, Any] | None:
    """``{_target_, **kwargs}`` of a network config made of plain values only (no nested
    objects or partials), or None."""
    data = as_dict(node)
    if data is None:
        return None

    kwargs = {k: v for k, v in data.items() if k != "_target_"}
    if any(k.startswith("_") for k in kwargs) or not _no_targets(kwargs):
        return None
    return {"_target_": data["_target_"], **kwargs, **extra}


def preflight(cfg: DictConfig, check_batches: bool = True) -> Built:
    """Build what a run of ``cfg`` builds, short of training: the data module (its files
    and its first batch), the module, an optimizer on its parameters and the scheduler.
    Raises the error the run would raise, before anything is started or recorded."""
    from sweeper.data import check_datamodule

    datamodule = build_datamodule(cfg)
    built = build_module(cfg, datamodule)
    if built.task == "custom" and check_batches:
        try:
            datamodule.prepare_data()
        except SweeperError:
            raise
        except Exception as exc:
            raise DataError(f"data: {type(exc).__name__}: {_short(exc)}; check the data.* keys") from exc
    if built.task != "custom":
        try:
            check_datamodule(datamodule, built.task, check_batches=check_batches)
        except DataError:
            raise
        except SweeperError:
            raise
        except Exception as exc:
            raise DataError(f"data: {type(exc).__name__}: {_short(exc)}; check the data.* keys") from exc
        module = built.module
        try:
            optimizer = module.configure_optimizers()
        except Exception as exc:
            raise ConfigError(
                f"optimizer: {type(exc).__name__}: {_short(exc)}; check the optimizer.* and scheduler.* keys"
            ) from None
        del optimizer
    return built


def check_trainer(cfg: DictConfig) -> None:
    """Build the trainer once, without starting it: an accelerator, device count or
    strategy this machine cannot run fails here."""
    quiet_lightning()  # no start-up banner from a trainer that never starts
    instantiate(
        cfg.trainer,
        "trainer",
        package=lightning_package(cfg),
        logger=False,
        callbacks=[],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def task_epoch_metrics(built: Built) -> tuple[str, ...] | None:
    """The metrics the module logs every epoch; None for a user's own LightningModule."""
    if built.task == "custom":
        return None
    return tuple(type(built.module).epoch_metrics)
