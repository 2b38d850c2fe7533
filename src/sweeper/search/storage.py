"""Opening the study's storage: the embedded journal file or any Optuna storage URL."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

from sweeper.errors import ConfigError
from sweeper.tracking.stores import POSTGRES_EXTRA, driver_url, held, mask_url, retry_schema_race, without_password

JOURNAL_PREFIX = "journal:///"


def default_storage(study_dir: Path) -> str:
    return f"{JOURNAL_PREFIX}{(study_dir / 'optuna.journal').resolve()}"


def optuna_storage(url: str) -> str:
    """The storage as Optuna's own tools take it (``optuna``, ``optuna-dashboard``): a
    journal as its file's path (they refuse sweeper's ``journal:///`` form), a database
    URL with the installed driver and without its password (the driver then reads
    ``PGPASSWORD`` or ``~/.pgpass``)."""
    if url.startswith(JOURNAL_PREFIX):
        return "/" + url[len(JOURNAL_PREFIX):].lstrip("/")
    if url.endswith(".journal") or "://" not in url:
        return str(Path(url).resolve())
    with contextlib.suppress(ConfigError):  # no driver here: the URL as given
        url = driver_url(url, "search.storage")
    return without_password(url)


def optuna_commands(url: str, study_name: str) -> list[str]:
    """Ready commands of Optuna's tools on the study, as a shell takes them."""
    import shlex

    storage = shlex.quote(optuna_storage(url))
    return [f"optuna-dashboard {storage}",
            f"optuna trials --storage {storage} --study-name {shlex.quote(study_name)}"]


def study_lock(url: str, study_name: str) -> Any:
    """The study's lock, shared by every process on every machine of the study: "count,
    then ask", failing an abandoned trial, creating the parent run and registering the
    model each happen once. Kept by the database server for SQL storages, by a file
    beside the journal or SQLite file otherwise."""
    return held(url, f"sweeper.study.{study_name}")


def check_storage_url(url: str) -> None:
    """Refuse what is neither a journal file nor a database URL (no import, no I/O)."""
    if not (url.startswith(JOURNAL_PREFIX) or url.endswith(".journal") or "://" in url):
        raise ConfigError(
            f"search.storage: {url!r} is not a storage URL; use e.g. "
            "postgresql://user:password@host/db, sqlite:///optuna.db or a .journal file path"
        )


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

        lock = JournalFileOpenLock(str(path))
        lock.acquire()  # the lock every append holds: a record being written is not partial
        try:
            repair_journal(path)
        finally:
            lock.release()
        backend = JournalFileBackend(str(path), lock_obj=lock)
        return optuna.storages.JournalStorage(backend)
    check_storage_url(url)
    real = driver_url(url, "search.storage")
    if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).parent.is_dir():
        folder = Path(url[len("sqlite:///"):]).parent
        raise ConfigError(f"search.storage: folder {folder} does not exist; create it or fix the path")

    def create() -> Any:
        # Several machines may start on an empty database at once: one creates the schema.
        with held(real, "sweeper.optuna-schema"):
            return optuna.storages.RDBStorage(
                real, engine_kwargs={"pool_pre_ping": True}, skip_compatibility_check=False
            )

    try:
        return retry_schema_race(create)
    except ImportError as exc:
        raise ConfigError(
            f"search.storage: the database driver for {mask_url(url)} is not installed "
            f"({exc}); for PostgreSQL: {POSTGRES_EXTRA}"
        ) from None
    except ConfigError:
        raise
    except Exception as exc:  # SQLAlchemy raises many kinds for a bad URL or server
        first = " ".join(str(exc).split())[:240]
        raise ConfigError(
            f"search.storage: cannot open {mask_url(url)}: {first}; check the URL and that the "
            "server is up, or leave search.storage unset for the embedded journal file"
        ) from None


def repair_journal(path: Path) -> bool:
    """Drop a partial last record (a process killed mid-write) before anything is appended
    after it; otherwise the next record would join it and the study would be unreadable."""
    if not path.is_file():
        return False
    with open(path, "rb+") as f:
        size = f.seek(0, 2)
        if size == 0:
            return False
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return False
        # find the end of the last whole record
        end, chunk = size, 1 << 16
        keep = 0
        while end > 0:
            start = max(0, end - chunk)
            f.seek(start)
            block = f.read(end - start)
            at = block.rfind(b"\n")
            if at >= 0:
                keep = start + at + 1
                break
            end = start
        f.truncate(keep)
    print(f"sweeper: warning: {path} ended in a partial record ({size - keep} bytes, written by a "
          "process that was killed); dropped it", file=sys.stderr, flush=True)
    return True
