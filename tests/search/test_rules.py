"""The pure rules behind study control and honest records: stop rules, ETA, the study's
config signature, start points and the evaluation split check."""

from __future__ import annotations

import datetime as dt
import io

import optuna
import pytest
from optuna.trial import TrialState

from sweeper.errors import ConfigError
from sweeper.reports.evaluate import check_same_split
from sweeper.search.control import epochs_used, stop_reason
from sweeper.search.progress import Progress, eta_seconds
from sweeper.search.settings import SearchSettings
from sweeper.search.space import parse_space
from sweeper.search.study import config_changes

T0 = dt.datetime(2026, 1, 1)


def _trial(number: int, value: float | None, state: TrialState = TrialState.COMPLETE, epochs: int = 2):
    trial = optuna.trial.create_trial(
        state=state, value=value if state == TrialState.COMPLETE else None,
        intermediate_values=dict.fromkeys(range(epochs), 0.5), user_attrs={"epochs": epochs})
    trial.number = number
    trial.datetime_start = T0 + dt.timedelta(seconds=10 * number)
    trial.datetime_complete = trial.datetime_start + dt.timedelta(seconds=4 + number)
    return trial


def test_patience_counts_finished_trials_since_the_last_real_improvement():
    settings = SearchSettings(patience=3, min_delta=0.01)
    values = [0.5, 0.8, 0.805, 0.79]  # 0.805 is better, but by less than min_delta
    trials = [_trial(i, v) for i, v in enumerate(values)]
    assert stop_reason(trials, settings) is None  # two since the improvement at 0.8
    trials.append(_trial(4, None, TrialState.PRUNED))  # a pruned trial did not improve either
    outcome, message = stop_reason(trials, settings)
    assert outcome == "plateau" and "search.patience=3" in message and "0.01" in message
    trials.append(_trial(5, 0.9))
    assert stop_reason(trials, settings) is None
    # minimising: lower is better
    low = SearchSettings(patience=2, directions=("minimize",), metrics=("val/loss",))
    assert stop_reason([_trial(0, 1.0), _trial(1, 0.5), _trial(2, 0.6), _trial(3, 0.7)], low)[0] == "plateau"
    assert stop_reason([_trial(0, 1.0), _trial(1, 1.5), _trial(2, 0.5)], low) is None


def test_the_epoch_budget_counts_every_trial_that_trained():
    trials = [_trial(0, 0.5, epochs=3), _trial(1, None, TrialState.PRUNED, epochs=1),
              _trial(2, None, TrialState.FAIL, epochs=2)]
    assert epochs_used(trials) == 6
    assert stop_reason(trials, SearchSettings(epoch_budget=7)) is None
    assert stop_reason(trials, SearchSettings(epoch_budget=6))[0] == "epoch budget"


def test_eta_is_the_median_trial_times_the_trials_left_per_worker():
    assert eta_seconds([4.0, 5.0, 100.0], remaining=6, workers=2) == 15.0
    assert eta_seconds([3.0], remaining=0, workers=1) == 0.0


def test_the_progress_eta_does_not_grow_while_a_trial_runs(monkeypatch):
    study = optuna.create_study(direction="maximize")
    for i in range(2):
        study.add_trial(_trial(i, 0.5 + i / 10))
    stream = io.StringIO()
    stream.isatty = lambda: True  # type: ignore[method-assign]
    progress = Progress("s", n_trials=6, workers=1, metric="val/acc", stream=stream)
    progress.update(study)
    first = stream.getvalue().rsplit("ETA ", 1)[1]
    clock = __import__("time").time()
    monkeypatch.setattr("time.time", lambda: clock + 3600)  # an hour later, nothing finished
    progress.update(study)
    assert stream.getvalue().rsplit("ETA ", 1)[1] == first == "18s"  # median 4.5 s x 4 left


def test_start_points_must_fit_the_space():
    space = parse_space({"optimizer.lr": {"type": "float", "low": 1e-4, "high": 0.1, "log": True},
                         "data.batch_size": [16, 32], "model.hidden_sizes": [[16], [32, 32]]})
    assert space.encode({"optimizer.lr": 0.01, "model.hidden_sizes": [32, 32]}, "search.enqueue[0]") == \
        {"optimizer.lr": 0.01, "model.hidden_sizes": "[32, 32]"}
    for values, words in (({"optimizer.lr": 0.5}, "outside its range"),
                          ({"data.batch_size": 48}, "not one of its choices"),
                          ({"optimizer.lr": "big"}, "must be a number"),
                          ({"model.dropout": 0.1}, "not in search.params")):
        with pytest.raises(ConfigError, match=words) as err:
            space.encode(values, "search.enqueue[1]")
        assert str(err.value).startswith("search.enqueue[1]:")


def test_config_changes_name_each_key():
    phrases, count = config_changes({"a": "1", "b": "2", "c": "3"}, {"a": "1", "b": "5", "d": "4"}, limit=2)
    assert count == 3 and phrases == ["b=5 (was 2)", "c (was 3) is gone"]


def test_evaluation_on_a_resplit_of_the_training_data_is_refused():
    trained = {"_target_": "sweeper.data.DigitsDataModule", "seed": 0, "test_fraction": 0.15, "batch_size": 64}
    check_same_split(trained, {**trained, "batch_size": 8, "eval_batch_size": 7})
    check_same_split(trained, {"_target_": "sweeper.data.MNISTDataModule", "seed": 7})  # another data set
    with pytest.raises(ConfigError, match=r"^data\.seed: .*trained with data\.seed=0"):
        check_same_split(trained, {**trained, "seed": 7})
