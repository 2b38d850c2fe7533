from __future__ import annotations

import pytest
import torch

from sweeper.models import CNN, MLP, RNN, Backbone, build

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 5, 7)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(
    "make",
    [
        lambda s: MLP(s, 10, hidden_sizes=[16, 8], activation="gelu", dropout=0.2),
        lambda s: CNN(s, 10, channels=[4, 8, 8], pool="avg", batch_norm=False, dropout=0.1),
        lambda s: CNN(s, 10, channels=[4], pool="none", kernel_size=5),
        lambda s: RNN(s, 10, cell="gru", hidden_size=12, num_layers=2, bidirectional=True),
        lambda s: RNN(s, 10, cell="rnn", hidden_size=6),
    ],
)
def test_every_family_maps_images_to_logits(make, shape):
    net = make(shape)
    x = torch.randn(5, *shape)
    assert net(x).shape == (5, 10)


def test_mlp_without_hidden_layers_is_logistic_regression():
    net = MLP((1, 8, 8), 10, hidden_sizes=[])
    linear = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linear) == 1 and linear[0].in_features == 64 and linear[0].out_features == 10
    assert sum(p.numel() for p in net.parameters()) == 64 * 10 + 10


def test_rnn_reads_rows_as_sequence():
    net = RNN((1, 8, 6), 3, cell="lstm", hidden_size=4)
    assert net.rnn.input_size == 6  # one row of width 6 per step
    bi = RNN((2, 8, 6), 3, cell="lstm", hidden_size=4, bidirectional=True)
    assert bi.rnn.input_size == 12 and bi.head.in_features == 8


@pytest.mark.parametrize(
    "net",
    [
        MLP((1, 8, 8), 10, hidden_sizes=(32,)),
        CNN((1, 8, 8), 10, channels=(4, 8)),
        RNN((1, 8, 8), 10, cell="gru", hidden_size=8),
    ],
)
def test_spec_rebuilds_an_identical_architecture(net: Backbone):
    spec = net.spec
    assert spec["_target_"].startswith("sweeper.models.")
    assert all(isinstance(v, (str, int, float, bool, list)) for v in spec.values())
    twin = build(spec)
    assert type(twin) is type(net)
    twin.load_state_dict(net.state_dict())  # same parameter names and shapes
    net.eval(), twin.eval()
    x = torch.randn(3, 1, 8, 8)
    assert torch.equal(net(x), twin(x))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: MLP((1, 8, 8), 10, activation="swishy"), "unknown activation"),
        (lambda: CNN((1, 8, 8), 10, pool="median"), "pool must be one of"),
        (lambda: CNN((1, 8, 8), 10, kernel_size=4), "kernel_size"),
        (lambda: RNN((1, 8, 8), 10, cell="transformer"), "cell must be one of"),
        (lambda: MLP((8, 8), 10), "input_shape"),
        (lambda: MLP((1, 8, 8), 1), "num_classes"),
        (lambda: MLP((1, 8, 8), 10, dropout=1.5), "dropout"),
    ],
)
def test_bad_arguments_raise_value_error(make, message):
    with pytest.raises(ValueError, match=message):
        make()
