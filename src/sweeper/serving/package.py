"""The registered form of a trained model: an MLflow pyfunc model that a client calls
with raw inputs, and that loads without unpickling anything.

A model directory holds ``model.json`` (the task module's class, its plain-data
constructor arguments, the input shape, the training split's normalisation and the
class names) and ``weights.pt`` (a state dict, read with ``torch.load(...,
weights_only=True)``). MLflow's pyfunc flavor loads it through this module's
``_load_pyfunc`` (``loader_module``), so ``mlflow models serve -m models:/<study>/<n>``
and ``mlflow.pyfunc.load_model`` need sweeper installed, and nothing else: no pickled
module, no pickled Python object.

A request carries one row of numbers per sample (floats or integers; JSON arrays or
frames, or CSV). A data module that says how its ``setup()`` standardises (its ``mean``
and ``std``, as the shipped ones do) hands that to the model, which then takes raw inputs
(a digits image: its 64 pixels 0-16); otherwise the model takes inputs as the data
module's loaders give them, and says so (:func:`inputs_note`). The answer is the
predicted class, its name and every class's probability (classification), the
predicted values (regression) or the reconstruction (autoencoder).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

SPEC_FILE, WEIGHTS_FILE = "model.json", "weights.pt"
FORMAT = "sweeper-pyfunc/1"
VARIANTS = ("float32", "int8", "pruned")  # int8: dynamic quantisation of linear/recurrent layers


def _as_list(value: Any) -> Any:
    if value is None:
        return None
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def model_spec(module: Any, datamodule: Any, variant: str = "float32") -> dict[str, Any]:
    """What rebuilds ``module`` and prepares its inputs, as plain data."""
    from sweeper.errors import SweeperError
    from sweeper.lightning_packages import class_path
    from sweeper.models._base import is_plain

    hparams = dict(module.hparams)
    if not is_plain(hparams):
        raise SweeperError(
            f"{type(module).__name__}'s constructor arguments are not plain data (str, numbers, lists, "
            "dicts), so it cannot be registered without pickling it; give its network a `spec`"
        )
    names = getattr(datamodule, "class_names", None)
    shape = [int(d) for d in datamodule.input_shape]
    mean, std = _as_list(getattr(datamodule, "mean", None)), _as_list(getattr(datamodule, "std", None))
    for key, value in (("mean", mean), ("std", std)):
        if value is not None and not _broadcasts(value, shape):
            raise SweeperError(
                f"{class_path(datamodule)}.{key} has shape {list(np.shape(value))}, which does not "
                f"broadcast to one input of shape {shape}: give one value per feature (or one in all)"
            )
    if (mean is None) != (std is None):
        raise SweeperError(f"{class_path(datamodule)} has {'mean' if std is None else 'std'} but not "
                           f"{'std' if std is None else 'mean'}: give both (the standardisation its setup() applies)")
    return {
        "format": FORMAT,
        "module": class_path(module),
        "data": class_path(datamodule),
        "hparams": hparams,
        "task": getattr(module, "task", None),
        "input_shape": shape,
        "mean": mean,
        "std": std,
        "class_names": [str(n) for n in names] if names is not None else None,
        "variant": variant,
    }


def _broadcasts(value: Any, shape: list[int]) -> bool:
    try:
        np.broadcast_to(np.asarray(value, dtype=np.float64), shape)
    except ValueError:
        return False
    return True


def inputs_note(spec: dict[str, Any]) -> str:
    """What a client sends this model, in one line (printed at registration and by
    ``sweeper serve``)."""
    shape = list(spec["input_shape"])
    width = int(np.prod(shape))
    data = spec.get("data") or "the data module"
    head = f"each row: {width} numbers (one input of shape {shape}; floats or integers, JSON or CSV)"
    if spec.get("mean") is not None:
        return f"{head}, raw as {data} reads them: the model standardises them itself"
    return (f"{head}, exactly as {data}'s loaders give them: the data module handed over no "
            "standardisation (mean and std), so transform raw inputs as its setup() does before sending")


def quiet_quantization() -> None:
    """torch 2.13 deprecates torch.ao's quantised tensors (for torchao, not installed here);
    they still work, and say so at every use. Silence exactly those notes."""
    warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization.*", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions.*deprecated.*")
    warnings.filterwarnings("ignore", message=r".*TypedStorage is deprecated.*")


def quantized(module: Any) -> Any:
    """``module`` with its linear and recurrent layers dynamically quantised to int8 (CPU)."""
    import torch
    from torch import nn

    quiet_quantization()
    return torch.ao.quantization.quantize_dynamic(module, {nn.Linear, nn.LSTM, nn.GRU}, dtype=torch.qint8)


def build_module(spec: dict[str, Any], weights: str | Path, source: str = "a model file") -> Any:
    """The module of ``spec`` with the state dict in ``weights``, in eval mode, on CPU.

    ``spec`` comes from a file: its class and every class its arguments name must be
    sweeper's own or in a trusted module (:mod:`sweeper.trust`), checked before any is
    imported."""
    import torch

    from sweeper import trust

    cls = trust.resolve(spec.get("module"), "task", source)
    hparams = spec.get("hparams")
    if not isinstance(hparams, dict):
        raise trust.UntrustedError(f"{source}: 'hparams' must be a mapping of plain values, "
                                   f"got {type(hparams).__name__}")
    module = cls(**hparams)
    if spec.get("variant") == "int8":
        module = quantized(module)
        quiet_quantization()
    state = torch.load(str(weights), map_location="cpu", weights_only=True)
    module.load_state_dict(state)
    return module.eval()


class Predictor:
    """Raw rows in, the task's answer out: the data module's preparation, the network, and
    what a client wants back."""

    def __init__(self, spec: dict[str, Any], module: Any) -> None:
        import torch

        self.spec = spec
        self.module = module
        self.shape = tuple(spec["input_shape"])
        self.mean = torch.as_tensor(spec["mean"], dtype=torch.float32) if spec.get("mean") is not None else None
        self.std = torch.as_tensor(spec["std"], dtype=torch.float32) if spec.get("std") is not None else None
        self.width = int(np.prod(self.shape))

    def tensor(self, rows: Any) -> Any:
        """Raw rows ``(N, prod(input_shape))`` (or ``(N, *input_shape)``) as the network's input."""
        import torch

        try:
            x = torch.as_tensor(np.asarray(rows, dtype=np.float32))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"inputs must be numbers, {self.width} per row ({exc})") from None
        if x.ndim == 1:
            x = x[None]
        if x.numel() != len(x) * self.width:
            raise ValueError(f"each input must hold {self.width} numbers (shape {list(self.shape)}), "
                             f"got {x.numel() // max(1, len(x))}")
        x = x.reshape(len(x), *self.shape)
        if self.mean is not None and self.std is not None:
            x = (x - self.mean) / torch.where(self.std == 0, torch.ones_like(self.std), self.std)
        return x

    def outputs(self, rows: Any) -> Any:
        """Probabilities (classification) or the network's output, as a tensor."""
        import torch

        with torch.inference_mode():
            out = self.module(self.tensor(rows))
        return out.softmax(dim=1) if self.spec.get("task") == "classification" else out

    def answer(self, rows: Any) -> Any:
        import pandas as pd

        out = self.outputs(rows).numpy()
        if self.spec.get("task") == "classification":
            names = self.spec.get("class_names") or [str(i) for i in range(out.shape[1])]
            best = out.argmax(axis=1)
            frame = pd.DataFrame({"class": best, "class_name": [names[i] for i in best],
                                  "probability": out.max(axis=1)})
            for i, name in enumerate(names):
                frame[f"p_{name}"] = out[:, i]
            return frame
        flat = out.reshape(len(out), -1)
        return pd.DataFrame({f"output_{i}": flat[:, i] for i in range(flat.shape[1])})


