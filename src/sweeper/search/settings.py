"""Typed settings of a sweep (the ``search.*`` keys), validated once, up front."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from omegaconf import DictConfig

from sweeper.config import as_dict
from sweeper.errors import ConfigError
from sweeper.schema import Setting, Table
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


_SLURM, _K8S = ("slurm",), ("kubernetes",)
_JOBS = ("slurm", "kubernetes")

LAUNCHER = Table("search.launcher.", [
    Setting("name", "choice", "local", "where the workers run", choices=LAUNCHERS, example="search/launcher=slurm"),
    Setting("jobs", "int", 2, "array tasks (pods), each a member of the multi-machine mode", low=1, only=_JOBS),
    Setting("workers_per_job", "int", 1, "`search.workers` inside each job", low=1, only=_JOBS),
    Setting("partition", "text", None, "as in hydra-submitit-launcher", null="the cluster's default partition",
            only=_SLURM),
    Setting("timeout_min", "int", 60, "each job's time limit, in minutes", low=1, only=_JOBS),
    Setting("cpus_per_task", "int", None, "each worker gets cpus ÷ workers threads", low=1,
            null="`workers_per_job` × `search.threads` (1 when threads is null)", only=_JOBS),
    Setting("gpus_per_node", "int", None, "GPUs per job", low=0,
            null="`workers_per_job` × `trainer.devices` on a gpu/cuda trainer", only=_JOBS),
    Setting("mem_gb", "number", None, "memory per job, in GB", low=0, above=True, null="the partition's default",
            only=_JOBS),
    Setting("array_parallelism", "int", None, "at most this many jobs at once", low=1, null="all of them",
            only=_SLURM),
    Setting("setup", "custom", [], "shell lines run first in each job, e.g. `[module load cuda/12.4]`",
            only=_SLURM, wanted="a list of shell lines"),
    Setting("additional_parameters", "custom", {}, "any other sbatch option, e.g. `{account: mylab, qos: high}`",
            only=_SLURM, wanted="a mapping of sbatch options"),
    Setting("signal_delay_s", "int", 120, "SIGUSR2 this many seconds before the time limit: the running "
            "trial is saved", low=0, only=_SLURM),
    Setting("wait", "bool", True, "follow the study here until it is done; false: print the job ids, their "
            "logs and the `sweeper compare` command, and return", only=_SLURM),
    Setting("requeue", "bool", False, "a job stopped by its time limit or preemption is submitted again",
            only=_SLURM),
    Setting("shared_filesystem", "bool", False, "the journal/SQLite storage and a file tracking store are on a "
            "shared file system", only=_JOBS),
    Setting("folder", "text", None, "job scripts and logs", null="`outputs/sweeps/<study>/jobs`", only=_SLURM),
    Setting("image", "text", None, "the container image with sweeper and your project installed", null="-",
            only=_K8S),
    Setting("namespace", "text", None, "the Kubernetes namespace", null="kubectl's current namespace", only=_K8S),
    Setting("secret", "text", None, "a Secret whose key SWEEPER_STORAGE holds the storage URL with its password",
            null="-", only=_K8S),
    Setting("apply", "bool", False, "true: kubectl apply the Job; false: print the manifest", only=_K8S),
])


def parse_launcher(raw: Any, problems: list[str]) -> LauncherSettings:
    """``search.launcher`` checked key by key (problems appended, one line each)."""
    if raw is None:
        return LauncherSettings()
    if not isinstance(raw, dict):
        problems.append(f"search.launcher must be a launcher config, got {raw!r}; e.g. search/launcher=slurm")
        return LauncherSettings()
    name = raw.get("name", "local")
    if not LAUNCHER["name"].ok(name):
        problems.append(LAUNCHER["name"].problem(LAUNCHER.prefix, name))
        return LauncherSettings()
    LAUNCHER.unknown(raw, problems, variant=name, message=lambda key, known: (
        f"search.launcher.{key}: not a key of the {name} launcher; its keys are "
        f"{', '.join(sorted(set(known) - {'name'})) or 'none'}"))
    values: dict[str, Any] = {k: v for k, v in LAUNCHER.values(raw, problems, variant=name).items()
                              if k in raw and v is not None}
    if "mem_gb" in values:
        values["mem_gb"] = float(values["mem_gb"])
    if name in LAUNCHER["setup"].only:
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
            problems.append(f"search.launcher.additional_parameters must map sbatch options to values, got "
                            f"{extra!r}; e.g. search.launcher.additional_parameters.account=mylab")
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
    worker_process: bool = False  # a single worker in a process of its own
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


_STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")

SEARCH = Table("search.", [
    Setting("n_trials", "int", 20, "finished (complete + pruned) trials the study runs to, across all invocations",
            low=1, example="search.n_trials=20"),
    Setting("timeout", "number", None, "no new trial starts after this many seconds", unit="seconds", low=0,
            above=True, null="no limit", example="search.timeout=3600"),
    Setting("metric", "custom", "${monitor}", "a metric the task logs every epoch (see [Tasks](#tasks)); a list "
            "for multi-objective, e.g. `search.metric=[val/acc,model/num_parameters]`",
            wanted="a metric name such as val/acc (or a list)",
            shown="the task's `monitor` (`val/acc` for classification, `val/loss` otherwise)"),
    Setting("direction", "custom", None, "one per metric", wanted="maximize or minimize",
            null="the monitor's mode for the monitored metric, else the metric's name decides"),
    Setting("study_name", "custom", None, "ties together the Optuna study, `outputs/sweeps/<study>/` and the "
            "MLflow parent run", wanted="1-100 letters, digits, '.', '_' or '-'",
            null="the experiment's name, else `default`",
            valid=lambda v: isinstance(v, str) and _STUDY_NAME.fullmatch(v) is not None,
            example="search.study_name=digits-cnn"),
    Setting("storage", "custom", None, "any Optuna storage URL: `postgresql://user@host/db` (see [Workers and "
            "several machines](#workers-and-several-machines)), `mysql://…`, `sqlite:///optuna.db`, a "
            "`.journal` path", wanted="a storage URL", valid=lambda v: isinstance(v, str) and bool(v),
            null="the journal file `outputs/sweeps/<study>/optuna.journal`"),
    Setting("workers", "int", 1, "workers on this machine: one runs in the command's own process, more are "
            "processes of their own", low=1, example="search.workers=2"),
    Setting("worker_process", "bool", False, "run even a single worker in a process of its own (a trial "
            "that crashes the interpreter, or a kill -9 of it, then leaves the command to mark the trial)",
            example="search.worker_process=true"),
    Setting("threads", "int", None, "torch/OpenMP threads per worker", low=1,
            null="cores ÷ workers, or 1 when other work is running as the sweep starts (see [Workers and "
            "several machines](#workers-and-several-machines))", example="search.threads=1"),
    Setting("seed", "int", 0, "seeds the sampler: the first worker to join the study samples as "
            "`Sampler(seed=seed)`, every later one (other workers, other machines, resumes) gets a stream of "
            "its own", null="unseeded", example="search.seed=0"),
    Setting("max_failure_rate", "number", 0.5, "stop when more than this share of trials fails (checked from 5 "
            "trials on); failures alone also end the sweep after `n_trials × (retries + 1)` of them",
            low=0, high=1, example="search.max_failure_rate=0.5"),
    Setting("retries", "int", 1, "run an abandoned, interrupted or crashed trial's parameters again, this many "
            "times", low=0, example="search.retries=1"),
    Setting("heartbeat_timeout", "number", 60, "seconds without a heartbeat after which another machine fails "
            "a trial as abandoned", unit="seconds", low=5, example="search.heartbeat_timeout=60"),
    Setting("force", "bool", False, "resume even though what defines the study changed (see "
            "[Resuming](#resuming-ctrl-c-and-failures))", example="search.force=true"),
    Setting("register_model", "bool", True, "register the best model under the study's name",
            example="search.register_model=false"),
    Setting("allow_repeats", "bool", False, "let a trial get the parameters of a running, queued or finished "
            "trial (for noisy objectives); by default every point is trained once, and a finite space with "
            "fewer points than `n_trials` runs each point once", example="search.allow_repeats=true"),
    Setting("cv.folds", "int", 1, "k ≥ 2 scores each trial by k-fold cross-validation (see "
            "[Cross-validation](#cross-validation))", low=1, example="search.cv.folds=5"),
    Setting("enqueue", "custom", [], "parameter sets tried first, e.g. `search.enqueue='[{optimizer.lr: 0.01, "
            "data.batch_size: 64}]'` (see [Study control](#study-control))", wanted="a list of parameter sets"),
    Setting("warm_start.study", "custom", None, "also try first the best `top` complete trials of this study",
            wanted="a study name", null="-", valid=lambda v: isinstance(v, str) and bool(v)),
    Setting("warm_start.top", "int", 5, "how many of its best complete trials", low=1),
    Setting("warm_start.storage", "custom", None, "its Optuna storage", wanted="a storage URL",
            null="this study's storage, else its local journal", valid=lambda v: isinstance(v, str) and bool(v)),
    Setting("patience", "int", None, "stop when the last `patience` finished trials brought no improvement of "
            "at least `min_delta`", low=1, null="never", example="search.patience=10"),
    Setting("min_delta", "number", 0.0, "the improvement that counts for `patience`", low=0,
            example="search.min_delta=0.001"),
    Setting("trial_timeout", "number", None, "seconds of training per trial: a trial still training then "
            "stops, PRUNED with `pruned_by=trial_timeout`", unit="seconds", low=0, above=True, null="no limit",
            example="search.trial_timeout=600"),
    Setting("epoch_budget", "int", None, "no new trial starts once all trials together trained this many "
            "epochs", low=1, null="no budget", example="search.epoch_budget=200"),
    Setting("params", "custom", {}, "the search space: config key → space (see [Search spaces](#search-spaces)); "
            "a config group, `search/params=lr_batch`", wanted="a mapping of config keys to search spaces",
            shown="`lr_batch`"),
    Setting("sampler", "custom", "tpe", "a config group (below)", wanted="a sampler config", shown="`tpe`"),
    Setting("pruner", "custom", "median", "a config group (below)", wanted="a pruner config", shown="`median`"),
    Setting("launcher", "custom", "local", "a config group: `local`, `slurm` or `kubernetes` (see [Run on a "
            "SLURM cluster](#run-on-a-slurm-cluster))", wanted="a launcher config", shown="`local`"),
])


def parse_settings(
    search: DictConfig,
    choices: dict[str, str] | None = None,
    monitor: str | None = None,
    monitor_mode: str | None = None,
) -> SearchSettings:
    """Check every ``search.*`` key against :data:`SEARCH` and build
    :class:`SearchSettings`; all problems at once.

    ``search.direction: null`` takes each metric's direction from ``monitor_mode`` (for
    the monitored metric) or from its name (loss, mae … minimise; acc, f1, r2 … maximise).
    """
    problems: list[str] = []
    undirected: tuple[str, ...] = ()
    raw = as_dict(search)
    assert raw is not None
    SEARCH.unknown(raw, problems)
    cv, warm = raw.get("cv") or {}, raw.get("warm_start") or {}
    if not isinstance(cv, dict) or set(cv) - {"folds"}:
        problems.append(f"search.cv must be a mapping with one key, folds; got {cv!r}; e.g. search.cv.folds=5")
        raw["cv"] = {}
    if not isinstance(warm, dict) or set(warm) - {"study", "top", "storage"}:
        problems.append(f"search.warm_start must be a mapping of study, top and storage, got {warm!r}; "
                        "e.g. search.warm_start.study=digits-mlp search.warm_start.top=5")
        raw["warm_start"] = {}
    v = SEARCH.values(raw, problems)
    if v["study_name"] is None:  # null means "from the experiment", filled in by the command
        problems.append(SEARCH["study_name"].problem(SEARCH.prefix, None).replace(" or null", ""))
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
    if v["patience"] is not None and len(metrics) > 1:
        problems.append("search.patience: a multi-objective study has no single best value to watch; "
                        "drop search.patience or optimise one metric")
    enqueue = raw.get("enqueue") or []
    if not isinstance(enqueue, list) or not all(isinstance(e, dict) and e for e in enqueue):
        problems.append(f"search.enqueue must be a list of parameter sets, got {enqueue!r}; e.g. "
                        "search.enqueue='[{optimizer.lr: 0.01, data.batch_size: 64}]'")
        enqueue = []
    launcher = parse_launcher(raw.get("launcher"), problems)
    params = raw.get("params")
    if not isinstance(params, dict) or not params:
        problems.append("search.params must map config keys to search spaces; see README 'Search spaces'")
        params = {}
    if problems:
        raise ConfigError(problems)
    choices = choices or {}
    number = lambda key: float(v[key]) if v[key] is not None else None  # noqa: E731
    return SearchSettings(
        n_trials=v["n_trials"],
        timeout=number("timeout"),
        metrics=tuple(metrics),
        directions=tuple(directions),
        study_name=v["study_name"],
        storage=v["storage"],
        workers=v["workers"],
        worker_process=v["worker_process"],
        threads=v["threads"],
        seed=v["seed"],
        max_failure_rate=float(v["max_failure_rate"]),
        retries=v["retries"],
        heartbeat_timeout=float(v["heartbeat_timeout"]),
        force=v["force"],
        register_model=v["register_model"],
        allow_repeats=v["allow_repeats"],
        cv_folds=v["cv.folds"],
        sampler_name=choices.get("search/sampler", "custom"),
        pruner_name=choices.get("search/pruner", "custom"),
        params=params,
        enqueue=tuple(enqueue),
        warm_start_study=v["warm_start.study"],
        warm_start_top=v["warm_start.top"],
        warm_start_storage=v["warm_start.storage"],
        patience=v["patience"],
        min_delta=float(v["min_delta"]),
        trial_timeout=number("trial_timeout"),
        epoch_budget=v["epoch_budget"],
        undirected=undirected,
        launcher=launcher,
    )
