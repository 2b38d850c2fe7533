"""A slow machine: put this folder on PYTHONPATH and every epoch of every trial a process
trains (coordinator and workers alike) takes SWEEPER_TEST_EPOCH_DELAY more seconds. The
study's config stays the same as on the other machines; only the hardware is slower."""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
import time

_TARGET = "sweeper.training.callbacks"


class _SlowEpochs(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):  # type: ignore[no-untyped-def]
        if name != _TARGET:
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
            delay = float(os.environ.get("SWEEPER_TEST_EPOCH_DELAY", "2"))
            original = module.PruningCallback.on_validation_end

            def on_validation_end(self, trainer, pl_module):  # type: ignore[no-untyped-def]
                original(self, trainer, pl_module)
                if not trainer.sanity_checking:
                    time.sleep(delay)

            module.PruningCallback.on_validation_end = on_validation_end

        loader.exec_module = slowed  # type: ignore[method-assign]
        return spec


sys.meta_path.insert(0, _SlowEpochs())