class PyfuncModel:
    """What ``mlflow.pyfunc.load_model`` gives for a sweeper model."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        rows = model_input.to_numpy() if hasattr(model_input, "to_numpy") else model_input
        return self.predictor.answer(rows)


def load(path: str | Path) -> Predictor:
    """The predictor of a model directory written by :func:`save`."""
    folder = Path(path)
    spec = json.loads((folder / SPEC_FILE).read_text())
    if spec.get("format") != FORMAT:
        raise ValueError(f"{folder / SPEC_FILE} is not a {FORMAT} model description")
    return Predictor(spec, build_module(spec, folder / WEIGHTS_FILE, str(folder / SPEC_FILE)))


def _load_pyfunc(data_path: str) -> PyfuncModel:
    """MLflow's pyfunc entry point (``loader_module``)."""
    return PyfuncModel(load(data_path))


def example_rows(datamodule: Any, count: int = 2) -> np.ndarray:
    """``count`` test samples as a client sends them: raw numbers, one row each."""
    x = datamodule.test_dataloader().x[:count] if hasattr(datamodule.test_dataloader(), "x") else None
    if x is None:
        x, _ = next(iter(datamodule.test_dataloader()))
        x = x[:count]
    mean, std = getattr(datamodule, "mean", None), getattr(datamodule, "std", None)
    if mean is not None and std is not None:
        x = x * std + mean
    return x.reshape(len(x), -1).numpy().astype(np.float32)


