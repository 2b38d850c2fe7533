"""What ``sweeper sweep`` does with a finished study, besides the search itself: the
best checkpoint tested on the test split and registered as an MLflow model, and the
study's plots. The engine calls these once per study (:class:`sweeper.search.finish.StudyEnd`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sweeper.search.finish import StudyEnd


def test(config_file: Path, checkpoint: str, folder: Path) -> Any:
    from sweeper.training.evaluate import evaluate_checkpoint

    return evaluate_checkpoint(config_file, checkpoint, folder)


def register(tracking_uri: str, run_id: str, evaluation: Any, name: str) -> tuple[str, str]:
    from sweeper.serving.package import inputs_note, model_spec
    from sweeper.serving.package import register as register_version

    version = register_version(tracking_uri, run_id, evaluation.module, evaluation.datamodule, name)
    return version, inputs_note(model_spec(evaluation.module, evaluation.datamodule))


def plots(study: Any, folder: Path, metric: str, param_keys: list[str]) -> list[Path]:
    from sweeper.reports.plots import write_study_plots

    return write_study_plots(study, folder, metric, param_keys)


STEPS = StudyEnd(test=test, register=register, plots=plots)
