"""One training run: build data, model and trainer from the config, fit, test, record.

This is the only place where the config becomes objects. ``sweeper train`` calls it
once per Hydra job; a sweep calls it once per trial.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from sweeper.config import resolved, validate_train_config
from sweeper.errors import ConfigError, DivergedError, SweeperError
from sweeper.lightning_packages import adopt, class_path, fabric, load, rebase
from sweeper.paths import DDP_CONFIG_ENV, project_dir
from sweeper.training.build import build_datamodule, build_module, instantiate, lightning_package
from sweeper.training.lifecycle import lived, start_run
from sweeper.training.quiet import look_up_callback_entry_points_once, quiet_lightning

log = logging.getLogger(__name__)

# Set by the rank-0 process of a DDP run; Lightning re-runs the command line in the other
# ranks, and the CLI sees this variable there and trains this exact config instead.



@dataclass
class TrainResult:
    """What a training run produced."""

    run_id: str | None
    monitor: str
    best_score: float | None
    best_checkpoint: str | None
    epochs: int
    test_metrics: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    duration_s: float = 0.0
    num_parameters: int = 0
    pruned: bool = False
    prune_reason: str | None = None
    timed_out: bool = False  # stopped by the pruning callback's time cap


@dataclass
class Resume:
    """Where a retried trial continues: the earlier attempt's ``last.ckpt``, and that
    attempt's best score and checkpoint (still the ones to beat)."""

    checkpoint: str
    best_score: float | None = None
    best_checkpoint: str | None = None
    _copied: str | None = None

    @property
    def epoch(self) -> int:
        """The last epoch the checkpoint finished (training continues after it)."""
        import torch

        state = torch.load(self.checkpoint, map_location="cpu", weights_only=True, mmap=True)
        return int(state["epoch"])

    def carry_best(self, callback: Any) -> None:
        """Give the new run's checkpoint callback the earlier best (copied into its folder):
        an epoch after the resume replaces it only when it is better."""
        import shutil

        import torch

        if self.best_score is None or not self.best_checkpoint or not Path(self.best_checkpoint).is_file():
            return
        folder = Path(callback.dirpath)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / "best.ckpt"
        if Path(self.best_checkpoint).resolve() != target.resolve():
            shutil.copyfile(self.best_checkpoint, target)
        self._copied = str(target)
        score = torch.tensor(float(self.best_score))
        callback.best_model_score = score
        callback.best_model_path = str(target)
        callback.best_k_models = {str(target): score}
        callback.kth_best_model_path = str(target)
        callback.kth_value = score

    def local_best(self, path: str) -> str:
        """The run's best checkpoint in its own folder (Lightning restores the earlier
        attempt's path when no later epoch beat it)."""
        if self._copied and self.best_checkpoint and Path(path).resolve() == Path(self.best_checkpoint).resolve():
            return self._copied
        return path


def _slurm_single_task() -> bool:
    """Inside a SLURM job step of one task (``sbatch`` + ``srun`` of one process): any
    further DDP ranks are this process's to start."""
    return os.environ.get("SLURM_NTASKS") == "1"


def _is_rank_zero() -> bool:
    return int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0


