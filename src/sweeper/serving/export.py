"""``sweeper export``: the model as TorchScript and ONNX files that take raw inputs.

Each file holds the whole path a request takes: reshaping a row of numbers to the input
shape, the training split's normalisation, the network, and softmax for a classifier.
Each is checked against the PyTorch model on the whole test split (largest absolute
difference within ``TOLERANCE``) and logged as an artifact of the model's run. ONNX
needs the ``export`` extra (``onnx`` and ``onnxscript`` for torch's exporter,
``onnxruntime`` to check the file).
"""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path
from typing import Any, cast

import numpy as np

from sweeper.errors import SweeperError

TOLERANCE = 1e-4


def wrapped(module: Any, datamodule: Any) -> Any:
    """An ``nn.Module`` from raw rows ``(N, prod(input_shape))`` to the task's output."""
    import torch
    from torch import nn

    class Exported(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = module.cpu().eval()
            shape = tuple(int(d) for d in datamodule.input_shape)
            mean = getattr(datamodule, "mean", None)
            std = getattr(datamodule, "std", None)
            self.shape = shape
            self.register_buffer("mean", torch.as_tensor(0.0 if mean is None else mean, dtype=torch.float32))
            self.register_buffer("std", torch.as_tensor(1.0 if std is None else std, dtype=torch.float32))
            self.classify = getattr(module, "task", None) == "classification"

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x.reshape((x.shape[0], *self.shape))
            mean, std = cast(torch.Tensor, self.mean), cast(torch.Tensor, self.std)
            out = self.model((x - mean) / std)
            return out.softmax(dim=1) if self.classify else out

    return Exported().eval()


def test_rows(datamodule: Any) -> np.ndarray:
    """The whole test split as raw rows, as a client sends them."""
    import torch

    x = torch.cat([b[0] for b in datamodule.test_dataloader()])
    mean, std = getattr(datamodule, "mean", None), getattr(datamodule, "std", None)
    if mean is not None and std is not None:
        x = x * std + mean
    return x.reshape(len(x), -1).numpy().astype(np.float32)


def to_torchscript(model: Any, rows: np.ndarray, path: Path) -> Any:
    import warnings

    import torch

    with torch.inference_mode(), warnings.catch_warnings():
        # the networks check their input's shape in Python: constant once traced, as wanted
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        traced = torch.jit.trace(model, torch.from_numpy(rows[:2]), check_trace=False)
    torch.jit.save(traced, str(path))
    loaded = torch.jit.load(str(path))
    with torch.inference_mode():
        return loaded(torch.from_numpy(rows)).numpy()


def to_onnx(model: Any, rows: np.ndarray, path: Path) -> Any:
    missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        raise SweeperError(f"--format onnx needs {', '.join(missing)}: pip install 'sweeper[export]'")
    import logging
    import warnings

    import onnxruntime
    import torch

    batch = torch.export.Dim("batch", min=1)
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (torch.from_numpy(rows[:2]),), input_names=["x"], output_names=["y"],
                                    dynamic_shapes={"x": {0: batch}}, dynamo=True, verbose=False)
    if program is None:
        raise SweeperError("torch's ONNX exporter returned no program; export with --format torchscript")
    program.save(str(path))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": rows})[0]


def export_recorded(target: str, uri: str, experiment: str, formats: list[str], out: str | None) -> dict[str, Path]:
    import torch

    from sweeper.reports.evaluate import recorded_model
    from sweeper.tracking.mlflow import MlflowTracker
    from sweeper.tracking.stores import require_store

    require_store(uri, "--tracking-uri", "run `sweeper sweep` here first, or pass --tracking-uri")
    tracker = MlflowTracker(uri, experiment)
    written: dict[str, Path] = {}
    with tempfile.TemporaryDirectory() as tmp:
        run, evaluation = recorded_model(tracker, target, Path(tmp))
        folder = Path(out) if out else Path("outputs") / "export" / run.info.run_id
        folder.mkdir(parents=True, exist_ok=True)
        model = wrapped(evaluation.module, evaluation.datamodule)
        rows = test_rows(evaluation.datamodule)
        with torch.inference_mode():
            expected = model(torch.from_numpy(rows)).numpy()
        for fmt in formats:
            path = folder / ("model.pt" if fmt == "torchscript" else "model.onnx")
            got = to_torchscript(model, rows, path) if fmt == "torchscript" else to_onnx(model, rows, path)
            diff = float(np.abs(got - expected).max())
            if diff > TOLERANCE:
                raise SweeperError(f"the {fmt} export differs from the PyTorch model by {diff:.2g} on the test "
                                   f"split (more than {TOLERANCE:g}); it is not logged")
            tracker.log_artifact(run.info.run_id, path, "export")
            written[fmt] = path
            print(f"{fmt}: {path} ({path.stat().st_size / 1024:.1f} KiB); on the {len(rows)} test samples its "
                  f"outputs are within {diff:.1e} of PyTorch's; logged to run {run.info.run_id} as export/{path.name}")
        tracker.flush()
    return written
