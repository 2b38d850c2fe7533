"""Peer: the study a user writes by hand with Optuna, Lightning and MLflow.

    python benchmarks/peers/optuna_script.py --model cnn --trials 20 --epochs 10 --pruner median

``study.optimize`` with TPE, a pruning callback, one MLflow parent run for the study and
one nested run per trial (Lightning's MLFlowLogger records the epochs).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import mlflow
import optuna
import pytorch_lightning as pl
from common import SEED, SPACE, Records, build, trainer_kwargs
from pytorch_lightning.loggers import MLFlowLogger


class PruneOnValidation(pl.Callback):
    def __init__(self, trial: optuna.Trial, monitor: str) -> None:
        self.trial, self.monitor = trial, monitor
        self.pruned = False

    def on_validation_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        value = float(trainer.callback_metrics[self.monitor])
        self.trial.report(value, trainer.current_epoch)
        if self.trial.should_prune():
            self.pruned = True
            trainer.should_stop = True


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="cnn")
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--pruner", default="none", choices=["none", "median"])
    args = ap.parse_args()
    uri = f"sqlite:///{Path.cwd() / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("peer-script")
    records = Records()
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2)
              if args.pruner == "median" else optuna.pruners.NopPruner())
    sampler = optuna.samplers.TPESampler(seed=SEED, n_startup_trials=5, multivariate=True, constant_liar=True)
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)

    def objective(trial: optuna.Trial) -> float:
        start = time.time()
        lr = trial.suggest_float("lr", *SPACE["lr"], log=True)
        batch_size = trial.suggest_categorical("batch_size", SPACE["batch_size"])
        with mlflow.start_run(run_name=f"trial-{trial.number}", nested=True) as run:
            mlflow.log_params({"lr": lr, "batch_size": batch_size})
            pl.seed_everything(SEED, verbose=False)
            module, data = build(args.model, lr, batch_size)
            pruning = PruneOnValidation(trial, "val/acc")
            logger = MLFlowLogger(tracking_uri=uri, run_id=run.info.run_id)
            trainer = pl.Trainer(**trainer_kwargs(args.epochs), logger=logger, callbacks=[pruning],
                                 enable_checkpointing=True, default_root_dir="lightning")
            t = time.perf_counter()
            trainer.fit(module, datamodule=data)
            fit_s = time.perf_counter() - t
            values = list(trial.storage.get_trial(trial._trial_id).intermediate_values.values())
            best = max(values) if values else float("nan")
            mlflow.log_metric("best_val_acc", best)
            epochs = len(values)
            records.add(start, fit_s, epochs, best, "PRUNED" if pruning.pruned else "COMPLETE")
            if pruning.pruned:
                raise optuna.TrialPruned()
            return best

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with mlflow.start_run(run_name="study"):
        study.optimize(objective, n_trials=args.trials)
        mlflow.log_metric("best_val_acc", study.best_value)
        mlflow.log_params({f"best_{k}": v for k, v in study.best_params.items()})
    print(f"best {study.best_value:.4f} {study.best_params}")


if __name__ == "__main__":
    main()
