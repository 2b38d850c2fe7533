"""Turning a nested config into flat ``key.sub=value`` pairs for run parameters."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings with dotted keys; lists stay whole values.

    Keys starting with ``_`` (``_target_``, ``_partial_``) are Hydra plumbing and dropped.
    """
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if str(key).startswith("_"):
            continue
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
