"""Commands that read recorded studies: ``compare``, ``evaluate``, ``logs`` and ``ui``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from sweeper.cli._args import apply_trust, tracking_args, trust_args
from sweeper.cli._base import fail


def study_record(name: str | None, args: argparse.Namespace, mlflow_asked: bool) -> Any:
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
    tracking_args(parser)
    args = parser.parse_args(argv)
    if len(args.studies) > 2:
        return fail(f"compare takes at most two studies, got {len(args.studies)}")
    from sweeper.reports.compare import side_by_side, trials_report

    mlflow_asked = any(a.startswith(("--tracking-uri", "--experiment")) for a in argv)
    studies = [study_record(name, args, mlflow_asked) for name in (args.studies or [None])]
    for study in studies:
        if not study.trials:
            return fail(f"study '{study.name}' has no trials yet; start them with `sweeper sweep`")
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
    tracking_args(parser)
    trust_args(parser)
    args = parser.parse_args(argv)
    apply_trust(args)
    from pathlib import Path

    from sweeper.paths import project_config_dir
    from sweeper.reports.evaluate import evaluate_recorded

    if args.config_dir is not None and not Path(args.config_dir).is_dir():
        return fail(f"--config-dir {args.config_dir!r}: no such folder")
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
    tracking_args(parser)
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
    tracking_args(parser)
    args = parser.parse_args(argv)
    from sweeper.reports.ui import serve

    return serve(args.tracking_uri, args.experiment, args.host, args.port)