def run_training(
    cfg: DictConfig,
    output_dir: str | Path,
    choices: Mapping[str, str] | None = None,
    callbacks: Sequence[Any] = (),
    parent_run_id: str | None = None,
    run_name: str | None = None,
    tags: Mapping[str, Any] | None = None,
    track: bool = True,
    run_started: Callable[[str], None] | None = None,
    wait_for_tracking: bool = True,
    record_state: bool = True,
    fold: tuple[int, int] | None = None,
    resume: Resume | None = None,
    own_processes: bool = False,
) -> TrainResult:
    """Train, test and record one model described by a composed training config.

    Args:
        cfg: a config composed from ``conf/train.yaml`` (plus overrides).
        output_dir: where the checkpoint and the resolved config are written.
        choices: the config-group choices (``model: cnn`` …), recorded as run params.
        callbacks: extra Lightning callbacks (a sweep adds its pruning callback here).
        parent_run_id: MLflow run to nest this run under.
        run_name, tags: MLflow run name and extra tags.
        track: set False to skip MLflow even when ``tracking.enabled`` is true.
        run_started: called with the MLflow run id as soon as the run exists.
        wait_for_tracking: False returns without waiting for the run's last MLflow
            writes (a sweep's worker waits once, before it exits).
        record_state: False leaves the run's ``state`` tag, failure reason and end to the
            caller (a sweep records them from the Optuna trial, see
            ``sweeper.search.trials.record_outcome``).
        fold: ``(index, folds)`` trains on one cross-validation fold: the data module's
            ``set_fold(index, folds)`` makes that fold the validation split.
        resume: continue an earlier attempt from its last checkpoint (a retried trial):
            weights, optimizer, scheduler and epoch, with its best score and checkpoint
            still the ones to beat. The run also keeps ``checkpoints/last.ckpt`` itself.
        own_processes: the caller (a sweep worker) starts this process, not ``srun``:
            Lightning launches DDP ranks itself even inside a SLURM job.

    A callback with a true ``pruned`` attribute after ``fit`` (the sweep's pruning
    callback) marks the run PRUNED: it is not tested, and ``TrainResult.pruned`` is set.
    The MLflow run gets a ``state`` tag: COMPLETE, PRUNED or FAILED.

    A run that raises is ended FAILED in MLflow (KILLED on Ctrl-C) before the error
    propagates, so no run is left RUNNING.
    """
    validate_train_config(cfg)
    output_dir = Path(output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    plain = resolved(cfg)
    (output_dir / "config.yaml").write_text(yaml.safe_dump(plain, sort_keys=False))

    quiet_lightning()
    # torch and Lightning load here, not at import time, to keep the CLI quick; the
    # package is the one the user's classes use (sweeper's adapt to it)
    package = lightning_package(cfg)
    pl = load(package)
    look_up_callback_entry_points_once()
    callbacks = [adopt(cb, package) for cb in callbacks]

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg)
    if fold is not None:
        set_fold(datamodule, *fold)
    datamodule.prepare_data()  # missing files fail here, before a run is created
    built = build_module(cfg, datamodule)
    module = built.module

    tracker = run_id = None
    if track and cfg.tracking.enabled and _is_rank_zero():
        from sweeper.tracking.params import flatten
        from sweeper.training.logger import MlflowLogger

        tracker, run_id = start_run(cfg, run_name or cfg.tracking.run_name, "", {
            "model_class": built.net_class,
            "data_class": class_path(datamodule),
            "task": built.task,
            "output_dir": str(output_dir),
            "project_dir": str(project_dir()),  # where the run's own modules can be imported from
            **(tags or {}),
        }, parent_run_id, run_started)

    started = time.perf_counter()
    saved_env = {k: os.environ.get(k) for k in _DDP_ENV}
    num_parameters = sum(p.numel() for p in module.parameters())
    previous_env = os.environ.get(DDP_CONFIG_ENV)
    with lived(tracker, run_id, record_state, wait_for_tracking) as life:
        try:
            if tracker is not None and run_id is not None:
                params = {**(choices or {}), **flatten(plain)}
                params["model.num_parameters"] = num_parameters
                if getattr(datamodule, "input_shape", None) is not None:
                    params["data.input_shape"] = str(list(datamodule.input_shape))
                tracker.log_params(run_id, params)
            checkpoint = pl.callbacks.ModelCheckpoint(
                dirpath=output_dir / "checkpoints",
                filename="best",
                monitor=cfg.monitor,
                mode=cfg.monitor_mode,
                save_top_k=1,
                save_last=resume is not None or own_processes,  # what a retry continues from
                enable_version_counter=False,
            ) if cfg.checkpoint else None
            if resume is not None and checkpoint is not None:
                resume.carry_best(checkpoint)
            trainer_callbacks = [*callbacks, *([checkpoint] if checkpoint else [])]
            logger = rebase(MlflowLogger, package)(tracker, run_id) if tracker is not None and run_id else False
            if own_processes or _slurm_single_task():
                # sweeper (or a one-task SLURM job) starts this process; Lightning starts the
                # other DDP ranks itself instead of expecting srun to have started them
                environment = fabric(package).plugins.environments.LightningEnvironment
                extra = {"plugins": [environment()]} if "plugins" not in cfg.trainer else {}
            else:
                extra = {}
            trainer = instantiate(
                cfg.trainer,
                "trainer",
                package=package,
                **extra,
                logger=logger,
                callbacks=trainer_callbacks,
                enable_checkpointing=checkpoint is not None,
                enable_progress_bar=bool(cfg.progress_bar) and sys.stderr.isatty(),
                enable_model_summary=False,
                use_distributed_sampler=False,  # the data modules shard batches themselves
                default_root_dir=str(output_dir),
            )
            if trainer.world_size > 1 and _is_rank_zero():
                ddp_file = output_dir / "ddp_config.yaml"
                monitors = [getattr(cb, "monitor", None) for cb in callbacks if hasattr(cb, "pruned")]
                ddp_file.write_text(yaml.safe_dump(
                    {"cfg": plain, "output_dir": str(output_dir),
                     "prune_monitor": monitors[0] if monitors else None,
                     "fold": list(fold) if fold else None,
                     "resume": resume.checkpoint if resume is not None else None,
                     "own_processes": own_processes},
                    sort_keys=False,
                ))
                os.environ[DDP_CONFIG_ENV] = str(ddp_file)
            if resume is not None:
                trainer.fit(module, datamodule=datamodule, ckpt_path=resume.checkpoint, weights_only=True)
            else:
                trainer.fit(module, datamodule=datamodule)
            if trainer.interrupted:
                raise KeyboardInterrupt
            if hasattr(module, "check_diverged"):
                try:
                    module.check_diverged()
                except DivergedError as exc:
                    exc.duration_s = time.perf_counter() - started
                    raise
            pruner = next((cb for cb in callbacks if getattr(cb, "pruned", False)), None)
            fit_metrics = _scalars(trainer.callback_metrics)
            best_path = checkpoint.best_model_path if checkpoint else None
            if resume is not None and best_path:
                best_path = resume.local_best(best_path)
            best_score = (
                float(checkpoint.best_model_score)
                if checkpoint is not None and checkpoint.best_model_score is not None
                else fit_metrics.get(cfg.monitor)
            )
            test_metrics: dict[str, float] = {}
            if cfg.test and pruner is None:
                trainer.test(module, datamodule=datamodule, ckpt_path=best_path or None, verbose=False)
                test_metrics = {
                    k: v for k, v in _scalars(trainer.callback_metrics).items() if k.startswith("test/")
                }
            epochs = trainer.current_epoch
            if tracker is not None and run_id is not None:
                summary = {**test_metrics}
                if best_score is not None and math.isfinite(best_score):
                    summary[f"best/{cfg.monitor}"] = best_score
                tracker.log_metrics(run_id, summary, step=epochs)
                tracker.set_tags(run_id, {  # one write with the summary metrics
                    "epochs": epochs,
                    **({"state": "PRUNED" if pruner is not None else "COMPLETE",
                        "prune_reason": getattr(pruner, "reason", None)} if record_state else {}),
                })
                tracker.log_artifact(run_id, output_dir / "config.yaml")
                if best_path and cfg.tracking.log_checkpoint:
                    tracker.log_artifact(run_id, best_path, "checkpoints")
            life.finished()
            return TrainResult(
                run_id=run_id,
                monitor=cfg.monitor,
                best_score=best_score,
                best_checkpoint=best_path,
                epochs=epochs,
                test_metrics=test_metrics,
                metrics=fit_metrics,
                duration_s=time.perf_counter() - started,
                num_parameters=num_parameters,
                pruned=pruner is not None,
                prune_reason=getattr(pruner, "reason", None),
                timed_out=bool(getattr(pruner, "timed_out", False)),
            )
        finally:
            if previous_env is None:
                os.environ.pop(DDP_CONFIG_ENV, None)
            else:
                os.environ[DDP_CONFIG_ENV] = previous_env
            _end_process_group(saved_env)


