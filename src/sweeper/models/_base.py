"""What every network in :mod:`sweeper.models` shares.

A :class:`Backbone` remembers the plain arguments it was built with (its *spec*),
so a checkpoint stores only builtin types and :func:`build` rebuilds the same
network without Hydra and without unpickling code objects.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from sweeper import trust
from sweeper.schema import is_int

TARGET = "_target_"


def _builtin(value: Any) -> Any:
    """Turn tuples and config containers into builtin lists and dicts."""
    if isinstance(value, Mapping):
        return {str(k): _builtin(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [_builtin(v) for v in value]
    return value


def is_plain(value: Any) -> bool:
    """True for builtin scalars, lists and str-keyed dicts of them (what ``weights_only`` loads)."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return True
    if isinstance(value, list):
        return all(is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_plain(v) for k, v in value.items())
    return False




def _shape(input_shape: Any) -> tuple[int, ...]:
    if isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Sequence):
        raise ValueError(
            f"input_shape must be a sequence of positive ints (one sample, no batch dimension), "
            f"got {input_shape!r}"
        )
    if not input_shape or not all(is_int(d) and d >= 1 for d in input_shape):
        raise ValueError(
            "input_shape must hold one or more positive ints (one sample, no batch dimension), "
            f"got {tuple(input_shape)!r}"
        )
    return tuple(int(d) for d in input_shape)


class Backbone(nn.Module):
    """A network mapping a batch ``(N, *input_shape)`` to outputs ``(N, num_outputs)``.

    The outputs are class logits for a classifier, predicted targets for a regressor or
    the latent code for an autoencoder's encoder. The base accepts any ``input_shape`` of
    positive ints; each subclass says which layouts it supports.
    """

    input_shape: tuple[int, ...]
    num_outputs: int

    def __init__(self, input_shape: Sequence[int], num_outputs: int) -> None:
        super().__init__()
        self.input_shape = _shape(input_shape)
        if not is_int(num_outputs) or num_outputs < 1:
            raise ValueError(f"num_outputs must be an int >= 1, got {num_outputs!r}")
        self.num_outputs = int(num_outputs)
        self._spec: dict[str, Any] = {}

    def _record(self, **kwargs: Any) -> None:
        cls = type(self)
        self._spec = {
            TARGET: f"{cls.__module__}.{cls.__qualname__}",
            "input_shape": list(self.input_shape),
            "num_outputs": self.num_outputs,
            **_builtin(kwargs),
        }

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError naming both shapes when a batch is not ``(N, *input_shape)``."""
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"{type(self).__name__} was built for samples of shape {self.input_shape}, i.e. "
                f"batches (N, {', '.join(map(str, self.input_shape))}), got a batch of shape "
                f"{tuple(x.shape)}; build it with the data module's input_shape"
            )

    @property
    def spec(self) -> dict[str, Any]:
        """The constructor arguments as builtin types, with ``_target_`` naming the class."""
        return dict(self._spec)


def build(spec: Mapping[str, Any], source: str = "a network spec") -> nn.Module:
    """Build the module a plain-data spec describes: ``{"_target_": "pkg.mod.Class", **kwargs}``.

    Rebuilds a :attr:`Backbone.spec`. A spec may come from a file (a checkpoint, a registered
    model), so its ``_target_`` must be one of sweeper's networks or in a trusted module
    (:mod:`sweeper.trust`); there any class or callable returning an ``nn.Module`` works.
    """
    kwargs = dict(spec)
    if TARGET not in kwargs:
        raise ValueError(
            f"a network spec needs a {TARGET!r} key naming its class, got {sorted(kwargs)}"
        )
    target = kwargs.pop(TARGET)
    factory = trust.resolve(target, "network", source) if isinstance(target, str) else target
    module = factory(**kwargs)
    if not isinstance(module, nn.Module):
        raise TypeError(f"{target!r} built a {type(module).__name__}, not a torch.nn.Module")
    return module


def callable_spec(fn: Callable[..., Any] | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Describe a factory such as ``functools.partial(torch.optim.Adam, lr=1e-3)`` as plain data."""
    if fn is None or isinstance(fn, Mapping):
        return None if fn is None else _builtin(fn)
    if isinstance(fn, functools.partial):
        if fn.args:
            raise ValueError("optimizer/scheduler factories must use keyword arguments only")
        target = fn.func
        return {TARGET: f"{target.__module__}.{target.__qualname__}", **_builtin(fn.keywords)}
    if isinstance(fn, type):
        return {TARGET: f"{fn.__module__}.{fn.__qualname__}"}
    raise TypeError(
        "expected a class or functools.partial (e.g. partial(torch.optim.Adam, lr=1e-3)), "
        f"got {fn!r}"
    )


def callable_from_spec(spec: Mapping[str, Any] | None, role: str = "optimizer",
                       source: str = "a checkpoint") -> Callable[..., Any] | None:
    """Inverse of :func:`callable_spec`: ``role`` (optimizer or scheduler) says what the
    ``_target_`` must be (:mod:`sweeper.trust`)."""
    if not spec:
        return None
    kwargs = dict(spec)
    return functools.partial(trust.resolve(kwargs.pop(TARGET), role, source), **kwargs)
