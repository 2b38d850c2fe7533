from __future__ import annotations

import optuna
import pytest

from sweeper.errors import ConfigError
from sweeper.search.space import parse_space, split_overrides


def _suggest_many(space, n=30, seed=0):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append(space.suggest(trial))
        study.tell(trial, 0.0)
    return out


def test_native_forms():
    space = parse_space({
        "optimizer.lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
        "data.batch_size": {"type": "categorical", "choices": [16, 32, 64]},
        "model.num_layers": {"type": "int", "low": 1, "high": 4, "step": 1},
        "model.dropout": {"low": 0.0, "high": 0.5, "step": 0.1},
        "model": ["mlp", "cnn"],
    })
    for values in _suggest_many(space):
        assert 1e-4 <= values["optimizer.lr"] <= 1e-1
        assert values["data.batch_size"] in (16, 32, 64)
        assert values["model.num_layers"] in (1, 2, 3, 4)
        assert values["model"] in ("mlp", "cnn")
        assert round(values["model.dropout"] * 10, 6) == round(values["model.dropout"] * 10)
    groups, keys = split_overrides({"model": "cnn", "optimizer.lr": 0.1})
    assert groups == ["model=cnn"] and keys == {"optimizer.lr": 0.1}


def test_hydra_optuna_sweeper_syntax():
    space = parse_space({
        "optimizer.lr": "interval(0.0001, 0.1)",
        "model.dropout": "tag(log, interval(0.01, 0.3))",
        "data.batch_size": "choice(32, 64, 128, 256)",
        "model.num_layers": "range(1, 4)",
        "model.activation": "relu,gelu",
        "model.hidden_sizes": "choice([64], [128, 64])",
    })
    by_key = {p.key: p for p in space.params}
    assert by_key["optimizer.lr"].kind == "float" and not by_key["optimizer.lr"].log
    assert by_key["model.dropout"].log and by_key["model.dropout"].low == 0.01
    assert by_key["data.batch_size"].choices == (32, 64, 128, 256)
    # an ordered int range whose end is included, as the Hydra Optuna sweeper reads it
    assert (by_key["model.num_layers"].kind, by_key["model.num_layers"].bounds()) == ("int", (1, 4))
    assert by_key["model.activation"].choices == ("relu", "gelu")
    for values in _suggest_many(space, 10):
        assert values["model.hidden_sizes"] in ([64], [128, 64])  # lists come back as lists


def test_conditional_parameters_are_sampled_only_when_their_condition_holds():
    space = parse_space({
        "model": ["mlp", "rnn"],
        "model.cell": {"choices": ["lstm", "gru"], "when": {"model": "rnn"}},
        "model.hidden_sizes": {"choices": [[8], [16]], "when": {"model": ["mlp"]}},
    })
    seen = _suggest_many(space, 40)
    assert {v["model"] for v in seen} == {"mlp", "rnn"}
    for values in seen:
        assert ("model.cell" in values) == (values["model"] == "rnn")
        assert ("model.hidden_sizes" in values) == (values["model"] == "mlp")


@pytest.mark.parametrize(
    "params, message",
    [
        ({"optimizer.lr": {"low": 0.1, "high": 0.01}}, "greater than high"),
        ({"optimizer.lr": {"low": 0.0, "high": 0.1, "log": True}}, "log scale needs low > 0"),
        ({"optimizer.lr": "tag(log, interval(0, 1))"}, "log scale needs low > 0"),
        ({"data.batch_size": {"choices": []}}, "non-empty"),
        ({"data.batch_size": []}, "non-empty"),
        ({"data.batch_size": "choice()"}, "cannot parse"),
        ({"x": {"type": "normal", "low": 0, "high": 1}}, "type must be"),
        ({"x": {"low": 0, "high": 1, "mu": 3}}, "unknown field"),
        ({"x": {"low": 1, "high": 5, "step": 0.5, "type": "int"}}, "integer"),
        ({"x": "0.5"}, "single value"),
        ({"model.cell": {"choices": ["lstm"], "when": {"model": "rnn"}}, "model": ["rnn"]}, "declared before"),
        ({"model": [1, 2]}, "option names"),
        ({"x": [1, 1]}, "repeat"),
        ({}, "empty"),
    ],
)
def test_bad_spaces_name_the_key(params, message):
    with pytest.raises(ConfigError, match=message) as info:
        parse_space(params)
    if params:
        assert str(info.value).startswith(f"search.params.{next(iter(params))}") or "declared before" in message


def test_grid_and_signature():
    space = parse_space({"a": [1, 2], "b": {"type": "int", "low": 0, "high": 4, "step": 2}})
    assert space.grid() == {"a": [1, 2], "b": [0, 2, 4]}
    same = parse_space({"a": [1, 2], "b": {"type": "int", "low": 0, "high": 4, "step": 2}})
    assert same.signature() == space.signature()
    assert parse_space({"a": [1, 3]}).signature() != space.signature()
    with pytest.raises(ConfigError, match="grid sampler needs a finite set"):
        parse_space({"lr": {"low": 0.1, "high": 1.0}}).grid()


