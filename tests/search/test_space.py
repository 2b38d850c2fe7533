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
    assert by_key["model.num_layers"].choices == (1, 2, 3)  # range end is exclusive, as in Hydra
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
