"""The settings tables (sweeper.schema) are the one description of the keys: the
shipped YAML defaults and the README's reference are kept in step with them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sweeper.schema import Setting, Table
from sweeper.search.settings import LAUNCHER, SEARCH

ROOT = Path(__file__).resolve().parents[1]


def _leaves(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value and key not in ("additional_parameters",):
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_the_sweep_yaml_has_the_tables_keys_and_defaults():
    shipped = _leaves(yaml.safe_load((ROOT / "conf" / "sweep.yaml").read_text())["search"])
    groups = {"sampler", "pruner", "params", "launcher"}  # config groups, chosen in the defaults list
    assert set(shipped) == set(SEARCH.settings) - groups
    assert shipped == {k: SEARCH[k].default for k in shipped}


@pytest.mark.parametrize("launcher", ["local", "slurm", "kubernetes"])
def test_each_launcher_yaml_has_the_tables_keys_and_defaults(launcher):
    shipped = yaml.safe_load((ROOT / "conf" / "search" / "launcher" / f"{launcher}.yaml").read_text())
    assert set(shipped) == set(LAUNCHER.keys(launcher))
    for key, value in shipped.items():
        if key != "name" and LAUNCHER[key].kind != "custom":
            assert value == LAUNCHER[key].default, key


@pytest.mark.parametrize(("table", "variant", "marker"), [
    (SEARCH, None, "search"), (LAUNCHER, "slurm", "search.launcher (slurm)"),
])
def test_the_readme_reference_is_the_table(table, variant, marker):
    readme = (ROOT / "README.md").read_text()
    begin, end = f"<!-- settings: {marker} -->\n", f"\n<!-- end settings: {marker} -->"
    assert begin in readme and end in readme, f"README lacks the {marker} reference"
    written = readme.split(begin, 1)[1].split(end, 1)[0]
    assert written == table.reference(variant), (
        f"README's {marker} reference is out of step; print it with python -c \"from sweeper.search.settings "
        f"import SEARCH, LAUNCHER; print({'SEARCH' if table is SEARCH else 'LAUNCHER'}.reference("
        f"{variant!r}))\" and paste it between the markers")


def test_problems_name_the_key_the_rule_and_an_example_all_at_once():
    table = Table("demo.", [
        Setting("n", "int", 1, "count", low=1, example="demo.n=2"),
        Setting("rate", "number", 0.5, "share", low=0, high=1),
        Setting("wait", "bool", True, "wait"),
        Setting("name", "choice", "a", "name", choices=("a", "b"), null="the first"),
        Setting("t", "number", None, "time", unit="seconds", low=0, above=True, null="no limit"),
    ])
    problems: list[str] = []
    values = table.values({"n": 0, "rate": True, "wait": "yes", "name": "c", "t": 0}, problems)
    assert problems == [
        "demo.n must be an integer >= 1, got 0; e.g. demo.n=2",
        "demo.rate must be a number between 0 and 1, got True",
        "demo.wait must be true or false, got 'yes'",
        "demo.name must be one of a, b or null, got 'c'",
        "demo.t must be a number of seconds > 0 or null, got 0",
    ]
    assert values == {"n": 1, "rate": 0.5, "wait": True, "name": "a", "t": None}  # the defaults
    problems = []
    assert table.values({"n": 3, "name": None}, problems) == {"n": 3, "rate": 0.5, "wait": True, "name": None,
                                                              "t": None}
    table.unknown({"n": 1, "m": 2}, problems)
    assert problems == ["demo.m: unknown key; known keys are n, name, rate, t, wait"]
