from __future__ import annotations

import pytest
import torch

from sweeper.models import CNN, MLP, RNN, Backbone, build

IMAGES = [(1, 8, 8), (1, 28, 28), (3, 5, 7)]


@pytest.mark.parametrize("shape", IMAGES)
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
def test_every_family_maps_images_to_outputs(make, shape):
    net = make(shape)
    assert net(torch.randn(5, *shape)).shape == (5, 10)


@pytest.mark.parametrize("shape", [(13,), (6, 4), (1, 8, 8), (2, 3, 4, 5)])
@pytest.mark.parametrize("num_outputs", [1, 3])
def test_mlp_takes_any_layout_and_any_output_size(shape, num_outputs):
    net = MLP(shape, num_outputs, hidden_sizes=[8])
    assert net(torch.randn(4, *shape)).shape == (4, num_outputs)
    first = next(m for m in net.modules() if isinstance(m, torch.nn.Linear))
    assert first.in_features == torch.Size(shape).numel()


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_rnn_reads_sequences_step_by_step(cell, bidirectional):
    net = RNN((7, 3), 2, cell=cell, hidden_size=5, num_layers=2, bidirectional=bidirectional)
    assert net.rnn.input_size == 3  # one step of 3 features
    x = torch.randn(4, 7, 3)
    assert net(x).shape == (4, 2)
    # the order of the steps matters (it is a sequence model, not a bag of steps)
    net.eval()
    assert not torch.allclose(net(x), net(x.flip(1)))


def test_rnn_reads_image_rows_as_sequence():
    net = RNN((1, 8, 6), 3, cell="lstm", hidden_size=4)
    assert net.rnn.input_size == 6  # one row of width 6 per step
    bi = RNN((2, 8, 6), 3, cell="lstm", hidden_size=4, bidirectional=True)
    assert bi.rnn.input_size == 12 and bi.head.in_features == 8


def test_rnn_sequence_and_image_layouts_agree_for_one_channel():
    """A (1, H, W) image is the (H, W) sequence of its rows."""
    torch.manual_seed(0)
    image_net = RNN((1, 5, 4), 2, hidden_size=3)
    seq_net = RNN((5, 4), 2, hidden_size=3)
    seq_net.load_state_dict(image_net.state_dict())
    x = torch.randn(3, 1, 5, 4)
    assert torch.allclose(image_net(x), seq_net(x[:, 0]))


def test_mlp_without_hidden_layers_is_logistic_regression():
    net = MLP((1, 8, 8), 10, hidden_sizes=[])
    linear = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linear) == 1 and linear[0].in_features == 64 and linear[0].out_features == 10
    assert sum(p.numel() for p in net.parameters()) == 64 * 10 + 10


def test_a_network_has_one_name_for_its_width():
    net = MLP((4,), 3, hidden_sizes=[])
    assert net.num_outputs == 3 and not hasattr(net, "num_classes")
    with pytest.raises(TypeError, match="num_classes"):
        MLP((4,), num_classes=3)


@pytest.mark.parametrize(
    "net, shape",
    [
        (MLP((1, 8, 8), 10, hidden_sizes=(32,)), (1, 8, 8)),
        (MLP((13,), 1, hidden_sizes=(4,)), (13,)),
        (CNN((1, 8, 8), 10, channels=(4, 8)), (1, 8, 8)),
        (RNN((1, 8, 8), 10, cell="gru", hidden_size=8), (1, 8, 8)),
        (RNN((6, 2), 4, hidden_size=8), (6, 2)),
    ],
)
def test_spec_rebuilds_an_identical_architecture(net: Backbone, shape):
    spec = net.spec
    assert spec["_target_"].startswith("sweeper.models.")
    assert spec["num_outputs"] == net.num_outputs and "num_classes" not in spec
    assert all(isinstance(v, (str, int, float, bool, list)) for v in spec.values())
    twin = build(spec)
    assert type(twin) is type(net)
    twin.load_state_dict(net.state_dict())  # same parameter names and shapes
    net.eval(), twin.eval()
    x = torch.randn(3, *shape)
    assert torch.equal(net(x), twin(x))


def test_build_takes_a_spec_as_its_class_does_and_guesses_no_renamed_argument():
    spec = {"_target_": "sweeper.models.mlp.MLP", "input_shape": [1, 8, 8], "num_outputs": 10,
            "hidden_sizes": [4], "activation": "relu", "dropout": 0.0}  # fmt: skip
    net = build(spec)
    assert isinstance(net, MLP) and net.spec == {**spec, "hidden_sizes": [4]}
    with pytest.raises(TypeError, match="num_classes"):
        build({**{k: v for k, v in spec.items() if k != "num_outputs"}, "num_classes": 10})


def test_build_makes_any_module_from_its_target():
    net = build({"_target_": "torch.nn.Linear", "in_features": 3, "out_features": 2, "bias": False})
    assert isinstance(net, torch.nn.Linear) and net.bias is None and net.out_features == 2
    with pytest.raises(ValueError, match="_target_"):
        build({"in_features": 3})
    from sweeper.trust import UntrustedError

    with pytest.raises(UntrustedError, match=r"'collections\.OrderedDict' as its network.*refused without importing"):
        build({"_target_": "collections.OrderedDict"})  # not a layer of torch's nor a class sweeper ships


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: MLP((1, 8, 8), 10, activation="swishy"), "unknown activation"),
        (lambda: CNN((1, 8, 8), 10, pool="median"), "pool must be one of"),
        (lambda: CNN((1, 8, 8), 10, kernel_size=4), "kernel_size"),
        (lambda: RNN((1, 8, 8), 10, cell="transformer"), "cell must be one of"),
        (lambda: MLP((), 10), "input_shape"),
        (lambda: MLP((8, 0), 10), "input_shape"),
        (lambda: MLP(13, 10), "input_shape"),
        (lambda: MLP((1, 8, 8), 0), "num_outputs must be an int >= 1"),
        (lambda: MLP((1, 8, 8), 10, dropout=1.5), "dropout"),
    ],
)
def test_bad_arguments_raise_value_error(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("shape", [(13,), (6, 4), (2, 3, 4, 5)])
def test_cnn_names_the_layout_it_takes_and_the_alternatives(shape):
    with pytest.raises(ValueError) as info:
        CNN(shape, 3)
    message = str(info.value)
    assert message.startswith(f"CNN takes input_shape (channels, height, width), got {shape}")
    assert "model=mlp" in message and "model=rnn" in message


@pytest.mark.parametrize("shape", [(13,), (2, 3, 4, 5)])
def test_rnn_names_the_layouts_it_takes(shape):
    with pytest.raises(ValueError, match=r"RNN takes input_shape \(steps, features\).*model=mlp"):
        RNN(shape, 3)


@pytest.mark.parametrize(
    "net, batch",
    [
        (RNN((7, 3), 2), (4, 7)),  # (N, T) where (N, T, F) was expected
        (RNN((7, 3), 2), (4, 3, 7)),  # steps and features swapped
        (RNN((1, 8, 8), 2), (4, 8, 8)),  # images without their channel dimension
        (CNN((1, 8, 8), 2, channels=[2]), (4, 1, 8, 9)),
        (MLP((13,), 2), (4, 12)),
    ],
)
def test_a_batch_of_the_wrong_shape_names_both_shapes(net, batch):
    with pytest.raises(ValueError) as info:
        net(torch.randn(*batch))
    message = str(info.value)
    assert str(net.input_shape) in message and str(batch) in message
