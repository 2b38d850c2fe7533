"""Search spaces: ``search.params`` in YAML, turned into Optuna suggestions.

Two syntaxes are accepted for each entry:

* ours, a mapping::

    optimizer.lr: {type: float, low: 1.0e-4, high: 0.1, log: true}
    data.batch_size: {type: categorical, choices: [16, 32, 64, 128]}
    model.num_layers: {type: int, low: 1, high: 3}
    model: [mlp, cnn, rnn]                        # a list is a categorical
    model.cell: {choices: [lstm, gru], when: {model: rnn}}   # conditional

* the Hydra Optuna sweeper's strings (so a lightning-hydra-template ``params`` block
  runs unchanged, with the plugin's distributions): ``interval(1e-4, 0.1)``,
  ``tag(log, interval(1e-4, 0.1))``, ``choice(32, 64, 128)``, ``32,64,128``,
  ``range(1, 5)`` (an int range 1..5, its end included, as the plugin reads it),
  ``shuffle(...)`` (a categorical, in the declared order).

A key that names a config group (``model``, ``optimizer`` …) picks a group option;
any other key is a dotted config key whose value is replaced.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from sweeper.errors import ConfigError

GROUPS = ("model", "data", "optimizer", "scheduler", "trainer")
_SCALARS = (bool, int, float, str, type(None))


@dataclass(frozen=True)
class Param:
    """One searched key."""

    key: str
    kind: str  # float | int | categorical
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    encoded: bool = False  # choices are lists/mappings, stored in Optuna as JSON text

    @property
    def is_group(self) -> bool:
        return self.key in GROUPS

    def bounds(self) -> tuple[float, float]:
        """``(low, high)`` of a range (kind float or int)."""
        assert self.low is not None and self.high is not None, f"{self.key} is not a range"
        return self.low, self.high

    def active(self, values: Mapping[str, Any]) -> bool:
        return all(values.get(k) in allowed for k, allowed in self.when)

    def distribution(self) -> Any:
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        if self.kind == "float":
            return FloatDistribution(*self.bounds(), log=self.log, step=self.step)
        if self.kind == "int":
            low, high = self.bounds()
            return IntDistribution(int(low), int(high), log=self.log, step=int(self.step or 1))
        return CategoricalDistribution(self.optuna_choices())

    def optuna_choices(self) -> list[Any]:
        if self.encoded:
            return [json.dumps(c) for c in self.choices]
        return list(self.choices)

    def decode(self, value: Any) -> Any:
        """The config value for what Optuna stored."""
        return json.loads(value) if self.encoded else value

    def encode(self, value: Any, where: str) -> Any:
        """What Optuna stores for the config value ``value``; ConfigError when the space
        cannot hold it (``where`` names the entry in the message)."""
        if self.kind == "categorical":
            if value not in self.choices:
                raise ConfigError(f"{where}: {self.key}={value!r} is not one of its choices "
                                  f"{list(self.choices)}")
            return json.dumps(value) if self.encoded else value
        if not _number(value) or (self.kind == "int" and not isinstance(value, int)):
            raise ConfigError(f"{where}: {self.key} must be {'an integer' if self.kind == 'int' else 'a number'}, "
                              f"got {value!r}")
        low, high = self.bounds()
        if not low <= value <= high:
            raise ConfigError(f"{where}: {self.key}={value!r} is outside its range "
                              f"[{self.low}, {self.high}]")
        return value

    def grid(self) -> list[Any]:
        if self.kind == "categorical":
            return self.optuna_choices()
        low, high = self.bounds()
        if self.kind == "int":
            return list(range(int(low), int(high) + 1, int(self.step or 1)))
        if self.step is None:
            raise ConfigError(
                f"search.params.{self.key}: the grid sampler needs a finite set; give choices "
                "or a step"
            )
        count = round((high - low) / self.step)
        return [low + i * self.step for i in range(count + 1)]

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.kind}
        if self.kind == "categorical":
            out["choices"] = list(self.choices)
        else:
            out.update(low=self.low, high=self.high, log=self.log)
            if self.step is not None:
                out["step"] = self.step
        if self.when:
            out["when"] = {k: list(v) for k, v in self.when}
        return out


@dataclass(frozen=True)
class SearchSpace:
    params: tuple[Param, ...] = field(default_factory=tuple)

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Ask ``trial`` for a value of every active parameter, in declaration order.

        Returns the config values (decoded), keyed by config key.
        """
        values: dict[str, Any] = {}
        for p in self.params:
            if not p.active(values):
                continue
            if p.kind == "float":
                raw = trial.suggest_float(p.key, p.low, p.high, log=p.log, step=p.step)
            elif p.kind == "int":
                raw = trial.suggest_int(p.key, p.low, p.high, log=p.log, step=p.step or 1)
            else:
                raw = trial.suggest_categorical(p.key, p.optuna_choices())
            values[p.key] = p.decode(raw)
        return values

    def decode(self, optuna_params: Mapping[str, Any]) -> dict[str, Any]:
        by_key = {p.key: p for p in self.params}
        return {k: by_key[k].decode(v) if k in by_key else v for k, v in optuna_params.items()}

    def encode(self, values: Mapping[str, Any], where: str) -> dict[str, Any]:
        """Optuna's parameters for config values (a warm-start point); every key must be
        searched and every value inside the space."""
        by_key = {p.key: p for p in self.params}
        unknown = sorted(set(values) - set(by_key))
        if unknown:
            raise ConfigError(f"{where}: {', '.join(unknown)} not in search.params "
                              f"(searched keys: {', '.join(by_key)})")
        return {k: by_key[k].encode(v, where) for k, v in values.items()}

    def grid(self) -> dict[str, list[Any]]:
        for p in self.params:
            if p.when:
                raise ConfigError(
                    f"search.params.{p.key}: the grid sampler cannot search conditional "
                    "parameters; drop 'when' or use another sampler"
                )
        return {p.key: p.grid() for p in self.params}

    def signature(self) -> str:
        """A stable text form, stored with the study to refuse a changed space on resume."""
        return json.dumps({p.key: p.describe() for p in self.params}, sort_keys=True)

    @property
    def group_params(self) -> list[Param]:
        return [p for p in self.params if p.is_group]

    def to_data(self) -> list[dict[str, Any]]:
        """The parsed space as JSON-ready data: what the coordinator hands its workers, so
        that every process searches exactly the space it parsed."""
        return [{"key": p.key, "kind": p.kind, "low": p.low, "high": p.high, "step": p.step, "log": p.log,
                 "choices": list(p.choices), "when": [[k, list(v)] for k, v in p.when], "encoded": p.encoded}
                for p in self.params]

    @classmethod
    def from_data(cls, data: list[dict[str, Any]]) -> SearchSpace:
        return cls(tuple(
            Param(key=d["key"], kind=d["kind"], low=d["low"], high=d["high"], step=d["step"], log=d["log"],
                  choices=tuple(d["choices"]), when=tuple((k, tuple(v)) for k, v in d["when"]),
                  encoded=d["encoded"])
            for d in data
        ))


