"""k-fold cross-validation: one config trained once per fold, scored by the mean.

The data module's own train and validation splits are pooled and cut into ``folds``
folds (stratified for classification); the test split is never part of any fold. In
MLflow the config gets one run (params, the mean and the spread), with one nested run
per fold.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from sweeper.training.lifecycle import lived, start_run
from sweeper.training.run import TrainResult, run_training


def run_cv(
    cfg: DictConfig,
    folds: int,
    output_dir: str | Path,
    choices: Mapping[str, str] | None = None,
    parent_run_id: str | None = None,
    run_name: str | None = None,
    tags: Mapping[str, Any] | None = None,
    track: bool = True,
    run_started: Callable[[str], None] | None = None,
    after_fold: Callable[[int, float], bool] | None = None,
    callbacks: Callable[[], Sequence[Any]] | None = None,
    record_state: bool = True,
) -> TrainResult:
    """Train ``cfg`` on each of ``folds`` folds; the result's ``best_score`` is the mean.

    ``after_fold(index, score) -> stop?`` is called after every fold but the last; a true
    answer ends the run early, PRUNED (a sweep asks its pruner there). ``callbacks()``
    makes fresh Lightning callbacks for each fold. The result's ``metrics`` hold
    ``cv/<monitor>/mean``, ``cv/<monitor>/std`` and each fold's score. ``record_state``
    as for :func:`sweeper.training.run.run_training`.
    """
    import yaml

    from sweeper.config import resolved

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "config.yaml").write_text(yaml.safe_dump(resolved(cfg), sort_keys=False))
    tracker = run_id = None
    if track and cfg.tracking.enabled:
        from sweeper.tracking.params import flatten

        tracker, run_id = start_run(cfg, run_name, "cv-", {"mlflow.source.name": "sweeper sweep",
                                                           "cv_folds": folds, **(tags or {})},
                                    parent_run_id, run_started)
        tracker.log_params(run_id, {**dict(choices or {}), **flatten(resolved(cfg))})

    started = time.perf_counter()
    scores: list[float] = []
    last: TrainResult | None = None
    state, reason = "FAILED", None
    with lived(tracker, run_id, record_state, wait=False) as life:
        for index in range(folds):
            last = run_training(
                cfg,
                output_dir / f"fold_{index}",
                choices=choices,
                callbacks=list(callbacks()) if callbacks else [],
                parent_run_id=run_id,
                run_name=f"{run_name or 'cv'}-fold{index}",
                tags={**(tags or {}), "sweeper.role": "fold", "fold": index, "cv_folds": folds},
                track=track,
                wait_for_tracking=False,
                fold=(index, folds),
            )
            if last.pruned or last.best_score is None or not math.isfinite(last.best_score):
                state, reason = "PRUNED", f"fold {index}: {last.prune_reason or 'no finite score'}"
                break
            scores.append(float(last.best_score))
            if tracker is not None and run_id is not None:
                tracker.log_metrics(run_id, {f"cv/{cfg.monitor}": last.best_score}, step=index)
            if index < folds - 1 and after_fold is not None and after_fold(index, last.best_score):
                state, reason = "PRUNED", f"pruned after fold {index} with {cfg.monitor}={last.best_score:.4f}"
                break
        else:
            state = "COMPLETE"
        assert last is not None  # folds >= 2
        mean = statistics.fmean(scores) if scores else None
        spread = statistics.pstdev(scores) if len(scores) > 1 else 0.0
        metrics = {f"cv/{cfg.monitor}/fold{i}": v for i, v in enumerate(scores)}
        if mean is not None:
            metrics.update({f"cv/{cfg.monitor}/mean": mean, f"cv/{cfg.monitor}/std": spread})
        if tracker is not None and run_id is not None:
            summary = {k: v for k, v in metrics.items() if not k.split("/")[-1].startswith("fold")}
            if mean is not None and state == "COMPLETE":
                summary[f"best/{cfg.monitor}"] = mean
            tracker.log_metrics(run_id, summary, step=len(scores))
            tracker.set_tags(run_id, {"folds_run": len(scores),
                                      **({"state": state, "prune_reason": reason} if record_state else {})})
        life.finished()
        return TrainResult(
            run_id=run_id,
            monitor=cfg.monitor,
            best_score=mean if state == "COMPLETE" else None,
            best_checkpoint=None,  # one model per fold: none of them is "the" model
            epochs=last.epochs,
            metrics={**last.metrics, **metrics},
            duration_s=time.perf_counter() - started,
            num_parameters=last.num_parameters,
            pruned=state == "PRUNED",
            prune_reason=reason,
        )
