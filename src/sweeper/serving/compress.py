"""``sweeper compress``: smaller or faster variants of a recorded model, on CPU, measured.

Variants: dynamic int8 quantisation of the linear and recurrent layers
(``torch.ao.quantization.quantize_dynamic``) and global magnitude pruning of the linear
and convolution weights (``torch.nn.utils.prune``) at the given sparsities. Each is
scored on the test split the model was trained with, its state dict's size on disk is
measured (raw and gzipped: zeroed weights only shrink once compressed) and its CPU
latency for a batch of 1 and of 64 samples (median of repeats). A variant that loses
more than the tolerance of the test metric, or that is more than ``max_slowdown`` times
slower than float32 at either batch size, is flagged and never registered; of the
others, the smallest on disk (then the fastest) is registered as a new version of the
model, tagged with what it is.
"""

from __future__ import annotations

import copy
import csv
import gzip
import io
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sweeper.serving.package import quantized

# the metric that judges a variant, and whether higher is better
METRICS = (("test/acc", True), ("test/r2", True), ("test/mse", False), ("test/loss", False))


@dataclass
class Variant:
    name: str
    module: Any
    metric: float = float("nan")
    size: int = 0
    gzip_size: int = 0
    latency_1: float = 0.0
    latency_64: float = 0.0
    over_tolerance: bool = False
    slowdown: float = 1.0  # the larger of its batch-1 and batch-64 latency over float32's
    slower: bool = False  # slowdown over the limit

    @property
    def flagged(self) -> bool:
        return self.over_tolerance or self.slower

    @property
    def flag(self) -> str:
        parts = ["over tolerance"] if self.over_tolerance else []
        if self.slower:
            parts.append(f"{self.slowdown:.1f}x slower")
        return ", ".join(parts)


def pruned(module: Any, sparsity: float) -> Any:
    """A copy of ``module`` with the smallest ``sparsity`` share of its linear and
    convolution weights set to zero (one global magnitude threshold)."""
    from torch import nn
    from torch.nn.utils import prune

    copy_ = copy.deepcopy(module)
    targets = [(m, "weight") for m in copy_.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d))]
    prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=sparsity)
    for m, name in targets:
        prune.remove(m, name)  # the zeros become the weights: a plain state dict again
    return copy_


def _sizes(module: Any) -> tuple[int, int]:
    import torch

    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    raw = buffer.getvalue()
    return len(raw), len(gzip.compress(raw, compresslevel=6))


def _latency(module: Any, x: Any, repeats: int) -> float:
    import torch

    with torch.inference_mode():
        for _ in range(3):
            module(x)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            module(x)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def _score(module: Any, datamodule: Any) -> dict[str, float]:
    from sweeper.training.evaluate import scoring_trainer

    (result,) = scoring_trainer(module).test(module, datamodule=datamodule, verbose=False)
    return {k: float(v) for k, v in result.items()}


def measure(module: Any, datamodule: Any, sparsities: list[float], tolerance: float,
            repeats: int, max_slowdown: float = 2.0) -> tuple[str, list[Variant]]:
    """The original and its variants, each measured; returns the judging metric too."""
    import torch

    module = module.cpu().eval()
    variants = [Variant("float32", module), Variant("int8", quantized(copy.deepcopy(module)))]
    variants += [Variant(f"pruned-{s:g}", pruned(module, s).eval()) for s in sparsities]
    batches = datamodule.test_dataloader()
    x = torch.cat([b[0] for b in batches])[:64]
    scores = [_score(v.module, datamodule) for v in variants]
    metric, higher = next(((m, h) for m, h in METRICS if m in scores[0]), (sorted(scores[0])[0], False))
    for variant, score in zip(variants, scores):
        variant.metric = score[metric]
        variant.size, variant.gzip_size = _sizes(variant.module)
        variant.latency_1 = _latency(variant.module, x[:1], repeats)
        variant.latency_64 = _latency(variant.module, x, repeats)
        loss = (variants[0].metric - variant.metric) if higher else (variant.metric - variants[0].metric)
        variant.over_tolerance = loss > tolerance
    base = variants[0]
    for variant in variants:
        variant.slowdown = max(variant.latency_1 / base.latency_1, variant.latency_64 / base.latency_64)
        variant.slower = variant.slowdown > max_slowdown
    return metric, variants


