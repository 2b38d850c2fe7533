"""sweeper's modules for projects on the ``lightning`` package (``import lightning as L``).

``sweeper.models`` and ``sweeper.data`` are written against ``pytorch_lightning``, the
package sweeper installs; ``lightning.Trainer`` refuses their classes. This module serves
the same classes on ``lightning.pytorch`` (``pip install lightning``)::

    import lightning as L
    from sweeper.lightning import MLP, Classifier, DigitsDataModule

    L.Trainer(max_epochs=3).fit(Classifier(MLP((1, 8, 8), 10)), datamodule=DigitsDataModule())

Networks (``MLP``, ``CNN``, ``RNN``) are plain ``torch.nn`` modules and the same objects
as in ``sweeper.models``. Checkpoints load with either package's class.
"""

from __future__ import annotations

from typing import Any

_SOURCES = ("sweeper.models", "sweeper.data", "sweeper.training.callbacks", "sweeper.training.logger")


def __getattr__(name: str) -> Any:
    import importlib

    from sweeper.lightning_packages import L, rebase

    for source in _SOURCES:
        module = importlib.import_module(source)
        exported = getattr(module, "__all__", None)
        if (exported is None or name in exported) and isinstance(getattr(module, name, None), type):
            return rebase(getattr(module, name), L)
    raise AttributeError(f"module 'sweeper.lightning' has no attribute {name!r}")


def __dir__() -> list[str]:
    import importlib

    names: list[str] = []
    for source in _SOURCES[:2]:
        names += list(importlib.import_module(source).__all__)
    return sorted([*names, "MlflowLogger", "PruningCallback"])
