"""A study's lifecycle in both stores: the Optuna study, checked against what it was
created with, and its MLflow parent run, created once however many machines start."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from sweeper.errors import ConfigError
from sweeper.search.records import CONFIG_ATTR, CV_ATTR, METRICS_ATTR, PARENT_ATTR, SPACE_ATTR
from sweeper.search.settings import SearchSettings
from sweeper.search.space import SearchSpace
from sweeper.tracking.stores import mask_url

# Keys that say how or where a trial runs, not what it computes: a study resumes on
# another machine, accelerator or tracking store. (seed, data, model, optimizer,
# scheduler and the trainer's budget all define the trials.)
RUN_ONLY_KEYS = (
    "tracking", "progress_bar", "test", "checkpoint", "trusted_modules",
    "trainer.accelerator", "trainer.devices", "trainer.strategy", "trainer.num_nodes",
    "trainer.log_every_n_steps", "trainer.enable_progress_bar", "trainer.benchmark",
    "data.num_workers", "data.pin_memory", "data.persistent_workers",
    "data.eval_batch_size", "data.root", "data.path", "data.download",
)  # fmt: skip


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): value}


def study_config(base: Any, search: Any, space: SearchSpace) -> dict[str, Any]:
    """What defines a study's trials, as flat ``key: value``: the resolved base config
    without run-only keys and without the searched keys (each trial sets those), plus
    ``search.sampler.*`` and ``search.pruner.*``."""
    from omegaconf import OmegaConf

    def plain(node: Any) -> Any:
        try:
            return OmegaConf.to_container(node, resolve=True)
        except Exception:
            return OmegaConf.to_container(node, resolve=False)

    flat = _flatten(plain(base))
    flat.update(_flatten({"search": {"sampler": plain(search.sampler), "pruner": plain(search.pruner)}}))
    dropped = (*RUN_ONLY_KEYS, *(p.key for p in space.params))
    return {k: json.dumps(v, sort_keys=True, default=str) for k, v in sorted(flat.items())
            if not any(k == d or k.startswith(d + ".") for d in dropped)}


def config_changes(old: dict[str, Any], new: dict[str, Any], limit: int = 4) -> tuple[list[str], int]:
    """Phrases for the keys whose value differs (at most ``limit``) and their count."""
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    phrases = []
    for key in changed[:limit]:
        if key not in old:
            phrases.append(f"{key}={new[key]} is new")
        elif key not in new:
            phrases.append(f"{key} (was {old[key]}) is gone")
        else:
            phrases.append(f"{key}={new[key]} (was {old[key]})")
    return phrases, len(changed)


def _find_study(storage: Any, name: str) -> bool:
    try:
        storage.get_study_id_from_name(name)
    except KeyError:
        return False
    return True


def check_resumable(study: Any, settings: SearchSettings, space: SearchSpace,
                    config: dict[str, Any] | None = None) -> bool:
    """Refuse (ConfigError) resuming ``study`` with these settings when its trials would
    not be comparable; writes nothing. False when its directions differ and it holds no
    trial yet (it is then made again)."""
    stored_directions = [d.name.lower() for d in study.directions]
    empty = not study.get_trials(deepcopy=False)
    directions_match = True
    if stored_directions != list(settings.directions):
        if not empty:
            raise ConfigError(
                f"search.direction: study '{settings.study_name}' was created with "
                f"{stored_directions}, not {list(settings.directions)}; directions cannot change, "
                "start a new study with search.study_name=<new name>"
            )
        directions_match = False
    attrs = study.user_attrs
    signature = space.signature()
    if SPACE_ATTR in attrs and not settings.force and not empty:
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
        stored = attrs.get(CONFIG_ATTR)
        if config is not None and stored is not None and stored != config:
            phrases, count = config_changes(stored, config)
            more = f" and {count - len(phrases)} more" if count > len(phrases) else ""
            raise ConfigError(
                f"study '{settings.study_name}' was created with another config: "
                f"{'; '.join(phrases)}{more}; its trials would not be comparable. Start a new "
                "study with search.study_name=<new name>, undo the change, or resume anyway "
                "with search.force=true"
            )
    return directions_match


def peek_study(url: str, name: str) -> Any:
    """Study ``name`` in the storage at ``url`` when both are there already, else None;
    nothing is created or repaired (a dry run reads the store as it is)."""
    import optuna

    from sweeper.search.storage import JOURNAL_PREFIX
    from sweeper.tracking.stores import driver_url

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if url.startswith(JOURNAL_PREFIX) or url.endswith(".journal"):
        path = Path(url[len(JOURNAL_PREFIX) - 1:] if url.startswith(JOURNAL_PREFIX) else url)
        if not path.is_file():
            return None
        from optuna.storages.journal import JournalFileBackend

        storage: Any = optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    else:
        import sqlalchemy

        real = driver_url(url, "search.storage")
        engine = sqlalchemy.create_engine(real)
        try:
            if not sqlalchemy.inspect(engine).has_table("studies"):
                return None
        finally:
            engine.dispose()
        storage = optuna.storages.RDBStorage(real, skip_table_creation=True)
    if not _find_study(storage, name):
        return None
    return optuna.load_study(study_name=name, storage=storage)


def open_study(settings: SearchSettings, storage: Any, space: SearchSpace,
               config: dict[str, Any] | None = None) -> Any:
    """Create the study, or load it and refuse what would make its trials incomparable:
    other directions, space, metric, folds, or ``config`` (:func:`study_config`) than
    it was created with (``search.force=true`` resumes anyway, except for directions).

    Loading writes nothing unless something changed: a finished study re-run stays as it
    was in its store. A study that holds no trial yet (a command refused after creating
    it) takes the new command's definition."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if _find_study(storage, settings.study_name):
        study = optuna.load_study(study_name=settings.study_name, storage=storage)
    else:  # another machine may create it at the same instant: then this loads it
        study = optuna.create_study(study_name=settings.study_name, storage=storage,
                                    directions=list(settings.directions), load_if_exists=True)
    if not check_resumable(study, settings, space, config):
        # no trial was ever run: the study is made again with this command's directions
        optuna.delete_study(study_name=settings.study_name, storage=storage)
        study = optuna.create_study(study_name=settings.study_name, storage=storage,
                                    directions=list(settings.directions), load_if_exists=True)
    attrs = study.user_attrs
    signature = space.signature()
    wanted: dict[str, Any] = {SPACE_ATTR: signature, METRICS_ATTR: list(settings.metrics), CV_ATTR: settings.cv_folds}
    if config is not None:
        wanted[CONFIG_ATTR] = config
    for key, value in wanted.items():
        if attrs.get(key) != value:  # only what changed: a re-run leaves the store as it was
            study.set_user_attr(key, value)
    with warnings.catch_warnings():  # Optuna calls metric names experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if study.metric_names != list(settings.metrics):  # named in optuna-dashboard and Optuna's CLI
            study.set_metric_names(list(settings.metrics))
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
