"""Typed settings of a sweep (the ``search.*`` keys), validated once, up front."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from omegaconf import DictConfig, OmegaConf

from sweeper.errors import ConfigError
from sweeper.tracking.stores import mask_url  # noqa: F401 - part of this module's interface

DIRECTIONS = ("maximize", "minimize")
Direction = Literal["maximize", "minimize"]


LAUNCHERS = ("local", "slurm", "kubernetes")


@dataclass(frozen=True)
class LauncherSettings:
    """Where a sweep's workers run (``search.launcher``, a config group): ``local``
    processes on this machine, or ``jobs`` SLURM array tasks / Kubernetes pods, each a
    member of the multi-machine mode running ``workers_per_job`` workers. The names are
    those of hydra-submitit-launcher where they mean the same."""

    name: str = "local"
    jobs: int = 1
    workers_per_job: int = 1
    partition: str | None = None
    timeout_min: int = 60
    cpus_per_task: int | None = None  # null: workers_per_job x threads per worker
    gpus_per_node: int | None = None  # null: workers_per_job x trainer.devices on a GPU trainer
    mem_gb: float | None = None
    array_parallelism: int | None = None  # null: every job at once
    setup: tuple[str, ...] = ()  # shell lines run before each job (module load cuda ...)
    additional_parameters: dict[str, Any] = field(default_factory=dict)  # any sbatch option
    signal_delay_s: int = 120  # SIGUSR2 this long before the time limit: the trial is saved
    wait: bool = True  # follow the study until it is done; false: print the job ids and return
    requeue: bool = False  # a job preempted or out of time is submitted again
    shared_filesystem: bool = False  # a journal/SQLite store (or file tracking) every node sees
    folder: str | None = None  # submitit's folder; null: <study folder>/jobs
    # kubernetes
    image: str | None = None
    namespace: str | None = None
    secret: str | None = None  # a Secret holding the storage URL (key SWEEPER_STORAGE)
    apply: bool = False  # kubectl apply the Job; false: print it

    @property
    def remote(self) -> bool:
        return self.name != "local"


_LAUNCHER_KEYS = {
    "local": {"name"},
    "slurm": {"name", "jobs", "workers_per_job", "partition", "timeout_min", "cpus_per_task", "gpus_per_node",
              "mem_gb", "array_parallelism", "setup", "additional_parameters", "signal_delay_s", "wait",
              "requeue", "shared_filesystem", "folder"},
    "kubernetes": {"name", "jobs", "workers_per_job", "cpus_per_task", "gpus_per_node", "mem_gb", "image",
                   "namespace", "secret", "apply", "shared_filesystem", "timeout_min"},
}


def parse_launcher(raw: Any, problems: list[str]) -> LauncherSettings:
    """``search.launcher`` checked key by key (problems appended, one line each)."""
    if raw is None:
        return LauncherSettings()
    if not isinstance(raw, dict):
        problems.append(f"search.launcher must be a launcher config, got {raw!r}; e.g. search/launcher=slurm")
        return LauncherSettings()
    name = raw.get("name", "local")
    if name not in LAUNCHERS:
        problems.append(f"search.launcher.name must be one of {', '.join(LAUNCHERS)}, got {name!r}; "
                        "e.g. search/launcher=slurm")
        return LauncherSettings()
    allowed = _LAUNCHER_KEYS[name]
    for key in sorted(set(raw) - allowed):
        problems.append(f"search.launcher.{key}: not a key of the {name} launcher; its keys are "
                        f"{', '.join(sorted(allowed - {'name'})) or 'none'}")
    values: dict[str, Any] = {"name": name}

    def integer(key: str, low: int, optional: bool = False) -> None:
        value = raw.get(key)
        if key not in raw or (optional and value is None):
            return
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            problems.append(f"search.launcher.{key} must be an integer >= {low}"
                            f"{' or null' if optional else ''}, got {value!r}")
            return
        values[key] = value

    integer("jobs", 1)
    integer("workers_per_job", 1)
    integer("timeout_min", 1)
    integer("signal_delay_s", 0)
    integer("cpus_per_task", 1, optional=True)
    integer("gpus_per_node", 0, optional=True)
    integer("array_parallelism", 1, optional=True)
    mem = raw.get("mem_gb")
    if mem is not None:
        if isinstance(mem, bool) or not isinstance(mem, (int, float)) or mem <= 0:
            problems.append(f"search.launcher.mem_gb must be a number > 0 or null, got {mem!r}")
        else:
            values["mem_gb"] = float(mem)
    for key in ("partition", "folder", "image", "namespace", "secret"):
        value = raw.get(key)
        if value is not None:
            if not isinstance(value, str) or not value.strip():
                problems.append(f"search.launcher.{key} must be a non-empty string or null, got {value!r}")
            else:
                values[key] = value
    for key in ("wait", "requeue", "shared_filesystem", "apply"):
        if key in raw:
            if not isinstance(raw[key], bool):
                problems.append(f"search.launcher.{key} must be true or false, got {raw[key]!r}")
            else:
                values[key] = raw[key]
    setup = raw.get("setup") or []
    if isinstance(setup, str):
        setup = [setup]
    if not isinstance(setup, list) or not all(isinstance(line, str) for line in setup):
        problems.append(f"search.launcher.setup must be a list of shell lines, got {setup!r}; e.g. "
                        "search.launcher.setup='[module load cuda]'")
    else:
        values["setup"] = tuple(setup)
    extra = raw.get("additional_parameters") or {}
    if not isinstance(extra, dict) or not all(isinstance(k, str) for k in extra):
        problems.append(f"search.launcher.additional_parameters must map sbatch options to values, got {extra!r}; "
                        "e.g. search.launcher.additional_parameters.account=mylab")
    else:
        values["additional_parameters"] = dict(extra)
    return LauncherSettings(**values)


@dataclass(frozen=True)
class SearchSettings:
    """What ``sweeper sweep`` reads from ``search.*`` (sampler and pruner are groups)."""

    n_trials: int = 20
    timeout: float | None = None
    metrics: tuple[str, ...] = ("val/acc",)
    directions: tuple[Direction, ...] = ("maximize",)
    study_name: str = "sweep"
    storage: str | None = None
    workers: int = 1
    threads: int | None = None
    seed: int | None = 0
    max_failure_rate: float = 0.5
    retries: int = 1
    heartbeat_timeout: float = 60.0
    force: bool = False
    register_model: bool = True
    allow_repeats: bool = False  # a trial may get the parameters of another live or finished one
    cv_folds: int = 1
    sampler_name: str = "tpe"
    pruner_name: str = "median"
    params: dict[str, Any] = field(default_factory=dict)
    # study control
    enqueue: tuple[dict[str, Any], ...] = ()  # config values tried first
    warm_start_study: str | None = None  # enqueue the best trials of this study
    warm_start_top: int = 5
    warm_start_storage: str | None = None
    patience: int | None = None  # stop after this many finished trials without improvement
    min_delta: float = 0.0
    trial_timeout: float | None = None  # seconds of training per trial
    epoch_budget: int | None = None  # epochs trained by all trials together
    undirected: tuple[str, ...] = ()  # metrics whose direction neither search.direction nor the name gives
    launcher: LauncherSettings = field(default_factory=LauncherSettings)

    def check_directions(self) -> None:
        """Refuse a metric whose direction is unknown (after the metric itself was checked)."""
        if self.undirected:
            raise ConfigError(
                f"search.direction: cannot tell whether to maximize or minimize {', '.join(self.undirected)}; "
                "set it, e.g. search.direction=maximize"
            )

    @property
    def multi_objective(self) -> bool:
        return len(self.metrics) > 1


def _as_tuple(value: Any) -> tuple[Any, ...]:
    if isinstance(value, (list, tuple)):
        return tuple(value)
    return (value,)


_LOWER_IS_BETTER = ("loss", "mse", "mae", "rmse", "error", "num_parameters", "time")
_HIGHER_IS_BETTER = ("acc", "accuracy", "f1", "r2", "precision", "recall", "auc", "auroc")


def infer_direction(metric: str, monitor: str | None = None, monitor_mode: str | None = None) -> str | None:
    """maximize/minimize for a metric: the monitor's mode, else from the metric's name."""
    if metric == monitor and monitor_mode in ("min", "max"):
        return "maximize" if monitor_mode == "max" else "minimize"
    name = metric.rsplit("/", 1)[-1].lower()
    if any(name == w or name.endswith(("_" + w, "-" + w)) for w in _LOWER_IS_BETTER):
        return "minimize"
    if any(name == w or name.endswith(("_" + w, "-" + w)) for w in _HIGHER_IS_BETTER):
        return "maximize"
    return None


def parse_settings(
    search: DictConfig,
    choices: dict[str, str] | None = None,
    monitor: str | None = None,
    monitor_mode: str | None = None,
) -> SearchSettings:
    """Check every ``search.*`` key and build :class:`SearchSettings`; all problems at once.

    ``search.direction: null`` takes each metric's direction from ``monitor_mode`` (for
    the monitored metric) or from its name (loss, mae … minimise; acc, f1, r2 … maximise).
    """
    problems: list[str] = []
    undirected: tuple[str, ...] = ()
    raw = OmegaConf.to_container(search, resolve=True)
    assert isinstance(raw, dict)
    known = {
        "n_trials", "timeout", "metric", "direction", "study_name", "storage", "workers", "seed",
        "max_failure_rate", "retries", "force", "register_model", "params", "sampler", "pruner",
        "cv", "threads", "heartbeat_timeout", "enqueue", "warm_start", "patience", "min_delta",
        "trial_timeout", "epoch_budget", "allow_repeats", "launcher",
    }  # fmt: skip
    for key in sorted(set(raw) - known):
        problems.append(f"search.{key}: unknown key; known keys are {', '.join(sorted(known))}")

    def integer(key: str, low: int, fix: str) -> int:
        value = raw.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            problems.append(f"search.{key} must be an integer >= {low}, got {value!r}; e.g. {fix}")
            return low
        return value

    n_trials = integer("n_trials", 1, "search.n_trials=20")
    workers = integer("workers", 1, "search.workers=2")
    retries = integer("retries", 0, "search.retries=1")
    threads = raw.get("threads")
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        problems.append(f"search.threads must be an integer >= 1 or null (chosen per machine), got {threads!r}; "
                        "e.g. search.threads=1")
        threads = None
    timeout = raw.get("timeout")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
        problems.append(f"search.timeout must be a number of seconds > 0 or null, got {timeout!r}")
        timeout = None
    beat = raw.get("heartbeat_timeout", 60.0)
    if isinstance(beat, bool) or not isinstance(beat, (int, float)) or beat < 5:
        problems.append(f"search.heartbeat_timeout must be a number of seconds >= 5, got {beat!r}; "
                        "e.g. search.heartbeat_timeout=60")
        beat = 60.0
    seed = raw.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        problems.append(f"search.seed must be an integer or null, got {seed!r}")
        seed = None
    rate = raw.get("max_failure_rate")
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
        problems.append(f"search.max_failure_rate must be between 0 and 1, got {rate!r}")
        rate = 0.5
    metrics = _as_tuple(raw.get("metric"))
    directions = _as_tuple(raw.get("direction"))
    if raw.get("direction") is None and metrics and all(isinstance(m, str) and m for m in metrics):
        inferred = [infer_direction(m, monitor, monitor_mode) for m in metrics]
        # told once the metric is known to exist (check_directions): a misspelt metric is
        # reported as unknown, not as a metric without a direction
        undirected = tuple(m for m, d in zip(metrics, inferred) if d is None)
        directions = tuple(d or "maximize" for d in inferred)
    if not metrics or not all(isinstance(m, str) and m for m in metrics):
        problems.append(f"search.metric must be a metric name such as val/acc (or a list), got {raw.get('metric')!r}")
    if len(directions) != len(metrics) or any(d not in DIRECTIONS for d in directions):
        problems.append(
            f"search.direction must be maximize or minimize, one per metric ({len(metrics)}), "
            f"got {raw.get('direction')!r}"
        )
    name = raw.get("study_name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", name):
        problems.append(
            f"search.study_name must be 1-100 letters, digits, '.', '_' or '-', got {name!r}; "
            "e.g. search.study_name=digits-cnn"
        )
    storage = raw.get("storage")
    if storage is not None and (not isinstance(storage, str) or not storage):
        problems.append(f"search.storage must be a storage URL or null, got {storage!r}")
    for key in ("force", "register_model", "allow_repeats"):
        if not isinstance(raw.get(key, False), bool):
            problems.append(f"search.{key} must be true or false, got {raw.get(key)!r}")
    cv = raw.get("cv") or {}
    folds = cv.get("folds", 1) if isinstance(cv, dict) else None
    if not isinstance(cv, dict) or set(cv) - {"folds"}:
        problems.append(f"search.cv must be a mapping with one key, folds; got {cv!r}; e.g. search.cv.folds=5")
        folds = 1
    elif not isinstance(folds, int) or isinstance(folds, bool) or folds < 1:
        problems.append(f"search.cv.folds must be an integer >= 1 (1: no cross-validation), got {folds!r}")
        folds = 1
    def optional_number(key: str, fix: str, integer_only: bool = False) -> Any:
        value = raw.get(key)
        wrong = isinstance(value, bool) or not isinstance(value, int if integer_only else (int, float))
        if value is not None and (wrong or value <= 0):
            kind = "an integer >= 1" if integer_only else "a number > 0"
            problems.append(f"search.{key} must be {kind} or null, got {value!r}; e.g. {fix}")
            return None
        return value

    patience = optional_number("patience", "search.patience=10", integer_only=True)
    trial_timeout = optional_number("trial_timeout", "search.trial_timeout=600")
    epoch_budget = optional_number("epoch_budget", "search.epoch_budget=200", integer_only=True)
    min_delta = raw.get("min_delta", 0.0)
    if isinstance(min_delta, bool) or not isinstance(min_delta, (int, float)) or min_delta < 0:
        problems.append(f"search.min_delta must be a number >= 0, got {min_delta!r}; e.g. search.min_delta=0.001")
        min_delta = 0.0
    if patience is not None and len(metrics) > 1:
        problems.append("search.patience: a multi-objective study has no single best value to watch; "
                        "drop search.patience or optimise one metric")
    enqueue = raw.get("enqueue") or []
    if not isinstance(enqueue, list) or not all(isinstance(e, dict) and e for e in enqueue):
        problems.append(f"search.enqueue must be a list of parameter sets, got {enqueue!r}; e.g. "
                        "search.enqueue='[{optimizer.lr: 0.01, data.batch_size: 64}]'")
        enqueue = []
    warm = raw.get("warm_start") or {}
    warm_study, warm_top, warm_storage = None, 5, None
    if not isinstance(warm, dict) or set(warm) - {"study", "top", "storage"}:
        problems.append(f"search.warm_start must be a mapping of study, top and storage, got {warm!r}; "
                        "e.g. search.warm_start.study=digits-mlp search.warm_start.top=5")
    else:
        warm_study, warm_top, warm_storage = warm.get("study"), warm.get("top", 5), warm.get("storage")
        if warm_study is not None and (not isinstance(warm_study, str) or not warm_study):
            problems.append(f"search.warm_start.study must be a study name or null, got {warm_study!r}")
            warm_study = None
        if not isinstance(warm_top, int) or isinstance(warm_top, bool) or warm_top < 1:
            problems.append(f"search.warm_start.top must be an integer >= 1, got {warm_top!r}")
            warm_top = 5
        if warm_storage is not None and (not isinstance(warm_storage, str) or not warm_storage):
            problems.append(f"search.warm_start.storage must be a storage URL or null, got {warm_storage!r}")
            warm_storage = None
    launcher = parse_launcher(raw.get("launcher"), problems)
    params = raw.get("params")
    if not isinstance(params, dict) or not params:
        problems.append("search.params must map config keys to search spaces; see README 'Search spaces'")
        params = {}
    if problems:
        raise ConfigError(problems)
    assert isinstance(name, str)  # else a problem above
    choices = choices or {}
    return SearchSettings(
        n_trials=n_trials,
        timeout=float(timeout) if timeout is not None else None,
        metrics=tuple(metrics),
        directions=tuple(directions),
        study_name=name,
        storage=storage,
        workers=workers,
        threads=threads,
        seed=seed,
        max_failure_rate=float(rate),
        retries=retries,
        heartbeat_timeout=float(beat),
        force=raw["force"],
        register_model=raw["register_model"],
        allow_repeats=bool(raw.get("allow_repeats", False)),
        cv_folds=folds,
        sampler_name=choices.get("search/sampler", "custom"),
        pruner_name=choices.get("search/pruner", "custom"),
        params=params,
        enqueue=tuple(enqueue),
        warm_start_study=warm_study,
        warm_start_top=warm_top,
        warm_start_storage=warm_storage,
        patience=patience,
        min_delta=float(min_delta),
        trial_timeout=float(trial_timeout) if trial_timeout is not None else None,
        epoch_budget=epoch_budget,
        undirected=undirected,
        launcher=launcher,
    )
