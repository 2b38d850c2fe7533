"""Running an ``hparams_search`` file written for the Hydra Optuna sweeper plugin.

lightning-hydra-template users start a search with ``python train.py -m
hparams_search=mnist_optuna``: a ``@package _global_`` file that selects the plugin
(``override /hydra/sweeper: optuna``) and describes the study under ``hydra.sweeper``.
``sweeper sweep hparams_search=NAME`` runs the same file: :func:`translate` turns it into
sweeper's own overrides, each with the same meaning, and refuses in one line what has no
equivalent. The translation is printed, so it can be written down as sweeper's config.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sweeper.errors import ConfigError

_ARG = re.compile(r"^\+{0,2}hparams_search=(.+)$")
_BARE = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]*")
PLUGIN_TARGET = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
# hydra.sweeper.<key> -> search.<key>, the same meaning
_SAME = {"direction": "direction", "storage": "storage", "study_name": "study_name", "n_trials": "n_trials",
         "n_jobs": "workers", "max_failure_rate": "max_failure_rate"}


def value(v: Any) -> str:
    """``v`` in Hydra's override grammar (strings quoted, so ``interval(...)`` stays a string)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        if _BARE.fullmatch(v) and v.lower() not in ("true", "false", "null", "none", "inf", "nan"):
            return v
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ",".join(value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}:{value(x)}" for k, x in v.items()) + "}"
    raise ConfigError(f"cannot write {v!r} as a Hydra override value")


def _leaves(node: Any, prefix: str) -> list[tuple[str, Any]]:
    if isinstance(node, dict) and node:
        out: list[tuple[str, Any]] = []
        for key, item in node.items():
            out += _leaves(item, f"{prefix}.{key}" if prefix else str(key))
        return out
    return [(prefix, node)]


def _sampler_options() -> dict[str, str]:
    """Optuna sampler class -> sweeper's ``search/sampler`` option that builds it."""
    import yaml

    from sweeper.paths import conf_dir

    options: dict[str, str] = {}
    for path in sorted((conf_dir() / "search" / "sampler").glob("*.yaml")):
        target = (yaml.safe_load(path.read_text()) or {}).get("_target_")
        if isinstance(target, str):
            options.setdefault(target, path.stem)
    return options


def _sampler(node: Any, where: str) -> list[str]:
    if not isinstance(node, dict) or not isinstance(node.get("_target_"), str):
        raise ConfigError(f"{where}: give the sampler as a mapping with its _target_, e.g. "
                          "_target_: optuna.samplers.TPESampler")
    target = node["_target_"]
    option = _sampler_options().get(target)
    if option is None:
        raise ConfigError(f"{where}._target_: {target} has no sampler config in sweeper; add "
                          f"conf/search/sampler/<name>.yaml with _target_: {target} and its arguments, "
                          "then give search/sampler=<name>")
    out = [f"search/sampler={option}"]
    for key, item in node.items():
        if key == "seed":
            out.append(f"search.seed={value(item)}")  # what seeds sweeper's sampler
        elif key != "_target_":
            out.append(f"++search.sampler.{key}={value(item)}")
    return out


def _defaults(items: Any, source: str) -> list[str]:
    out = []
    for item in items or []:
        if item == "_self_":
            continue
        entry = next(iter(item.items())) if isinstance(item, dict) and len(item) == 1 else None
        if entry is None:
            raise ConfigError(f"{source}: defaults entry {item!r}: write it as GROUP=OPTION on the command line")
        key, option = str(entry[0]), entry[1]
        group = key.removeprefix("override").strip().lstrip("/")
        if group == "hydra/sweeper":
            continue  # sweeper runs the study itself
        if group.startswith("hydra/") or "@" in group or not isinstance(option, str):
            raise ConfigError(f"{source}: defaults entry {item!r} has no sweeper equivalent; drop it, or give "
                              "the group's option on the command line")
        out.append(f"{group}={option}" if key.startswith("override") else f"+{group}={option}")
    return out


def _sweeper(node: dict[str, Any], source: str) -> list[str]:
    out: list[str] = []
    for key, item in node.items():
        where = f"{source}: hydra.sweeper.{key}"
        if key == "_target_":
            if item != PLUGIN_TARGET:
                raise ConfigError(f"{where}: {item} is not the Optuna sweeper plugin; sweeper reads only its files")
        elif key == "sampler":
            out += _sampler(item, where)
        elif key in ("params", "search_space"):
            if not isinstance(item, dict):
                raise ConfigError(f"{where}: give a mapping of config key to its range, e.g. "
                                  "optimizer.lr: interval(0.0001, 0.1)")
            out.append("search/params=none")  # the file's space, not the default one
            out += [f"++search.params.{k}={value(v)}" for k, v in item.items()]
        elif key in _SAME:
            if item is not None:
                out.append(f"search.{_SAME[key]}={value(item)}")
        else:
            raise ConfigError(
                f"{where} has no sweeper equivalent"
                + ("; write the space as search.params entries" if key == "custom_search_space" else "")
                + " (README 'Coming from lightning-hydra-template')"
            )
    return out


def translate_file(path: Path) -> list[str]:
    """sweeper's overrides for the ``hparams_search`` file ``path``."""
    import yaml

    source = str(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
        raise ConfigError(f"{at}: YAML syntax error: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: an hparams_search file is a mapping of config keys")
    out = _defaults(data.pop("defaults", None), source)
    if "optimized_metric" in data:
        out.append(f"search.metric={value(data.pop('optimized_metric'))}")
    hydra = data.pop("hydra", None) or {}
    for key, item in hydra.items():
        if key == "sweeper":
            out += _sweeper(item or {}, source)
        elif key != "mode":  # MULTIRUN: `sweeper sweep` runs the study itself
            out += [f"hydra.{k}={value(v)}" for k, v in _leaves(item, key)]
    out += [f"++{key}={value(item)}" for key, item in _leaves(data, "") if key]
    return out


def _key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0].replace("/", ".")


def translate(argv: Sequence[str], config_dir: Path | None) -> tuple[list[str], str | None]:
    """``argv`` with an ``hparams_search=NAME`` argument replaced by the file's overrides
    (overrides given on the command line win), and the line that says so; ``argv``
    unchanged and None without one."""
    found = [(i, m.group(1)) for i, a in enumerate(argv) if (m := _ARG.match(a))]
    if not found:
        return list(argv), None
    (index, name), *more = found
    if more:
        raise ConfigError("hparams_search: give one file")
    path = (config_dir / "hparams_search" / f"{name}.yaml") if config_dir is not None else None
    if path is None or not path.is_file():
        where = config_dir / "hparams_search" if config_dir is not None else "./conf/hparams_search"
        raise ConfigError(f"hparams_search={name}: no {name}.yaml in {where}; give the file's name without "
                          ".yaml, or the config folder with -cd")
    rest = [a for i, a in enumerate(argv) if i != index]
    given = {_key(a) for a in rest if "=" in a}
    translated = [o for o in translate_file(path) if _key(o) not in given]
    note = (f"hparams_search={name} (a Hydra Optuna sweeper file) runs as: "
            + " ".join(shlex.quote(o) for o in translated))
    return [*translated, *rest], note
