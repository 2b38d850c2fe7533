"""Scoring a saved checkpoint on a data split, with per-class results."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sweeper.errors import ConfigError


@dataclass
class Evaluation:
    metrics: dict[str, float]
    artifacts: list[Path] = field(default_factory=list)


def evaluate_checkpoint(
    config: Mapping[str, Any] | DictConfig | str | Path,
    checkpoint: str | Path,
    out_dir: str | Path | None = None,
) -> Evaluation:
    """Test ``checkpoint`` on the test split of the data described by ``config``.

    ``config`` is a resolved training config (a mapping, a DictConfig or the path of its
    YAML file). Returns ``test/*`` metrics; with ``out_dir``, also writes a confusion
    matrix (``confusion_matrix.png``) and per-class precision/recall/F1
    (``per_class.csv``, ``per_class.html``) there.
    """
    from sweeper.training.run import build_datamodule, quiet_lightning

    quiet_lightning()
    import pytorch_lightning as pl
    import torch

    from sweeper.models import Classifier

    if isinstance(config, (str, Path)):
        cfg = OmegaConf.load(config)
    elif isinstance(config, DictConfig):
        cfg = config
    else:
        cfg = OmegaConf.create(dict(config))
    datamodule = build_datamodule(cfg)
    datamodule.prepare_data()
    model = Classifier.load_from_checkpoint(str(checkpoint), map_location="cpu")
    if tuple(model.net.input_shape) != tuple(datamodule.input_shape):
        raise ConfigError(
            f"data: the model takes images of shape {tuple(model.net.input_shape)}, the data "
            f"gives {tuple(datamodule.input_shape)}; evaluate on data of the same shape"
        )
    trainer = pl.Trainer(
        accelerator=cfg.trainer.accelerator,
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    (result,) = trainer.test(model, datamodule=datamodule, verbose=False)
    evaluation = Evaluation({k: float(v) for k, v in result.items() if k.startswith("test/")})
    if out_dir is None:
        return evaluation
    x, y = datamodule.splits["test"]
    preds = torch.cat([model.predict(x[i : i + 2048]).cpu() for i in range(0, len(x), 2048)])
    evaluation.artifacts = per_class_report(
        y.numpy(), preds.numpy(), list(datamodule.class_names), Path(out_dir)
    )
    return evaluation


def per_class_report(y_true: Any, y_pred: Any, class_names: list[str], out_dir: Path) -> list[Path]:
    """Confusion matrix PNG and per-class precision/recall/F1 table (CSV and HTML)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    from sklearn.metrics import ConfusionMatrixDisplay, classification_report

    out_dir.mkdir(parents=True, exist_ok=True)
    labels = list(range(len(class_names)))
    display = ConfusionMatrixDisplay.from_predictions(
        y_true, y_pred, labels=labels, display_labels=class_names, cmap="Blues", colorbar=False
    )
    display.ax_.set_title("Confusion matrix (test split)")
    display.figure_.set_size_inches(7, 6)
    png = out_dir / "confusion_matrix.png"
    display.figure_.savefig(png, dpi=110, bbox_inches="tight")
    plt.close(display.figure_)
    report = classification_report(
        y_true, y_pred, labels=labels, target_names=class_names, output_dict=True, zero_division=0
    )
    table = pd.DataFrame(report).T.rename(columns={"f1-score": "f1"})
    table["support"] = table["support"].astype(int)
    csv = out_dir / "per_class.csv"
    table.to_csv(csv, float_format="%.4f")
    html = out_dir / "per_class.html"
    html.write_text(table.to_html(float_format=lambda v: f"{v:.4f}", border=0))
    return [png, csv, html]
