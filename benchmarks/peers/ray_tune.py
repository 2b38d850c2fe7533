"""Peer: Ray Tune with the Optuna searcher, optional ASHA, and its MLflow logger callback.

    python benchmarks/peers/ray_tune.py --model cnn --trials 20 --epochs 10 --scheduler asha

One trial at a time (``max_concurrent_trials=1``, both cores per trial), like one sweeper
worker. Needs ``pip install 'ray[tune]'`` (see benchmarks/peers/README.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="cnn")
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--scheduler", default="none", choices=["none", "asha"])
    args = ap.parse_args()

    import ray
    from ray import tune
    from ray.air.integrations.mlflow import MLflowLoggerCallback
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    records_path = str(Path(os.environ.get("PEER_RECORDS", "trials.jsonl")).resolve())
    uri = f"sqlite:///{Path.cwd() / 'mlflow.db'}"
    cores = os.cpu_count() or 1
    epochs, model = args.epochs, args.model

    def trainable(config: dict) -> None:
        import pytorch_lightning as pl

        sys.path.insert(0, str(HERE))
        from common import SEED, Records, build, trainer_kwargs

        class Report(pl.Callback):
            def __init__(self) -> None:
                self.values: list[float] = []
                self.fit_start = 0.0

            def on_fit_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
                self.fit_start = time.perf_counter()

            def on_validation_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
                if trainer.sanity_checking:
                    return
                value = float(trainer.callback_metrics["val/acc"])
                self.values.append(value)
                # Ray may stop the trial at this report (ASHA): the record is written first.
                state = "COMPLETE" if len(self.values) == epochs else "PRUNED"
                Records(records_path).add(start, time.perf_counter() - self.fit_start, len(self.values),
                                          max(self.values), state, trial=trial_id)
                tune.report({"val_acc": value, "best_val_acc": max(self.values)})

        start = time.time()
        trial_id = tune.get_context().get_trial_id()
        pl.seed_everything(SEED, verbose=False)
        module, data = build(model, config["lr"], config["batch_size"])
        trainer = pl.Trainer(**trainer_kwargs(epochs), logger=False, callbacks=[Report()],
                             enable_checkpointing=True, default_root_dir="lightning")
        trainer.fit(module, datamodule=data)

    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
    scheduler = (ASHAScheduler(max_t=epochs, grace_period=1, reduction_factor=3)
                 if args.scheduler == "asha" else FIFOScheduler())
    space = {"lr": tune.loguniform(1e-4, 1e-1), "batch_size": tune.choice([16, 32, 64, 128, 256])}
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": cores}),
        param_space=space,
        tune_config=tune.TuneConfig(
            metric="val_acc", mode="max", num_samples=args.trials, max_concurrent_trials=1,
            search_alg=OptunaSearch(seed=0), scheduler=scheduler,
        ),
        run_config=tune.RunConfig(
            storage_path=str(Path.cwd() / "ray_results"), name="peer", verbose=0,
            callbacks=[MLflowLoggerCallback(tracking_uri=uri, experiment_name="peer-ray")],
        ),
    )
    results = tuner.fit()
    best = results.get_best_result(metric="best_val_acc", mode="max")
    print(f"best {best.metrics['best_val_acc']:.4f} {best.config}")


if __name__ == "__main__":
    main()
