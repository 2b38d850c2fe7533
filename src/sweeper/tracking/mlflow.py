"""MLflow runs, written through ``MlflowClient`` (no global active-run state).

Only creating a run waits on the store. Every other write (params, metrics, tags,
artifacts, the run's end) goes in order through one background thread per tracker,
so training never waits on a tracking round trip. :meth:`MlflowTracker.end_run` waits
for the run's writes unless told not to (a sweep's worker goes on to its next trial
and waits once, before it exits); pending writes are also finished at interpreter exit.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import os
import queue
import subprocess
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from sweeper.errors import SweeperError
from sweeper.tracking.stores import driver_url, held, retry_schema_race, store_exists

log = logging.getLogger(__name__)

# MLflow limits (mlflow.utils.validation): 100 params / 1000 metrics per batch, 6000 chars a value.
_PARAMS_PER_BATCH = 100
_METRICS_PER_BATCH = 1000
# Metrics of a run are sent at most this often (and whenever anything else of the run is):
# a short run then costs a store a handful of writes, a long one shows each epoch live.
METRIC_INTERVAL_S = 1.0
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


@functools.lru_cache(maxsize=1)
def process_git_commit() -> str | None:
    """The commit of the working directory when this process first asked: the code it
    runs. Asked once, so a sweep's trials do not each start ``git``."""
    return git_commit()


class _Writer:
    """Performs submitted calls in order on one daemon thread.

    A failed write is logged as a warning and does not stop the writes after it
    (tracking must never end a training run). ``drain`` waits until every call
    submitted before it has run.
    """

    _all: ClassVar[weakref.WeakSet[_Writer]] = weakref.WeakSet()

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def submit(self, fn: Any, *args: Any, **kwargs: Any) -> None:
        if self._thread is None or not self._thread.is_alive():
            with self._start_lock:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._loop, name="sweeper-mlflow", daemon=True)
                    self._thread.start()
                    _Writer._all.add(self)
        self._queue.put((fn, args, kwargs))

    def drain(self, timeout: float | None = None) -> bool:
        """Wait for the writes submitted so far; False if ``timeout`` passed first."""
        if self._thread is None or not self._thread.is_alive():
            return True
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if isinstance(item, threading.Event):
                item.set()
                continue
            fn, args, kwargs = item
            try:
                fn(*args, **kwargs)
            except Exception as exc:
                log.warning("MLflow write %s failed: %s", getattr(fn, "__name__", fn), exc)


_trackers: weakref.WeakSet[MlflowTracker] = weakref.WeakSet()
EXIT_DRAIN_TIMEOUT_S = 120.0


@atexit.register
def _drain_all_writers() -> None:
    for tracker in list(_trackers):
        tracker._send_all_metrics()
    for writer in list(_Writer._all):
        if not writer.drain(EXIT_DRAIN_TIMEOUT_S):
            log.warning("gave up on MLflow writes still pending after %.0f s at exit", EXIT_DRAIN_TIMEOUT_S)


