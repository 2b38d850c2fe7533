"""The ``sweeper`` command line: ``sweeper <command> [hydra overrides]``.

One module per command family (:mod:`.train`, :mod:`.sweep`, :mod:`.studies`,
:mod:`.models`) on a small base (:mod:`._base`: Hydra's command line, one-line errors,
exits; :mod:`._args`: arguments several commands share). Importing it loads neither
torch, Lightning nor MLflow; each command imports what it needs when it runs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

from sweeper import __version__
from sweeper.cli._base import exit_now, fail
from sweeper.cli.models import cmd_compress, cmd_export, cmd_serve
from sweeper.cli.studies import cmd_compare, cmd_evaluate, cmd_logs, cmd_ui
from sweeper.cli.sweep import cmd_sweep, cmd_worker
from sweeper.cli.train import cmd_train
from sweeper.errors import SweeperError
from sweeper.paths import DDP_CONFIG_ENV

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
        exit_now(code)
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
        return fail(f"unknown command {args[0]!r}; choose one of {', '.join(public)}")
    try:
        return command(args[1:])
    except SweeperError as exc:
        return fail(str(exc))
