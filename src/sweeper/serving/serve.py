"""``sweeper serve``: a REST endpoint for a registered model, on MLflow's own scoring
app (the one ``mlflow models serve`` runs: ``/ping``, ``/health``, ``/version``,
``/invocations``) under uvicorn, with a limit on a request's size
(:mod:`sweeper.serving.app`), bound to 127.0.0.1 unless asked otherwise. Ctrl-C and
SIGTERM stop it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from typing import Any

from sweeper.errors import SweeperError
from sweeper.servers import loopback, stop, wait_until_answers
from sweeper.serving.app import DEFAULT_MAX_REQUEST_MB, LIMIT_ENV, MODEL_ENV, limit_bytes

RUN_ID = re.compile(r"[0-9a-f]{32}")


def resolve_model(client: Any, target: str) -> str:
    """A model URI for ``target``: ``models:/…`` or ``runs:/…`` as given, a run id's
    ``model`` artifact, or the latest version of the model registered under a study's name."""
    from mlflow.exceptions import MlflowException

    if target.startswith(("models:/", "runs:/")):
        return target
    if RUN_ID.fullmatch(target):
        try:
            names = {a.path for a in client.list_artifacts(target)}
        except MlflowException:
            raise SweeperError(f"no MLflow run '{target}' in this tracking store") from None
        if "model" not in names:
            raise SweeperError(f"run {target} has no model; serve a study's registered model (`sweeper serve <study>`)")
        return f"runs:/{target}/model"
    try:
        versions = client.search_model_versions(f"name = '{target}'")
    except MlflowException:
        versions = []
    if not versions:
        raise SweeperError(f"no model registered as '{target}'; give a study whose sweep registered its best "
                           "model, a run id, or models:/<name>/<version>")
    return f"models:/{target}/{max(int(v.version) for v in versions)}"


def wait_for_ping(base: str, proc: subprocess.Popen[bytes], timeout: float = 180.0) -> None:
    wait_until_answers(f"{base}/ping", proc, "model server", timeout)


def start(model_uri: str, tracking_uri: str, host: str, port: int,
          max_request_mb: float = DEFAULT_MAX_REQUEST_MB) -> subprocess.Popen[bytes]:
    """MLflow's scoring app for ``model_uri`` under uvicorn, behind the request-size limit
    (:mod:`sweeper.serving.app`)."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, MODEL_ENV: model_uri,
           LIMIT_ENV: str(limit_bytes(max_request_mb))}
    cmd = [sys.executable, "-m", "uvicorn", "--factory", "sweeper.serving.app:create_app",
           "--host", host, "--port", str(port), "--workers", "1"]  # fmt: skip
    # the server's own log (uvicorn's access lines) goes to stderr; stdout is ours
    return subprocess.Popen(cmd, env=env, start_new_session=True, stdout=sys.stderr.fileno())


def example_request(client: Any, model_uri: str) -> tuple[str, str | None]:
    """The JSON body of a request with the model's input example, for the printed curl
    line, and what the model says its inputs are (None for a model that does not)."""
    import tempfile

    import mlflow
    from mlflow.models import Model

    mlflow.set_tracking_uri(client.tracking_uri)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = mlflow.artifacts.download_artifacts(model_uri, dst_path=tmp)
            model = Model.load(local)
            rows: Any = model.load_input_example(local)
            note = (model.metadata or {}).get("inputs")
    except Exception:
        return '{"inputs": [[...]]}', None
    values: Any = rows.tolist() if hasattr(rows, "tolist") else rows
    if not values:
        return '{"inputs": [[...]]}', note
    row = [int(v) if float(v).is_integer() else round(float(v), 4) for v in values[0]]
    return json.dumps({"inputs": [row]}), note


MAX_REQUEST_ENV = "SWEEPER_SERVE_MAX_REQUEST_MB"


def max_request_mb(given: float | None) -> float:
    """``--max-request-mb``, else ``$SWEEPER_SERVE_MAX_REQUEST_MB``, else the default
    (MB of 2**20 bytes); checked before anything is read or started."""
    if given is not None:
        if not given > 0:
            raise SweeperError(f"--max-request-mb {given:g}: give a positive number of MB, e.g. 5")
        return given
    raw = os.environ.get(MAX_REQUEST_ENV)
    if not raw:
        return DEFAULT_MAX_REQUEST_MB
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise SweeperError(f"{MAX_REQUEST_ENV}={raw!r}: give a positive number of MB, e.g. 5")
    return value


def serve(target: str, tracking_uri: str, host: str, port: int,
          max_request_mb: float = DEFAULT_MAX_REQUEST_MB) -> int:
    from mlflow.tracking import MlflowClient

    from sweeper import signals
    from sweeper.tracking.stores import require_store

    signals.install()  # SIGTERM stops the server as Ctrl-C does
    require_store(tracking_uri, "--tracking-uri", "run `sweeper sweep` here first, or pass --tracking-uri")
    client = MlflowClient(tracking_uri=tracking_uri)
    model_uri = resolve_model(client, target)
    if not loopback(host):
        print(f"warning: binding to {host} makes the model reachable from your network", file=sys.stderr)
    body, note = example_request(client, model_uri)
    proc = start(model_uri, tracking_uri, host, port, max_request_mb)
    try:
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        base = f"http://{shown}:{port}"
        wait_for_ping(base, proc)
        print(f"serving {model_uri} at {base}/invocations (requests up to {max_request_mb:g} MB); "
              "Ctrl-C stops it", flush=True)
        print(f"curl -s {base}/invocations -H 'Content-Type: application/json' -d '{body}'", flush=True)
        if note:
            print(f"inputs: {note}", flush=True)
        while proc.poll() is None:
            time.sleep(0.5)
        return proc.returncode or 0
    except KeyboardInterrupt:
        print("\nstopping the model server", file=sys.stderr)
        return signals.exit_code() if signals.terminated() else 0
    finally:
        stop(proc)
