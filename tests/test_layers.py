"""The import graph of ``src/sweeper`` is a strict stack: every import, deferred ones
included, points down, and no module imports another that imports it back."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# lowest first; a unit may import only units of lower layers (and its own package)
LAYERS = [
    ["errors"],
    ["paths", "signals", "trust", "lightning_packages", "tracking", "schema", "servers"],
    ["config", "composition", "hparams_search", "data", "models"],
    ["training"],
    ["reports", "lightning"],
    ["serving"],
    ["search"],
    ["best_model"],
    ["cli"],
    ["__main__"],
]
LAYER = {unit: i for i, units in enumerate(LAYERS) for unit in units}


def _module(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Every sweeper module and the sweeper modules it imports, anywhere in its code."""
    modules = {_module(p): p for p in (SRC / "sweeper").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 \
                    and node.module.split(".")[0] == "sweeper":
                for alias in node.names:  # `from sweeper import trust` imports a module
                    sub = f"{node.module}.{alias.name}"
                    found.add(sub if sub in modules else node.module)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.split(".")[0] == "sweeper")
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "sweeper"


def test_every_import_points_down():
    upward = []
    for module, targets in _imports().items():
        unit = _unit(module)
        if unit == "sweeper":
            continue  # the package's own __init__ (its version)
        assert unit in LAYER, f"{module}: place its package in tests/test_layers.py LAYERS"
        for target in targets:
            other = _unit(target)
            if other in ("sweeper", unit):
                continue
            if LAYER[other] >= LAYER[unit]:
                upward.append(f"{module} -> {target}")
    assert not upward, upward


def test_no_module_imports_one_that_imports_it_back():
    graph = _imports()
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        for nxt in graph[node]:
            if nxt == path[0]:
                cycles.append(" -> ".join([*path, nxt]))
            elif nxt not in path and len(path) < 12 and nxt > path[0]:  # each cycle once, from its least module
                visit(nxt, [*path, nxt])

    for start in graph:
        visit(start, [start])
    assert not cycles, cycles
