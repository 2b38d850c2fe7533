"""Peer: lightning-hydra-template style. A Hydra app trains one model and returns its
metric; ``-m`` with hydra-optuna-sweeper searches it, one job after another, and
Lightning's MLFlowLogger records each job as its own MLflow run (no parent run, no
pruning: the Hydra sweeper cannot prune).

    python benchmarks/peers/hydra_app/train.py -m hydra.sweeper.n_trials=20 model=cnn epochs=10
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    import pytorch_lightning as pl
    from common import SEED, Records, build, trainer_kwargs
    from pytorch_lightning.loggers import MLFlowLogger

    start = time.time()
    pl.seed_everything(SEED, verbose=False)
    module, data = build(cfg.model, cfg.lr, cfg.batch_size)
    logger = MLFlowLogger(experiment_name="peer-hydra", tracking_uri=cfg.tracking_uri)
    logger.log_hyperparams({"lr": cfg.lr, "batch_size": cfg.batch_size})
    trainer = pl.Trainer(**trainer_kwargs(cfg.epochs), logger=logger, enable_checkpointing=True)
    values: list[float] = []

    class Collect(pl.Callback):
        def on_validation_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
            if not trainer.sanity_checking:
                values.append(float(trainer.callback_metrics["val/acc"]))

    trainer.callbacks.append(Collect())
    t = time.perf_counter()
    trainer.fit(module, datamodule=data)
    fit_s = time.perf_counter() - t
    best = max(values)
    logger.log_metrics({"best_val_acc": best})
    Records(cfg.records).add(start, fit_s, len(values), best, "COMPLETE")
    return best


if __name__ == "__main__":
    main()
