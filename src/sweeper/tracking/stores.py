"""Facts about a tracking URI that need no MLflow import (the coordinator asks them
before it has loaded anything heavy)."""

from __future__ import annotations

from pathlib import Path


def store_exists(uri: str) -> bool:
    """Whether an MLflow store is there already, so opening it creates no schema: an
    existing SQLite file, or a tracking server."""
    if uri.startswith(("http://", "https://")):
        return True
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):]).is_file()
    return False
