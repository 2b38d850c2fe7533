"""The ``sweeper`` command line.

``sweeper <command> [hydra overrides]``. Importing this module loads neither torch,
Lightning nor MLflow; each command imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from sweeper import __version__
from sweeper.errors import SweeperError

DDP_CONFIG_ENV = "SWEEPER_DDP_CONFIG"  # same value as sweeper.training.run.DDP_CONFIG_ENV

USAGE = """\
usage: sweeper <command> [OVERRIDE ...]

Hyperparameter search for PyTorch Lightning models, configured with Hydra,
searched with Optuna and recorded in MLflow.

commands:
  train     train one model (Hydra overrides; -m for a multirun)
  sweep     run or resume an Optuna search; every trial is recorded in MLflow
  compare   table of a study's trials, or two studies side by side (--format markdown|csv|json)
  evaluate  re-score a recorded model (run id or study) on the test split, log it to the run
  logs      one trial's output and traceback: sweeper logs STUDY [TRIAL] (--jobs: SLURM jobs)
  serve     REST endpoint for a registered model (MLflow's scoring server) on 127.0.0.1
  compress  int8 and pruned variants of a model: test metric, size, latency; registers the best
  export    TorchScript and ONNX files of a model, checked against PyTorch
  ui        start the MLflow UI on 127.0.0.1 and print the URL of the latest study
  version   print the version

Every command takes Hydra overrides (KEY=VALUE, GROUP=OPTION) and Hydra's flags:
  sweeper train --help       config groups and keys
  sweeper train --cfg job    print the composed config
  sweeper train model=rnn optimizer=sgd optimizer.lr=0.05 trainer.max_epochs=5
  sweeper sweep search.n_trials=40 search.sampler=random search.pruner=none
  sweeper sweep experiment=digits_cnn search.workers=2
"""


def _fail(message: str) -> int:
    print(f"sweeper: error: {message}", file=sys.stderr)
    return 2


def _first_line(text: str) -> str:
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip()
    return text.strip()


HOS_REFUSAL = (
    "override /hydra/sweeper: optuna: sweeper runs the Optuna study itself, without Hydra's "
    "sweeper plugin; in that file drop the defaults line and `hydra.mode`, and write "
    "hydra.sweeper.params as search.params, optimized_metric as search.metric, "
    "hydra.sweeper.direction/n_trials/study_name/storage as search.direction/n_trials/"
    "study_name/storage, and the sampler as search/sampler=tpe, or run the file as "
    "`sweeper sweep hparams_search=NAME` (README 'Coming from lightning-hydra-template')"
)


def yaml_error(exc: Exception) -> str:
    """``file:line:column: problem`` for a YAML syntax error in a config file."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or _first_line(str(exc))
    if mark is None:
        return f"YAML syntax error: {problem}"
    return f"{mark.name}:{mark.line + 1}:{mark.column + 1}: YAML syntax error: {problem}"


def explain(exc: BaseException, command: str) -> str:
    """One line that says which key is wrong and how to fix it."""
    from hydra.errors import (
        ConfigCompositionException,
        MissingConfigException,
        OverrideParseException,
    )
    from omegaconf.errors import OmegaConfBaseException

    text = str(exc)
    sweep_value = re.search(r"Sweep parameters '([^=']+)=([^']*)' requires --multirun", text)
    if sweep_value and sweep_value.group(1).lstrip("+~").startswith("search.params."):
        key, value = sweep_value.groups()
        return (f"{key}: quote the search space for Hydra as well as for the shell: "
                f"'{key}=\"{value}\"'")
    if isinstance(exc, MissingConfigException) and "hydra/sweeper" in text and "optuna" in text:
        return HOS_REFUSAL
    if isinstance(exc, MissingConfigException):
        missing = re.search(r"Could not find '([^']+)'", text)
        group = re.search(r"Available options in '([^']+)':\n((?:\t.*\n?)+)", text)
        if missing and group:
            name = group.group(1)
            options = ", ".join(o.strip() for o in group.group(2).splitlines() if o.strip())
            path = missing.group(1)
            choice = path[len(name) + 1 :] if path.startswith(name + "/") else path.rsplit("/", 1)[-1]
            return f"{name}={choice}: no such option in group '{name}'; choose one of {options}"
        if missing:
            return f"config '{missing.group(1)}' not found; see `sweeper {command} --help`"
        return _first_line(text)
    if isinstance(exc, ConfigCompositionException):
        override = re.search(r"Could not override '([^']+)'", text)
        cause = str(exc.__cause__ or "")
        if override and "not in struct" in cause:
            key = override.group(1)
            return (
                f"{key}: unknown key; check the spelling against `sweeper {command} --cfg job`, "
                f"or add a new key with +{key}=<value>"
            )
        if override:
            return f"{override.group(1)}: {_first_line(cause or text)}"
        delete = re.search(r"Could not delete from config. '([^']+)'", text)
        if delete:
            return f"{delete.group(1)}: cannot delete, the key is not in the config"
        return _first_line(text) + (f" ({_first_line(cause)})" if cause else "")
    if isinstance(exc, OverrideParseException):
        return f"cannot parse override: {_first_line(text)}; write KEY=VALUE or GROUP=OPTION"
    if isinstance(exc, OmegaConfBaseException):
        key = getattr(exc, "full_key", None)
        msg = _first_line(text)
        return f"{key}: {msg}" if key else msg
    return _first_line(text)


class _UserError(SystemExit):
    """Carries a :class:`SweeperError` out of a Hydra job.

    Hydra reports an ``Exception`` from a job with lines of its own before re-raising;
    a ``SystemExit`` passes through untouched, so the CLI prints just our line.
    """

    def __init__(self, message: str) -> None:
        super().__init__(2)
        self.message = message


def _guard(task: Callable[[Any], Any]) -> Callable[[Any], Any]:
    @functools.wraps(task)
    def job(cfg: Any) -> Any:
        try:
            from omegaconf import OmegaConf

            from sweeper import trust

            # the user's own configs: their targets may be rebuilt from the files they write
            trust.trust_config(OmegaConf.to_container(cfg, resolve=False))  # type: ignore[arg-type]
            return task(cfg)
        except SweeperError as exc:
            _leave_no_folder()  # bad input: nothing created, not even Hydra's run folder
            raise _UserError(str(exc)) from exc
        except Exception as exc:
            from hydra.errors import HydraException
            from omegaconf.errors import OmegaConfBaseException

            if isinstance(exc, (HydraException, OmegaConfBaseException)):
                _leave_no_folder()  # a config error found inside the job, reported by run_hydra
            raise

    return job


def _given_config_dir(argv: Sequence[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg in ("-cd", "--config-dir"):
            return argv[i + 1] if i + 1 < len(argv) else ""
        if arg.startswith("--config-dir="):
            return arg.split("=", 1)[1]
    return None


def with_config_dir(argv: Sequence[str]) -> list[str]:
    """Hydra's command line with the user's config folder made explicit.

    ``-cd DIR`` must name a folder; without it, the project's folder
    (``$SWEEPER_CONFIG_DIR`` or ``./conf``) is passed as ``--config-dir``. Hydra searches
    it after the shipped folder, so a file there may not reuse a shipped name
    (:func:`sweeper.composition.check_shadowing`).
    """
    from pathlib import Path

    from sweeper.paths import project_config_dir

    given = _given_config_dir(argv)
    if given is not None:
        if not given or not Path(given).is_dir():
            raise SweeperError(f"--config-dir {given!r}: no such folder; give the folder that holds "
                               "your config groups (e.g. -cd ./conf)")
        return list(argv)
    found = project_config_dir()
    if found is None:
        return list(argv)
    return ["--config-dir", str(found), *argv]

# Hydra's own --hydra-help lists flags that do not apply to a sub-command (shell completion).
HYDRA_HELP = """\
sweeper {command} takes Hydra's command line (Hydra 1.3, https://hydra.cc):

  --help, -h            config groups and the composed config
  --cfg, -c job|hydra|all   print the config instead of running (--resolve: resolved)
  --package, -p PKG     with --cfg, the config package to show
  --info, -i [all|config|defaults|defaults-tree|plugins|searchpath]   Hydra's view of the config
  --config-dir, -cd DIR your config folder, searched before the shipped one
  --config-path, -cp DIR and --config-name, -cn NAME   another primary config
  --multirun, -m        sweeper train only: one run per comma-separated value
  --dry-run             sweeper sweep only: every check, then the plan; creates nothing
  KEY=VALUE  GROUP=OPTION  +KEY=VALUE (add)  ~KEY (delete)   overrides
"""


def run_hydra(config_name: str, command: str, task: Callable[[Any], Any], argv: Sequence[str]) -> int:
    """Run ``task`` under Hydra with ``argv`` as Hydra's command line.

    Hydra prints its own multi-line report for composition errors; we ask it to raise
    instead (``HYDRA_FULL_ERROR``) and print one line.
    """
    if any(a in ("-sc", "--shell-completion") or a.startswith("--shell-completion=") for a in argv):
        # Hydra's completion script calls the program without the sub-command.
        return _fail("shell completion is not offered; `sweeper <command> --help` lists the config "
                     "groups and keys")
    if "--hydra-help" in argv:
        print(HYDRA_HELP.format(command=command))
        return 0
    import hydra
    import yaml
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from sweeper.paths import conf_dir

    os.environ["HYDRA_FULL_ERROR"] = "1"
    _folders_before.clear()
    _folders_before.update(_existing_folders())
    saved_argv = sys.argv
    try:
        sys.argv = [saved_argv[0], *with_config_dir(argv)]
        main = hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name=config_name)
        main(_guard(task))()
    except _UserError as exc:
        return _fail(exc.message)
    except SweeperError as exc:
        return _fail(str(exc))
    except (HydraException, OmegaConfBaseException) as exc:
        return _fail(explain(exc, command))
    except yaml.YAMLError as exc:
        return _fail(yaml_error(exc))
    except OSError as exc:
        import errno

        if exc.errno not in (errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EROFS, errno.ENOSPC, errno.EEXIST):
            raise
        return _fail(f"cannot write {exc.filename or 'the output folder'} ({exc.strerror}); run from a "
                     "folder you can write, or free that path")
    except KeyboardInterrupt:
        from sweeper import signals

        print(f"sweeper: {signals.interrupt_reason()}", file=sys.stderr)
        return signals.exit_code()
    finally:
        sys.argv = saved_argv
    return 0


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
    from sweeper.training.run import family

    print(f"trained {choices.get('model', family(cfg))} for {result.epochs} epochs in "
          f"{result.duration_s:.1f}s: {' '.join(p for p in parts if p)}; {where}")
    return result.best_score


_folders_before: set[str] = set()  # run folders that existed before this command (run_hydra)


def _existing_folders() -> set[str]:
    from pathlib import Path

    outputs = Path.cwd() / "outputs"
    if not outputs.is_dir():
        return set()
    found = {str(outputs.resolve())}
    for child in outputs.iterdir():
        if child.is_dir():
            found.add(str(child.resolve()))
            found.update(str(g.resolve()) for g in child.iterdir() if g.is_dir())
    return found


def _leave_no_folder() -> None:
    """Remove the Hydra run folder of a refused command when this command made it and
    it holds nothing of a run."""
    from hydra.core.hydra_config import HydraConfig

    try:
        output_dir = HydraConfig.get().runtime.output_dir
    except ValueError:
        return
    _remove_if_unused(output_dir)


def _remove_if_unused(output_dir: str) -> None:
    """Remove a run folder that this command made and that holds only what Hydra and the
    start of a run wrote into it (``.hydra/``, its log, ``config.yaml``), and the folders
    above it that it left empty, up to the working directory."""
    import shutil
    from pathlib import Path

    folder = Path(output_dir).resolve()
    cwd = Path.cwd().resolve()
    if not folder.is_dir() or str(folder) in _folders_before or folder == cwd or folder in cwd.parents:
        return
    if any(p.name not in (".hydra", "config.yaml") and p.suffix != ".log" for p in folder.iterdir()):
        return
    shutil.rmtree(folder, ignore_errors=True)
    parent = folder.parent
    while parent != cwd and cwd in parent.parents and str(parent) not in _folders_before:
        try:
            parent.rmdir()  # only when empty
        except OSError:
            break
        parent = parent.parent


def cmd_train(argv: Sequence[str]) -> int:
    return run_hydra("train", "train", _train_task, argv)


def _sweep_task(cfg: Any) -> int:
    from hydra.core.hydra_config import HydraConfig

    from sweeper.search.sweep import run_sweep

    hc = HydraConfig.get()
    if hc.mode is not None and hc.mode.name == "MULTIRUN":
        raise SweeperError("sweeper sweep runs its own study; drop -m/--multirun")
    if hc.sweeper.get("params"):
        raise SweeperError(
            "hydra.sweeper.params: sweeper sweep does not read Hydra's sweeper settings; write "
            "the same entries under search.params (README 'Search spaces')"
        )
    choices = {k: v for k, v in hc.runtime.choices.items() if v is not None and not k.startswith("hydra")}
    from sweeper.composition import check_shadowing, current_sources

    sources = current_sources()
    check_shadowing(sources)
    code = run_sweep(cfg, choices, list(hc.overrides.task), sources, _sweep_argv, dry_run=_dry_run[0])
    if _dry_run[0]:
        _leave_no_folder()  # not even Hydra's run folder and its log: a dry run creates nothing
    if code:
        raise SystemExit(code)
    return code


_GROUP_ALIAS = re.compile(r"^search\.(sampler|pruner|params|launcher)=([A-Za-z0-9_-]+)$")


_sweep_argv: list[str] = []  # the command's own arguments: what a launcher's jobs run again
_dry_run = [False]  # `sweeper sweep --dry-run`: check and print the plan, create nothing


def _hparams_search(argv: list[str]) -> list[str]:
    """``hparams_search=NAME`` (a Hydra Optuna sweeper file in the config folder) as
    sweeper's overrides, printed."""
    from pathlib import Path

    from sweeper.hparams_search import translate
    from sweeper.paths import project_config_dir

    given = _given_config_dir(argv)
    folder = Path(given) if given else project_config_dir()
    argv, note = translate(argv, folder)
    if note:
        print(note, file=sys.stderr, flush=True)  # stdout stays the sweep's own (or --cfg's YAML)
    return argv


def cmd_sweep(argv: Sequence[str]) -> int:
    from sweeper import signals

    signals.install()  # SIGTERM from a scheduler ends the sweep as Ctrl-C does (exit 143)
    # `search.sampler=random` reads naturally but names a config group (search/sampler).
    _dry_run[0] = "--dry-run" in argv
    argv = [_GROUP_ALIAS.sub(r"search/\1=\2", arg) for arg in argv if arg != "--dry-run"]
    argv = _hparams_search(argv)
    _sweep_argv[:] = with_config_dir(argv)
    return run_hydra("sweep", "sweep", _sweep_task, argv)


def cmd_worker(argv: Sequence[str]) -> int:
    """Internal: one worker process of a sweep (started by ``sweeper sweep``)."""
    from sweeper.search.worker import worker_main

    args = list(argv)
    preload_tracking = "--no-tracking" not in args
    plan_file, index = [a for a in args if a != "--no-tracking"]
    from sweeper import signals

    try:
        code = worker_main(plan_file, int(index), preload_tracking)
    except KeyboardInterrupt:  # before its first trial: nothing of the study to mark
        code = signals.exit_code()
    # The worker has flushed its MLflow writes and told Optuna every trial.
    _exit_now(code)


def _tracking_defaults() -> tuple[str, str]:
    import yaml

    from sweeper.paths import conf_dir

    data = yaml.safe_load((conf_dir() / "tracking" / "mlflow.yaml").read_text())
    return data["uri"], data["experiment"]


def _tracking_args(parser: argparse.ArgumentParser) -> None:
    uri, experiment = _tracking_defaults()
    parser.add_argument("--tracking-uri", default=uri, help=f"MLflow tracking URI (default {uri})")
    parser.add_argument("--experiment", default=experiment, help=f"MLflow experiment (default {experiment})")


def _study_record(name: str | None, args: argparse.Namespace, mlflow_asked: bool) -> Any:
    """A study's record: from its Optuna storage when there is one to read (no MLflow
    import needed), else from MLflow."""
    from sweeper.search.records import load_record, local_journal
    from sweeper.search.storage import JOURNAL_PREFIX

    if args.storage:
        return load_record(args.storage, name)
    journal = None if mlflow_asked else local_journal(name)
    if journal is not None:
        return load_record(f"{JOURNAL_PREFIX}{journal.resolve()}", journal.parent.name)
    from sweeper.tracking.studies import StudyReader

    return StudyReader(args.tracking_uri, args.experiment).study(name)


def cmd_compare(argv: Sequence[str]) -> int:
    from sweeper.reports.compare import FORMATS

    parser = argparse.ArgumentParser(
        prog="sweeper compare",
        description="Compare recorded sweeps: the trials of one study (default: the latest), "
        "or two studies side by side. Works while a study is still running. Reads the study's "
        "Optuna journal under ./outputs/sweeps (or --storage) when there is one, else MLflow.",
    )
    parser.add_argument("studies", nargs="*", metavar="STUDY", help="study names (at most two)")
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format")
    parser.add_argument("--limit", type=int, default=None, help="show at most N trials")
    parser.add_argument("--storage", default=None,
                        help="the studies' Optuna storage URL (as search.storage); default: the "
                        "journal under ./outputs/sweeps, else the MLflow record")
    _tracking_args(parser)
    args = parser.parse_args(argv)
    if len(args.studies) > 2:
        return _fail(f"compare takes at most two studies, got {len(args.studies)}")
    from sweeper.reports.compare import side_by_side, trials_report

    mlflow_asked = any(a.startswith(("--tracking-uri", "--experiment")) for a in argv)
    studies = [_study_record(name, args, mlflow_asked) for name in (args.studies or [None])]
    for study in studies:
        if not study.trials:
            return _fail(f"study '{study.name}' has no trials yet; start them with `sweeper sweep`")
    if len(studies) == 1:
        print(trials_report(studies[0], args.format, args.limit))
    else:
        print(side_by_side(studies, args.format))
    return 0


def cmd_evaluate(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="sweeper evaluate",
        description="Re-score a recorded model on the test split and log the result to its "
        "MLflow run. TARGET is a run id or a study name (its best trial). Overrides such as "
        "data=mnist data.root=/data/mnist evaluate on another data config.",
    )
    parser.add_argument("target", metavar="TARGET", help="MLflow run id, or study name")
    parser.add_argument("overrides", nargs="*", metavar="OVERRIDE", help="KEY=VALUE or data=<option>")
    parser.add_argument("-cd", "--config-dir", default=None,
                        help="your config folder, searched before the shipped one for data=<option> "
                             "(default: $SWEEPER_CONFIG_DIR, else ./conf if it exists)")
    _tracking_args(parser)
    _trust_args(parser)
    args = parser.parse_args(argv)
    _apply_trust(args)
    from pathlib import Path

    from sweeper.paths import project_config_dir
    from sweeper.reports.evaluate import evaluate_recorded

    if args.config_dir is not None and not Path(args.config_dir).is_dir():
        return _fail(f"--config-dir {args.config_dir!r}: no such folder")
    folder = Path(args.config_dir) if args.config_dir else project_config_dir()
    evaluate_recorded(args.target, args.overrides, args.tracking_uri, args.experiment,
                      [folder] if folder else [])
    return 0


def cmd_logs(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="sweeper logs",
        description="Print one trial's output and, for a failed trial, its traceback. Reads "
        "./outputs/sweeps/STUDY/trial_NNNN/trial.log when it is there, else the trial.log "
        "artifact of the trial's MLflow run.",
    )
    parser.add_argument("study", metavar="STUDY", help="study name")
    parser.add_argument("trial", metavar="TRIAL", nargs="?", type=int, default=None,
                        help="trial number (default: the last failed trial, else the last trial)")
    jobs = parser.add_mutually_exclusive_group()
    jobs.add_argument("--jobs", action="store_true",
                      help="list the SLURM jobs submitted for the study and where their logs are")
    jobs.add_argument("--job", metavar="ID", help="print one job's log (an array task such as 41_0, or "
                      "the array id for all its tasks)")
    _tracking_args(parser)
    args = parser.parse_args(argv)
    from sweeper.search.logs import job_log, job_logs, trial_log

    if args.jobs:
        for job, out, exists in job_logs(args.study):
            print(f"{job}  {out}" + ("" if exists else "  (no log yet)"))
        return 0
    if args.job:
        text = job_log(args.study, args.job)
        print(text, end="" if text.endswith("\n") else "\n")
        return 0
    mlflow_asked = any(a.startswith(("--tracking-uri", "--experiment")) for a in argv)
    where, text = trial_log(args.study, args.trial, args.tracking_uri, args.experiment, mlflow_asked)
    print(f"# {where}")
    print(text, end="" if text.endswith("\n") else "\n")
    return 0


def _trust_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trust", action="append", default=[], metavar="MODULE",
                        help="a module whose classes the model's files may name besides sweeper's own "
                             "(repeat, or comma-separate; also $SWEEPER_TRUSTED_MODULES)")


def _apply_trust(args: argparse.Namespace) -> None:
    """``--trust``, and the modules the project's config folder names, for this process
    and the servers it starts."""
    from pathlib import Path

    from sweeper import trust
    from sweeper.paths import project_config_dir

    trust.trust_from(args.trust)
    given = getattr(args, "config_dir", None)
    folder = Path(given) if given else project_config_dir()
    if folder is not None and folder.is_dir():
        trust.trust_config_folder(folder)
    if trust.trusted_modules():
        os.environ[trust.ENV] = ",".join(trust.trusted_modules())


def _model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="MODEL",
                        help="a study name (its latest registered model), an MLflow run id, "
                             "or models:/<name>/<version>")
    _tracking_args(parser)
    _trust_args(parser)


