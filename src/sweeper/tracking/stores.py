"""Facts about a store's URL, and locks held in the store itself.

Both stores of a sweep (Optuna's and MLflow's) may be SQL databases that several
machines share. Creating a schema, a study's parent run or a model version must happen
once however many machines start at the same instant, so those steps run under a lock
that lives where the data lives: a PostgreSQL advisory lock, a MySQL named lock, or a
file lock next to a SQLite file or journal (one machine). Nothing here imports MLflow.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import random
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from sweeper.errors import ConfigError, SweeperError

T = TypeVar("T")
POSTGRES_EXTRA = "pip install 'sweeper[postgres]'"


def store_exists(uri: str) -> bool:
    """Whether an MLflow store is there already, so opening it creates no schema: an
    existing SQLite file, or a tracking server."""
    if uri.startswith(("http://", "https://")):
        return True
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):]).is_file()
    return False


def local_store_missing(uri: str) -> Path | None:
    """The file or folder a local store would be in, when it is not there (a server or
    database URL: None, it cannot be checked without connecting)."""
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///"):])
    elif uri.startswith("journal:///"):
        path = Path(uri[len("journal:///") - 1:])
    elif uri.startswith("file:"):
        from urllib.parse import urlparse

        path = Path(urlparse(uri).path)
    elif "://" not in uri:
        path = Path(uri)  # a folder (MLflow) or a .journal file (Optuna)
    else:
        return None
    return None if path.exists() else path


def require_store(uri: str, what: str, fix: str) -> None:
    """Commands that only read refuse a local store that is not there, instead of
    creating an empty one."""
    missing = local_store_missing(uri)
    if missing is not None:
        raise SweeperError(f"{what}: nothing recorded at {mask_url(uri)} ({missing} does not exist); {fix}")


_PASSWORD = re.compile(r"(://[^:/@\s]+):[^@/\s]*@")


def mask_url(url: str | None) -> str | None:
    """``scheme://user:password@host/...`` as ``scheme://user:***@host/...``: for messages."""
    return None if url is None else _PASSWORD.sub(r"\1:***@", url)


def without_password(text: str) -> str:
    """``scheme://user:password@host/db`` as ``scheme://user@host/db``: what a file may
    hold. The driver then reads the password from the environment (``PGPASSWORD``) or a
    password file (``~/.pgpass``), as it does for a URL written without one."""
    return _PASSWORD.sub(r"\1@", text)


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def driver_url(url: str, key: str) -> str:
    """``url`` with a PostgreSQL driver that is installed.

    SQLAlchemy 2.1 reads a bare ``postgresql://`` as psycopg 3; with only psycopg2
    installed the URL is given psycopg2's dialect. A URL naming its driver is kept.
    """
    scheme = url.split("://", 1)[0]
    if scheme in ("postgresql", "postgres"):
        rest = url.split("://", 1)[1]
        if _has("psycopg"):
            return f"postgresql+psycopg://{rest}"
        if _has("psycopg2"):
            return f"postgresql+psycopg2://{rest}"
        raise ConfigError(f"{key}: no PostgreSQL driver is installed for {mask_url(url)}; {POSTGRES_EXTRA}")
    driver = {"postgresql+psycopg": "psycopg", "postgresql+psycopg2": "psycopg2"}.get(scheme)
    if driver and not _has(driver):
        raise ConfigError(f"{key}: the {driver} driver for {mask_url(url)} is not installed; {POSTGRES_EXTRA}")
    return url


