"""Which worker runs a trial, and whether it is still alive.

A trial records its worker as ``host:pid:start-time``: ``host`` is ``$SWEEPER_HOST``
when set (give each machine, container or scheduler job its own), else the host name;
``pid`` and the process's start time tell a live process from a reused pid. While a
trial trains, its worker stamps it with a heartbeat every quarter of
``search.heartbeat_timeout``. Any process of the study may then fail a RUNNING trial
whose worker is gone: on the same host, when that process no longer exists; on another
host, when its heartbeat is older than the timeout.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

import psutil

WORKER_ATTR = "sweeper.worker"
HEARTBEAT_ATTR = "sweeper.heartbeat"
HOST_ENV = "SWEEPER_HOST"
DEFAULT_TIMEOUT_S = 60.0


def host() -> str:
    return os.environ.get(HOST_ENV) or socket.gethostname()


def worker_id(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    started = psutil.Process(pid).create_time()
    return f"{host()}:{pid}:{started:.2f}"


def is_alive(worker: str, heartbeat: float | None, now: float | None = None,
             timeout: float = DEFAULT_TIMEOUT_S) -> bool:
    # host names may hold ':' (IPv6, scheduler ids): pid and start time are the last two fields
    where, pid_text, started_text = [*worker.rsplit(":", 2), "", ""][:3]
    if where == host():
        try:
            proc = psutil.Process(int(pid_text))
            return proc.status() != psutil.STATUS_ZOMBIE and f"{proc.create_time():.2f}" == started_text
        except (psutil.Error, ValueError):
            return False
    now = time.time() if now is None else now
    return heartbeat is not None and now - heartbeat < timeout


class Heartbeat:
    """Stamps one trial every ``interval`` seconds from a background thread, for as long
    as the trial trains (``with Heartbeat(...)``), so another machine never takes a live
    trial for a dead one, however long an epoch lasts."""

    def __init__(self, storage: Any, trial_id: int, interval: float) -> None:
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sweeper-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.storage.set_trial_user_attr(self.trial_id, HEARTBEAT_ATTR, time.time())
            except Exception:
                if self._stop.is_set():
                    return
