"""What every command shares: Hydra's command line, one-line errors, run folders that a
refused command leaves behind removed, and the exit without interpreter teardown."""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from sweeper.errors import SweeperError


def fail(message: str) -> int:
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
            leave_no_folder()  # bad input: nothing created, not even Hydra's run folder
            raise _UserError(str(exc)) from exc
        except Exception as exc:
            from hydra.errors import HydraException
            from omegaconf.errors import OmegaConfBaseException

            if isinstance(exc, (HydraException, OmegaConfBaseException)):
                leave_no_folder()  # a config error found inside the job, reported by run_hydra
            raise

    return job


def given_config_dir(argv: Sequence[str]) -> str | None:
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

    given = given_config_dir(argv)
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
        return fail("shell completion is not offered; `sweeper <command> --help` lists the config "
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
        return fail(exc.message)
    except SweeperError as exc:
        return fail(str(exc))
    except (HydraException, OmegaConfBaseException) as exc:
        return fail(explain(exc, command))
    except yaml.YAMLError as exc:
        return fail(yaml_error(exc))
    except OSError as exc:
        import errno

        if exc.errno not in (errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EROFS, errno.ENOSPC, errno.EEXIST):
            raise
        return fail(f"cannot write {exc.filename or 'the output folder'} ({exc.strerror}); run from a "
                     "folder you can write, or free that path")
    except KeyboardInterrupt:
        from sweeper import signals

        print(f"sweeper: {signals.interrupt_reason()}", file=sys.stderr)
        return signals.exit_code()
    finally:
        sys.argv = saved_argv
    return 0


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


def leave_no_folder() -> None:
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


def exit_now(code: int) -> NoReturn:
    """End the process once every MLflow write is done, skipping the second or so that
    the interpreter's teardown of torch, Lightning and MLflow takes."""
    tracking = sys.modules.get("sweeper.tracking.mlflow")
    if tracking is not None:
        tracking._drain_all_writers()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
