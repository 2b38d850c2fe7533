"""A sweep worker: claim a trial, train it with pruning, tell Optuna; repeat.

Several workers (processes, possibly on several machines) can run this loop against
one study. On one machine a file lock makes "count, then ask" atomic, so the study
ends with exactly ``n_trials`` finished trials.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from sweeper.errors import ConfigError, DivergedError, SweeperError
from sweeper.search.control import stop_reason
from sweeper.search.distinct import DistinctSampler, join_study, worker_seed
from sweeper.search.liveness import HEARTBEAT_ATTR, WORKER_ATTR, Heartbeat, worker_id
from sweeper.search.plan import SweepPlan
from sweeper.search.samplers import build_pruner, build_sampler
from sweeper.search.space import SearchSpace, parse_space, split_overrides
from sweeper.search.trials import (
    ATTEMPT_ATTR,
    FAILURE_ATTR,
    FAILURE_KIND_ATTR,
    PRUNED_BY_ATTR,
    RUN_ID_ATTR,
    TRIAL_LOG,
    counts,
    maybe_retry,
    record_outcome,
    recover_stale,
)
from sweeper.signals import exit_code, interrupt_reason

log = logging.getLogger(__name__)

EXIT_FAILURES = 3
EXIT_CONFIG = 4  # this worker cannot compose the coordinator's config
RESUME_ATTR = "sweeper.resume_checkpoint"  # the checkpoint a retried trial continued from
RESUME_BEST_ATTR = "sweeper.resume_best"  # and the earlier attempt's best checkpoint
MIN_TRIALS_FOR_FAILURE_RATE = 5


def compose_sweep(overrides: list[str]) -> DictConfig:
    """Compose ``sweep.yaml`` with overrides (Hydra must be initialised by the caller)."""
    from hydra import compose

    return compose(config_name="sweep", overrides=overrides)


def trial_config(
    base_overrides: list[str], values: dict[str, Any], plan: SweepPlan,
    cache: dict[tuple[str, ...], DictConfig] | None = None,
) -> DictConfig:
    """The training config of one trial: the sweep's config with the sampled values.

    Hydra composes once per combination of config-group choices (``cache`` keeps them);
    the sampled values of plain keys are set on a copy.
    """
    settings = plan.search
    groups, keys = split_overrides(values)
    choice = tuple(groups)
    composed = cache.get(choice) if cache is not None else None
    if composed is None:
        composed = compose_sweep([*base_overrides, *groups])
        with open_dict(composed):
            composed.pop("search", None)
            composed.pop("hydra", None)
        if cache is not None:
            cache[choice] = composed
    cfg = copy.deepcopy(composed)
    for key, value in keys.items():
        if OmegaConf.select(cfg, key, default=_ABSENT) is _ABSENT:
            raise ConfigError(f"search.params.{key}: key not in this trial's config ({', '.join(groups)})")
        OmegaConf.update(cfg, key, value, merge=False)
    metric, direction = settings.metrics[0], settings.directions[0]
    cfg.monitor = metric
    cfg.monitor_mode = "max" if direction == "maximize" else "min"
    cfg.test = False
    cfg.progress_bar = False
    cfg.tracking.log_checkpoint = False
    return cfg


_ABSENT = object()


def objective_values(result: Any, settings: Any) -> list[float]:
    values = []
    for metric in settings.metrics:
        if metric == result.monitor and result.best_score is not None:
            values.append(float(result.best_score))
        elif metric == "model/num_parameters":
            values.append(float(result.num_parameters))
        else:
            values.append(float(result.metrics.get(metric, math.nan)))
    return values


class Worker:
    def __init__(self, plan: SweepPlan, index: int) -> None:
        import optuna

        from sweeper.search.storage import open_storage, study_lock

        self.plan = plan
        self.index = index
        self.settings = plan.search
        # the space the coordinator parsed (one order of shuffle()d choices for everyone)
        self.space: SearchSpace = SearchSpace.from_data(plan.space) if plan.space else parse_space(self.settings.params)
        self.storage_url = plan.storage
        self.storage = open_storage(self.storage_url)
        self.study_dir = Path(plan.study_dir)
        self.lock = lambda: study_lock(self.storage_url, plan.study_name)
        self.slot = 0  # this worker's place among the study's workers (its sampler stream)
        base = compose_sweep(plan.overrides)
        sampler = self._sampler(base)
        pruner = build_pruner(base.search.pruner, self.settings.multi_objective)
        self.study = optuna.load_study(
            study_name=plan.study_name, storage=self.storage, sampler=sampler, pruner=pruner
        )
        self.study_id = self.storage.get_study_id_from_name(plan.study_name)
        self._configs: dict[tuple[str, ...], DictConfig] = {}
        self.tracker = None
        if plan.tracking_enabled:
            from sweeper.tracking.mlflow import shared_tracker

            self.tracker = shared_tracker(base.tracking.uri, base.tracking.experiment)

    def _sampler(self, base: DictConfig) -> Any:
        """The study's sampler for this worker: its own seeded stream (workers that start
        at the same instant on several machines must not propose the same points), kept
        from repeating a live or finished trial's point (:mod:`.distinct`)."""
        node = base.search.sampler
        seed = None
        if "seed" in node and node.seed is not None:
            study_id = self.storage.get_study_id_from_name(self.plan.study_name)
            with self.lock():
                self.slot = join_study(self.storage, study_id)
            seed = worker_seed(int(node.seed), self.slot)
        grid = self.space.grid() if str(node._target_).endswith("GridSampler") else None
        sampler = build_sampler(node, grid, seed)
        if grid is not None or self.settings.allow_repeats:
            return sampler  # the grid sampler visits each point once itself
        return DistinctSampler(sampler, self.space, seed)

    # ----------------------------------------------------------------------- claim

    def _record(self, trial: Any) -> None:
        record_outcome(self.tracker, trial)

    def _claim(self) -> tuple[Any, dict[str, Any]] | str:
        """Ask for the next trial, or say why not: done, timeout, failures, wait."""
        with self.lock():
            recover_stale(self.study, self.storage, self.settings.retries, self._record,
                          self.settings.heartbeat_timeout)
            trials = self.study.get_trials(deepcopy=False)
            c = counts(trials)
            if c["DONE"] >= self.settings.n_trials:
                return "done"
            if self.plan.deadline is not None and time.time() > self.plan.deadline:
                return "timeout"
            if stop_reason(trials, self.settings) is not None:
                return "stopped"
            recent = [
                t for t in trials
                if t.datetime_start and t.datetime_start.timestamp() >= self.plan.started_at
                and (t.state.name in ("COMPLETE", "PRUNED")
                     or t.user_attrs.get(FAILURE_KIND_ATTR) == "error")
            ]  # fmt: skip
            errors = sum(1 for t in recent if t.user_attrs.get(FAILURE_KIND_ATTR) == "error")
            if len(recent) >= MIN_TRIALS_FOR_FAILURE_RATE and errors / len(recent) > self.settings.max_failure_rate:
                return "failures"
            if errors >= self.settings.n_trials * (self.settings.retries + 1):
                return "failures"  # even with max_failure_rate=1: failures alone never end a study
            if c["DONE"] + c["RUNNING"] >= self.settings.n_trials:
                return "wait"
            trial = self.study.ask()
            try:
                trial.set_user_attr(WORKER_ATTR, worker_id())
                trial.set_user_attr(HEARTBEAT_ATTR, time.time())
                values = self.space.suggest(trial)
            except KeyboardInterrupt:  # a signal between asking and training: interrupted, not abandoned
                self._interrupted(trial)
                raise
            return trial, values

    def _interrupted(self, trial: Any) -> None:
        """Fail a claimed trial as interrupted (and queue it again), unless it was told."""
        from optuna.trial import TrialState

        if self.storage.get_trial(trial._trial_id).state != TrialState.RUNNING:
            return
        log_file = self.study_dir / f"trial_{trial.number:04d}" / TRIAL_LOG
        self._fail(trial, log_file, interrupt_reason(), "interrupted", retry=True)

    # ------------------------------------------------------------------------- run

    def run(self) -> int:
        try:
            while True:
                claimed: tuple[Any, dict[str, Any]] | str | None = None
                try:
                    claimed = self._claim()
                    if claimed == "wait":
                        time.sleep(1.0)
                        continue
                    if claimed == "failures":
                        return EXIT_FAILURES
                    if isinstance(claimed, str):
                        return 0
                    trial, values = claimed
                    self._run_trial(trial, values)
                except KeyboardInterrupt:
                    if isinstance(claimed, tuple):  # claimed, not yet told: interrupted
                        self._interrupted(claimed[0])
                    raise
        finally:
            if self.tracker is not None:
                self.tracker.flush()  # the last trials' MLflow writes, before the process ends

    def _tell(self, trial: Any, log_file: Path, *args: Any, **kwargs: Any) -> Any:
        """Tell Optuna, then mirror the outcome onto the trial's MLflow run with its log."""
        frozen = self.study.tell(trial, *args, **kwargs)
        run_id = frozen.user_attrs.get(RUN_ID_ATTR)
        if self.tracker is not None and run_id and log_file.is_file():
            self.tracker.log_artifact(run_id, log_file)  # queued before the run's end
        record_outcome(self.tracker, frozen)
        return frozen

    def _fail(self, trial: Any, log_file: Path, reason: str, kind: str, retry: bool) -> None:
        from optuna.trial import TrialState

        trial.set_user_attr(FAILURE_ATTR, reason[:2000])
        trial.set_user_attr(FAILURE_KIND_ATTR, kind)
        frozen = self._tell(trial, log_file, state=TrialState.FAIL)
        if retry:
            maybe_retry(self.study, frozen, self.settings.retries)

    def _resume(self, trial: Any) -> Any:
        """A retried trial continues its earlier attempt: from that attempt's last
        checkpoint (or the one it had resumed from), with the epochs it reported told to
        this trial too, so the pruner sees the whole curve. None: nothing to continue."""
        from sweeper.training.run import Resume

        earlier = trial.user_attrs.get("sweeper.retry_of")
        if earlier is None:
            return None
        try:
            old = self.storage.get_trial(
                self.storage.get_trial_id_from_study_id_trial_number(self.study_id, int(earlier)))
        except KeyError:
            return None
        folder = self.study_dir / f"trial_{int(earlier):04d}" / "checkpoints"
        last = folder / "last.ckpt"
        checkpoint = str(last) if last.is_file() else old.user_attrs.get(RESUME_ATTR)
        if not checkpoint or not Path(checkpoint).is_file():
            return None
        best_file = folder / "best.ckpt"
        resume = Resume(checkpoint, best_checkpoint=str(best_file) if best_file.is_file()
                        else old.user_attrs.get(RESUME_BEST_ATTR))
        try:
            epoch = resume.epoch
        except Exception as exc:  # a checkpoint cut short by a kill: start afresh
            print(f"sweeper: not resuming from {checkpoint} ({type(exc).__name__}): training from epoch 0",
                  flush=True)
            return None
        earlier_values = {step: v for step, v in old.intermediate_values.items() if step <= epoch}
        if not self.settings.multi_objective:  # Optuna keeps no curve for several objectives
            for step, value in sorted(earlier_values.items()):
                trial.report(value, step)
        if earlier_values:
            pick = max if self.settings.directions[0] == "maximize" else min
            resume.best_score = pick(earlier_values.values())
        trial.set_user_attr(RESUME_ATTR, checkpoint)
        if resume.best_checkpoint:
            trial.set_user_attr(RESUME_BEST_ATTR, resume.best_checkpoint)
        trial.set_user_attr("sweeper.resumed_at_epoch", epoch + 1)
        print(f"sweeper: continuing trial #{earlier} from its checkpoint after epoch {epoch + 1} ({checkpoint})",
              flush=True)
        return resume

    def _run_trial(self, trial: Any, values: dict[str, Any]) -> None:
        """Train one trial with its output (and the traceback of a failure) in
        ``trial_NNNN/trial.log``, kept as an artifact of its run."""
        trial_dir = self.study_dir / f"trial_{trial.number:04d}"
        trial_dir.mkdir(parents=True, exist_ok=True)
        log_file = trial_dir / TRIAL_LOG
        with output_to(log_file):
            print(f"trial #{trial.number} (attempt {trial.user_attrs.get(ATTEMPT_ATTR, 1)}) on worker "
                  f"{worker_id()}: {json.dumps(values, default=str)}", flush=True)
            self._train_trial(trial, values, trial_dir, log_file)

    def _train_trial(self, trial: Any, values: dict[str, Any], trial_dir: Path, log_file: Path) -> None:
        from optuna.trial import TrialState

        from sweeper.search.pruning import pruning_callback
        from sweeper.training import run_training

        settings = self.settings
        try:
            cfg = trial_config(self.plan.overrides, values, self.plan, self._configs)
        except SweeperError as exc:
            print(f"sweeper: error: {exc}", file=sys.stderr, flush=True)
            self._fail(trial, log_file, str(exc), "error", retry=False)
            return
        groups, _ = split_overrides(values)
        choices = {**self.plan.choices, **{g.split("=", 1)[0]: g.split("=", 1)[1] for g in groups}}
        prune_trial = None if settings.multi_objective else trial
        tags = {
            "study": self.plan.study_name,
            "trial_number": trial.number,
            "sweeper.role": "trial",
            "attempt": trial.user_attrs.get(ATTEMPT_ATTR, 1),
        }
        child: list[str] = []

        def started(run_id: str) -> None:
            child.append(run_id)
            trial.set_user_attr(RUN_ID_ATTR, run_id)

        resume = self._resume(trial) if settings.cv_folds == 1 else None
        if resume is not None:
            tags.update({"resumed_from_trial": trial.user_attrs.get("sweeper.retry_of"),
                         "resumed_at_epoch": resume.epoch + 1})
        trial_id = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, trial.number)
        beat = Heartbeat(self.storage, trial_id, settings.heartbeat_timeout / 4)
        try:
            with beat:
                if settings.cv_folds > 1:
                    from sweeper.training.cv import run_cv

                    fold_started = time.monotonic()

                    def fold_callbacks() -> list[Any]:
                        # epochs are not pruned inside a fold; non-finite runs and the time cap still stop it
                        left = (None if settings.trial_timeout is None
                                else max(0.0, settings.trial_timeout - (time.monotonic() - fold_started)))
                        return [pruning_callback(None, settings.metrics[0], left)]

                    def after_fold(index: int, score: float) -> bool:
                        if prune_trial is None:
                            return False
                        prune_trial.report(score, step=index)
                        return bool(prune_trial.should_prune())

                    result = run_cv(
                        cfg, settings.cv_folds, trial_dir, choices=choices,
                        parent_run_id=self.plan.parent_run_id, run_name=f"trial-{trial.number:04d}",
                        tags=tags, track=self.plan.tracking_enabled, run_started=started,
                        after_fold=after_fold, record_state=False,
                        callbacks=fold_callbacks,
                    )  # fmt: skip
                else:
                    result = run_training(
                        cfg,
                        trial_dir,
                        choices=choices,
                        callbacks=[pruning_callback(prune_trial, settings.metrics[0], settings.trial_timeout)],
                        parent_run_id=self.plan.parent_run_id,
                        run_name=f"trial-{trial.number:04d}",
                        tags=tags,
                        track=self.plan.tracking_enabled,
                        run_started=started,
                        wait_for_tracking=False,
                        record_state=False,  # the outcome is recorded once Optuna is told
                        resume=resume,
                        own_processes=True,
                    )
        except KeyboardInterrupt:
            print(f"sweeper: {interrupt_reason()}", file=sys.stderr, flush=True)
            self._fail(trial, log_file, interrupt_reason(), "interrupted", retry=True)
            raise
        except DivergedError as exc:
            print(f"sweeper: {exc}", file=sys.stderr, flush=True)
            trial.set_user_attr(FAILURE_ATTR, str(exc))
            trial.set_user_attr(FAILURE_KIND_ATTR, "diverged")
            trial.set_user_attr(PRUNED_BY_ATTR, "diverged")
            if exc.epochs is not None:
                trial.set_user_attr("epochs", exc.epochs)
            if exc.duration_s is not None:
                trial.set_user_attr("duration_s", round(exc.duration_s, 3))
            self._tell(trial, log_file, state=TrialState.FAIL if settings.multi_objective else TrialState.PRUNED)
            return
        except SweeperError as exc:  # bad config or data: the same again on every retry
            print(f"sweeper: error: {exc}", file=sys.stderr, flush=True)
            self._fail(trial, log_file, " ".join(str(exc).split()), "error", retry=False)
            return
        except Exception as exc:  # one trial's error must not end the study
            traceback.print_exc()
            sys.stderr.flush()
            reason = " ".join(f"{type(exc).__name__}: {exc}".split())
            self._fail(trial, log_file, reason, "error", retry=True)
            return
        trial.set_user_attr("epochs", result.epochs)
        trial.set_user_attr("duration_s", round(result.duration_s, 3))
        trial.set_user_attr("num_parameters", result.num_parameters)
        if result.best_checkpoint:
            trial.set_user_attr("checkpoint", result.best_checkpoint)
        trial.set_user_attr("config", str(trial_dir / "config.yaml"))
        if result.pruned:
            print(f"sweeper: {result.prune_reason}", flush=True)
            trial.set_user_attr("prune_reason", result.prune_reason)
            trial.set_user_attr(PRUNED_BY_ATTR, "trial_timeout" if result.timed_out else "pruner")
            self._tell(trial, log_file, state=TrialState.PRUNED)
            return
        objective = objective_values(result, settings)
        if not all(math.isfinite(v) for v in objective):
            self._fail(trial, log_file, f"non-finite objective {objective}", "error", retry=False)
            return
        print(f"sweeper: complete after {result.epochs} epochs: "
              + ", ".join(f"{m}={v:.6g}" for m, v in zip(settings.metrics, objective)), flush=True)
        self._tell(trial, log_file, objective if settings.multi_objective else objective[0])


