"""Experiment tracking back ends. MLflow is the one shipped; ``tracking=none`` turns it off."""

from sweeper.tracking.params import flatten

__all__ = ["flatten"]