def cmd_serve(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="sweeper serve",
        description="Serve a registered model over HTTP with MLflow's scoring server (/ping, /health, "
        "/version, /invocations). Send raw inputs, one row of numbers per sample: "
        "{\"inputs\": [[...]]}. Ctrl-C stops it.",
    )
    _model_args(parser)
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to bind (default 127.0.0.1; anything else exposes the model to your network)")
    parser.add_argument("--port", type=int, default=5001, help="port (default 5001)")
    parser.add_argument("--max-request-mb", type=float, default=None,
                        help="largest request body accepted, in MB; larger ones are answered 413 "
                             "(default $SWEEPER_SERVE_MAX_REQUEST_MB, else 5)")
    args = parser.parse_args(argv)
    _apply_trust(args)
    from sweeper.serving.serve import max_request_mb, serve

    return serve(args.target, args.tracking_uri, args.host, args.port, max_request_mb(args.max_request_mb))


def cmd_compress(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="sweeper compress",
        description="Make smaller or faster variants of a recorded model on CPU (dynamic int8 "
        "quantisation, magnitude pruning), measure each on the test split, log the table to the "
        "model's run, and register the smallest variant within the tolerance.",
    )
    _model_args(parser)
    parser.add_argument("--sparsities", default="0.5,0.8",
                        help="magnitude-pruning sparsities to try (default 0.5,0.8)")
    parser.add_argument("--tolerance", type=float, default=0.01,
                        help="largest loss of the test metric a variant may have to be registered (default 0.01)")
    parser.add_argument("--max-slowdown", type=float, default=2.0,
                        help="largest latency a variant may have, as a multiple of float32's at batch 1 "
                             "and at batch 64, to be registered (default 2)")
    parser.add_argument("--repeats", type=int, default=20, help="latency repeats (median; default 20)")
    parser.add_argument("--no-register", action="store_true", help="measure only")
    args = parser.parse_args(argv)
    _apply_trust(args)
    if not args.max_slowdown >= 1:
        return _fail(f"--max-slowdown {args.max_slowdown:g}: give a multiple of float32's latency, 1 or more, e.g. 2")
    try:
        sparsities = [float(s) for s in args.sparsities.split(",") if s.strip()]
    except ValueError:
        return _fail(f"--sparsities {args.sparsities!r}: give numbers between 0 and 1, e.g. 0.5,0.8")
    if not all(0 < s < 1 for s in sparsities):
        return _fail(f"--sparsities {args.sparsities!r}: each must be between 0 and 1 (exclusive)")
    from sweeper.serving.compress import compress_recorded

    compress_recorded(args.target, args.tracking_uri, args.experiment, sparsities, args.tolerance,
                      max(1, args.repeats), register=not args.no_register, max_slowdown=args.max_slowdown)
    return 0


