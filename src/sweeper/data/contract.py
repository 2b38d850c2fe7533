"""What a data module must provide to be trained and searched by sweeper.

Any ``LightningDataModule`` (or lookalike) works if it follows :class:`DataModule`;
:func:`check_datamodule` says, in one line, what is missing and how to fix it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import torch

from sweeper.errors import DataError
from sweeper.schema import is_int

TASKS = ("classification", "regression", "autoencoder")
LOADERS = ("train_dataloader", "val_dataloader", "test_dataloader")


@runtime_checkable
class DataModule(Protocol):
    """The data module contract.

    - ``train_dataloader()``, ``val_dataloader()``, ``test_dataloader()``: iterables of
      batches (a ``pytorch_lightning.LightningDataModule`` with all three defined).
    - ``input_shape``: the shape of ONE sample without the batch dimension, a tuple of
      positive ints such as ``(13,)``, ``(T, F)`` or ``(1, 28, 28)``, known before
      ``setup()`` (the network is built first).
    - classification: ``num_classes``, an int >= 2; optionally ``class_names``, one
      string per class (used in reports).
    - regression: ``num_targets``, an int >= 1.
    - autoencoder: nothing more.

    Batches are ``(x, y)``: ``x`` a floating tensor ``(N, *input_shape)``; ``y`` integer
    class indices ``(N,)`` in ``[0, num_classes)`` (classification) or floating targets
    ``(N,)`` or ``(N, num_targets)`` (regression). An autoencoder ignores ``y`` and also
    takes batches that are just ``x``.

    ``prepare_data()`` and ``setup(stage)`` are called as Lightning calls them.
    """

    input_shape: Sequence[int]

    def prepare_data(self) -> None: ...

    def setup(self, stage: str | None = None) -> None: ...

    def train_dataloader(self) -> Any: ...

    def val_dataloader(self) -> Any: ...

    def test_dataloader(self) -> Any: ...




def _provides(dm: Any, name: str) -> bool:
    """True when ``dm.name`` is callable and not Lightning's raise-if-missing placeholder."""
    method = getattr(dm, name, None)
    if not callable(method):
        return False
    import importlib

    from sweeper.lightning_packages import package_of

    package = package_of(dm)
    if package is None:
        return True
    hooks = importlib.import_module(f"{package}.core.hooks").DataHooks
    return getattr(method, "__func__", None) is not getattr(hooks, name, None)


def _shape(value: Any) -> str:
    return "(" + ", ".join(str(d) for d in value) + ("," if len(value) == 1 else "") + ")"


def check_datamodule(dm: Any, task: str, check_batches: bool = True) -> None:
    """Raise :class:`~sweeper.errors.DataError` (one line) if ``dm`` breaks the contract of
    :class:`DataModule` for ``task`` (``classification``, ``regression`` or ``autoencoder``).

    With ``check_batches``, also calls ``prepare_data()`` and ``setup("fit")`` and checks the
    first training batch.
    """
    name = type(dm).__name__
    if task not in TASKS:
        raise DataError(f"data: unknown task {task!r}; known tasks: {', '.join(TASKS)}")

    missing = [loader for loader in LOADERS if not _provides(dm, loader)]
    if missing:
        raise DataError(
            f"data: {name} has no {', '.join(m + '()' for m in missing)}; a data module defines "
            "train_dataloader(), val_dataloader() and test_dataloader()"
        )

    shape = getattr(dm, "input_shape", None)
    if shape is None:
        raise DataError(
            f"data: {name} has no input_shape; a data module sets input_shape (the shape of one "
            "sample without the batch dimension, e.g. (13,) or (1, 28, 28)) before setup()"
        )
    if (
        isinstance(shape, (str, bytes))
        or not isinstance(shape, Sequence)
        or not shape
        or not all(is_int(d) and d >= 1 for d in shape)
    ):
        raise DataError(
            f"data: {name}.input_shape must be a tuple of positive ints (one sample, no batch "
            f"dimension, e.g. (13,) or (1, 28, 28)), got {shape!r}"
        )
    shape = tuple(int(d) for d in shape)

    num_classes = num_targets = 0
    if task == "classification":
        num_classes = getattr(dm, "num_classes", None)  # type: ignore[assignment]
        if num_classes is None:
            raise DataError(
                f"data: {name} has no num_classes; a classification data module sets "
                "num_classes (an int >= 2) before setup()"
            )
        if not is_int(num_classes) or num_classes < 2:
            raise DataError(f"data: {name}.num_classes must be an int >= 2, got {num_classes!r}")
        names = getattr(dm, "class_names", None)
        if names is not None and (
            isinstance(names, (str, bytes))
            or not isinstance(names, Sequence)
            or len(names) != num_classes
            or not all(isinstance(n, str) for n in names)
        ):
            raise DataError(
                f"data: {name}.class_names must be {num_classes} strings (one per class) or "
                f"unset, got {names!r}"
            )
    elif task == "regression":
        num_targets = getattr(dm, "num_targets", None)  # type: ignore[assignment]
        if num_targets is None:
            raise DataError(
                f"data: {name} has no num_targets; a regression data module sets num_targets "
                "(an int >= 1, the width of y) before setup()"
            )
        if not is_int(num_targets) or num_targets < 1:
            raise DataError(f"data: {name}.num_targets must be an int >= 1, got {num_targets!r}")

    if check_batches:
        _check_first_batch(dm, name, task, shape, num_classes, num_targets)


