from __future__ import annotations

import pytest
import torch

from sweeper.data import DigitsDataModule, TensorBatches, _base


def test_split_is_stratified_seeded_and_normalised_on_train():
    dm = DigitsDataModule(val_fraction=0.2, test_fraction=0.1, seed=3)
    dm.setup()
    sizes = {k: len(v[1]) for k, v in dm.splits.items()}
    assert sum(sizes.values()) == 1797
    assert sizes["test"] == pytest.approx(180, abs=1) and sizes["val"] == pytest.approx(359, abs=1)
    for _, y in dm.splits.values():  # every class present in roughly equal share
        counts = torch.bincount(y, minlength=10).float()
        assert counts.min() / counts.max() > 0.8
    x_train = dm.splits["train"][0]
    assert x_train.shape[1:] == (1, 8, 8) and x_train.dtype == torch.float32
    assert x_train.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert x_train.std().item() == pytest.approx(1.0, abs=1e-3)

    again = DigitsDataModule(val_fraction=0.2, test_fraction=0.1, seed=3)
    again.setup()
    other = DigitsDataModule(val_fraction=0.2, test_fraction=0.1, seed=4)
    other.setup()
    assert torch.equal(again.splits["val"][0], dm.splits["val"][0])
    assert not torch.equal(other.splits["val"][0], dm.splits["val"][0])


def test_train_batches_cover_every_sample_once_per_epoch_and_reshuffle():
    x = torch.arange(10).float().view(10, 1, 1, 1)
    y = torch.arange(10)
    loader = TensorBatches(x, y, batch_size=4, shuffle=True, seed=0)
    assert len(loader) == 3
    first = torch.cat([b[1] for b in loader])
    second = torch.cat([b[1] for b in loader])
    assert sorted(first.tolist()) == list(range(10)) == sorted(second.tolist())
    assert first.tolist() != second.tolist()
    xb, yb = next(iter(loader))
    assert torch.equal(xb.view(-1), yb.float())  # images stay paired with labels


def test_shards_under_distributed(monkeypatch):
    x = torch.arange(11).float().view(11, 1, 1, 1)
    y = torch.arange(11)
    train_seen, eval_seen, train_lengths = [], [], []
    for rank in range(2):
        monkeypatch.setattr(_base, "_rank_and_world", lambda rank=rank: (rank, 2))
        train = TensorBatches(x, y, batch_size=4, shuffle=True, seed=0)
        evaluation = TensorBatches(x, y, batch_size=4, shuffle=False)
        train_lengths.append(len(train))
        assert len(list(train)) == len(train)
        train_seen += torch.cat([b[1] for b in train]).tolist()
        eval_seen += torch.cat([b[1] for b in evaluation]).tolist()
    assert train_lengths[0] == train_lengths[1]  # equal steps: DDP never waits forever
    assert set(train_seen) == set(range(11)) and len(train_seen) == 12  # one sample padded
    assert sorted(eval_seen) == list(range(11))  # evaluation counts every sample once


def test_bad_fractions_are_rejected():
    with pytest.raises(ValueError, match="val_fraction"):
        DigitsDataModule(val_fraction=0.6, test_fraction=0.5)
    with pytest.raises(ValueError, match="batch_size"):
        DigitsDataModule(batch_size=0)