def config_difference(expected: Any, got: Any, prefix: str = "") -> str | None:
    """The first key where two resolved configs differ, described in one phrase."""
    if isinstance(expected, dict) and isinstance(got, dict):
        for key in sorted(set(expected) | set(got), key=str):
            where = f"{prefix}{key}"
            if key not in got:
                return f"{where} is missing"
            if key not in expected:
                return f"{where} is extra"
            found = config_difference(expected[key], got[key], f"{where}.")
            if found:
                return found
        return None
    if expected != got:
        return f"{prefix.rstrip('.') or 'the config'} is {got!r}, not {expected!r}"
    return None


def check_same_config(plan: SweepPlan) -> None:
    """Stop before the first trial if this worker composes another base config than the
    coordinator did (a config folder, experiment or override it cannot see)."""
    from sweeper.config import composed_form, redacted

    base = compose_sweep(plan.overrides)
    with open_dict(base):
        base.pop("search", None)
    mine = redacted(composed_form(base))
    difference = config_difference(plan.base_config, mine)
    if difference:
        raise ConfigError(
            f"this worker composed another config than `sweeper sweep` did ({difference}); "
            "every process must see the same config folder (-cd/--config-dir, "
            "hydra.searchpath) and the same files"
        )


def warm_up(hint: dict[str, Any]) -> None:
    """What a worker does while the coordinator checks the sweep: compose its config and
    build its data module, model and trainer once (the first trial then pays no
    first-call costs), and open the MLflow store when it already exists (a new store's
    schema is the coordinator's to create). Best effort: the coordinator's checks report
    any problem, and this worker is ended if they refuse the sweep."""
    from sweeper.composition import config_context
    from sweeper.training.build import check_trainer, preflight

    try:
        with config_context(hint["sources"]):
            cfg = compose_sweep(hint["overrides"])
            with open_dict(cfg):
                cfg.pop("search", None)
                cfg.pop("hydra", None)
            # Loading batches runs data code; only sweeper's own read-only loaders do it
            # here, so a user's prepare_data never runs twice at the same instant.
            ours = str(cfg.data.get("_target_", "")).startswith("sweeper.data.")
            preflight(cfg, check_batches=ours)
            check_trainer(cfg)
            if hint.get("tracking_store_exists"):
                from sweeper.tracking.mlflow import shared_tracker

                shared_tracker(cfg.tracking.uri, cfg.tracking.experiment)
    except Exception:
        log.debug("warm-up failed", exc_info=True)


