"""Reading sweeps back from MLflow: a study's parent run and its trials' child runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sweeper.errors import SweeperError
from sweeper.tracking.stores import require_store


@dataclass
class TrialRecord:
    number: int
    state: str  # COMPLETE | PRUNED | FAILED | RUNNING
    value: float | None
    params: dict[str, str]
    epochs: int | None
    duration_s: float | None
    run_id: str


def _value(t: TrialRecord) -> float:
    """The value of a trial that has one."""
    assert t.value is not None
    return t.value


@dataclass
class StudyRecord:
    name: str
    parent_run_id: str
    metric: str
    direction: str
    status: str
    start_time: int
    searched: list[str]
    trials: list[TrialRecord] = field(default_factory=list)

    def sorted_trials(self) -> list[TrialRecord]:
        """Trials with a value first, best first; then the rest by number."""
        sign = -1.0 if self.direction == "maximize" else 1.0
        scored = [t for t in self.trials if t.value is not None]
        rest = [t for t in self.trials if t.value is None]
        return sorted(scored, key=lambda t: (t.state != "COMPLETE", sign * _value(t))) + sorted(
            rest, key=lambda t: t.number
        )

    def best(self) -> TrialRecord | None:
        complete = [t for t in self.trials if t.state == "COMPLETE" and t.value is not None]
        if not complete:
            return None
        pick = max if self.direction == "maximize" else min
        return pick(complete, key=_value)

    def count(self, state: str) -> int:
        return sum(1 for t in self.trials if t.state == state)


class StudyReader:
    """Finds studies (parent runs) and their trials in one MLflow experiment."""

    def __init__(self, uri: str, experiment: str) -> None:
        from mlflow.tracking import MlflowClient

        from sweeper.tracking.mlflow import MlflowTracker  # noqa: F401 - same error handling

        require_store(uri, "--tracking-uri", "run `sweeper sweep` here first, or pass --tracking-uri")
        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            raise SweeperError(
                f"no experiment '{experiment}' in {uri}; run `sweeper sweep` first, or pass "
                "--tracking-uri/--experiment"
            )
        self.experiment_id = exp.experiment_id
        self.experiment = experiment

    def parents(self) -> list[Any]:
        return self.client.search_runs(
            [self.experiment_id],
            filter_string="tags.`sweeper.role` = 'parent'",
            order_by=["attributes.start_time DESC"],
            max_results=1000,
        )

    def study(self, name: str | None = None) -> StudyRecord:
        parents = self.parents()
        if not parents:
            raise SweeperError(
                f"no sweep recorded in {self.uri} (experiment '{self.experiment}'); "
                "run `sweeper sweep` first"
            )
        if name is None:
            parent = parents[0]
        else:
            matches = [p for p in parents if p.data.tags.get("study") == name]
            if not matches:
                known = ", ".join(sorted({p.data.tags.get("study", "?") for p in parents}))
                raise SweeperError(f"no study '{name}' in {self.uri}; recorded studies: {known}")
            parent = matches[0]
        tags = parent.data.tags
        metric = tags.get("metric", "val/acc").split(",")[0]
        direction = tags.get("direction", "maximize").split(",")[0]
        searched = sorted(k[len("search."):] for k in parent.data.params if k.startswith("search."))
        record = StudyRecord(
            name=tags.get("study", parent.info.run_name),
            parent_run_id=parent.info.run_id,
            metric=metric,
            direction=direction,
            status=parent.info.status,
            start_time=parent.info.start_time,
            searched=searched,
        )
        children = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
            max_results=10000,
        )
        for run in children:
            record.trials.append(self._trial(run, metric, searched))
        record.trials.sort(key=lambda t: t.number)
        return record

    @staticmethod
    def _trial(run: Any, metric: str, searched: list[str]) -> TrialRecord:
        tags, metrics = run.data.tags, run.data.metrics
        state = tags.get("state") or ("RUNNING" if run.info.status == "RUNNING" else run.info.status)
        value = metrics.get(f"best/{metric}", metrics.get(metric))
        end = run.info.end_time
        # the trial's own figure (the sweep's table and its Optuna record give the same),
        # else the run's span
        duration = float(tags["duration_s"]) if tags.get("duration_s") else (
            (end - run.info.start_time) / 1000 if end else None)
        epochs = tags.get("epochs")
        return TrialRecord(
            number=int(tags.get("trial_number", -1)),
            state=state,
            value=value,
            params={k: run.data.params.get(k, "-") for k in searched},
            epochs=int(epochs) if epochs is not None else None,
            duration_s=duration,
            run_id=run.info.run_id,
        )
