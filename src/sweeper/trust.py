"""What a file may make sweeper build.

Registered models (``model.json``), checkpoints (their hyper-parameters) and the
configs of recorded runs (``config.yaml`` in MLflow) name classes by dotted path: the
task module, the network's ``_target_``, the optimizer and scheduler, the data module.
Building one imports its module and calls it, so a file that could name any importable
callable would run code of its author's choosing (``subprocess.run`` with the file's
keyword arguments, say). sweeper builds from a file only:

* the classes it ships: its networks and task modules (``sweeper.models``) and data
  modules (``sweeper.data``);
* torch's layers as networks (``torch.nn.Linear`` …), its optimizers and learning-rate
  schedulers (``torch.optim``) and Lightning's ``Trainer``;
* anything in a module the user trusts: ``SWEEPER_TRUSTED_MODULES=mymodels,winedata``
  in the environment, ``--trust mymodels`` on the commands that load models,
  ``trusted_modules: [mymodels]`` in a train or sweep config, or :func:`trust` in
  Python. The modules named by the configs the user wrote are trusted too: a
  command's own composed config, and the ``_target_`` keys of the project's config
  folder (``./conf``, ``$SWEEPER_CONFIG_DIR`` or ``--config-dir``) for the commands that
  load a recorded model. A file in a tracking store cannot add to that list.

Anything else is refused with one line (:class:`UntrustedError`) before its module is
imported. Names that pass are imported and checked again: a shipped name must be a
class of the expected kind (a network is an ``nn.Module``, an optimizer a
``torch.optim.Optimizer`` …), so ``sweeper.cli.main`` is refused like ``os.system``.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from sweeper.errors import SweeperError

ENV = "SWEEPER_TRUSTED_MODULES"
ROLES = ("network", "task", "model", "optimizer", "scheduler", "data", "trainer", "object")

# Modules that may be imported to look a shipped name up: importing them runs only
# sweeper's own definitions (no command, no I/O).
_SHIPPED_MODULES = {
    "sweeper.models": ("network", "task", "model"),
    "sweeper.models.mlp": ("network", "model"),
    "sweeper.models.cnn": ("network", "model"),
    "sweeper.models.rnn": ("network", "model"),
    "sweeper.models.classifier": ("task", "model"),
    "sweeper.models.regressor": ("task", "model"),
    "sweeper.models.autoencoder": ("task", "model"),
    "sweeper.data": ("data",),
    "sweeper.data.digits": ("data",),
    "sweeper.data.diabetes": ("data",),
    "sweeper.data.mnist": ("data",),
    "sweeper.data.arrays": ("data",),
}
_TRAINER_MODULES = ("pytorch_lightning", "pytorch_lightning.trainer.trainer", "lightning",
                    "lightning.pytorch", "lightning.pytorch.trainer.trainer")

_trusted: set[str] = set()  # module names trusted in this process (trust(), configs)


class UntrustedError(SweeperError):
    """A file names something sweeper will not build from a file."""


def _modules_from_env() -> set[str]:
    return {m.strip() for m in os.environ.get(ENV, "").replace(";", ",").split(",") if m.strip()}


def trusted_modules() -> tuple[str, ...]:
    """The modules trusted now: :func:`trust`, configs and ``$SWEEPER_TRUSTED_MODULES``."""
    return tuple(sorted(_trusted | _modules_from_env()))


def trust(*modules: str) -> None:
    """Trust every class in these modules (and their sub-modules) for this process, e.g.
    ``trust("mymodels")`` before ``Classifier.load_from_checkpoint`` of a checkpoint
    whose network is ``mymodels.TinyNet``."""
    for module in modules:
        name = str(module).strip().strip(".")
        if not name or not all(part.isidentifier() for part in name.split(".")):
            raise SweeperError(f"trusted module {module!r} is not a module name such as mymodels or mypkg.nets")
        _trusted.add(name)


def _in_trusted_module(path: str) -> bool:
    module = path.rpartition(".")[0]
    return any(module == m or module.startswith(m + ".") for m in trusted_modules())


def _fix(path: str) -> str:
    top = path.split(".", 1)[0]
    if top in sys.stdlib_module_names or top in ("sweeper", "torch", "pytorch_lightning", "lightning"):
        return "no model sweeper writes names it: the file was altered, do not load it"
    module = path.rpartition(".")[0]
    return (f"if that is your own code and you trust whoever wrote the file, trust the module: "
            f"{ENV}={module} (or --trust {module})")


def _refuse(path: str, role: str, source: str, why: str, imported: bool = False) -> UntrustedError:
    how = "refused" if imported else "refused without importing it"
    return UntrustedError(f"{source} names {path!r} as its {role}, which {why}; {how}: {_fix(path)}")


def _is_lightning(cls: type, attr: str) -> bool:
    """``cls`` subclasses ``attr`` (LightningModule, LightningDataModule, Trainer) of
    either Lightning package that is loaded."""
    for package in ("pytorch_lightning", "lightning.pytorch"):
        module = sys.modules.get(package)
        base = getattr(module, attr, None) if module is not None else None
        if isinstance(base, type) and issubclass(cls, base):
            return True
    return False


def _kind_ok(obj: Any, role: str) -> bool:
    """Whether a shipped (or torch's, Lightning's) object is of the kind ``role`` needs."""
    if not isinstance(obj, type):
        return False
    if role in ("optimizer", "scheduler"):
        import torch

        if role == "optimizer":
            return issubclass(obj, torch.optim.Optimizer)
        from torch.optim import lr_scheduler

        return issubclass(obj, (lr_scheduler.LRScheduler, lr_scheduler.ReduceLROnPlateau))
    if role == "trainer":
        return _is_lightning(obj, "Trainer")
    if role == "data":
        return _is_lightning(obj, "LightningDataModule")
    from torch import nn

    if role == "task":
        return _is_lightning(obj, "LightningModule")
    if role == "network":
        return issubclass(obj, nn.Module) and not _is_lightning(obj, "LightningModule")
    return issubclass(obj, nn.Module)  # model: a network or a task module


def _import(path: str) -> Any:
    module, _, attr = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise SweeperError(f"cannot import {path!r} ({type(exc).__name__}: {exc}); is the package that "
                           "defines it installed?") from None


def _shipped(path: str, role: str) -> bool:
    """Whether ``path`` may be imported to look up a shipped object of ``role`` (its
    module is one of sweeper's, torch's optimizers or Lightning's trainer)."""
    module = path.rpartition(".")[0]
    if role in ("optimizer", "scheduler"):
        return module == "torch.optim" or module.startswith("torch.optim.")
    if role == "trainer":
        return module in _TRAINER_MODULES
    if role in ("network", "model") and (module == "torch.nn" or module.startswith("torch.nn.modules.")):
        return True  # torch's layers: building one allocates weights, nothing else
    return role in _SHIPPED_MODULES.get(module, ())


def resolve(path: Any, role: str, source: str = "a model file") -> Any:
    """The object ``path`` names, when a file may name it for ``role`` (see the module's
    docstring); :class:`UntrustedError` otherwise, before anything is imported."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    if not isinstance(path, str) or "." not in path or not all(p.isidentifier() for p in path.split(".")):
        raise UntrustedError(f"{source} names {path!r} as its {role}, which is not a dotted name like "
                             "package.module.Class; refused")
    if _in_trusted_module(path):
        return _import(path)
    if not _shipped(path, role):
        raise _refuse(path, role, source, "is not a class sweeper ships and not in a trusted module")
    obj = _import(path)
    if not _kind_ok(obj, role):
        raise _refuse(path, role, source, f"is not {'an' if role[0] in 'aeiou' else 'a'} {role} class", imported=True)
    return obj


def check(path: Any, role: str, source: str = "a model file") -> None:
    """Refuse ``path`` for ``role`` without importing anything it would not import."""
    resolve(path, role, source)


# Which role a config's top-level key gives the ``_target_`` under it.
CONFIG_ROLES = {"model": "model", "task": "task", "data": "data", "optimizer": "optimizer",
                "scheduler": "scheduler", "trainer": "trainer"}


def config_targets(config: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Every ``(key, _target_)`` of a config, depth first (``model._target_`` …)."""
    found: list[tuple[str, str]] = []
    for key, value in config.items():
        where = f"{prefix}{key}"
        if key == "_target_":
            found.append((prefix.rstrip(".") or "_target_", value))
        elif isinstance(value, Mapping):
            found.extend(config_targets(value, f"{where}."))
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                if isinstance(item, Mapping):
                    found.extend(config_targets(item, f"{where}[{i}]."))
    return found


def check_config(config: Mapping[str, Any], source: str) -> None:
    """Refuse a stored config (a recorded run's ``config.yaml``) any of whose
    ``_target_`` keys names something a file may not make sweeper build."""
    for key, target in config_targets(config):
        top = key.split(".", 1)[0].split("[", 1)[0]
        role = CONFIG_ROLES.get(top, "object") if key == top else "object"
        resolve(target, role, f"{source} ({key}._target_)")


def trust_config(config: Mapping[str, Any]) -> None:
    """Trust the modules of a config the running command composed (the user's own
    configs): its ``_target_`` modules outside sweeper, torch and Lightning, and its
    ``trusted_modules`` list."""
    listed = config.get("trusted_modules") or []
    if isinstance(listed, str):
        listed = [listed]
    trust(*[str(m) for m in listed])
    for _, target in config_targets(config):
        if isinstance(target, str) and "." in target:
            module = target.rpartition(".")[0]
            if not module.startswith(("sweeper.", "torch.", "pytorch_lightning", "lightning")) \
                    and module != "sweeper":
                _trusted.add(module)


def trust_config_folder(folder: Any) -> None:
    """Trust the modules the user's own config folder names (``_target_`` keys and
    ``trusted_modules`` lists in its YAML files): the commands that load a recorded model
    from the project's folder rebuild the project's own classes without a ``--trust``."""
    from pathlib import Path

    import yaml

    for path in sorted(Path(folder).rglob("*.yaml")):
        try:
            documents = list(yaml.safe_load_all(path.read_text()))
        except (OSError, yaml.YAMLError):
            continue  # the commands that compose it report a broken file
        for document in documents:
            if isinstance(document, Mapping):
                trust_config(document)


def trust_from(values: Iterable[str]) -> None:
    """``--trust`` values, each a module name or a comma-separated list of them."""
    for value in values:
        trust(*[m for m in str(value).split(",") if m.strip()])
