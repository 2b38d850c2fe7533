"""Lightning's start-up banner and warnings that do not apply to sweeper's loaders, silenced."""

from __future__ import annotations

import logging
import warnings

_NOISY_WARNINGS = (
    r".*does not have many workers.*",
    r".*The number of training batches.*is smaller than the logging interval.*",
    r".*Checkpoint directory .* exists and is not empty.*",
    r".*that has `shuffle=True`.*",
    r".*is an instance of `nn.Module` and is already saved.*",
    r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",
    # sweeper starts its own processes; on a machine with SLURM's tools installed this
    # hint is about a command it does not run
    r".*The `srun` command is available on your system but is not used.*",
    r".*The dirpath has changed from.*",  # a retried trial resumes an earlier attempt's checkpoint
)


def quiet_lightning() -> None:
    """Silence Lightning's start-up banner and warnings that do not apply to our loaders."""
    for pattern in _NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for package in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric"):
        logging.getLogger(f"{package}.utilities.rank_zero").setLevel(logging.WARNING)


def look_up_callback_entry_points_once() -> None:
    """Lightning looks up its ``callbacks_factory`` entry points for every new Trainer,
    scanning every installed distribution (10-20 ms, once per trial); within one process
    the installed packages do not change, so the lookup is made once. The factories are
    still called for each Trainer: each gets callbacks of its own. Only packages already
    loaded are touched."""
    import sys

    for name in ("lightning_fabric.utilities.registry", "lightning.fabric.utilities.registry"):
        module = sys.modules.get(name)
        if module is None:
            continue
        found = getattr(module, "entry_points", None)
        if found is None or getattr(found, "_sweeper_once", False):
            continue
        seen: dict[tuple[tuple[str, str], ...], object] = {}

        def once(*args: object, _find: object = found, _seen: dict = seen, **kwargs: str) -> object:
            if args or not kwargs:  # not the entry_points(group=...) form Lightning uses: ask each time
                return _find(*args, **kwargs)  # type: ignore[operator]
            key = tuple(sorted(kwargs.items()))
            if key not in _seen:
                _seen[key] = tuple(_find(**kwargs))  # type: ignore[operator]
            return _seen[key]

        once._sweeper_once = True  # type: ignore[attr-defined]
        setattr(module, "entry_points", once)  # noqa: B010 - a module attribute mypy does not know
