"""``sweeper ui``: the MLflow UI on the project's store, opened on the study's trials."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

from sweeper.servers import loopback, stop, wait_until_answers

SHARED_VIEW_TAG = "mlflow.sharedViewState."  # MLflow UI: ?viewStateShareKey=<key> loads it


def runs_url(base: str, experiment_id: str, view_key: str | None = None) -> str:
    """The experiment's runs table (not MLflow 3's GenAI overview)."""
    url = f"{base}/#/experiments/{experiment_id}/runs"
    return f"{url}?viewStateShareKey={view_key}" if view_key else url


def share_study_view(client: Any, experiment_id: str, parents: list[Any]) -> str | None:
    """Save a runs-table view in the experiment (MLflow's shared view state) that expands
    every study's parent run and shows, for each trial, its state, the metric and the
    searched parameters; returns its key."""
    if not parents:
        return None
    latest = parents[0]
    metric = latest.data.tags.get("metric", "val/acc").split(",")[0]
    searched = sorted({k[len("search."):] for p in parents for k in p.data.params if k.startswith("search.")})
    columns = [
        "tags.`state`",
        f"metrics.`best/{metric}`",
        *[f"params.`{key}`" for key in searched],
        "tags.`epochs`",
        "tags.`prune_reason`",
        "tags.`failure_reason`",
    ]
    state = {
        "searchFilter": "",
        "orderByKey": "attributes.start_time",
        "orderByAsc": False,
        "startTime": "ALL",
        "lifecycleFilter": "Active",
        "datasetsFilter": [],
        "modelVersionFilter": "All Runs",
        "selectedColumns": columns,
        "runsExpanded": {p.info.run_id: True for p in parents},
        "runsHiddenMode": "SHOW_ALL",
    }
    key = "sweeper-studies"
    client.set_experiment_tag(experiment_id, SHARED_VIEW_TAG + key, json.dumps(state))
    return key


def latest_study(uri: str, experiment: str) -> tuple[str | None, Any | None, str | None]:
    from mlflow.tracking import MlflowClient

    from sweeper.tracking.mlflow import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None, None, None
    if exp.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    parents = client.search_runs(
        [exp.experiment_id], filter_string="tags.`sweeper.role` = 'parent'",
        order_by=["attributes.start_time DESC"], max_results=100,
    )  # fmt: skip
    key = share_study_view(client, exp.experiment_id, parents)
    return exp.experiment_id, (parents[0] if parents else None), key


def start_server(uri: str, host: str, port: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri,
           "--host", host, "--port", str(port), "--workers", "1"]  # fmt: skip
    if not loopback(host):
        cmd += ["--allowed-hosts", "*"]
    return subprocess.Popen(cmd, start_new_session=True)


def serve(uri: str, experiment: str, host: str, port: int) -> int:
    from sweeper import signals

    signals.install()  # SIGTERM stops the server as Ctrl-C does
    if not loopback(host):
        print(f"warning: binding to {host} makes the UI reachable from your network", file=sys.stderr)
    experiment_id, parent, view_key = latest_study(uri, experiment)
    proc = start_server(uri, host, port)
    try:
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        base = f"http://{shown}:{port}"
        wait_until_answers(f"{base}/health", proc, "MLflow server", 90.0)
        if experiment_id is None:
            print(f"MLflow UI at {base} (no experiment '{experiment}' yet: run `sweeper sweep`)", flush=True)
        else:
            study = f" (latest study '{parent.data.tags.get('study')}')" if parent else ""
            print(f"MLflow UI: {runs_url(base, experiment_id, view_key)}{study}")
            print("click + beside a study's parent run to see its trials; Ctrl-C stops the server", flush=True)
        while proc.poll() is None:
            time.sleep(0.5)
        return proc.returncode or 0
    except KeyboardInterrupt:
        print("\nstopping the MLflow UI", file=sys.stderr)
        return signals.exit_code() if signals.terminated() else 0
    finally:
        stop(proc)
