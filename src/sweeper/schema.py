"""Settings written once, as a table: each key's kind, bounds, default, example fix and
meaning. The same table gives the checks (every problem at once, one line each, naming
the key and a fix), the list of known keys in the unknown-key message, and the README's
settings reference (:func:`reference`, kept in step by ``tests/test_schema.py``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any


def is_int(value: Any) -> bool:
    """An integer that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """An int or float that is not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _g(x: float) -> str:
    return f"{x:g}"


@dataclass(frozen=True)
class Setting:
    """One key of a config section.

    ``kind``: ``int``, ``number``, ``bool``, ``text`` (a non-empty string), ``choice``
    (one of ``choices``) or ``custom`` (checked by ``valid``, or by its section's own code
    when ``valid`` is None: the table still lists it, its default and its meaning).
    ``null``: null is allowed, and this is what it means; None: null is refused.
    ``wanted`` replaces the phrase the kind and bounds give ("a positive integer").
    """

    key: str
    kind: str
    default: Any
    doc: str
    example: str = ""
    low: float | None = None
    above: bool = False  # value > low (else >= low)
    high: float | None = None
    null: str | None = None
    choices: tuple[Any, ...] = ()
    unit: str = ""  # "seconds": "a number of seconds > 0"
    wanted: str | None = None
    valid: Callable[[Any], bool] | None = None
    only: tuple[str, ...] = ()  # the variants (e.g. launchers) that have this key; empty: all
    shown: str | None = None  # the default as the README says it, when the value alone does not tell

    def phrase(self) -> str:
        """What a valid value is, as in "must be <phrase>"."""
        if self.wanted is not None:
            text = self.wanted
        elif self.kind == "bool":
            text = "true or false"
        elif self.kind == "text":
            text = "a non-empty string"
        elif self.kind == "choice":
            text = "one of " + ", ".join(str(c) for c in self.choices)
        elif self.kind in ("int", "number"):
            noun = "an integer" if self.kind == "int" else f"a number{' of ' + self.unit if self.unit else ''}"
            if self.low is not None and self.high is not None:
                text = f"{noun} between {_g(self.low)} and {_g(self.high)}"
            elif self.low is not None:
                text = f"{noun} {'>' if self.above else '>='} {_g(self.low)}"
            else:
                text = noun
        else:
            text = "a valid value"
        return text + (" or null" if self.null is not None else "")

    def ok(self, value: Any) -> bool:
        if value is None:
            return self.null is not None
        if self.valid is not None:
            return self.valid(value)
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "text":
            return isinstance(value, str) and bool(value.strip())
        if self.kind == "choice":
            return value in self.choices
        if self.kind in ("int", "number"):
            if not (is_int(value) if self.kind == "int" else is_number(value)):
                return False
            if self.low is not None and (value <= self.low if self.above else value < self.low):
                return False
            return self.high is None or value <= self.high
        return True

    def problem(self, prefix: str, value: Any) -> str:
        fix = f"; e.g. {self.example}" if self.example else ""
        return f"{prefix}{self.key} must be {self.phrase()}, got {value!r}{fix}"


class Table:
    """The settings of one config section (``search.``, ``search.launcher.``, the train
    config's keys), in the order the README lists them."""

    def __init__(self, prefix: str, settings: Sequence[Setting]) -> None:
        self.prefix = prefix
        self.settings = {s.key: s for s in settings}

    def __getitem__(self, key: str) -> Setting:
        return self.settings[key]

    def keys(self, variant: str | None = None) -> list[str]:
        """The top-level keys of the section (of one variant, e.g. a launcher's)."""
        found: list[str] = []
        for s in self.settings.values():
            top = s.key.split(".")[0]
            if (variant is None or not s.only or variant in s.only) and top not in found:
                found.append(top)
        return found

    def unknown(self, raw: Mapping[str, Any], problems: list[str], variant: str | None = None,
                message: Callable[[str, list[str]], str] | None = None) -> None:
        """One problem per key of ``raw`` that the table does not know."""
        known = self.keys(variant)
        for key in sorted(set(raw) - set(known)):
            problems.append(message(key, known) if message else
                            f"{self.prefix}{key}: unknown key; known keys are {', '.join(sorted(known))}")

    def value(self, raw: Mapping[str, Any], key: str, problems: list[str]) -> Any:
        """``raw``'s value of ``key`` (its default when absent), checked; on a problem
        the default, with the problem appended."""
        setting = self.settings[key]
        node: Any = raw
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return setting.default
            node = node[part]
        if not setting.ok(node):
            problems.append(setting.problem(self.prefix, node))
            return setting.default
        return node

    def values(self, raw: Mapping[str, Any], problems: list[str], keys: Iterable[str] | None = None,
               variant: str | None = None) -> dict[str, Any]:
        """Every checkable key's value (``kind`` other than ``custom`` without ``valid``)."""
        chosen = keys if keys is not None else [
            k for k, s in self.settings.items()
            if (s.kind != "custom" or s.valid is not None) and (variant is None or not s.only or variant in s.only)]
        return {k: self.value(raw, k, problems) for k in chosen}

    def reference(self, variant: str | None = None) -> str:
        """The section as a Markdown table: key, default, valid values, meaning."""
        rows = [f"| `{self.prefix}*` | default | value | meaning |", "|---|---|---|---|"]
        for s in self.settings.values():
            if variant is not None and s.only and variant not in s.only:
                continue
            default = s.shown or "`" + ("null" if s.default is None else str(s.default).lower()
                                        if isinstance(s.default, bool) else str(s.default)) + "`"
            meaning = s.doc + (f"; null: {s.null}" if s.null and s.null != "-" else "")
            rows.append(f"| `{s.key}` | {default} | {s.phrase()} | {meaning} |")
        return "\n".join(rows)