def cmd_export(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="sweeper export",
        description="Export a recorded model to TorchScript and ONNX (normalisation included: raw "
        "inputs in), check each against the PyTorch model on the test split, and log them as "
        "artifacts of the model's run. ONNX needs `pip install 'sweeper[export]'`.",
    )
    _model_args(parser)
    parser.add_argument("--format", default="torchscript,onnx", help="torchscript, onnx or both (default)")
    parser.add_argument("--out", default=None, help="folder for the files (default outputs/export/<run id>)")
    args = parser.parse_args(argv)
    _apply_trust(args)
    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    unknown = sorted(set(formats) - {"torchscript", "onnx"})
    if unknown or not formats:
        return _fail(f"--format {args.format!r}: choose torchscript, onnx or torchscript,onnx")
    from sweeper.serving.export import export_recorded

    export_recorded(args.target, args.tracking_uri, args.experiment, formats, args.out)
    return 0


def cmd_ui(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="sweeper ui",
        description="Start the MLflow UI on the project's tracking store and print the URL of "
        "the latest study's runs. Ctrl-C stops it.",
    )
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to bind (default 127.0.0.1; anything else exposes the UI "
                             "to your network)")
    parser.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    _tracking_args(parser)
    args = parser.parse_args(argv)
    from sweeper.reports.ui import serve

    return serve(args.tracking_uri, args.experiment, args.host, args.port)


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "train": cmd_train,
    "sweep": cmd_sweep,
    "compare": cmd_compare,
    "evaluate": cmd_evaluate,
    "logs": cmd_logs,
    "serve": cmd_serve,
    "compress": cmd_compress,
    "export": cmd_export,
    "ui": cmd_ui,
    "_worker": cmd_worker,
}