@contextlib.contextmanager
def output_to(path: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors 1 and 2: Python, Lightning
    and C libraries alike) to ``path`` for the block, then back."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for d in (fd, *saved):
            os.close(d)


def _wait_for_plan(index: int) -> SweepPlan | None:
    """The plan's path, written on stdin by the coordinator once the study exists (after
    a first line of what to prepare meanwhile); then this process's output goes to its
    log in the study folder. None: the sweep will not begin."""
    first = sys.stdin.readline()
    if not first:
        return None
    hint = json.loads(first)
    if hint:
        warm_up(hint)
    line = sys.stdin.readline().strip()
    if not line:
        return None
    given = json.loads(line)
    plan = SweepPlan.load(given["plan"])
    # the file holds them without passwords; the pipe brings them whole
    plan.storage, plan.overrides = given["storage"], given["overrides"]
    log_path = Path(plan.study_dir) / f"worker_{index}.log"
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    return plan


def run_inline(plan: SweepPlan, log_path: Path) -> int:
    """The worker loop in this process: the coordinator's, when ``search.workers=1``
    (:class:`~sweeper.search.processes.InlineWorker`). It needs no check that it composed
    the coordinator's config: it is the coordinator. Output goes to ``log_path``, each
    trial's to its own log; the torch thread count is put back afterwards."""
    import torch

    from sweeper.composition import config_context

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, plan.threads))
    streams = sys.__stdout__, sys.__stderr__
    try:
        with output_to(log_path), contextlib.redirect_stdout(streams[0] or sys.stdout), \
                contextlib.redirect_stderr(streams[1] or sys.stderr), config_context(plan.config_sources):
            try:
                return Worker(plan, 0).run()
            except KeyboardInterrupt:
                return exit_code()
    finally:
        torch.set_num_threads(before)