def table_rows(metric: str, variants: list[Variant]) -> list[dict[str, Any]]:
    base = variants[0]
    return [{
        "variant": v.name,
        metric: round(v.metric, 4),
        "change": round(v.metric - base.metric, 4),
        "size_kib": round(v.size / 1024, 1),
        "size_x": round(v.size / base.size, 3),
        "gzip_kib": round(v.gzip_size / 1024, 1),
        "gzip_x": round(v.gzip_size / base.gzip_size, 3),
        "batch1_ms": round(v.latency_1 * 1000, 3),
        "batch1_x": round(v.latency_1 / base.latency_1, 3),
        "batch64_ms": round(v.latency_64 * 1000, 3),
        "batch64_x": round(v.latency_64 / base.latency_64, 3),
        "flag": v.flag,
    } for v in variants]  # fmt: skip


def choose(variants: list[Variant]) -> Variant | None:
    """The smallest variant on disk within the tolerance (then the fastest), if any."""
    fine = [v for v in variants[1:] if not v.flagged]
    return min(fine, key=lambda v: (v.size, v.latency_64)) if fine else None


def compress_recorded(target: str, uri: str, experiment: str, sparsities: list[float], tolerance: float,
                      repeats: int, register: bool = True, max_slowdown: float = 2.0) -> list[dict[str, Any]]:
    from sweeper.reports.evaluate import recorded_model
    from sweeper.reports.tables import table
    from sweeper.serving.package import register as register_variant
    from sweeper.tracking.mlflow import MlflowTracker
    from sweeper.tracking.stores import require_store

    require_store(uri, "--tracking-uri", "run `sweeper sweep` here first, or pass --tracking-uri")
    tracker = MlflowTracker(uri, experiment)
    with tempfile.TemporaryDirectory() as tmp:
        run, evaluation = recorded_model(tracker, target, Path(tmp))
        metric, variants = measure(evaluation.module, evaluation.datamodule, sparsities, tolerance, repeats,
                                   max_slowdown)
        rows = table_rows(metric, variants)
        out = Path(tmp) / "compression"
        out.mkdir()
        with (out / "compression.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        text = table(list(rows[0]), [[str(v) for v in r.values()] for r in rows])
        (out / "compression.txt").write_text(text + "\n")
        print(f"run {run.info.run_id} ({run.info.run_name}), {metric} on its test split, tolerance {tolerance:g}, "
              f"at most {max_slowdown:g}x float32's latency:")
        print(text)
        tracker.log_artifacts(run.info.run_id, out, "compression")
        tracker.log_metrics(run.info.run_id, {
            f"compress/{v.name}/{key}": value for v in variants
            for key, value in (("metric", v.metric), ("size_kib", v.size / 1024),
                               ("batch64_ms", v.latency_64 * 1000))})  # fmt: skip
        tracker.flush()
        chosen = choose(variants)
        rule = f"within the tolerance of {tolerance:g} and {max_slowdown:g}x float32's latency"
        if chosen is None:
            print(f"no variant {rule}: nothing registered")
        elif register:
            name = run.data.tags.get("study") or run.info.run_name
            variant = "int8" if chosen.name == "int8" else "pruned"
            version = register_variant(uri, run.info.run_id, chosen.module, evaluation.datamodule, name,
                                       variant=variant, artifact_path=f"model-{chosen.name}",
                                       tags={"compression": chosen.name, metric: f"{chosen.metric:.4f}"})
            print(f"registered {chosen.name} as model '{name}' version {version}: the smallest variant {rule} "
                  f"({chosen.size / variants[0].size:.2f}x the size, {metric} {chosen.metric:.4f}, "
                  f"{chosen.slowdown:.2f}x float32's latency)")
        else:
            print(f"the smallest variant {rule}: {chosen.name} (not registered: --no-register)")
    return rows