def _exit_now(code: int) -> NoReturn:
    """End the process once every MLflow write is done, skipping the second or so that
    the interpreter's teardown of torch, Lightning and MLflow takes."""
    tracking = sys.modules.get("sweeper.tracking.mlflow")
    if tracking is not None:
        tracking._drain_all_writers()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def entry() -> None:
    """The ``sweeper`` command. ``sweeper sweep`` leaves without interpreter teardown."""
    args = sys.argv[1:]
    try:
        code = main(args)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if exc.code is not None and not isinstance(exc.code, int):
            print(exc.code, file=sys.stderr)
    if args and args[0] == "sweep":
        _exit_now(code)
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    from sweeper.paths import make_project_importable

    make_project_importable()
    # MLflow draws a progress bar for every artifact it downloads
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    ddp_config = os.environ.get(DDP_CONFIG_ENV)
    if ddp_config and os.environ.get("LOCAL_RANK", "0") != "0":
        # A DDP rank that Lightning started by re-running our command line.
        from sweeper.training.run import run_ddp_child

        run_ddp_child(ddp_config)
        return 0
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if args else 2
    if args[0] in ("--version", "version"):
        print(f"sweeper {__version__}")
        return 0
    command = COMMANDS.get(args[0])
    if command is None:
        public = [name for name in COMMANDS if not name.startswith("_")]
        return _fail(f"unknown command {args[0]!r}; choose one of {', '.join(public)}")
    try:
        return command(args[1:])
    except SweeperError as exc:
        return _fail(str(exc))
