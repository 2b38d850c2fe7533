"""Study plots from Optuna's visualization module: interactive HTML (plotly) and PNG
(matplotlib), one pair per plot."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PLOTS = (
    "optimization_history",
    "param_importances",
    "parallel_coordinate",
    "intermediate_values",
    "slice",
    "contour",
)


def _functions(name: str) -> tuple[Callable[..., Any], Callable[..., Any]]:
    import optuna.visualization as vis
    import optuna.visualization.matplotlib as mpl

    return getattr(vis, f"plot_{name}"), getattr(mpl, f"plot_{name}")


def write_study_plots(study: Any, out_dir: str | Path, metric: str, params: Sequence[str]) -> list[Path]:
    """Write ``<plot>.html`` and ``<plot>.png`` for every plot the study's trials allow.

    A plot that needs more than the study has (importances need two complete trials,
    a contour two parameters) is skipped with a log line; the rest are still written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logging.getLogger("matplotlib.category").setLevel(logging.WARNING)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    kwargs: dict[str, Any] = {"target_name": metric}
    if len(study.directions) > 1:
        kwargs["target"] = lambda t: t.values[0]
    for name in PLOTS:
        html_fn, png_fn = _functions(name)
        extra = dict(kwargs)
        if name == "intermediate_values":
            extra = {}
        if name == "param_importances":
            # One fANOVA fit (seeded) for both renderings instead of two.
            import optuna

            extra["evaluator"] = optuna.importance.FanovaImportanceEvaluator(seed=0)
        if name in ("slice", "contour", "parallel_coordinate"):
            extra["params"] = [p for p in params if p in _searched(study)] or None
            if name == "contour" and (extra["params"] is None or len(extra["params"]) < 2):
                continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                figure = html_fn(study, **extra)
                html = out / f"{name}.html"
                figure.write_html(str(html), include_plotlyjs=True, full_html=True)
                written.append(html)
                axes = png_fn(study, **extra)
                fig = _figure_of(axes)
                png = out / f"{name}.png"
                fig.savefig(png, dpi=110, bbox_inches="tight")
                plt.close(fig)
                written.append(png)
        except Exception as exc:  # a plot the data cannot support; keep the others
            log.info("skipped plot %s: %s", name, exc)
    return written


def _searched(study: Any) -> set[str]:
    keys: set[str] = set()
    for trial in study.get_trials(deepcopy=False):
        keys.update(trial.params)
    return keys


def _figure_of(axes: Any) -> Any:
    import numpy as np

    if isinstance(axes, np.ndarray):
        return axes.flat[0].figure
    return axes.figure
