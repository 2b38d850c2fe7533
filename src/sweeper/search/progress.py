"""Text output of a sweep: its report lines, the live progress line and the trials table."""

from __future__ import annotations

import statistics
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from sweeper.reports.tables import table
from sweeper.search.trials import counts, trial_duration


def say(message: str) -> None:
    """A line of the sweep's report on stdout, at once."""
    print(message, flush=True)


def _duration(seconds: float, tenths: bool = False) -> str:
    """``4s``, ``3m05s``, ``2h01m``; with ``tenths`` a duration under a minute has one
    decimal, as ``sweeper compare`` gives it (``4.2s``)."""
    if tenths and round(seconds, 1) < 60:
        return f"{seconds:.1f}s"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def eta_seconds(durations: Sequence[float], remaining: int, workers: int) -> float:
    """Time left: the median finished trial's duration for each remaining trial, spread
    over the workers. It does not grow while a long trial runs."""
    return statistics.median(durations) * max(0, remaining) / max(1, workers)


class Progress:
    """One status line: done / pruned / failed, best so far, ETA.

    Redrawn in place on a terminal; elsewhere a new line is printed when it changes.
    """

    def __init__(self, study_name: str, n_trials: int, workers: int, metric: str, stream: TextIO = sys.stderr) -> None:
        self.study_name = study_name
        self.n_trials = n_trials
        self.workers = workers
        self.metric = metric
        self.stream = stream
        self.tty = stream.isatty()
        self._last = ""

    def update(self, study: Any) -> None:
        trials = study.get_trials(deepcopy=False)
        c = counts(trials)
        best = ""
        try:
            if len(study.directions) == 1 and c["COMPLETE"]:
                bt = study.best_trial
                best = f" | best {self.metric}={bt.value:.4f} (#{bt.number})"
        except ValueError:
            pass
        eta = ""
        durations = [(t.datetime_complete - t.datetime_start).total_seconds() for t in trials
                     if t.state.name in ("COMPLETE", "PRUNED") and t.datetime_start and t.datetime_complete]
        if durations:
            eta = f" | ETA {_duration(eta_seconds(durations, self.n_trials - c['DONE'], self.workers))}"
        state = (
            f"[{self.study_name}] {min(c['DONE'], self.n_trials)}/{self.n_trials} done "
            f"({c['PRUNED']} pruned, {c['FAIL']} failed, {c['RUNNING']} running){best}"
        )
        line = state + eta
        # On a terminal the line (and its ETA) is redrawn; a log only gets a line per change.
        if (line if self.tty else state) == self._last:
            return
        self._last = line if self.tty else state
        if self.tty:
            self.stream.write("\r\033[K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self._last:
            self.stream.write("\n")
            self.stream.flush()


def trials_table(study: Any, metrics: Sequence[str], param_keys: Sequence[str], limit: int = 10) -> str:
    """Best trials first: number, state, metric(s), epochs, duration, params."""
    from optuna.trial import TrialState

    trials = [t for t in study.get_trials(deepcopy=False) if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    directions = [d.name.lower() for d in study.directions]

    def key(t: Any) -> tuple:
        complete = t.state == TrialState.COMPLETE
        value = t.values[0] if complete and t.values else (
            t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None
        )
        sign = -1 if directions[0] == "maximize" else 1
        return (not complete, sign * value if value is not None else float("inf"))

    rows = []
    for t in sorted(trials, key=key)[:limit]:
        values = list(t.values) if t.values else [None] * len(metrics)
        rows.append([
            t.number, t.state.name, *values, t.user_attrs.get("epochs"),
            _duration(trial_duration(t) or 0, tenths=True),
            *[t.params.get(k) for k in param_keys],
        ])  # fmt: skip
    return table(["#", "state", *metrics, "epochs", "time", *param_keys], rows)
