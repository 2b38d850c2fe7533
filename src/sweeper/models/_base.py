"""What every network in :mod:`sweeper.models` shares.

A :class:`Backbone` remembers the plain arguments it was built with (its *spec*),
so a checkpoint stores only builtin types and :func:`build` rebuilds the same
network without Hydra and without unpickling code objects.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import nn

TARGET = "_target_"


def import_object(path: str) -> Any:
    """Import ``package.module.Name`` and return ``Name``."""
    module_name, _, attr = path.rpartition(".")
    if not module_name:
        raise ImportError(f"{path!r} is not a dotted path like 'package.module.Name'")
    return getattr(importlib.import_module(module_name), attr)


def _plain(value: Any) -> Any:
    """Turn tuples and config containers into builtin lists and dicts."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [_plain(v) for v in value]
    return value


class Backbone(nn.Module):
    """A network mapping images ``(N, C, H, W)`` to class logits ``(N, num_classes)``."""

    input_shape: tuple[int, int, int]
    num_classes: int

    def __init__(self, input_shape: Sequence[int], num_classes: int) -> None:
        super().__init__()
        if len(input_shape) != 3 or any(int(d) < 1 for d in input_shape):
            raise ValueError(f"input_shape must be (channels, height, width), got {input_shape!r}")
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes!r}")
        self.input_shape = tuple(int(d) for d in input_shape)  # type: ignore[assignment]
        self.num_classes = int(num_classes)
        self._spec: dict[str, Any] = {}

    def _record(self, **kwargs: Any) -> None:
        cls = type(self)
        self._spec = {
            TARGET: f"{cls.__module__}.{cls.__qualname__}",
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            **_plain(kwargs),
        }

    @property
    def spec(self) -> dict[str, Any]:
        """The constructor arguments as builtin types, with ``_target_`` naming the class."""
        return dict(self._spec)


def build(spec: Mapping[str, Any]) -> Backbone:
    """Rebuild a network from :attr:`Backbone.spec`."""
    kwargs = dict(spec)
    cls = import_object(kwargs.pop(TARGET))
    return cls(**kwargs)


def callable_spec(fn: Callable[..., Any] | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Describe a factory such as ``functools.partial(torch.optim.Adam, lr=1e-3)`` as plain data."""
    if fn is None or isinstance(fn, Mapping):
        return None if fn is None else _plain(fn)
    if isinstance(fn, functools.partial):
        if fn.args:
            raise ValueError("optimizer/scheduler factories must use keyword arguments only")
        target = fn.func
        return {TARGET: f"{target.__module__}.{target.__qualname__}", **_plain(fn.keywords)}
    if isinstance(fn, type):
        return {TARGET: f"{fn.__module__}.{fn.__qualname__}"}
    raise TypeError(
        "expected a class or functools.partial (e.g. partial(torch.optim.Adam, lr=1e-3)), "
        f"got {fn!r}"
    )


def callable_from_spec(spec: Mapping[str, Any] | None) -> Callable[..., Any] | None:
    """Inverse of :func:`callable_spec`."""
    if not spec:
        return None
    kwargs = dict(spec)
    return functools.partial(import_object(kwargs.pop(TARGET)), **kwargs)