def check_server(uri: str, timeout: float = 5.0) -> None:
    """Fail in seconds, not after minutes of MLflow's retries, when a tracking server does
    not answer."""
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout).close()
    except urllib.error.HTTPError:
        return  # it answered (a proxy or an older server without /health)
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SweeperError(
            f"tracking.uri: no MLflow server answers at {uri} ({reason}); start it "
            "(e.g. `sweeper ui` or `mlflow server`), fix tracking.uri, or turn tracking off with tracking=none"
        ) from None


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
        self._mlflow = mlflow
        if uri.startswith(("http://", "https://")):
            check_server(uri)
        sql = uri.split("://", 1)[0].split("+")[0] in ("postgresql", "postgres", "mysql", "mssql", "sqlite")
        if sql:
            uri = driver_url(uri, "tracking.uri")
        self.uri = uri

        def open_store() -> tuple[Any, str]:
            # Several machines may open an empty database at once: one creates the schema.
            lock = held(uri, "sweeper.mlflow-schema") if sql and not store_exists(uri) else contextlib.nullcontext()
            with lock:
                client = MlflowClient(tracking_uri=uri)
                return client, self._experiment_id(experiment, client)

        try:
            self.client, self.experiment_id = retry_schema_race(open_store)
        except MlflowException as exc:
            first = str(exc).strip().splitlines()[0].split(". ")[0]
            raise SweeperError(
                f"tracking.uri: cannot open MLflow store {uri!r}: {first}; "
                "fix tracking.uri or turn tracking off with tracking=none"
            ) from exc
        self._writer = _Writer()
        self._metrics: dict[str, list[Any]] = {}  # run id -> metrics not sent yet
        self._metrics_sent: dict[str, float] = {}
        self._lock = threading.Lock()
        _trackers.add(self)

    @staticmethod
    def _experiment_id(name: str, client: Any) -> str:
        from mlflow.exceptions import MlflowException

        found = client.get_experiment_by_name(name)
        if found is not None:
            if found.lifecycle_stage == "deleted":
                client.restore_experiment(found.experiment_id)
            if found.tags.get(EXPERIMENT_KIND_TAG) is None:
                client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
            return found.experiment_id
        try:
            return client.create_experiment(name, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        except MlflowException:
            # Another worker created it between our lookup and create.
            found = client.get_experiment_by_name(name)
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

    def _take_metrics(self, run_id: str) -> list[Any]:
        with self._lock:
            self._metrics_sent[run_id] = time.monotonic()
            return self._metrics.pop(run_id, [])

    def _send(
        self, run_id: str, metrics: Sequence[Any] = (), params: Sequence[Any] = (), tags: Sequence[Any] = ()
    ) -> None:
        """Submit log_batch calls within MLflow's limit of 1000 entities per call."""
        metrics, params, tags = list(metrics), list(params), list(tags)
        while metrics or params or tags:
            room = _METRICS_PER_BATCH - len(params) - len(tags)
            self._writer.submit(self.client.log_batch, run_id, metrics=metrics[:room], params=params, tags=tags)
            metrics, params, tags = metrics[room:], [], []

    def _send_metrics(self, run_id: str) -> None:
        metrics = self._take_metrics(run_id)
        if metrics:
            self._send(run_id, metrics)

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [
            Param(str(k)[:250], "None" if v is None else str(v)[:_MAX_PARAM_CHARS])
            for k, v in params.items()
        ]
        self._send_metrics(run_id)
        for start in range(0, len(items), _PARAMS_PER_BATCH):
            self._send(run_id, params=items[start : start + _PARAMS_PER_BATCH])

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        """Set tags (with any metrics not sent yet, in the same write)."""
        from mlflow.entities import RunTag

        items = [RunTag(str(k), str(v)) for k, v in tags.items() if v is not None]
        self._send(run_id, self._take_metrics(run_id), tags=items)

    def log_metrics(
        self, run_id: str, metrics: Mapping[str, float], step: int = 0, synchronous: bool = False
    ) -> None:
        """Queue metrics; they are sent with the run's next write, or at once when
        ``METRIC_INTERVAL_S`` has passed since its last. ``synchronous=True`` returns once
        they are stored."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, int(step)) for k, v in metrics.items()]
        with self._lock:
            self._metrics.setdefault(run_id, []).extend(items)
            due = time.monotonic() - self._metrics_sent.get(run_id, float("-inf")) >= METRIC_INTERVAL_S
        if due or synchronous:
            self._send_metrics(run_id)
        if synchronous:
            self.flush()

    def _send_all_metrics(self) -> None:
        with self._lock:
            pending = [r for r, items in self._metrics.items() if items]
        for run in pending:
            self._send_metrics(run)

    def flush(self) -> None:
        """Send every queued metric and wait until all writes so far are done."""
        self._send_all_metrics()
        self._writer.drain()

    def log_artifact(self, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
        self._send_metrics(run_id)
        self._writer.submit(self.client.log_artifact, run_id, str(path), artifact_path)

    def log_artifacts(self, run_id: str, folder: str | Path, artifact_path: str | None = None) -> None:
        self._send_metrics(run_id)
        self._writer.submit(self.client.log_artifacts, run_id, str(folder), artifact_path)

    def end_run(self, run_id: str, status: str = FINISHED, wait: bool = True) -> None:
        """End the run after its queued writes; ``wait=False`` returns at once."""
        self._send_metrics(run_id)
        with self._lock:
            self._metrics_sent.pop(run_id, None)
        self._writer.submit(self.client.set_terminated, run_id, status=status)
        if wait:
            self.flush()


_shared: dict[tuple[str, str, int], MlflowTracker] = {}


def shared_tracker(uri: str, experiment: str) -> MlflowTracker:
    """One tracker per store and experiment in this process: the runs of a sweep's
    trials reuse its client, experiment lookup and writer thread."""
    key = (uri, experiment, os.getpid())
    tracker = _shared.get(key)
    if tracker is None:
        tracker = _shared[key] = MlflowTracker(uri, experiment)
    return tracker
