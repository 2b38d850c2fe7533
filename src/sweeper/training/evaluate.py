"""Scoring a saved checkpoint on a data split."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf


def evaluate_checkpoint(config: Mapping[str, Any] | str | Path, checkpoint: str | Path) -> dict[str, float]:
    """Test ``checkpoint`` on the test split of the data described by ``config``.

    ``config`` is a resolved training config (a mapping or the path of its YAML file).
    Runs on one device of the config's accelerator; returns ``test/*`` metrics.
    """
    from sweeper.training.run import build_datamodule, quiet_lightning

    quiet_lightning()
    import pytorch_lightning as pl

    from sweeper.models import Classifier

    cfg = OmegaConf.load(config) if isinstance(config, (str, Path)) else OmegaConf.create(dict(config))
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    model = Classifier.load_from_checkpoint(str(checkpoint), map_location="cpu")
    accelerator = cfg.trainer.accelerator if cfg.trainer.accelerator != "auto" else "auto"
    trainer = pl.Trainer(
        accelerator=accelerator,
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    (result,) = trainer.test(model, datamodule=datamodule, verbose=False)
    return {k: float(v) for k, v in result.items() if k.startswith("test/")}
