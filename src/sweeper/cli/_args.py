"""Arguments that several commands take: the MLflow store, trusted modules, a model."""

from __future__ import annotations

import argparse
import os


def _tracking_defaults() -> tuple[str, str]:
    import yaml

    from sweeper.paths import conf_dir

    data = yaml.safe_load((conf_dir() / "tracking" / "mlflow.yaml").read_text())
    return data["uri"], data["experiment"]


def tracking_args(parser: argparse.ArgumentParser) -> None:
    uri, experiment = _tracking_defaults()
    parser.add_argument("--tracking-uri", default=uri, help=f"MLflow tracking URI (default {uri})")
    parser.add_argument("--experiment", default=experiment, help=f"MLflow experiment (default {experiment})")


def trust_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trust", action="append", default=[], metavar="MODULE",
                        help="a module whose classes the model's files may name besides sweeper's own "
                             "(repeat, or comma-separate; also $SWEEPER_TRUSTED_MODULES)")


def apply_trust(args: argparse.Namespace) -> None:
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


def model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="MODEL",
                        help="a study name (its latest registered model), an MLflow run id, "
                             "or models:/<name>/<version>")
    tracking_args(parser)
    trust_args(parser)
