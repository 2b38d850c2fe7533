"""Scoring a saved checkpoint on a data split, with per-class results."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from omegaconf import DictConfig, OmegaConf

from sweeper.errors import ConfigError
from sweeper.training.quiet import quiet_lightning


@dataclass
class Evaluation:
    metrics: dict[str, float]
    artifacts: list[Path] = field(default_factory=list)
    module: Any = None  # the restored LightningModule
    input_shape: tuple[int, ...] = ()  # of one sample, as the data module gives it
    datamodule: Any = None  # set up for the test split (its normalisation is known)


def module_class(cfg: DictConfig) -> Any:
    """The LightningModule class that a run of ``cfg`` trained and checkpointed."""
    from sweeper.lightning_packages import rebase
    from sweeper.training.build import import_target, is_lightning_module, lightning_package, task_class

    target = import_target(cfg.model, "model")
    if is_lightning_module(target):
        return target
    if "task" not in cfg:  # recorded before task types existed: a classifier
        from sweeper.models import Classifier

        return Classifier
    return rebase(task_class(cfg), lightning_package(cfg))


def scoring_trainer(module: Any, accelerator: str = "cpu") -> Any:
    """A one-device trainer of ``module``'s Lightning package, to test a saved model in
    this process: no logger, checkpoints or progress bar, and no cluster environment (a
    SLURM machine's ``srun`` hint and requeue handler are for training jobs)."""
    from sweeper.lightning_packages import PL, fabric, load, package_of
    quiet_lightning()
    package = package_of(module) or PL
    environment = fabric(package).plugins.environments.LightningEnvironment
    return load(package).Trainer(
        accelerator=accelerator,
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        plugins=[environment()],
    )


def evaluate_checkpoint(
    config: Mapping[str, Any] | DictConfig | str | Path,
    checkpoint: str | Path,
    out_dir: str | Path | None = None,
) -> Evaluation:
    """Test ``checkpoint`` on the test split of the data described by ``config``.

    ``config`` is a resolved training config (a mapping, a DictConfig or the path of its
    YAML file). Returns ``test/*`` metrics; with ``out_dir``, the task module also writes
    its report there (classification: confusion matrix and per-class table; regression:
    predicted against true values; autoencoder: reconstructions).
    """
    from sweeper.training.build import build_datamodule

    if isinstance(config, (str, Path)):
        cfg = cast(DictConfig, OmegaConf.load(config))  # a training config is a mapping
    elif isinstance(config, DictConfig):
        cfg = config
    else:
        cfg = OmegaConf.create(dict(config))
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    # plain data and tensors only: a checkpoint someone else wrote cannot run code here
    model = module_class(cfg).load_from_checkpoint(str(checkpoint), map_location="cpu", weights_only=True)
    net_shape = getattr(getattr(model, "net", None), "input_shape", None)
    data_shape = getattr(datamodule, "input_shape", None)
    if net_shape is not None and data_shape is not None and tuple(net_shape) != tuple(data_shape):
        raise ConfigError(
            f"data: the model takes inputs of shape {tuple(net_shape)}, the data gives "
            f"{tuple(data_shape)}; evaluate on data of the same shape"
        )
    (result,) = scoring_trainer(model, cfg.trainer.accelerator).test(model, datamodule=datamodule, verbose=False)
    evaluation = Evaluation(
        {k: float(v) for k, v in result.items() if k.startswith("test/")},
        module=model,
        datamodule=datamodule,
        input_shape=tuple(int(d) for d in data_shape) if data_shape is not None else (),
    )
    if out_dir is None or not callable(getattr(model, "write_report", None)):
        return evaluation
    model.eval()
    evaluation.artifacts = list(model.write_report(datamodule, Path(out_dir)))
    return evaluation
