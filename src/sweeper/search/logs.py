"""``sweeper logs``: the output of one trial (and the traceback of its failure).

Each trial's output is kept in ``outputs/sweeps/<study>/trial_NNNN/trial.log`` and as
the ``trial.log`` artifact of its MLflow run; this reads the local file when there is
one, else the artifact (the trial ran on another machine, or the folder is gone).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from sweeper.errors import SweeperError
from sweeper.search.records import sweeps_dir
from sweeper.search.trials import TRIAL_LOG


def _local(study: str, trial: int | None) -> Path | None:
    folder = sweeps_dir() / study
    if not folder.is_dir():
        return None
    if trial is not None:
        path = folder / f"trial_{trial:04d}" / TRIAL_LOG
        return path if path.is_file() else None
    logs = sorted(folder.glob(f"trial_*/{TRIAL_LOG}"))
    if not logs:
        return None
    failed = [p for p in logs if "Traceback" in p.read_text(errors="replace") or
              "sweeper: error:" in p.read_text(errors="replace")]
    return (failed or logs)[-1]


def _from_mlflow(uri: str, experiment: str, study: str, trial: int | None) -> tuple[str, str]:
    from mlflow.exceptions import MlflowException

    from sweeper.tracking.studies import StudyReader

    reader = StudyReader(uri, experiment)
    record = reader.study(study)
    if not record.trials:
        raise SweeperError(f"study '{study}' has no trials yet")
    if trial is None:
        failed = [t for t in record.trials if t.state == "FAILED"]
        chosen = (failed or record.trials)[-1]
    else:
        found = [t for t in record.trials if t.number == trial]
        if not found:
            known = ", ".join(str(t.number) for t in record.trials)
            raise SweeperError(f"study '{study}' has no trial {trial}; its trials are {known}")
        chosen = found[-1]
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = reader.client.download_artifacts(chosen.run_id, TRIAL_LOG, tmp)
        except (MlflowException, OSError):
            raise SweeperError(f"trial {chosen.number} of study '{study}' (run {chosen.run_id}) has no "
                               f"{TRIAL_LOG} artifact; it ran before trial logs were kept") from None
        return f"trial {chosen.number} of study '{study}' (MLflow run {chosen.run_id})", \
            Path(path).read_text(errors="replace")


def trial_log(study: str, trial: int | None, uri: str, experiment: str, mlflow_asked: bool) -> tuple[str, str]:
    """``(where it came from, the log's text)`` of trial ``trial`` of ``study`` (None: the
    last failed trial, else the last trial)."""
    local = None if mlflow_asked else _local(study, trial)
    if local is not None:
        return str(local), local.read_text(errors="replace")
    return _from_mlflow(uri, experiment, study, trial)


def job_logs(study: str) -> list[tuple[str, Path, bool]]:
    """``(job id, its log, whether the log exists)`` of every job submitted for ``study``
    from this folder (``search/launcher=slurm``), oldest submission first."""
    from sweeper.search.launch import submissions

    folder = sweeps_dir() / study
    found = [(job, Path(out)) for line in submissions(folder) for job, out in line["jobs"].items()]
    if not found:
        raise SweeperError(f"no jobs were submitted for study '{study}' from this folder "
                           f"({folder}); jobs are launched with search/launcher=slurm")
    return [(job, out, out.is_file()) for job, out in found]


def job_log(study: str, job: str) -> str:
    """One job's output (its error stream goes there too), or every task's of an array."""
    jobs = job_logs(study)
    chosen = [(j, out) for j, out, _ in jobs if j == job or j.split("_", 1)[0] == job]
    if not chosen:
        raise SweeperError(f"study '{study}' has no job {job}; its jobs are {', '.join(j for j, _, _ in jobs)}")
    parts = [f"# job {j}: {out}\n" + out.read_text(errors="replace") for j, out in chosen if out.is_file()]
    if not parts:
        raise SweeperError(f"job {job} of study '{study}' has no log yet at {chosen[0][1]} (still queued, "
                           "or its folder is not shared with this node)")
    return "\n".join(parts)
