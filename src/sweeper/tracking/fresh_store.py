"""A new SQLite MLflow store, made while the sweep is checked.

MLflow builds a new SQLite store's schema by running its migrations: a second or two
of one core, before the first trial, in every new project. A sweep spends about as
long importing torch and Lightning for its checks, on one core. So the schema is made
at the same time, by a short-lived process on another core, in a hidden file beside
the store's: ``.mlflow.db.sweeper-new-<pid>``. Nothing is visible until every check
has passed; then the file is linked into place (never over a store that appeared
meanwhile) under the same lock that guards creating a schema, and the tracker opens an
existing store. A refused or interrupted sweep removes the file; if anything goes
wrong, the tracker creates the store itself, as before.

The process opens the store as the command would (same working directory and
environment, MLflow's public client), so the file holds what MLflow would have made:
its schema at the installed version and the Default experiment.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
from pathlib import Path

from sweeper.tracking.stores import held

log = logging.getLogger(__name__)

PREFIX = ".sweeper-new-"
_MAKE = (
    "import logging, sys\n"
    "logging.disable(logging.INFO)\n"
    "from mlflow.tracking import MlflowClient\n"
    "MlflowClient(tracking_uri='sqlite:///' + sys.argv[1]).search_experiments(max_results=1)\n"
)


def imports_ahead() -> bool:
    """Whether this process has torch still to import (seconds of one core) before its
    first trial: only then does making the schema beside it save time. A process that
    has it already (a notebook, a test session) makes the schema itself."""
    return "torch" not in sys.modules


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(path: Path) -> None:
    for leftover in (path, path.with_name(path.name + "-journal"), path.with_name(path.name + "-wal"),
                     path.with_name(path.name + "-shm")):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()


class FreshStore:
    """The new store's schema being made (:meth:`start`); :meth:`place` puts it where
    the URI names, :meth:`discard` removes it."""

    def __init__(self, uri: str, target: Path, scratch: Path, process: subprocess.Popen[bytes]) -> None:
        self.uri, self.target, self.scratch, self.process = uri, target, scratch, process

    @classmethod
    def start(cls, uri: str) -> FreshStore | None:
        """Begin making the store at ``uri`` when it is a SQLite file that does not exist
        yet in a folder that does; None otherwise (nothing to do ahead)."""
        target = _sqlite_path(uri)
        if target is None or target.exists() or not target.parent.is_dir():
            return None
        _clear_abandoned(target)
        scratch = target.with_name(f".{target.name}{PREFIX}{os.getpid()}")
        _remove(scratch)
        try:
            process = subprocess.Popen(
                [sys.executable, "-c", _MAKE, str(scratch)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )
        except OSError:
            log.debug("could not start making %s ahead", target, exc_info=True)
            return None
        return cls(uri, target, scratch, process)

    def place(self) -> bool:
        """Wait for the schema, then link it into place unless a store is there already.
        True when the store at the URI is the one made here."""
        try:
            _, err = self.process.communicate()
        except BaseException:
            self.discard()
            raise
        try:
            if self.process.returncode != 0 or not self.scratch.is_file():
                log.debug("making %s ahead failed (%s): %s", self.target, self.process.returncode,
                          err.decode(errors="replace")[-2000:])
                return False
            if any(self.scratch.with_name(self.scratch.name + s).exists() for s in ("-journal", "-wal")):
                return False  # not closed cleanly: let MLflow make its own
            with held(self.uri, "sweeper.mlflow-schema"):
                if self.target.exists():
                    return False
                try:
                    os.link(self.scratch, self.target)  # fails, never replaces, if it is there
                except OSError:
                    log.debug("could not link %s into place", self.target, exc_info=True)
                    return False
            return True
        finally:
            _remove(self.scratch)

    def discard(self) -> None:
        """Stop making the store and remove what was made (a refused or ended sweep)."""
        if self.process.poll() is None:
            self.process.kill()
            with contextlib.suppress(Exception):
                self.process.wait(timeout=10)
        _remove(self.scratch)


def _clear_abandoned(target: Path) -> None:
    """Remove scratch files of commands that were killed before they could."""
    for path in target.parent.glob(f".{target.name}{PREFIX}*"):
        pid = path.name[len(f".{target.name}{PREFIX}"):].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            _remove(path)