def test_nested_namespaces_equal_dotted_keys():
    nested = parse_space({"optimizer": {"lr": {"low": 1e-4, "high": 0.1, "log": True}},
                          "model": ["mlp", "rnn"], "model.cell": ["lstm", "gru"]})
    dotted = parse_space({"optimizer.lr": {"low": 1e-4, "high": 0.1, "log": True},
                          "model": ["mlp", "rnn"], "model.cell": ["lstm", "gru"]})
    assert nested.signature() == dotted.signature()
    assert [p.key for p in nested.params] == ["optimizer.lr", "model", "model.cell"]


# The hydra-optuna-sweeper plugin's own cases (its tests/test_optuna_sweeper_plugin.py,
# test_create_optuna_distribution_from_override and ..._from_config), with the
# distributions its current release builds: a params block written for it must search
# exactly the same space here.
PLUGIN_OVERRIDES = [
    ("choice(1,2)", optuna.distributions.CategoricalDistribution([1, 2])),
    ("choice(true, false)", optuna.distributions.CategoricalDistribution([True, False])),
    ("choice('hello', 'world')", optuna.distributions.CategoricalDistribution(["hello", "world"])),
    ("shuffle(range(1,3))", optuna.distributions.CategoricalDistribution((1, 2))),
    ("range(1,3)", optuna.distributions.IntDistribution(1, 3)),
    ("interval(1, 5)", optuna.distributions.FloatDistribution(1, 5)),
    ("int(interval(1, 5))", optuna.distributions.IntDistribution(1, 5)),
    ("tag(log, interval(1, 5))", optuna.distributions.FloatDistribution(1, 5, log=True)),
    ("tag(log, int(interval(1, 5)))", optuna.distributions.IntDistribution(1, 5, log=True)),
    ("range(0.5, 5.5, step=1)", optuna.distributions.FloatDistribution(0.5, 5.5, step=1)),
]
PLUGIN_CONFIGS = [
    ({"type": "categorical", "choices": [1, 2, 3]}, optuna.distributions.CategoricalDistribution([1, 2, 3])),
    ({"type": "int", "low": 0, "high": 10}, optuna.distributions.IntDistribution(0, 10)),
    ({"type": "int", "low": 0, "high": 10, "step": 2}, optuna.distributions.IntDistribution(0, 10, step=2)),
    ({"type": "int", "low": 0, "high": 5}, optuna.distributions.IntDistribution(0, 5)),
    ({"type": "int", "low": 1, "high": 100, "log": True}, optuna.distributions.IntDistribution(1, 100, log=True)),
    ({"type": "float", "low": 0, "high": 1}, optuna.distributions.FloatDistribution(0, 1)),
    ({"type": "float", "low": 0, "high": 10, "step": 2}, optuna.distributions.FloatDistribution(0, 10, step=2)),
    ({"type": "float", "low": 1, "high": 100, "log": True}, optuna.distributions.FloatDistribution(1, 100, log=True)),
]


def _check_distribution(expected, actual) -> None:
    """The plugin's own comparison: equal, and for a categorical the same set of choices
    (shuffle() may order them)."""
    if not isinstance(expected, optuna.distributions.CategoricalDistribution):
        assert expected == actual
        return
    assert isinstance(actual, optuna.distributions.CategoricalDistribution)
    assert set(expected.choices) == set(actual.choices)


@pytest.mark.parametrize("text, expected", PLUGIN_OVERRIDES, ids=[t for t, _ in PLUGIN_OVERRIDES])
def test_the_hydra_optuna_sweepers_override_strings_give_its_distributions(text, expected):
    (param,) = parse_space({"key": text}).params
    _check_distribution(expected, param.distribution())
    study = optuna.create_study()
    trial = study.ask()
    parse_space({"key": text}).suggest(trial)
    _check_distribution(expected, trial.distributions["key"])  # what Optuna records


@pytest.mark.parametrize("spec, expected", PLUGIN_CONFIGS, ids=[str(s) for s, _ in PLUGIN_CONFIGS])
def test_the_hydra_optuna_sweepers_mapping_form_gives_its_distributions(spec, expected):
    (param,) = parse_space({"key": spec}).params
    _check_distribution(expected, param.distribution())


def test_shuffle_gives_one_order_every_time():
    orders = {parse_space({"k": "shuffle(5, 1, 4, 2, 3)"}).params[0].choices for _ in range(20)}
    assert orders == {(5, 1, 4, 2, 3)}
    assert {parse_space({"k": "shuffle(range(1, 9))"}).signature() for _ in range(20)} == {
        parse_space({"k": {"choices": list(range(1, 9))}}).signature()}


def test_a_space_travels_to_the_workers_unchanged():
    from sweeper.search.space import SearchSpace

    space = parse_space({
        "model": ["mlp", "rnn"],
        "model.cell": {"choices": ["lstm", "gru"], "when": {"model": "rnn"}},
        "model.hidden_sizes": [[64], [128, 64]],
        "optimizer.lr": "tag(log, interval(0.0001, 0.1))",
        "model.num_layers": "range(1, 3)",
        "model.dropout": {"low": 0.0, "high": 0.5, "step": 0.1},
    })
    import json

    again = SearchSpace.from_data(json.loads(json.dumps(space.to_data())))
    assert again == space and again.signature() == space.signature()