def save(folder: Path, module: Any, datamodule: Any, variant: str = "float32") -> Path:
    """Write ``module`` as a pyfunc model directory (``folder`` must not exist)."""
    import mlflow.pyfunc
    import torch
    from mlflow.models import ModelSignature, infer_signature

    from sweeper import __version__

    module = module.cpu().eval()
    spec = model_spec(module, datamodule, variant)
    data = Path(tempfile.mkdtemp()) / "data"
    data.mkdir()
    (data / SPEC_FILE).write_text(json.dumps(spec, indent=2))
    torch.save(module.state_dict(), data / WEIGHTS_FILE)
    example = example_rows(datamodule)
    predictor = load(data)
    requirements = [f"torch=={torch.__version__.split('+')[0]}", f"sweeper=={__version__}"]
    for name in ("mlflow.models.model", "mlflow.pyfunc"):  # its notes on every save
        logging.getLogger(name).setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Inferred schema contains integer column.*")
        # Outputs only: MLflow enforces an input schema strictly (a float32 one refuses the
        # float64 rows numpy and pandas make, an int64 frame and CSV), and the loader
        # converts and checks any numbers itself; what the inputs are is in the metadata.
        signature = ModelSignature(inputs=None, outputs=infer_signature(example, predictor.answer(example)).outputs)
        mlflow.pyfunc.save_model(
            str(folder), loader_module="sweeper.serving.package", data_path=str(data),
            signature=signature, input_example=example, pip_requirements=requirements,
            metadata={"inputs": inputs_note(spec), "input_shape": spec["input_shape"]},
        )  # fmt: skip
    shutil.rmtree(data.parent, ignore_errors=True)
    return folder


def register(uri: str, run_id: str, module: Any, datamodule: Any, name: str,
             variant: str = "float32", artifact_path: str = "model", tags: dict[str, str] | None = None) -> str:
    """Log ``module`` as the pyfunc model ``artifact_path`` of run ``run_id`` and register it
    as a new version of model ``name``; returns the version.

    The run is not reopened (``mlflow.start_run`` would make it RUNNING again and rewrite
    its end time): the model is saved locally, uploaded as the run's artifacts and
    registered from there.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    with tempfile.TemporaryDirectory() as tmp:
        local = save(Path(tmp) / artifact_path, module, datamodule, variant)
        client.log_artifacts(run_id, str(local), artifact_path)
    source = f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/{artifact_path}"
    try:
        client.create_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    version = client.create_model_version(name, source, run_id=run_id,
                                          tags={"variant": variant, "format": FORMAT, **(tags or {})})
    deadline = time.monotonic() + 60
    while version.status == "PENDING_REGISTRATION" and time.monotonic() < deadline:
        time.sleep(0.2)
        version = client.get_model_version(name, version.version)
    return str(version.version)
