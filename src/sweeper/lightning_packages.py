"""The two Lightning packages, ``pytorch_lightning`` and ``lightning.pytorch``.

Both ship the same classes in separate hierarchies: a ``lightning.Trainer`` refuses a
``pytorch_lightning.LightningModule`` and the other way round. sweeper installs
``pytorch_lightning`` and writes its own classes once, against it. :func:`rebase` makes
the same class on ``lightning.pytorch`` (the same methods, re-bound to the new class, on
that package's bases), so a run whose user code imports ``lightning`` trains with
``lightning``'s trainer, callbacks and logger, and a project on ``lightning.Trainer`` can
use sweeper's modules (:mod:`sweeper.lightning`).

Nothing here imports either package until a class is rebased.
"""

from __future__ import annotations

import functools
import importlib
import types
from typing import Any, TypeVar, cast

from sweeper.errors import ConfigError

PL = "pytorch_lightning"
L = "lightning.pytorch"
PACKAGES = (PL, L)
# the fabric each package trains with (environments, plugins)
FABRIC = {PL: "lightning_fabric", L: "lightning.fabric"}
_OWNERS = {PL: PL, "lightning_fabric": PL, L: L, "lightning.fabric": L}

_C = TypeVar("_C", bound=type)

# rebased class -> the class it was made from (one entry per rebased class)
_ORIGIN: dict[type, type] = {}


def _owner(module_name: str) -> str | None:
    for prefix, package in _OWNERS.items():
        if module_name == prefix or module_name.startswith(prefix + "."):
            return package
    return None


def package_of(obj: Any) -> str | None:
    """``pytorch_lightning`` or ``lightning.pytorch``: the package whose classes ``obj``
    (a class or an instance) derives from; None for anything else."""
    cls = obj if isinstance(obj, type) else type(obj)
    for klass in cls.__mro__:
        owner = _owner(klass.__module__)
        if owner is not None:
            return owner
    return None


def load(package: str) -> Any:
    """The package's module, or a one-line error saying how to install it."""
    try:
        return importlib.import_module(package)
    except ImportError:
        name = "lightning" if package == L else "pytorch-lightning"
        raise ConfigError(f"{package} is not installed; pip install {name}") from None


def fabric(package: str) -> Any:
    return importlib.import_module(FABRIC[package])


def origin(cls: type) -> type:
    """The class a rebased class was made from (the class itself otherwise)."""
    return _ORIGIN.get(cls, cls)


def class_path(obj: Any) -> str:
    """Dotted name of ``obj``'s class (or of ``obj``, a class), naming the original of a
    rebased class: records and model files name one class whichever package trained it."""
    cls = origin(obj if isinstance(obj, type) else type(obj))
    return f"{cls.__module__}.{cls.__qualname__}"


def counterpart(cls: type, package: str) -> type:
    """The same Lightning class in ``package`` (``pytorch_lightning.Callback`` ->
    ``lightning.pytorch.Callback``)."""
    own = _owner(cls.__module__)
    if own is None or own == package:
        return cls
    source_root = next(p for p, o in _OWNERS.items() if o == own and cls.__module__.startswith(p))
    target_root = FABRIC[package] if source_root in FABRIC.values() else package
    module = importlib.import_module(target_root + cls.__module__[len(source_root):])
    target: Any = module
    for part in cls.__qualname__.split("."):
        target = getattr(target, part)
    return cast(type, target)


def _rebind(value: Any, cell: Any) -> Any:
    """``value`` (a class attribute) with its ``__class__`` cell, the one zero-argument
    ``super()`` reads, replaced by ``cell``."""
    if isinstance(value, (classmethod, staticmethod)):
        return type(value)(_rebind(value.__func__, cell))
    if isinstance(value, property):
        return property(_rebind(value.fget, cell), _rebind(value.fset, cell), _rebind(value.fdel, cell),
                        value.__doc__)
    if not isinstance(value, types.FunctionType) or "__class__" not in value.__code__.co_freevars:
        return value
    assert value.__closure__ is not None  # a function with free variables has cells
    closure = tuple(
        cell if name == "__class__" else old
        for name, old in zip(value.__code__.co_freevars, value.__closure__, strict=True)
    )
    fn = types.FunctionType(value.__code__, value.__globals__, value.__name__, value.__defaults__, closure)
    fn.__kwdefaults__ = value.__kwdefaults__
    fn.__qualname__ = value.__qualname__
    fn.__doc__ = value.__doc__
    fn.__dict__.update(value.__dict__)
    fn.__annotations__ = value.__annotations__
    return fn


def rebase(cls: _C, package: str) -> _C:
    """``cls`` on ``package``: the same class, its Lightning bases swapped for their
    counterparts there. Classes of neither package are returned as they are."""
    return cast(_C, _rebase(cls, package))


@functools.cache
def _rebase(cls: Any, package: str) -> type:
    if package not in PACKAGES:
        raise ValueError(f"package must be one of {', '.join(PACKAGES)}, got {package!r}")
    own = package_of(cls)
    if own is None or own == package:
        return cls
    if _owner(cls.__module__) is not None:
        return counterpart(cls, package)
    load(package)
    bases = tuple(_rebase(base, package) for base in cls.__bases__)
    cell = types.CellType()
    namespace = {
        key: _rebind(value, cell)
        for key, value in vars(cls).items()
        if key not in ("__dict__", "__weakref__")
    }
    if cls.__module__.startswith("sweeper."):
        # found again by name (pickle, DDP) in the module that serves these classes
        namespace["__module__"] = "sweeper.lightning"
        namespace["__qualname__"] = cls.__name__
    new = types.new_class(cls.__name__, bases, exec_body=lambda ns: ns.update(namespace))
    cell.cell_contents = new
    _ORIGIN[new] = origin(cls)
    return new


def adopt(obj: Any, package: str) -> Any:
    """Make ``obj`` (an instance of a plain Python class, such as a callback) an instance
    of its class rebased on ``package``, in place; returns it."""
    cls = rebase(type(obj), package)
    if cls is not type(obj):
        obj.__class__ = cls
    return obj


def _fixed_package(cls: Any) -> str | None:
    """The Lightning package ``cls`` is written against, None when it adapts to either:
    sweeper's classes, and users' classes that reach Lightning through one of sweeper's."""
    if not isinstance(cls, type):
        return None
    for klass in origin(cls).__mro__:
        if klass.__module__.startswith("sweeper."):
            return None
        owner = _owner(klass.__module__)
        if owner is not None:
            return owner
    return None


def choose(model: Any, data: Any) -> str:
    """The package a run of these two classes trains with: that of the user's own classes
    (sweeper's adapt to it), ``pytorch_lightning`` when neither is the user's."""
    own = {}
    for role, cls in (("model", model), ("data", data)):
        package = _fixed_package(cls)
        if package is not None:
            own[role] = package
    if len(set(own.values())) > 1:
        raise ConfigError(
            f"model._target_ derives from {own['model']} but data._target_ from {own['data']}: "
            "write both against one package (import lightning.pytorch as pl, or import pytorch_lightning as pl)"
        )
    return next(iter(own.values()), PL)