# What a DDP launch leaves in the launching process; the next run (the next trial of a
# sweep) must start a fresh process group on a fresh port.
_DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "NODE_RANK", "LOCAL_RANK", "RANK",
            "GROUP_RANK", "LOCAL_WORLD_SIZE", "TORCHELASTIC_RUN_ID")


def set_fold(datamodule: Any, index: int, folds: int) -> None:
    """Make fold ``index`` of ``folds`` the data module's validation split."""
    if not callable(getattr(datamodule, "set_fold", None)):
        raise ConfigError(
            f"search.cv.folds: {type(datamodule).__name__} cannot split into folds (it has no "
            "set_fold(index, folds)); build it on sweeper.data.InMemoryDataModule or "
            "ArrayDataModule, or set search.cv.folds=1"
        )
    datamodule.set_fold(index, folds)


def _end_process_group(saved_env: Mapping[str, str | None]) -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    for key, value in saved_env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        try:
            out[key] = float(value)
        except (TypeError, ValueError):
            continue
    return out


def run_ddp_child(config_file: str | Path) -> None:
    """Entry point of a non-zero DDP rank: train the config rank 0 wrote, without tracking.

    When the run is part of a sweep, this rank gets a pruning callback without a trial:
    it takes part in rank 0's broadcast of each pruning decision. Errors that rank 0
    reports itself (divergence, bad config) end this rank quietly, so Lightning does
    not tear the group down before rank 0 has recorded them.
    """
    data = yaml.safe_load(Path(config_file).read_text())
    cfg = OmegaConf.create(data["cfg"])
    cfg.progress_bar = False
    callbacks = []
    if data.get("prune_monitor"):
        from sweeper.training.callbacks import PruningCallback

        callbacks.append(PruningCallback(data["prune_monitor"]))
    fold = tuple(data["fold"]) if data.get("fold") else None
    resume = Resume(data["resume"]) if data.get("resume") else None
    with contextlib.suppress(SweeperError):
        run_training(cfg, data["output_dir"], track=False, callbacks=callbacks, fold=fold, resume=resume,
                     own_processes=bool(data.get("own_processes")))
