"""``sweeper compare``: the trials of one study, or two studies side by side."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

from sweeper.tracking.studies import StudyRecord

FORMATS = ("table", "markdown", "csv", "json")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if 1e-3 <= abs(value) < 1e5 or value == 0 else f"{value:.3g}"
    return str(value)


def render(headers: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str) -> str:
    if fmt == "json":
        return json.dumps([dict(zip(headers, row)) for row in rows], indent=2)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(headers)
        writer.writerows([["" if v is None else v for v in row] for row in rows])
        return buf.getvalue().rstrip("\n")
    cells = [[_cell(v) for v in row] for row in rows]
    if fmt == "markdown":
        out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        out += ["| " + " | ".join(row) + " |" for row in cells]
        return "\n".join(out)
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(out)


def trials_report(study: StudyRecord, fmt: str, limit: int | None = None) -> str:
    headers = ["trial", "state", study.metric, "epochs", "duration_s", *study.searched]
    rows = [
        [t.number, t.state, t.value, t.epochs,
         round(t.duration_s, 1) if t.duration_s is not None else None,
         *[_param(t.params.get(k)) for k in study.searched]]
        for t in study.sorted_trials()[:limit]
    ]  # fmt: skip
    body = render(headers, rows, fmt)
    if fmt in ("json", "csv"):
        return body
    best = study.best()
    head = (
        f"study '{study.name}' ({study.status.lower()}): {len(study.trials)} trials, "
        f"{study.count('COMPLETE')} complete, {study.count('PRUNED')} pruned, "
        f"{study.count('FAILED')} failed, {study.count('RUNNING')} running; "
        + (f"best {study.metric}={best.value:.4f} (trial {best.number})" if best else "no complete trial yet")
    )
    return f"{head}\n\n{body}" if fmt == "table" else f"**{head}**\n\n{body}"


def _param(value: str | None) -> Any:
    if value is None:
        return None
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            continue
    return value


def summary_row(study: StudyRecord) -> dict[str, Any]:
    best = study.best()
    ordered = sorted(study.trials, key=lambda t: t.number)
    trials_to_best = epochs_to_best = None
    if best is not None:
        upto = [t for t in ordered if t.number <= best.number]
        trials_to_best = len(upto)
        epochs_to_best = sum(t.epochs or 0 for t in upto)
    return {
        "study": study.name,
        "status": study.status.lower(),
        "metric": study.metric,
        "best": best.value if best else None,
        "best_trial": best.number if best else None,
        "trials_to_best": trials_to_best,
        "epochs_to_best": epochs_to_best,
        "trials": len(study.trials),
        "epochs": sum(t.epochs or 0 for t in study.trials),
        "pruned": study.count("PRUNED"),
        "failed": study.count("FAILED"),
        "running": study.count("RUNNING"),
    }


def side_by_side(studies: Sequence[StudyRecord], fmt: str) -> str:
    rows = [summary_row(s) for s in studies]
    if fmt == "json":
        return json.dumps(rows, indent=2)
    keys = list(rows[0])
    if fmt == "csv":
        return render(keys, [[r[k] for k in keys] for r in rows], fmt)
    # one column per study reads best for two
    table_rows = [[k, *[r[k] for r in rows]] for k in keys[1:]]
    return render(["", *[r["study"] for r in rows]], table_rows, fmt)
