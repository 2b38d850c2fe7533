"""Exceptions a user can act on.

The command line turns any :class:`SweeperError` into one line on stderr and exit
code 2; every other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class SweeperError(Exception):
    """Base class for errors caused by user input, not by a bug."""


class ConfigError(SweeperError):
    """One or more config values are invalid.

    ``problems`` holds one message per bad key; ``str()`` joins them on one line.
    """

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


class DataError(SweeperError):
    """Data files are missing or unreadable."""


class DivergedError(SweeperError):
    """Training produced a non-finite loss; ``epochs`` is how many epochs it trained and
    ``duration_s`` how long (set by the training run, measured as for a finished run)."""

    def __init__(self, message: str, epochs: int | None = None) -> None:
        self.epochs = epochs
        self.duration_s: float | None = None
        super().__init__(message)
