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
