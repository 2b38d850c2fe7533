"""What a registered model expects: a data module that standardises in ``setup()`` hands
that transform to the model through ``mean`` and ``std``; one that does not is said so."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from sklearn.datasets import load_wine
from torch.utils.data import DataLoader, TensorDataset

from sweeper.errors import SweeperError
from sweeper.models import MLP, Classifier
from sweeper.serving import package


class WineData(pl.LightningDataModule):
    """Hand-written: standardises in setup(), with the training rows' statistics."""

    input_shape = (13,)
    num_classes = 3

    def __init__(self, hand_over: bool) -> None:
        super().__init__()
        self.hand_over = hand_over

    def setup(self, stage=None):
        x, y = load_wine(return_X_y=True)
        mean, std = x[:120].mean(0), x[:120].std(0)
        if self.hand_over:
            self.mean, self.std = mean, std
        self.raw = x[150:]
        self.test = TensorDataset(torch.tensor((x[150:] - mean) / std, dtype=torch.float32), torch.tensor(y[150:]))

    def test_dataloader(self):
        return DataLoader(self.test, batch_size=64)


@pytest.fixture(scope="module")
def module():
    torch.manual_seed(0)
    return Classifier(MLP((13,), 3, hidden_sizes=[16])).eval()


def _saved(tmp_path, module, dm):
    import mlflow.pyfunc

    folder = package.save(tmp_path / "model", module, dm)
    return mlflow.pyfunc.load_model(str(folder))


def test_a_module_that_hands_over_its_standardisation_serves_raw_rows(tmp_path, module):
    dm = WineData(hand_over=True)
    dm.setup()
    model = _saved(tmp_path, module, dm)
    x_std, _ = dm.test.tensors
    with torch.inference_mode():
        expected = module(x_std).softmax(1).numpy()
    answer = model.predict(dm.raw)  # float64, as scikit-learn gives them
    assert np.allclose(answer[["p_0", "p_1", "p_2"]].to_numpy(), expected, atol=1e-5)
    note = model.metadata.metadata["inputs"]
    assert note.startswith("each row: 13 numbers") and "raw as tests.serving.test_inputs.WineData reads them" in note


def test_a_module_that_does_not_is_said_to_take_its_loaders_inputs(tmp_path, module):
    dm = WineData(hand_over=False)
    dm.setup()
    model = _saved(tmp_path, module, dm)
    note = model.metadata.metadata["inputs"]
    assert "exactly as tests.serving.test_inputs.WineData's loaders give them" in note
    assert "handed over no standardisation (mean and std)" in note
    x_std, _ = dm.test.tensors
    with torch.inference_mode():
        expected = module(x_std).softmax(1).numpy()
    # the model's own example is what its loaders give, not raw rows
    assert np.allclose(model.predict(x_std.numpy())[["p_0", "p_1", "p_2"]].to_numpy(), expected, atol=1e-5)


def test_a_transform_that_does_not_fit_the_inputs_is_refused(tmp_path, module):
    dm = WineData(hand_over=True)
    dm.setup()
    dm.mean = dm.mean[:5]
    with pytest.raises(SweeperError, match=r"WineData.mean has shape \[5\], which does not broadcast to one input"):
        package.model_spec(module, dm)
    dm.mean = None
    with pytest.raises(SweeperError, match="has std but not mean: give both"):
        package.model_spec(module, dm)
