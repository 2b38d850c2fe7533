"""Composing configs the same way in every process of a command.

The command line composes with Hydra's search path: the shipped ``conf/``, the user's
folder (``-cd``/``--config-dir``, ``$SWEEPER_CONFIG_DIR`` or ``./conf``) and any
``hydra.searchpath`` entries. A sweep records that search path, in order and with
absolute paths, and its workers compose from exactly the same sources.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import Any

SEARCHPATH_OVERRIDE = "hydra.searchpath="


def current_sources() -> list[dict[str, str]]:
    """The search path of the running Hydra job, paths made absolute."""
    from hydra.core.hydra_config import HydraConfig

    sources = []
    for source in HydraConfig.get().runtime.config_sources:
        path = source.path
        if source.schema == "file" and path:
            path = os.path.abspath(path)
        sources.append({"provider": source.provider, "path": path, "schema": source.schema})
    return sources


def user_dirs(sources: Sequence[dict[str, str]]) -> list[str]:
    """The file folders of a search path other than the shipped one, in search order."""
    from sweeper.paths import conf_dir

    shipped = str(conf_dir().resolve())
    return [s["path"] for s in sources if s["schema"] == "file" and s["path"] != shipped]


def check_shadowing(sources: Sequence[dict[str, str]]) -> None:
    """Refuse a user config file that a shipped one of the same name hides.

    Hydra searches the shipped folder first, so ``conf/model/mlp.yaml`` in a user's
    folder would be silently ignored in favour of the shipped ``model=mlp``.
    """
    from pathlib import Path

    from sweeper.errors import ConfigError
    from sweeper.paths import conf_dir

    shipped = conf_dir()
    for folder in user_dirs(sources):
        root = Path(folder)
        for path in sorted(root.rglob("*.yaml")):
            rel = path.relative_to(root)
            if rel.parts[0] != "hydra" and (shipped / rel).is_file():
                name = rel.with_suffix("").as_posix()
                group, _, option = name.rpartition("/")
                what = f"{group}={option}" if group else f"the config '{option}'"
                raise ConfigError(
                    f"{path}: has the name of sweeper's own {what}, which is found first, so this "
                    f"file would be ignored; rename it (e.g. {rel.parent / ('my_' + rel.name)})"
                )


def without_searchpath(overrides: Sequence[str]) -> list[str]:
    """Overrides minus ``hydra.searchpath=…``, which a recorded search path already holds."""
    return [o for o in overrides if not o.lstrip("+~").startswith(SEARCHPATH_OVERRIDE)]


@contextlib.contextmanager
def config_context(sources: Sequence[dict[str, str]], job_name: str = "sweeper") -> Iterator[None]:
    """Initialise Hydra's compose API with exactly ``sources`` as the search path."""
    from hydra import version
    from hydra._internal.config_search_path_impl import ConfigSearchPathImpl
    from hydra._internal.hydra import Hydra
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.plugins import Plugins

    Plugins.instance()  # registers the config source types (file://, pkg://, structured://)
    search_path = ConfigSearchPathImpl()
    for source in sources:
        search_path.append(source["provider"], f"{source['schema']}://{source['path']}")
    backup = GlobalHydra.instance().hydra
    version.setbase("1.3")
    GlobalHydra.instance().clear()
    Hydra.create_main_hydra2(task_name=job_name, config_search_path=search_path)
    try:
        yield
    finally:
        GlobalHydra.instance().clear()
        if backup is not None:
            GlobalHydra.instance().initialize(backup)


def group_options(group: str) -> list[str]:
    """The options of a config group on the current search path (Hydra initialised)."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.object_type import ObjectType

    loader = GlobalHydra.instance().config_loader()
    return sorted(loader.get_group_options(group, results_filter=ObjectType.CONFIG))


def compose(config_name: str, overrides: Sequence[str]) -> Any:
    """Compose ``config_name`` with ``overrides`` (Hydra initialised by the caller)."""
    from hydra import compose as hydra_compose

    return hydra_compose(config_name=config_name, overrides=list(overrides))
