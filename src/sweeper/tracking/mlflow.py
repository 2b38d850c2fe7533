"""MLflow runs, written through ``MlflowClient`` (no global active-run state).

Metrics are sent with MLflow's asynchronous logging, so a training epoch never
waits on the store; :meth:`MlflowTracker.end_run` waits for them before it closes
the run.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers.logger import Logger
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from sweeper.errors import SweeperError

log = logging.getLogger(__name__)

# MLflow limits (mlflow.utils.validation): 100 params / 1000 metrics per batch, 6000 chars a value.
_PARAMS_PER_BATCH = 100
_MAX_PARAM_CHARS = 6000

FINISHED, FAILED, KILLED = "FINISHED", "FAILED", "KILLED"
# MLflow 3's UI opens an experiment of this kind on its runs table (not the GenAI overview).
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"


def git_commit(cwd: str | Path | None = None) -> str | None:
    """The commit of the working directory's repository, if there is one."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


class MlflowTracker:
    """Creates runs in one MLflow experiment and writes to them.

    Args:
        uri: tracking URI (``sqlite:///mlflow.db``, ``http://host:5000``, a folder …).
        experiment: experiment name; created when missing.
    """

    def __init__(self, uri: str, experiment: str) -> None:
        import mlflow
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        # MLflow logs schema migrations of a new store at INFO; they are noise to our users.
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)
        self.uri = uri
        self._mlflow = mlflow
        try:
            self.client = MlflowClient(tracking_uri=uri)
            self.experiment_id = self._experiment_id(experiment)
        except MlflowException as exc:
            first = str(exc).strip().splitlines()[0].split(". ")[0]
            raise SweeperError(
                f"tracking.uri: cannot open MLflow store {uri!r}: {first}; "
                "fix tracking.uri or turn tracking off with tracking=none"
            ) from exc
        self._pending: dict[str, list[Any]] = {}

    def _experiment_id(self, name: str) -> str:
        from mlflow.exceptions import MlflowException

        found = self.client.get_experiment_by_name(name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                self.client.restore_experiment(found.experiment_id)
            if found.tags.get(EXPERIMENT_KIND_TAG) is None:
                self.client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
            return found.experiment_id
        try:
            return self.client.create_experiment(name, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        except MlflowException:
            # Another worker created it between our lookup and create.
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def start_run(
        self,
        run_name: str | None = None,
        tags: Mapping[str, Any] | None = None,
        parent_run_id: str | None = None,
    ) -> str:
        all_tags = {k: str(v) for k, v in (tags or {}).items() if v is not None}
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        all_tags.setdefault("mlflow.user", os.environ.get("USER", "sweeper"))
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=all_tags)
        return run.info.run_id

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [
            Param(str(k)[:250], "None" if v is None else str(v)[:_MAX_PARAM_CHARS])
            for k, v in params.items()
        ]
        for start in range(0, len(items), _PARAMS_PER_BATCH):
            self.client.log_batch(run_id, params=items[start : start + _PARAMS_PER_BATCH])

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(str(k), str(v)) for k, v in tags.items() if v is not None]
        if items:
            self.client.log_batch(run_id, tags=items)

    def log_metrics(
        self, run_id: str, metrics: Mapping[str, float], step: int = 0, synchronous: bool = False
    ) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, int(step)) for k, v in metrics.items()]
        if not items:
            return
        op = self.client.log_batch(run_id, metrics=items, synchronous=synchronous)
        if op is not None:
            self._pending.setdefault(run_id, []).append(op)

    def flush(self, run_id: str) -> None:
        for op in self._pending.pop(run_id, []):
            op.wait()

    def log_artifact(self, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    def log_artifacts(self, run_id: str, folder: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(run_id, str(folder), artifact_path)

    def end_run(self, run_id: str, status: str = FINISHED) -> None:
        try:
            self.flush(run_id)
        finally:
            self.client.set_terminated(run_id, status=status)


def register_model(uri: str, run_id: str, checkpoint: str | Path, name: str) -> str:
    """Log the classifier in ``checkpoint`` as an MLflow PyTorch model of ``run_id`` and
    register it as a new version of model ``name``; returns the version."""
    import mlflow
    import mlflow.pytorch
    import numpy as np
    import pytorch_lightning as pl
    import torch
    import torchmetrics

    from sweeper import __version__
    from sweeper.models import Classifier

    model = Classifier.load_from_checkpoint(str(checkpoint), map_location="cpu").eval()
    example = np.zeros((1, *model.net.input_shape), dtype=np.float32)
    requirements = [
        f"torch=={torch.__version__.split('+')[0]}",
        f"pytorch-lightning=={pl.__version__}",
        f"torchmetrics=={torchmetrics.__version__}",
        f"sweeper=={__version__}",
    ]
    # We log a pickled module on purpose: torch.export (the 'pt2' format) specialises the
    # batch dimension to the example's size. MLflow warns about pickle at every save.
    logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(run_id=run_id):
        info = mlflow.pytorch.log_model(
            model,
            name="model",
            registered_model_name=name,
            pip_requirements=requirements,
            input_example=example,
            await_registration_for=60,
            serialization_format="pickle",
        )
    return str(info.registered_model_version)


class MlflowLogger(Logger):
    """Lightning logger that sends epoch metrics to an existing MLflow run.

    Hyperparameters are not logged here: the run's parameters are the resolved config,
    logged once by whoever created the run. The step of each metric is the epoch.
    """

    def __init__(self, tracker: MlflowTracker, run_id: str) -> None:
        super().__init__()
        self.tracker = tracker
        self.run_id = run_id

    @property
    def name(self) -> str:
        return "mlflow"

    @property
    def version(self) -> str:
        return self.run_id

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        return None

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        metrics = dict(metrics)
        epoch = metrics.pop("epoch", None)
        step = int(epoch) if epoch is not None else int(step or 0)
        self.tracker.log_metrics(self.run_id, metrics, step=step)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.tracker.flush(self.run_id)