def split_overrides(values: Mapping[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """Group choices as Hydra overrides (``model=cnn``), other keys as ``{key: value}``."""
    groups = [f"{k}={v}" for k, v in values.items() if k in GROUPS]
    keys = {k: v for k, v in values.items() if k not in GROUPS}
    return groups, keys


# ----------------------------------------------------------------------------- parsing


def _number(v: Any) -> TypeGuard[float]:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _from_hos(key: str, text: str) -> dict[str, Any]:
    """Translate a Hydra Optuna sweeper string to our mapping form."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
    from hydra.errors import HydraException

    try:
        override = OverridesParser.create().parse_override(f"{key}={text}")
    except HydraException as exc:
        raise ConfigError(
            f"search.params.{key}: cannot parse {text!r} ({str(exc).splitlines()[0]}); write "
            "interval(low, high), tag(log, interval(low, high)), choice(a, b) or range(a, b)"
        ) from None
    value = override.value()
    if isinstance(value, (ChoiceSweep, RangeSweep)) and value.shuffle:
        # Every process and every resume must see one order (it is part of the study's
        # space); a categorical's order means nothing to a sampler, so take the declared one.
        value.shuffle = False
        return {"type": "categorical", "choices": list(override.sweep_iterator())}
    if isinstance(value, ChoiceSweep):
        return {"type": "categorical", "choices": list(override.sweep_iterator())}
    if isinstance(value, RangeSweep):
        # as the Hydra Optuna sweeper reads it: an ordered range whose end is included
        start, stop, step = value.start, value.stop, value.step
        if start is None or stop is None:
            raise ConfigError(f"search.params.{key}: {text!r} needs a start and a stop, e.g. range(1, 4)")
        if any(isinstance(v, float) for v in (start, stop, step)):
            return {"type": "float", "low": float(start), "high": float(stop), "step": float(step)}
        return {"type": "int", "low": int(start), "high": int(stop), "step": int(step)}
    if isinstance(value, IntervalSweep):
        start, end = value.start, value.end
        log = "log" in value.tags
        kind = "int" if isinstance(start, int) and isinstance(end, int) else "float"
        return {"type": kind, "low": start, "high": end, "log": log}
    raise ConfigError(
        f"search.params.{key}: {text!r} is a single value, not a search space; write "
        "choice(...), interval(...), range(...) or a list"
    )


_ALLOWED = {"type", "low", "high", "step", "log", "choices", "when"}


def _parse_one(key: str, spec: Any, earlier: set[str]) -> Param:
    where = f"search.params.{key}"
    if isinstance(spec, str):
        spec = _from_hos(key, spec)
    elif isinstance(spec, (list, tuple)):
        spec = {"type": "categorical", "choices": list(spec)}
    if not isinstance(spec, Mapping):
        raise ConfigError(f"{where}: expected a mapping, a list or an interval(...)/choice(...) string, got {spec!r}")
    unknown = set(spec) - _ALLOWED
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}; "
                          f"allowed: {', '.join(sorted(_ALLOWED))}")
    kind = spec.get("type") or (
        "categorical" if "choices" in spec
        else "int" if isinstance(spec.get("low"), int) and isinstance(spec.get("high"), int)
        else "float"
    )  # fmt: skip
    when_raw = spec.get("when") or {}
    if not isinstance(when_raw, Mapping):
        raise ConfigError(f"{where}.when must map earlier parameters to values, e.g. {{model: rnn}}")
    when = []
    for cond_key, allowed in when_raw.items():
        if cond_key not in earlier:
            raise ConfigError(
                f"{where}.when: '{cond_key}' is not a parameter declared before '{key}'; "
                "conditions refer to earlier entries of search.params"
            )
        allowed = tuple(allowed) if isinstance(allowed, (list, tuple)) else (allowed,)
        when.append((str(cond_key), allowed))
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, (list, tuple)) or len(choices) == 0:
            raise ConfigError(f"{where}: choices must be a non-empty list, got {choices!r}")
        encoded = not all(isinstance(c, _SCALARS) for c in choices)
        if key in GROUPS and not all(isinstance(c, str) for c in choices):
            raise ConfigError(f"{where}: a config group takes option names, got {list(choices)!r}")
        if len({json.dumps(c, sort_keys=True) for c in choices}) != len(choices):
            raise ConfigError(f"{where}: choices repeat a value: {list(choices)!r}")
        return Param(key, "categorical", choices=tuple(choices), when=tuple(when), encoded=encoded)
    if kind not in ("float", "int"):
        raise ConfigError(f"{where}: type must be float, int or categorical, got {kind!r}")
    low, high, step, log = spec.get("low"), spec.get("high"), spec.get("step"), spec.get("log", False)
    if not _number(low) or not _number(high):
        raise ConfigError(f"{where}: low and high must be numbers, got low={low!r} high={high!r}")
    if low > high:
        raise ConfigError(f"{where}: low ({low}) is greater than high ({high}); swap them")
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: log must be true or false, got {log!r}")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log scale needs low > 0, got low={low}; raise low or set log: false")
    if step is not None and (not _number(step) or step <= 0):
        raise ConfigError(f"{where}: step must be a positive number, got {step!r}")
    if log and step is not None and kind == "float":
        raise ConfigError(f"{where}: a float range takes log or step, not both")
    if kind == "int":
        if not all(isinstance(v, int) for v in (low, high)) or (step is not None and not isinstance(step, int)):
            raise ConfigError(f"{where}: an int range needs integer low, high and step")
        return Param(key, "int", low=low, high=high, step=step, log=log, when=tuple(when))
    return Param(key, "float", low=float(low), high=float(high),
                 step=float(step) if step is not None else None, log=log, when=tuple(when))


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Accept nested namespaces as well as dotted keys.

    ``{optimizer: {lr: {low: …}}}`` (what ``search.params.optimizer.lr=…`` on the command
    line creates) and ``{"optimizer.lr": {low: …}}`` mean the same; a mapping is a
    parameter when it has a field such as ``low`` or ``choices``, a namespace otherwise.
    A later entry for the same key replaces an earlier one.
    """
    flat: dict[str, Any] = {}
    for key, spec in params.items():
        name = f"{prefix}{key}"
        if isinstance(spec, Mapping) and spec and not (set(spec) & _ALLOWED):
            flat.update(flatten_params(spec, f"{name}."))
        else:
            flat[name] = spec
    return flat


def parse_space(params: Mapping[str, Any]) -> SearchSpace:
    """Build a :class:`SearchSpace` from ``search.params``; a bad entry raises ConfigError."""
    params = flatten_params(params)
    if not params:
        raise ConfigError("search.params is empty; give at least one key to search")
    parsed: list[Param] = []
    earlier: set[str] = set()
    for key, spec in params.items():
        parsed.append(_parse_one(str(key), spec, earlier))
        earlier.add(str(key))
    return SearchSpace(tuple(parsed))
