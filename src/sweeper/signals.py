"""SIGTERM, what schedulers send (SLURM, Kubernetes, systemd), ends a command the way
Ctrl-C does: trials are marked and queued again, runs end KILLED, nothing stays RUNNING.
SIGUSR2, which SLURM sends ``signal_delay_s`` before a job's time limit (``--signal``),
does the same. The exit code says which it was: 130 for Ctrl-C, 143 for a signal."""

from __future__ import annotations

import signal
from typing import Any

EXIT_CTRL_C, EXIT_SIGTERM = 130, 143
_received: list[int] = []


class Terminated(KeyboardInterrupt):
    """Raised in the main thread by SIGTERM; every Ctrl-C path handles it."""


def _on_sigterm(signum: int, frame: Any) -> None:
    if _received:  # clean-up is under way: a second signal must not cut it short
        return
    _received.append(signum)
    raise Terminated()


def install() -> None:
    """Turn SIGTERM and SIGUSR2 into :class:`Terminated` in this process (main thread only)."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGUSR2, _on_sigterm)


def terminated() -> bool:
    return bool(_received)


def interrupt_reason() -> str:
    if not _received:
        return "interrupted (Ctrl-C)"
    return "interrupted (SIGUSR2: the job's time limit is near)" if _received[0] == signal.SIGUSR2 \
        else "interrupted (SIGTERM)"


def exit_code() -> int:
    return EXIT_SIGTERM if _received else EXIT_CTRL_C
