"""``sweeper sweep`` (and its worker processes): run, resume or dry-run a study."""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from typing import Any

from sweeper.cli._base import exit_now, given_config_dir, leave_no_folder, run_hydra, with_config_dir
from sweeper.errors import SweeperError


def _sweep_task(cfg: Any) -> int:
    from hydra.core.hydra_config import HydraConfig

    from sweeper.best_model import STEPS
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
    code = run_sweep(cfg, choices, list(hc.overrides.task), sources, _sweep_argv, dry_run=_dry_run[0],
                     end=STEPS)
    if _dry_run[0]:
        leave_no_folder()  # not even Hydra's run folder and its log: a dry run creates nothing
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

    given = given_config_dir(argv)
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
    exit_now(code)
