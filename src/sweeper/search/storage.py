"""Opening the study's storage: the embedded journal file or any Optuna storage URL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sweeper.errors import ConfigError
from sweeper.search.settings import mask_url

JOURNAL_PREFIX = "journal:///"


def default_storage(study_dir: Path) -> str:
    return f"{JOURNAL_PREFIX}{(study_dir / 'optuna.journal').resolve()}"


def open_storage(url: str) -> Any:
    """An Optuna storage for ``url``.

    ``journal:///abs/path`` (or a path ending in ``.journal``) is Optuna's journal file,
    safe for several processes on one machine; ``sqlite:///``, ``postgresql://``,
    ``mysql://`` … are SQLAlchemy URLs for :class:`optuna.storages.RDBStorage`, which
    several machines can share. An unreachable server raises :class:`ConfigError`.
    """
    import optuna

    if url.startswith(JOURNAL_PREFIX) or url.endswith(".journal"):
        path = Path(url[len(JOURNAL_PREFIX) - 1 :] if url.startswith(JOURNAL_PREFIX) else url)
        if not path.parent.is_dir():
            raise ConfigError(f"search.storage: folder {path.parent} does not exist; create it or fix the path")
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        backend = JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path)))
        return optuna.storages.JournalStorage(backend)
    if "://" not in url:
        raise ConfigError(
            f"search.storage: {url!r} is not a storage URL; use e.g. "
            "postgresql://user:password@host/db, sqlite:///optuna.db or a .journal file path"
        )
    try:
        return optuna.storages.RDBStorage(
            url, engine_kwargs={"pool_pre_ping": True}, skip_compatibility_check=False
        )
    except ImportError as exc:
        raise ConfigError(
            f"search.storage: the database driver for {mask_url(url)} is not installed "
            f"({exc}); e.g. pip install psycopg2-binary for PostgreSQL"
        ) from None
    except Exception as exc:  # SQLAlchemy raises many kinds for a bad URL or server
        first = " ".join(str(exc).split())[:240]
        raise ConfigError(
            f"search.storage: cannot open {mask_url(url)}: {first}; check the URL and that the "
            "server is up, or leave search.storage unset for the embedded journal file"
        ) from None
