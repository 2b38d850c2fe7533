"""A study's lifecycle in both stores: the Optuna study, checked against what it was
created with, and its MLflow parent run, created once however many machines start."""

from __future__ import annotations

import json
from typing import Any

from sweeper.errors import ConfigError
from sweeper.search.records import CV_ATTR, METRICS_ATTR, PARENT_ATTR, SPACE_ATTR
from sweeper.search.settings import SearchSettings
from sweeper.search.space import SearchSpace
from sweeper.tracking.stores import mask_url


def open_study(settings: SearchSettings, storage: Any, space: SearchSpace) -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=settings.study_name,
        storage=storage,
        directions=list(settings.directions),
        load_if_exists=True,
    )
    stored_directions = [d.name.lower() for d in study.directions]
    if stored_directions != list(settings.directions):
        raise ConfigError(
            f"search.direction: study '{settings.study_name}' was created with "
            f"{stored_directions}, not {list(settings.directions)}; directions cannot change, "
            "start a new study with search.study_name=<new name>"
        )
    attrs = study.user_attrs
    signature = space.signature()
    if SPACE_ATTR in attrs and not settings.force:
        if attrs[SPACE_ATTR] != signature:
            old = json.loads(attrs[SPACE_ATTR])
            new = json.loads(signature)
            changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise ConfigError(
                f"search.params: study '{settings.study_name}' was run with another search space "
                f"(differs in {', '.join(changed)}); start a new study with "
                "search.study_name=<new name> or resume anyway with search.force=true"
            )
        if attrs.get(METRICS_ATTR) != list(settings.metrics):
            raise ConfigError(
                f"search.metric: study '{settings.study_name}' optimises {attrs.get(METRICS_ATTR)}, "
                f"not {list(settings.metrics)}; start a new study with search.study_name=<new name> "
                "or resume anyway with search.force=true"
            )
        if attrs.get(CV_ATTR, 1) != settings.cv_folds:
            raise ConfigError(
                f"search.cv.folds: study '{settings.study_name}' scored trials on "
                f"{attrs.get(CV_ATTR, 1)} fold(s), not {settings.cv_folds}; start a new study with "
                "search.study_name=<new name> or resume anyway with search.force=true"
            )
    study.set_user_attr(SPACE_ATTR, signature)
    study.set_user_attr(METRICS_ATTR, list(settings.metrics))
    study.set_user_attr(CV_ATTR, settings.cv_folds)
    return study


def parent_run(tracker: Any, study: Any, settings: SearchSettings, storage_url: str, space: SearchSpace) -> str:
    """The study's MLflow parent run: reused when the study resumes, created otherwise."""
    from mlflow.exceptions import MlflowException

    run_id = study.user_attrs.get(PARENT_ATTR)
    if run_id:
        try:
            run = tracker.client.get_run(run_id)
            if run.info.lifecycle_stage == "active" and run.info.experiment_id == tracker.experiment_id:
                tracker.client.update_run(run_id, status="RUNNING")
                return run_id
        except MlflowException:
            pass
    found = tracker.client.search_runs(
        [tracker.experiment_id],
        filter_string=f"tags.study = '{settings.study_name}' and tags.`sweeper.role` = 'parent'",
        max_results=1,
    )
    if found:
        run_id = found[0].info.run_id
        tracker.client.update_run(run_id, status="RUNNING")
    else:
        run_id = tracker.start_run(
            settings.study_name,
            {
                "sweeper.role": "parent",
                "study": settings.study_name,
                "sampler": settings.sampler_name,
                "pruner": settings.pruner_name,
                "storage": mask_url(storage_url),
                "metric": ",".join(settings.metrics),
                "direction": ",".join(settings.directions),
                "mlflow.source.name": "sweeper sweep",
            },
        )
        tracker.log_params(run_id, {f"search.{p.key}": json.dumps(p.describe()) for p in space.params})
    study.set_user_attr(PARENT_ATTR, run_id)
    return run_id
