from __future__ import annotations

import pytest

from sweeper.errors import ConfigError
from sweeper.search.settings import mask_url, parse_settings
from sweeper.search.space import parse_space
from tests.conftest import compose_train


def _search(*overrides):
    cfg = compose_train(list(overrides), config_name="sweep")
    if cfg.search.study_name is None:
        cfg.search.study_name = "s"
    return cfg.search


def test_defaults_parse():
    s = parse_settings(_search(), {"search/sampler": "tpe", "search/pruner": "median"})
    assert s.n_trials == 20 and s.workers == 1 and s.metrics == ("val/acc",)
    assert [p.key for p in parse_space(s.params).params] == ["optimizer.lr", "data.batch_size"]
    assert s.sampler_name == "tpe" and not s.multi_objective


@pytest.mark.parametrize(
    "override, key",
    [
        ("search.workers=0", "search.workers"),
        ("search.n_trials=0", "search.n_trials"),
        ("search.retries=-1", "search.retries"),
        ("search.timeout=-5", "search.timeout"),
        ("search.max_failure_rate=2", "search.max_failure_rate"),
        ("search.direction=up", "search.direction"),
        ("search.study_name='a b'", "search.study_name"),
        ("+search.n_trails=3", "search.n_trails"),
        ("search.threads=0", "search.threads"),
        ("search.patience=0", "search.patience"),
        ("search.min_delta=-1", "search.min_delta"),
        ("search.trial_timeout=0", "search.trial_timeout"),
        ("search.epoch_budget=1.5", "search.epoch_budget"),
        ("search.enqueue=[3]", "search.enqueue"),
        ("search.warm_start.top=0", "search.warm_start.top"),
        ("+search.warm_start.studdy=x", "search.warm_start"),
        (("search.metric=[val/acc,val/loss]", "search.direction=[maximize,minimize]", "search.patience=3"),
         "search.patience"),
    ],
)
def test_bad_settings_name_the_key(override, key):
    with pytest.raises(ConfigError) as info:
        parse_settings(_search(*(override if isinstance(override, tuple) else (override,))))
    assert str(info.value).startswith(key)


def test_multi_objective_needs_a_direction_per_metric():
    s = parse_settings(_search("search.metric=[val/acc,model/num_parameters]",
                               "search.direction=[maximize,minimize]"))
    assert s.multi_objective and s.directions == ("maximize", "minimize")
    with pytest.raises(ConfigError, match="one per metric"):
        parse_settings(_search("search.metric=[val/acc,model/num_parameters]", "search.direction=maximize"))


def test_direction_follows_the_monitor_or_the_metric_name():
    s = parse_settings(_search("search.metric=[val/acc,model/num_parameters]"))
    assert s.directions == ("maximize", "minimize")
    assert parse_settings(_search("search.metric=val/loss")).directions == ("minimize",)
    assert parse_settings(_search("search.metric=val/r2")).directions == ("maximize",)
    # the monitored metric takes the task's mode, whatever its name
    s = parse_settings(_search("search.metric=val/score"), None, "val/score", "min")
    assert s.directions == ("minimize",)
    s = parse_settings(_search("search.metric=val/score"))
    assert s.undirected == ("val/score",)
    with pytest.raises(ConfigError, match="cannot tell whether to maximize or minimize val/score"):
        s.check_directions()


def test_mask_url():
    assert mask_url("postgresql://bob:s3cr3t@db:5432/x") == "postgresql://bob:***@db:5432/x"
    assert mask_url("sqlite:///a.db") == "sqlite:///a.db"
