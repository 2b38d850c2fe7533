"""The local HTTP servers sweeper starts (the MLflow UI, a model's scoring server): bound
to loopback unless asked, waited for until they answer, stopped with their children."""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request

from sweeper.errors import SweeperError


def loopback(host: str) -> bool:
    """True for an address only this machine reaches."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def wait_until_answers(url: str, proc: subprocess.Popen[bytes], what: str, timeout: float) -> None:
    """Return once ``url`` answers 200; refuse in one line if ``proc`` exits first or the
    time runs out (``what`` names the server)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SweeperError(f"the {what} exited at start (code {proc.returncode}); is the port taken?")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    base = url.rsplit("/", 1)[0]
    raise SweeperError(f"the {what} did not answer on {base} within {timeout:.0f}s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's process group, SIGKILL after 15 s."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
