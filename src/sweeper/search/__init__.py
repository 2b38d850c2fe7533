"""The search engine: an Optuna study of training runs, its workers and its records.

The public face is small; everything else in this package is its machinery::

    run_sweep(cfg, choices, overrides, sources)   # sweeper sweep (or --dry-run)
    parse_settings(cfg.search, choices)           # the checked search.* settings
    parse_space(params)                           # search.params as a SearchSpace
    load_record(storage_url, name)                # a recorded study, for reports
    study_folder(name), sweeps_dir()              # where a study's files live

Names load on first use, so importing one of them does not import Optuna.
"""

from __future__ import annotations

import importlib
from typing import Any

_PUBLIC = {
    "run_sweep": "sweeper.search.sweep",
    "parse_settings": "sweeper.search.settings",
    "SearchSettings": "sweeper.search.settings",
    "parse_space": "sweeper.search.space",
    "SearchSpace": "sweeper.search.space",
    "load_record": "sweeper.search.records",
    "StudyRecord": "sweeper.search.records",
    "study_folder": "sweeper.search.records",
    "sweeps_dir": "sweeper.search.records",
}

__all__ = ["SearchSettings", "SearchSpace", "StudyRecord", "load_record", "parse_settings", "parse_space",
           "run_sweep", "study_folder", "sweeps_dir"]


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'sweeper.search' has no attribute {name!r}")
    return getattr(importlib.import_module(_PUBLIC[name]), name)
