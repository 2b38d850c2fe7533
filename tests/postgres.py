"""A real PostgreSQL server for tests, started from Debian's binaries on 127.0.0.1.

``PostgresServer`` runs ``initdb`` and ``pg_ctl`` (as the ``postgres`` user when the
tests run as root) into a temporary folder, with password authentication, so the
tests use URLs with a password, as users do. Without the binaries the tests that need
it are skipped, unless ``SWEEPER_REQUIRE_POSTGRES=1`` (CI) makes that a failure.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

USER, PASSWORD = "sweeper", "s3cret-pw"


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def available() -> bool:
    return _bin("initdb") is not None and _bin("pg_ctl") is not None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="sweeper-pg-"))
        self.port = _free_port()
        self.data = self.root / "data"
        self._as_postgres = os.geteuid() == 0
        if self._as_postgres:
            shutil.chown(self.root, "postgres")
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self._as_postgres:
            shutil.chown(pwfile, "postgres")
        self._run([_bin("initdb"), "-D", str(self.data), "-U", USER, "--auth=scram-sha-256",
                   f"--pwfile={pwfile}", "-E", "UTF8", "--no-sync"])
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c max_connections=200 -c fsync=off"
        self._run([_bin("pg_ctl"), "-D", str(self.data), "-o", opts, "-l", str(self.root / "log"), "-w", "start"])
        self.created = 0

    def _run(self, args: list[str | None]) -> None:
        cmd = [str(a) for a in args]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, cwd=self.root)

    def url(self, database: str, driver: str = "", password: bool = True) -> str:
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        auth = f"{USER}:{PASSWORD}" if password else USER
        return f"{scheme}://{auth}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """An empty database's name."""
        import psycopg

        self.created += 1
        name = f"t{self.created}_{int(time.time() * 1000) % 100000}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user={USER} password={PASSWORD} dbname=postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def stop(self) -> None:
        try:
            self._run([_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"])
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
