"""Each point once: distinct sampler streams per worker and no trial repeating another's
parameters (sweeper.search.distinct)."""

from __future__ import annotations

import threading

import optuna
import pytest
from optuna.trial import TrialState

from sweeper.search.distinct import DistinctSampler, join_study, point_key, space_points, space_size, worker_seed
from sweeper.search.space import parse_space

optuna.logging.set_verbosity(optuna.logging.WARNING)


class Stuck(optuna.samplers.RandomSampler):
    """A sampler that proposes the first choice of everything, every time (a converged
    sampler, or two workers with the same seed)."""

    def sample_independent(self, study, trial, name, dist):
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            return dist.choices[0]
        return dist.low


def _run(sampler, space, n, tell=lambda t: 0.0):
    study = optuna.create_study(sampler=sampler)
    for _ in range(n):
        trial = study.ask()
        space.suggest(trial)
        study.tell(trial, tell(trial))
    return study


SMALL = {"data.batch_size": [16, 32, 64], "model.num_layers": "range(1, 2)", "optimizer": ["adam", "sgd"]}


def test_a_stuck_sampler_still_gets_every_point_once():
    space = parse_space(SMALL)
    assert space_size(space) == 12
    plain = _run(Stuck(), space, 12)
    assert len({point_key(t.params) for t in plain.trials}) == 1  # what it does alone
    study = _run(DistinctSampler(Stuck(), space, seed=0), space, 12)
    keys = [point_key(t.params) for t in study.trials]
    assert len(set(keys)) == 12 == len(keys)
    assert set(keys) == {point_key(p) for p in space_points(space)}


def test_a_converging_tpe_repeats_nothing_on_a_small_space():
    space = parse_space(SMALL)

    def value(trial):  # one best corner: TPE converges on it
        return float(trial.params["data.batch_size"] == 64) + float(trial.params["optimizer"] == "adam")

    plain = _run(optuna.samplers.TPESampler(seed=0, n_startup_trials=3), space, 12, value)
    assert len({point_key(t.params) for t in plain.trials}) < 12  # TPE alone repeats points
    study = _run(DistinctSampler(optuna.samplers.TPESampler(seed=0, n_startup_trials=3), space, seed=0),
                 space, 12, value)
    assert len({point_key(t.params) for t in study.trials}) == 12


def test_conditional_points_are_counted_where_they_apply():
    space = parse_space({"model": ["mlp", "rnn"], "model.cell": {"choices": ["lstm", "gru"], "when": {"model": "rnn"}}})
    assert sorted(point_key(p) for p in space_points(space)) == sorted(
        point_key(p) for p in [{"model": "mlp"}, {"model": "rnn", "model.cell": "lstm"},
                               {"model": "rnn", "model.cell": "gru"}])
    study = _run(DistinctSampler(Stuck(), space, seed=1), space, 3)
    assert len({point_key(t.params) for t in study.trials}) == 3
    assert space_size(parse_space({"optimizer.lr": "interval(0.001, 0.1)"})) is None  # unbounded


def test_running_and_queued_trials_count_as_taken_and_failed_ones_do_not():
    space = parse_space({"data.batch_size": [16, 32, 64]})
    study = optuna.create_study(sampler=DistinctSampler(Stuck(), space, seed=0))
    running = study.ask()
    space.suggest(running)  # 16, still training
    study.enqueue_trial({"data.batch_size": 32})
    queued = study.ask()  # takes the enqueued point: given, not sampled
    assert space.suggest(queued) == {"data.batch_size": 32}
    study.tell(queued, state=TrialState.FAIL)
    # 16 is running; 32 only failed, so it may be tried again: the next two are 32 and 64
    later = {space.suggest(study.ask())["data.batch_size"] for _ in range(2)}
    assert later == {32, 64}


def test_a_relative_sampler_is_kept_distinct_too():
    space = parse_space({"model.num_layers": "range(1, 4)", "data.batch_size": {"type": "int", "low": 1, "high": 2}})
    sampler = DistinctSampler(optuna.samplers.CmaEsSampler(seed=0, n_startup_trials=2), space, seed=0)
    study = _run(sampler, space, 8, lambda t: float(t.params["model.num_layers"]))
    assert len({point_key(t.params) for t in study.trials}) == 8


def test_every_worker_gets_its_own_slot_and_stream(tmp_path):
    from sweeper.search.storage import open_storage, study_lock

    url = f"journal:///{tmp_path / 'optuna.journal'}"
    storage = open_storage(url)
    optuna.create_study(study_name="s", storage=storage)
    study_id = storage.get_study_id_from_name("s")
    slots: list[int] = []

    def join() -> None:
        mine = open_storage(url)  # one storage per "process"
        with study_lock(url, "s"):
            slots.append(join_study(mine, study_id))

    threads = [threading.Thread(target=join) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(slots) == list(range(8))
    seeds = [worker_seed(0, s) for s in range(8)]
    assert seeds[0] == 0 and len(set(seeds)) == 8  # the first samples as Sampler(seed=0) does
    assert worker_seed(1, 3) != worker_seed(0, 3)


@pytest.mark.parametrize("allow", [False, True])
def test_allow_repeats_is_a_setting(allow):
    from omegaconf import OmegaConf

    from sweeper.search.settings import parse_settings

    search = OmegaConf.create({"n_trials": 3, "metric": "val/acc", "direction": None, "study_name": "s",
                               "storage": None, "workers": 1, "seed": 0, "max_failure_rate": 0.5, "retries": 1,
                               "force": False, "register_model": True, "params": {"a": [1, 2]},
                               "allow_repeats": allow})
    assert parse_settings(search).allow_repeats is allow