def _lock_key(name: str) -> int:
    """A signed 64-bit key for PostgreSQL's advisory locks."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


@contextlib.contextmanager
def held(url: str, name: str, timeout: float = 120.0) -> Iterator[None]:
    """Hold the lock ``name`` of the store at ``url`` (one holder at a time, on every
    machine that shares that store).

    SQL servers keep it themselves (released when the connection ends, so a killed
    holder frees it at once); a file store is one machine's, and a file lock beside it
    does the job.
    """
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme.startswith(("postgresql", "postgres", "mysql")):
        engine = _engine(url)
        with engine.connect() as conn:
            _server_lock(conn, scheme, name, timeout)
            try:
                yield
            finally:
                _server_unlock(conn, scheme, name)
        return
    from filelock import FileLock

    path = _lock_path(url, name)
    if not path.parent.is_dir():  # never create folders a URL merely names
        raise ConfigError(f"folder {path.parent} of {mask_url(url)} does not exist; create it or fix the URL")
    with FileLock(str(path), timeout=timeout):
        yield


_engines: dict[str, Any] = {}


def _engine(url: str) -> Any:
    """One small pool per server URL and process: a lock costs one round trip."""
    if url not in _engines:
        import sqlalchemy

        _engines[url] = sqlalchemy.create_engine(
            driver_url(url, "storage"), pool_size=1, max_overflow=2, pool_pre_ping=True
        )
    return _engines[url]


def _server_lock(conn: Any, scheme: str, name: str, timeout: float) -> None:
    import sqlalchemy

    if scheme.startswith("mysql"):
        got = conn.execute(sqlalchemy.text("SELECT GET_LOCK(:n, :t)"), {"n": name[:64], "t": int(timeout)}).scalar()
        if got != 1:
            raise TimeoutError(f"lock {name!r} not granted within {timeout:.0f} s")
        return
    key = _lock_key(name)
    deadline = time.monotonic() + timeout
    while not conn.execute(sqlalchemy.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
        if time.monotonic() > deadline:
            raise TimeoutError(f"lock {name!r} not granted within {timeout:.0f} s")
        time.sleep(0.02 + random.random() * 0.05)
    conn.commit()


def _server_unlock(conn: Any, scheme: str, name: str) -> None:
    import sqlalchemy

    try:
        if scheme.startswith("mysql"):
            conn.execute(sqlalchemy.text("SELECT RELEASE_LOCK(:n)"), {"n": name[:64]})
        else:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": _lock_key(name)})
        conn.commit()
    except Exception:
        conn.invalidate()


def _lock_path(url: str, name: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    if url.startswith("sqlite:///"):
        db = Path(url[len("sqlite:///"):])
        return db.parent / f".{db.name}.{safe}.lock"
    path = Path(url.split("///", 1)[-1]) if url.startswith("journal:///") else Path(url)
    return path.parent / f".{path.name}.{safe}.lock"


def retry_schema_race(create: Callable[[], T], attempts: int = 6) -> T:
    """``create()`` again when it lost a race with another process creating the same
    schema (duplicate type, table or column errors), a few times, with jitter."""
    for attempt in range(attempts):
        try:
            return create()
        except Exception as exc:
            text = str(exc).lower()
            racing = any(s in text for s in ("already exists", "duplicate", "uniqueviolation", "database is locked"))
            if not racing or attempt == attempts - 1:
                raise
            time.sleep(0.2 + random.random() * 0.6 * (attempt + 1))
    raise AssertionError("unreachable")


SQL_SCHEMES = ("postgresql", "postgres", "mysql", "mssql", "sqlite")


def check_store(url: str, key: str, fix: str, timeout: float = 5.0) -> None:
    """Refuse a store that cannot be used, creating nothing: a SQL server that does not
    answer (within ``timeout`` seconds) or refuses the login, a missing driver, a
    SQLite file or local folder whose folder does not exist. A tracking server
    (``http(s)://``) is asked by :func:`sweeper.tracking.mlflow.check_server`."""
    scheme = url.split("://", 1)[0].split("+")[0] if "://" in url else ""
    if url.startswith("sqlite:///"):
        folder = Path(url[len("sqlite:///"):]).parent
        if not folder.is_dir():
            raise ConfigError(f"{key}: folder {folder} does not exist; create it or fix the path")
        return
    if scheme in SQL_SCHEMES:
        import sqlalchemy

        real = driver_url(url, key)
        args = {"connect_timeout": int(max(1, timeout))} if scheme in ("postgresql", "postgres", "mysql") else {}
        try:
            engine = sqlalchemy.create_engine(real, connect_args=args, pool_pre_ping=False)
            try:
                with engine.connect():
                    pass
            finally:
                engine.dispose()
        except ImportError as exc:
            raise ConfigError(f"{key}: the database driver for {mask_url(url)} is not installed ({exc}); "
                              f"for PostgreSQL: {POSTGRES_EXTRA}") from None
        except Exception as exc:  # SQLAlchemy raises many kinds for a server that is not there
            first = " ".join(str(getattr(exc, "orig", None) or exc).split())[:240]
            raise ConfigError(f"{key}: cannot connect to {mask_url(url)}: {first}; {fix}") from None
        return
    if url.startswith("file:") or "://" not in url:
        from urllib.parse import urlparse

        path = Path(urlparse(url).path if url.startswith("file:") else url)
        if not path.exists() and not path.parent.is_dir():
            raise ConfigError(f"{key}: folder {path.parent} does not exist; create it or fix the path")
