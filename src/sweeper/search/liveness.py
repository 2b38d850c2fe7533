"""Which worker runs a trial, and whether it is still alive.

A trial records its worker as ``host:pid:start-time``. When a study resumes (and
before every new trial) a RUNNING trial whose worker process on this host is gone, or
whose heartbeat on another host is older than the grace period, is stale: a killed
worker left it behind. Process start time guards against a reused pid.
"""

from __future__ import annotations

import os
import socket
import time

import psutil

WORKER_ATTR = "sweeper.worker"
HEARTBEAT_ATTR = "sweeper.heartbeat"
GRACE_S = 600.0


def worker_id(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    started = psutil.Process(pid).create_time()
    return f"{socket.gethostname()}:{pid}:{started:.2f}"


def is_alive(worker: str, heartbeat: float | None, now: float | None = None) -> bool:
    host, _, rest = worker.partition(":")
    pid_text, _, started_text = rest.partition(":")
    if host == socket.gethostname():
        try:
            proc = psutil.Process(int(pid_text))
            return (
                proc.status() != psutil.STATUS_ZOMBIE
                and f"{proc.create_time():.2f}" == started_text
            )
        except (psutil.Error, ValueError):
            return False
    now = time.time() if now is None else now
    return heartbeat is not None and now - heartbeat < GRACE_S
