"""``python -m sweeper`` works like the ``sweeper`` command."""

from sweeper.cli import entry

if __name__ == "__main__":
    entry()
