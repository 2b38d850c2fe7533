"""Where the shipped config groups are found."""

from __future__ import annotations

from pathlib import Path

from sweeper.errors import SweeperError


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
