"""One short training per family, and what MLflow records for a run."""

from __future__ import annotations

import pytest
import torch
from mlflow.tracking import MlflowClient
from pytorch_lightning.callbacks import Callback

from sweeper.errors import DataError, DivergedError
from sweeper.models import Classifier
from sweeper.training import run_training
from tests.conftest import mlflow_runs


@pytest.mark.parametrize("family", ["mlp", "cnn", "rnn"])
def test_each_family_trains_and_beats_chance(family, make_cfg, tmp_path, tracking_uri):
    cfg = make_cfg(f"model={family}", "trainer.max_epochs=3", "optimizer.lr=0.01")
    result = run_training(cfg, tmp_path / "out", choices={"model": family})
    assert result.best_score is not None and result.best_score > 0.5  # chance is 0.1
    assert result.epochs == 3
    assert set(result.test_metrics) >= {"test/acc", "test/f1", "test/precision", "test/recall"}
    (run,) = mlflow_runs(tracking_uri)
    assert run.info.run_id == result.run_id and run.info.status == "FINISHED"
    assert run.data.tags["model_family"] == family


def test_mlflow_run_holds_params_metrics_artifacts_and_tags(make_cfg, tmp_path, tracking_uri):
    cfg = make_cfg("trainer.max_epochs=3", "optimizer.lr=0.003", "data.batch_size=32")
    result = run_training(cfg, tmp_path / "out", choices={"model": "cnn", "optimizer": "adam"})
    client = MlflowClient(tracking_uri)
    run = client.get_run(result.run_id)
    params = run.data.params
    assert params["optimizer.lr"] == "0.003" and params["data.batch_size"] == "32"
    assert params["model.channels"] == "[32, 64]" and params["model"] == "cnn"
    assert params["trainer.max_epochs"] == "3" and int(params["model.num_parameters"]) > 1000
    assert params["data.num_workers"] == "0" and params["data.pin_memory"] == "False"
    assert not any(k.endswith("_target_") for k in params)
    for key in ("train/loss", "val/loss", "val/acc"):
        history = client.get_metric_history(result.run_id, key)
        assert sorted(m.step for m in history) == [0, 1, 2], key
    for key in ("test/acc", "test/f1", "test/precision", "test/recall"):
        assert 0.0 <= run.data.metrics[key] <= 1.0
    assert run.data.metrics["test/acc"] == pytest.approx(result.test_metrics["test/acc"])
    assert run.data.metrics["best/val/acc"] == pytest.approx(result.best_score)
    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"config.yaml", "checkpoints"} <= artifacts
    assert [a.path for a in client.list_artifacts(result.run_id, "checkpoints")] == ["checkpoints/best.ckpt"]
    # the best checkpoint restores a model that scores what the run logged
    model = Classifier.load_from_checkpoint(result.best_checkpoint)
    assert isinstance(model, Classifier)


def test_test_metrics_come_from_the_best_checkpoint(make_cfg, tmp_path):
    cfg = make_cfg("trainer.max_epochs=3", "tracking=none")
    result = run_training(cfg, tmp_path / "out")
    ckpt = torch.load(result.best_checkpoint, weights_only=True)
    score = ckpt["callbacks"][next(k for k in ckpt["callbacks"] if "ModelCheckpoint" in k)]["best_model_score"]
    assert float(score) == pytest.approx(result.best_score)
    assert result.run_id is None


class _Boom(Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            raise RuntimeError("disk on fire")


def test_failure_mid_training_marks_run_failed(make_cfg, tmp_path, tracking_uri):
    cfg = make_cfg("trainer.max_epochs=3")
    with pytest.raises(RuntimeError, match="disk on fire"):
        run_training(cfg, tmp_path / "out", callbacks=[_Boom()])
    (run,) = mlflow_runs(tracking_uri)
    assert run.info.status == "FAILED"
    assert "disk on fire" in run.data.tags["failure_reason"]
    assert len(MlflowClient(tracking_uri).get_metric_history(run.info.run_id, "val/acc")) >= 1


def test_diverging_run_fails_with_a_clear_error(make_cfg, tmp_path, tracking_uri):
    cfg = make_cfg("optimizer=sgd", "optimizer.lr=1e6", "optimizer.momentum=0.99", "model=mlp",
                   "trainer.max_epochs=5")
    with pytest.raises(DivergedError, match=r"optimizer\.lr"):
        run_training(cfg, tmp_path / "out")
    (run,) = mlflow_runs(tracking_uri)
    assert run.info.status == "FAILED" and "diverged" in run.data.tags["failure_reason"]


def test_missing_data_fails_before_any_run_is_created(make_cfg, tmp_path, tracking_uri):
    cfg = make_cfg("data=mnist", f"data.root={tmp_path / 'none'}")
    with pytest.raises(DataError):
        run_training(cfg, tmp_path / "out")
    assert mlflow_runs(tracking_uri) == []


def test_lightnings_callback_entry_points_are_looked_up_once_and_each_trainer_gets_its_own(monkeypatch):
    import pytorch_lightning as pl
    from lightning_fabric.utilities import registry

    from sweeper.training.quiet import look_up_callback_entry_points_once

    class Marker(pl.Callback):
        pass

    class Factory:
        name = "marker"

        def load(self):
            return lambda: [Marker()]

    looked_up = []

    def entry_points(**kwargs):
        looked_up.append(kwargs)
        return [Factory()] if kwargs.get("group") == "pytorch_lightning.callbacks_factory" else []

    monkeypatch.setattr(registry, "entry_points", entry_points)
    look_up_callback_entry_points_once()
    trainers = [pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False,
                           enable_checkpointing=False) for _ in range(3)]
    assert looked_up == [{"group": "pytorch_lightning.callbacks_factory"}]  # once for three trainers
    markers = [next(cb for cb in t.callbacks if isinstance(cb, Marker)) for t in trainers]
    assert len({id(m) for m in markers}) == 3  # the factory still made each trainer its own
