"""``sweeper evaluate``: re-score a recorded model and log the result to its run."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import yaml
from omegaconf import DictConfig, OmegaConf

from sweeper import trust
from sweeper.errors import ConfigError, SweeperError
from sweeper.tracking.stores import require_store

GROUP_OVERRIDE = re.compile(r"^(data)=([A-Za-z0-9_]+)$")


def _resolve_run(client: Any, experiment_id: str, target: str) -> Any:
    from mlflow.exceptions import MlflowException

    if re.fullmatch(r"[0-9a-f]{32}", target):
        try:
            return client.get_run(target)
        except MlflowException:
            raise SweeperError(f"no MLflow run '{target}' in this tracking store") from None
    parents = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`sweeper.role` = 'parent' and tags.study = '{target}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not parents:
        raise SweeperError(f"'{target}' is neither a run id nor a recorded study; see `sweeper compare`")
    best = parents[0].data.tags.get("best_trial")
    if best is None:
        raise SweeperError(f"study '{target}' has no best trial yet (no complete trial)")
    children = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}' and tags.trial_number = '{best}'",
        max_results=1,
    )
    if not children:
        raise SweeperError(f"the run of study '{target}' best trial #{best} is missing")
    return children[0]


def _apply(cfg: Any, overrides: Sequence[str], config_dirs: Sequence[Path] = ()) -> str:
    """Apply ``data=<option>`` and ``key=value`` overrides; return the data config's name.

    ``data=<option>`` is looked up in ``config_dirs`` first (the user's folders), then in
    the shipped config groups.
    """
    from sweeper.paths import conf_dir

    data_name = str(cfg.data._target_).rsplit(".", 1)[-1].replace("DataModule", "").lower()
    for override in overrides:
        if "=" not in override:
            raise ConfigError(f"override {override!r} is not KEY=VALUE")
        group = GROUP_OVERRIDE.match(override)
        if group:
            folders = [Path(d) / "data" for d in config_dirs] + [conf_dir() / "data"]
            found = [f / f"{group.group(2)}.yaml" for f in folders if (f / f"{group.group(2)}.yaml").is_file()]
            path = found[0] if found else folders[-1] / f"{group.group(2)}.yaml"
            if not found:
                options = ", ".join(sorted({p.stem for f in folders for p in f.glob("*.yaml")}))
                raise ConfigError(f"data={group.group(2)}: no such option; choose one of {options}")
            node = OmegaConf.load(path)
            cfg.data = node
            data_name = group.group(2)
            continue
        key, value = override.split("=", 1)
        if OmegaConf.select(cfg, key, default="__absent__") == "__absent__":
            raise ConfigError(f"{key}: unknown key in the run's config")
        OmegaConf.update(cfg, key, yaml.safe_load(value), merge=False)
    return data_name


# Data keys that change how a split is read, not which samples it holds.
SPLIT_NEUTRAL_KEYS = ("batch_size", "eval_batch_size", "num_workers", "pin_memory", "persistent_workers", "root",
                      "path", "download")


def check_same_split(trained: dict[str, Any], evaluated: dict[str, Any]) -> None:
    """Refuse to score a model on a re-split of its own data set: with another seed or
    other fractions, the "test" split would hold samples the model trained on. Another
    data module (``data=<option>``) is another data set and is allowed."""
    if trained.get("_target_") != evaluated.get("_target_"):
        return
    changed = sorted(k for k in set(trained) | set(evaluated)
                     if k not in SPLIT_NEUTRAL_KEYS and trained.get(k) != evaluated.get(k))
    if changed:
        key = changed[0]
        raise ConfigError(
            f"data.{key}: the model was trained with data.{key}={trained.get(key)!r}; with "
            f"{evaluated.get(key)!r} the data is split again and the test split would hold samples "
            "it trained on. Evaluate on the run's own test split (drop the override) or on another "
            "data set (data=<option>)"
        )


def recorded_files(tracker: Any, run: Any, folder: Path) -> tuple[str, str]:
    """The training config and best checkpoint of a recorded run, downloaded into
    ``folder`` (the checkpoint from its output folder when it was not uploaded)."""
    import sys

    from mlflow.exceptions import MlflowException

    run_id = run.info.run_id
    recorded = run.data.tags.get("project_dir")
    if recorded and Path(recorded).is_dir() and recorded not in sys.path:
        sys.path.append(recorded)  # the project's own data module and network, if any
    try:
        config_path = tracker.client.download_artifacts(run_id, "config.yaml", str(folder))
    except (MlflowException, OSError):
        raise SweeperError(f"run {run_id} has no config.yaml artifact; it was not made by sweeper") from None
    checkpoint = None
    try:
        checkpoint = tracker.client.download_artifacts(run_id, "checkpoints/best.ckpt", str(folder))
    except (MlflowException, OSError):
        local = Path(run.data.tags.get("output_dir", "")) / "checkpoints" / "best.ckpt"
        checkpoint = str(local) if local.is_file() else None
    if checkpoint is None:
        raise SweeperError(
            f"run {run_id} has no checkpoint (no checkpoints/best.ckpt artifact, no file in "
            "its output_dir); use a run trained with checkpoint=true"
        )
    return config_path, checkpoint


def _recorded_config(path: str, run_id: str) -> DictConfig:
    """A recorded run's training config, refused when it names a class a file may not
    make sweeper build (:mod:`sweeper.trust`): it comes from the tracking store, which
    others may write."""
    cfg = cast(DictConfig, OmegaConf.load(path))  # sweeper wrote it, a mapping
    OmegaConf.resolve(cfg)
    trust.check_config(cast(dict[str, Any], OmegaConf.to_container(cfg)), f"run {run_id}'s config.yaml")
    return cfg


def recorded_model(tracker: Any, target: str, folder: Path) -> tuple[Any, Any]:
    """``(run, evaluation)`` of a run id or a study's best trial: its model restored from the
    checkpoint and scored on the test split it was trained with."""
    from sweeper.training.evaluate import evaluate_checkpoint

    run = _resolve_run(tracker.client, tracker.experiment_id, target)
    config_path, checkpoint = recorded_files(tracker, run, folder)
    cfg = _recorded_config(config_path, run.info.run_id)
    return run, evaluate_checkpoint(cfg, checkpoint)


def evaluate_recorded(
    target: str, overrides: Sequence[str], uri: str, experiment: str, config_dirs: Sequence[Path] = ()
) -> dict[str, float]:
    from sweeper.tracking.mlflow import MlflowTracker
    from sweeper.training.evaluate import evaluate_checkpoint

    require_store(uri, "--tracking-uri", "run `sweeper sweep` or `sweeper train` here first, or pass --tracking-uri")
    tracker = MlflowTracker(uri, experiment)
    run = _resolve_run(tracker.client, tracker.experiment_id, target)
    run_id = run.info.run_id
    with tempfile.TemporaryDirectory() as tmp:
        config_path, checkpoint = recorded_files(tracker, run, Path(tmp))
        cfg = _recorded_config(config_path, run_id)
        trained = OmegaConf.to_container(cfg.data, resolve=True)
        data_name = _apply(cfg, overrides, config_dirs)
        if any(GROUP_OVERRIDE.match(o) for o in overrides):  # the user's own data config
            trust.trust_config({"data": OmegaConf.to_container(cfg.data, resolve=False)})
        OmegaConf.resolve(cfg)
        check_same_split(trained, OmegaConf.to_container(cfg.data, resolve=True))  # type: ignore[arg-type]
        out = Path(tmp) / "evaluation"
        evaluation = evaluate_checkpoint(cfg, checkpoint, out)
        # eval/<data set>/test/<metric>: which data set, which split
        metrics = {f"eval/{data_name}/{k}": v for k, v in evaluation.metrics.items()}
        tracker.log_metrics(run_id, metrics)
        tracker.log_artifacts(run_id, out, f"evaluation/{data_name}")
        tracker.flush()  # the files live in a temporary folder
    print(f"run {run_id} ({run.info.run_name}) on {data_name} test split: "
          + ", ".join(f"{k.rsplit('/', 1)[1]}={v:.4f}" for k, v in sorted(metrics.items()) if not k.endswith("loss"))
          + f"; logged to the run as eval/{data_name}/test/*")
    return metrics
