"""The rule `sweeper compress` registers by: accuracy within the tolerance, latency within
``max_slowdown`` of float32's at both batch sizes, then the smallest on disk."""

from __future__ import annotations

import pytest

from sweeper.data import DigitsDataModule
from sweeper.models import MLP, Classifier
from sweeper.serving import compress


def test_a_much_slower_variant_is_flagged_like_one_over_the_tolerance(monkeypatch):
    import torch

    torch.manual_seed(0)
    module = Classifier(MLP((1, 8, 8), 10, hidden_sizes=[32]))
    dm = DigitsDataModule()
    dm.setup("test")

    def latency(mod, x, repeats):  # int8 2,370x slower at batch 1, as measured on a 13-feature MLP
        quantised = any("quantized" in type(m).__module__ for m in mod.modules())
        return (0.0237 if len(x) == 1 else 0.00002) if quantised else 0.00001

    monkeypatch.setattr(compress, "_latency", latency)
    metric, variants = compress.measure(module, dm, [0.5], tolerance=1.0, repeats=1)
    by_name = {v.name: v for v in variants}
    assert by_name["int8"].slowdown == pytest.approx(2370) and by_name["int8"].flag == "2370.0x slower"
    assert by_name["int8"].flagged and not by_name["pruned-0.5"].flagged
    # int8 is the smallest, but too slow: the pruned copy is chosen
    assert compress.choose(variants).name == "pruned-0.5"
    rows = {r["variant"]: r for r in compress.table_rows(metric, variants)}
    assert rows["int8"]["flag"] == "2370.0x slower" and rows["int8"]["batch1_x"] == pytest.approx(2370)
    # with a looser limit it is within the rule again
    metric, variants = compress.measure(module, dm, [0.5], tolerance=1.0, repeats=1, max_slowdown=3000)
    assert compress.choose(variants).name == "int8"
