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


@pytest.mark.parametrize("persistent", [False, True])
def test_loader_workers_give_the_batches_of_the_training_process(persistent):
    """num_workers / pin_memory / persistent_workers: the same batches, in the same order,
    every epoch (each pass reshuffled with seed + pass number)."""
    plain = DigitsDataModule(batch_size=100, seed=3)
    loaded = DigitsDataModule(batch_size=100, seed=3, num_workers=2, pin_memory=True,
                              persistent_workers=persistent)
    for dm in (plain, loaded):
        dm.setup("fit")
    expected = [plain.train_dataloader(), plain.val_dataloader()]
    given = [loaded.train_dataloader(), loaded.val_dataloader()]
    assert isinstance(given[0], torch.utils.data.DataLoader) and given[0].num_workers == 2
    assert given[0].persistent_workers is persistent
    for ours, theirs in zip(expected, given):
        assert len(ours) == len(theirs)
        for _ in range(2):  # two epochs: reshuffled alike
            pairs = list(zip(ours, theirs, strict=True))
            assert pairs and all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in pairs)
    first, second = ([y for _, y in given[0]] for _ in range(2))
    assert not all(torch.equal(a, b) for a, b in zip(first, second))  # epochs differ


def test_persistent_workers_without_workers_is_refused():
    with pytest.raises(ValueError, match="persistent_workers=True needs num_workers >= 1"):
        DigitsDataModule(persistent_workers=True)
    with pytest.raises(ValueError, match="num_workers must be an int >= 0"):
        DigitsDataModule(num_workers=-2)
