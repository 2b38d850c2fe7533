"""``sweeper train``: one model (or a Hydra multirun of them)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sweeper.cli._base import run_hydra


def _train_task(cfg: Any) -> float | None:
    from hydra.core.hydra_config import HydraConfig

    from sweeper.composition import check_shadowing, current_sources
    from sweeper.training import run_training

    check_shadowing(current_sources())
    runtime = HydraConfig.get().runtime
    choices = {
        k: v for k, v in runtime.choices.items() if v is not None and not k.startswith("hydra")
    }
    result = run_training(cfg, runtime.output_dir, choices=choices)
    parts = [f"{result.monitor}={result.best_score:.4f}" if result.best_score is not None else ""]
    parts += [f"{k}={v:.4f}" for k, v in sorted(result.test_metrics.items()) if k != "test/loss"]
    where = (
        f"MLflow run {result.run_id} in {cfg.tracking.uri} (experiment '{cfg.tracking.experiment}')"
        if result.run_id
        else f"outputs in {runtime.output_dir}"
    )
    from sweeper.training.lifecycle import family

    print(f"trained {choices.get('model', family(cfg))} for {result.epochs} epochs in "
          f"{result.duration_s:.1f}s: {' '.join(p for p in parts if p)}; {where}")
    return result.best_score


def cmd_train(argv: Sequence[str]) -> int:
    return run_hydra("train", "train", _train_task, argv)