def _check_first_batch(
    dm: Any,
    name: str,
    task: str,
    shape: tuple[int, ...],
    num_classes: int,
    num_targets: int,
) -> None:
    """Check the first training batch; ``num_classes``/``num_targets`` are 0 when not used."""
    if callable(getattr(dm, "prepare_data", None)):
        dm.prepare_data()
    if callable(getattr(dm, "setup", None)):
        dm.setup("fit")
    try:
        batch = next(iter(dm.train_dataloader()))
    except StopIteration:
        raise DataError(
            f"data: {name}.train_dataloader() gave no batches; the train split must not be empty"
        ) from None

    where = f"data: {name}.train_dataloader()"
    if isinstance(batch, torch.Tensor) and task == "autoencoder":
        x, y = batch, None
    elif isinstance(batch, (tuple, list)) and len(batch) == 2:
        x, y = batch
    elif isinstance(batch, (tuple, list)) and len(batch) == 1 and task == "autoencoder":
        x, y = batch[0], None
    else:
        got = (
            f"a {type(batch).__name__} of {len(batch)} items"
            if isinstance(batch, (tuple, list))
            else f"a {type(batch).__name__}"
        )
        expected = "(x, y) or x" if task == "autoencoder" else "(x, y)"
        raise DataError(f"{where} must give batches {expected}, got {got}")

    if not isinstance(x, torch.Tensor):
        raise DataError(f"{where} gives x as a {type(x).__name__}; x must be a torch.Tensor")
    if not x.is_floating_point():
        raise DataError(
            f"{where} gives x of dtype {x.dtype}; x must be a floating tensor "
            "(convert with x.float())"
        )
    expected_x = f"(N, {', '.join(map(str, shape))})"
    if tuple(x.shape[1:]) != shape:
        raise DataError(
            f"{where} gives x of shape {_shape(x.shape)}; expected {expected_x}, i.e. "
            f"(N, *input_shape) with input_shape {_shape(shape)}"
        )
    if task == "autoencoder" or y is None:
        return

    if not isinstance(y, torch.Tensor):
        raise DataError(f"{where} gives y as a {type(y).__name__}; y must be a torch.Tensor")
    n = len(x)
    if task == "classification":
        if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise DataError(
                f"{where} gives y of dtype {y.dtype}; classification needs integer class indices "
                "(convert with y.long())"
            )
        if tuple(y.shape) != (n,):
            raise DataError(
                f"{where} gives y of shape {_shape(y.shape)} for x of {n} samples; "
                f"classification needs ({n},), one class index per sample"
            )
        low, high = int(y.min()), int(y.max())
        if low < 0 or high >= num_classes:
            raise DataError(
                f"{where} gives labels in [{low}, {high}]; classification needs labels in "
                f"[0, num_classes) = [0, {num_classes}): encode them as 0..K-1 or fix num_classes"
            )
        return

    if not y.is_floating_point():
        raise DataError(
            f"{where} gives y of dtype {y.dtype}; regression needs floating targets "
            "(convert with y.float())"
        )
    allowed = [(n, num_targets)] + ([(n,)] if num_targets == 1 else [])
    if tuple(y.shape) not in allowed:
        expected_y = " or ".join(_shape(s) for s in reversed(allowed))
        raise DataError(
            f"{where} gives y of shape {_shape(y.shape)} for x of {n} samples; regression with "
            f"num_targets={num_targets} needs {expected_y}"
        )