def worker_main(plan_file: str, index: int, preload_tracking: bool = True) -> int:
    """Entry point of ``sweeper _worker PLAN INDEX`` (a process started by ``sweeper sweep``).

    With ``PLAN`` ``-`` the worker loads its libraries first and then waits for the plan's
    path on stdin, so its imports overlap the coordinator's checks.
    """
    # SIGTERM ends the worker like Ctrl-C does: the trial is marked, MLflow writes finish.
    from sweeper import signals
    from sweeper.composition import config_context

    signals.install()
    # Loaded before the first trial is asked, so no trial's timestamps or duration
    # include seconds of imports.
    import optuna  # noqa: F401
    import pytorch_lightning  # noqa: F401
    import torch

    if preload_tracking:
        import mlflow.tracking  # noqa: F401

    if plan_file == "-":
        waited = _wait_for_plan(index)
        if waited is None:
            return 0
        plan = waited
    else:
        plan = SweepPlan.load(plan_file)
    torch.set_num_threads(max(1, plan.threads))
    with config_context(plan.config_sources):
        try:
            check_same_config(plan)
        except SweeperError as exc:
            print(f"sweeper: error: {exc}", file=sys.stderr, flush=True)
            return EXIT_CONFIG
        worker = Worker(plan, index)
        try:
            return worker.run()
        except KeyboardInterrupt:
            return exit_code()
