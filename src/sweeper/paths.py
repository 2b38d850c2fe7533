"""Where config groups are found: the shipped ones and the user's own folder."""

from __future__ import annotations

import os
from pathlib import Path

from sweeper.errors import SweeperError

CONFIG_DIR_ENV = "SWEEPER_CONFIG_DIR"
PROJECT_DIR_ENV = "SWEEPER_PROJECT_DIR"  # the folder a command started in, for workers and ranks
DDP_CONFIG_ENV = "SWEEPER_DDP_CONFIG"  # a DDP rank that Lightning started re-runs the command: its config


def conf_dir() -> Path:
    """The ``conf/`` folder: inside the installed package, or at the top of a source checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parents[1] / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise SweeperError(
        f"sweeper's config folder is missing (looked in {here / 'conf'} and "
        f"{here.parents[1] / 'conf'}); reinstall the package"
    )


def project_config_dir(cwd: Path | None = None) -> Path | None:
    """The user's config folder when none is given with ``-cd``/``--config-dir``.

    ``$SWEEPER_CONFIG_DIR`` if set (it must exist), else ``./conf`` when the working
    directory has one (and it is not the shipped folder itself), else None. It is
    searched after the shipped folder, as Hydra does with ``--config-dir``.
    """
    cwd = Path.cwd() if cwd is None else cwd
    env = os.environ.get(CONFIG_DIR_ENV)
    if env:
        path = (cwd / env).resolve()
        if not path.is_dir():
            raise SweeperError(f"{CONFIG_DIR_ENV}={env}: no such folder; create it or unset {CONFIG_DIR_ENV}")
        return path
    local = (cwd / "conf").resolve()
    if local.is_dir() and local != conf_dir().resolve():
        return local
    return None


def project_dir() -> Path:
    """The folder the user's command started in (workers and DDP ranks inherit it)."""
    return Path(os.environ.get(PROJECT_DIR_ENV) or os.getcwd()).resolve()


def make_project_importable() -> None:
    """Put the project folder on ``sys.path`` so ``_target_: mymodule.MyData`` imports,
    as in any Hydra app run from its folder; the variable carries it to child processes."""
    import sys

    folder = str(project_dir())
    os.environ[PROJECT_DIR_ENV] = folder
    if folder not in sys.path:
        sys.path.insert(0, folder)
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if folder not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([folder, *paths])
