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
            extra["evaluator"] = _once(study)  # one fANOVA fit (seeded) for both renderings
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
                fig.set_layout_engine("tight")  # laid out in the one draw savefig makes
                fig.savefig(png, dpi=110)
                plt.close(fig)
                written.append(png)
        except Exception as exc:  # a plot the data cannot support; keep the others
            log.debug("skipped plot %s: %s", name, exc)
    return written


def _once(study: Any) -> Any:
    """A seeded fANOVA evaluator that fits once per (params, target) and then answers
    from memory: it is most of the plots' time (about 0.9 s for 20 trials), and the
    HTML and PNG renderings would each fit it."""
    from optuna.importance import BaseImportanceEvaluator, FanovaImportanceEvaluator

    class Once(BaseImportanceEvaluator):
        def __init__(self) -> None:
            self._inner = FanovaImportanceEvaluator(seed=0)
            self._memo: dict[Any, dict[str, float]] = {}

        def evaluate(self, study: Any, params: Any = None, *, target: Any = None) -> dict[str, float]:
            key = (tuple(params) if params is not None else None, target)
            if key not in self._memo:
                self._memo[key] = self._inner.evaluate(study, params=params, target=target)
            return dict(self._memo[key])

    return Once()


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
