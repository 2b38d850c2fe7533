"""One MLflow run's life, the same for a training run and a cross-validated one: started
with the tags every run has (and announced to the caller), then ended FINISHED, KILLED
(Ctrl-C, SIGTERM) or FAILED with its reason, whatever happens in between, so that no
run is left RUNNING."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from omegaconf import DictConfig

from sweeper.errors import SweeperError
from sweeper.signals import interrupt_reason


def family(cfg: DictConfig) -> str:
    """Model family, e.g. ``cnn`` for ``sweeper.models.CNN``."""
    return str(cfg.model._target_).rsplit(".", 1)[-1].lower()


def start_run(cfg: DictConfig, name: str | None, suffix: str, tags: Mapping[str, Any],
              parent_run_id: str | None, run_started: Callable[[str], None] | None) -> tuple[Any, str]:
    """A new MLflow run for ``cfg`` (named ``name``, else ``<family>-<suffix><time>``),
    with the tags every run has; ``run_started`` hears its id at once."""
    from sweeper.tracking.mlflow import process_git_commit, shared_tracker

    tracker = shared_tracker(cfg.tracking.uri, cfg.tracking.experiment)
    run_id = tracker.start_run(
        name or f"{family(cfg)}-{suffix}{time.strftime('%Y%m%d-%H%M%S')}",
        {"model_family": family(cfg), "mlflow.source.git.commit": process_git_commit(),
         "mlflow.source.name": "sweeper train", **tags},
        parent_run_id,
    )
    if run_started is not None:
        run_started(run_id)
    return tracker, run_id


class Life:
    """What the body of :func:`lived` reports: ``finished()`` once its work is done."""

    def __init__(self) -> None:
        self.status = "FAILED"

    def finished(self) -> None:
        self.status = "FINISHED"


@contextmanager
def lived(tracker: Any, run_id: str | None, record_state: bool = True, wait: bool = True) -> Iterator[Life]:
    """End run ``run_id`` however the body ends: FINISHED once it called
    ``life.finished()``, KILLED on an interrupt (Lightning's ``sys.exit`` after Ctrl-C or
    SIGTERM is raised on as the ``KeyboardInterrupt`` it was), FAILED with the error as
    its ``failure_reason`` otherwise. ``record_state`` False leaves the state, the reason
    and the end to the caller (a sweep records them from its Optuna trial). ``wait``
    False returns before a finished run's last writes are done."""
    life = Life()
    active = tracker is not None and run_id is not None and record_state

    def failed(reason: str) -> None:
        if active:
            tracker.set_tags(run_id, {"state": "FAILED", "failure_reason": reason[:5000]})

    try:
        yield life
    except KeyboardInterrupt:
        life.status = "KILLED"
        failed(interrupt_reason())
        raise
    except SystemExit as exc:
        life.status = "KILLED"
        failed(interrupt_reason())
        signal.signal(signal.SIGINT, signal.default_int_handler)
        raise KeyboardInterrupt from exc
    except SweeperError as exc:
        failed(str(exc))
        raise
    except Exception as exc:
        failed(f"{type(exc).__name__}: {exc}")
        raise
    finally:
        if active:
            tracker.end_run(run_id, life.status, wait=wait or life.status != "FINISHED")
