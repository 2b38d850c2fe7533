"""A slow machine: put this folder on PYTHONPATH and every process of a sweep (coordinator
and workers alike) runs slower, the study's config staying the same as on the other
machines; only the hardware is slower.

* ``SWEEPER_TEST_EPOCH_DELAY`` (default 2): seconds added to every epoch of every trial;
* ``SWEEPER_TEST_COMPOSE_DELAY`` (default 0): seconds added when a worker composes a
  claimed trial's config, before training starts (the window between claiming a trial
  and training it).
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
import time


def _slow_epochs(module):  # type: ignore[no-untyped-def]
    delay = float(os.environ.get("SWEEPER_TEST_EPOCH_DELAY", "2"))
    original = module.PruningCallback.on_validation_end

    def on_validation_end(self, trainer, pl_module):  # type: ignore[no-untyped-def]
        original(self, trainer, pl_module)
        if not trainer.sanity_checking:
            time.sleep(delay)

    module.PruningCallback.on_validation_end = on_validation_end


def _slow_compose(module):  # type: ignore[no-untyped-def]
    delay = float(os.environ.get("SWEEPER_TEST_COMPOSE_DELAY", "0"))
    if not delay:
        return
    original = module.trial_config

    def trial_config(*args, **kwargs):  # type: ignore[no-untyped-def]
        time.sleep(delay)
        return original(*args, **kwargs)

    module.trial_config = trial_config


_PATCHES = {"sweeper.training.callbacks": _slow_epochs, "sweeper.search.worker": _slow_compose}


class _Slower(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):  # type: ignore[no-untyped-def]
        patch = _PATCHES.get(name)
        if patch is None:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        exec_module = loader.exec_module

        def slowed(module):  # type: ignore[no-untyped-def]
            exec_module(module)
            patch(module)

        loader.exec_module = slowed  # type: ignore[method-assign]
        return spec


sys.meta_path.insert(0, _Slower())
