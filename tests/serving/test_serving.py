"""After the search: the best model served over HTTP, compressed and exported, from a
real sweep's registered model, with every answer checked against in-process predictions."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import cli

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def registered(tmp_path_factory) -> Path:
    """A study 'digits' whose best model is registered, as `sweeper sweep` leaves it."""
    cwd = tmp_path_factory.mktemp("served")
    out = cli(cwd, "sweep", "model=mlp", "trainer.accelerator=cpu", "trainer.max_epochs=3", "search.n_trials=1",
              "search/pruner=none", "search.study_name=digits")
    assert out.returncode == 0, out.stderr + out.stdout
    assert "registered model 'digits' version 1" in out.stdout
    return cwd


def _uri(cwd: Path) -> str:
    return f"sqlite:///{cwd / 'mlflow.db'}"


def _test_split() -> tuple[np.ndarray, np.ndarray]:
    """The digits test split as a client has it: raw pixels 0-16, and its labels."""
    import torch

    from sweeper.data import DigitsDataModule
    from sweeper.serving.export import test_rows

    dm = DigitsDataModule(seed=0)
    dm.setup("test")
    labels = torch.cat([b[1] for b in dm.test_dataloader()]).numpy()
    return test_rows(dm), labels


def _pyfunc(cwd: Path, uri: str = "models:/digits/1"):
    import mlflow.pyfunc

    mlflow.set_tracking_uri(_uri(cwd))
    return mlflow.pyfunc.load_model(uri)


def test_the_registered_model_takes_raw_inputs_and_loads_without_pickle(registered):
    client = MlflowClient(_uri(registered))
    (version,) = client.search_model_versions("name = 'digits'")
    assert version.tags["variant"] == "float32"
    local = Path(client.download_artifacts(version.run_id, "model", str(registered / "dl")))
    files = {p.name for p in local.rglob("*")}
    assert not {f for f in files if f.endswith((".pkl", ".pickle"))}, files  # nothing pickled
    mlmodel = (local / "MLmodel").read_text()
    assert "loader_module: sweeper.serving.package" in mlmodel and "signature" in mlmodel
    import torch

    state = torch.load(next(local.rglob("weights.pt")), weights_only=True)  # tensors only
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    rows, labels = _test_split()
    answer = _pyfunc(registered).predict(rows)
    accuracy = float((answer["class"].to_numpy() == labels).mean())
    run = client.get_run(version.run_id)
    # raw pixels in, the test accuracy out: the normalisation travels with the model
    assert accuracy == pytest.approx(run.data.metrics["test/acc"], abs=1e-6)
    probabilities = answer[[f"p_{d}" for d in range(10)]].to_numpy()
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert (answer["class_name"] == answer["class"].astype(str)).all()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _raw_post(port: int, body: bytes, chunked: bool) -> tuple[int, dict]:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        headers = {"Content-Type": "application/json"}
        if chunked:
            pieces = (body[i:i + 65536] for i in range(0, len(body), 65536))
            conn.request("POST", "/invocations", body=pieces, headers={**headers, "Transfer-Encoding": "chunked"},
                         encode_chunked=True)
        else:
            conn.request("POST", "/invocations", body=body, headers=headers)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    except (BrokenPipeError, ConnectionResetError):
        pytest.fail("the server closed the connection instead of answering 413")
    finally:
        conn.close()


def test_a_tampered_registered_model_runs_no_code_when_mlflow_loads_it(registered, tmp_path):
    import mlflow.pyfunc

    client = MlflowClient(_uri(registered))
    (version,) = client.search_model_versions("name = 'digits' and tags.variant = 'float32'")
    marker = tmp_path / "pwned"
    for field in ("net", "module"):
        local = Path(client.download_artifacts(version.run_id, "model", str(tmp_path / field)))
        spec_file = next(local.rglob("model.json"))
        spec = json.loads(spec_file.read_text())
        if field == "net":  # the network's _target_, called with the file's own arguments
            spec["hparams"]["net"] = {"_target_": "subprocess.run", "args": f"touch {marker}", "shell": True}
        else:  # the module's class itself
            spec["module"] = "subprocess.Popen"
            spec["hparams"] = {"args": f"touch {marker}", "shell": True}
        spec_file.write_text(json.dumps(spec))
        with pytest.raises(Exception, match=r"subprocess\.(run|Popen).*refused without importing it"):
            mlflow.pyfunc.load_model(str(local))
        assert not marker.exists()


def test_evaluate_refuses_a_recorded_config_that_names_code(registered, tmp_path):
    from urllib.parse import urlparse

    client = MlflowClient(_uri(registered))
    (version,) = client.search_model_versions("name = 'digits' and tags.variant = 'float32'")
    artifacts = Path(urlparse(client.get_run(version.run_id).info.artifact_uri).path)
    config = artifacts / "config.yaml"
    saved = config.read_text()
    marker = tmp_path / "pwned"
    try:
        import yaml

        data = yaml.safe_load(saved)
        data["data"] = {"_target_": "subprocess.run", "args": f"touch {marker}", "shell": True}
        config.write_text(yaml.safe_dump(data))
        out = cli(registered, "evaluate", version.run_id)
    finally:
        config.write_text(saved)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert "data._target_" in lines[0] and "subprocess.run" in lines[0]
    assert not marker.exists()


@pytest.mark.processes
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_sweeper_serve_answers_over_http_and_stops_cleanly(registered, stop):
    port = _free_port()
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen([sys.executable, "-m", "sweeper", "serve", "digits", "--port", str(port),
                             "--tracking-uri", _uri(registered)], cwd=registered, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        first = proc.stdout.readline()
        assert first.startswith(f"serving models:/digits/1 at http://127.0.0.1:{port}/invocations "
                                "(requests up to 5 MB)"), first
        curl = proc.stdout.readline()
        assert curl.startswith(f"curl -s http://127.0.0.1:{port}/invocations") and '"inputs": [[' in curl
        inputs = proc.stdout.readline()
        assert inputs.startswith("inputs: each row: 64 numbers (one input of shape [1, 8, 8]; floats or integers, "
                                 "JSON or CSV), raw as sweeper.data.digits.DigitsDataModule reads them"), inputs
        base = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{base}/ping", timeout=10) as response:
            assert response.status == 200
        rows, _ = _test_split()
        served = _post(f"{base}/invocations", {"inputs": rows[:40].tolist()})["predictions"]
        local = _pyfunc(registered).predict(rows[:40])
        assert [p["class"] for p in served] == local["class"].tolist()
        assert np.allclose([p["probability"] for p in served], local["probability"], atol=1e-6)
        assert np.allclose([p["p_3"] for p in served], local["p_3"], atol=1e-6)
        # the curl line's body is a real request
        body = json.loads(curl.split(" -d '", 1)[1].rstrip().rstrip("'"))
        assert len(_post(f"{base}/invocations", body)["predictions"]) == 1
        # a body over the limit (5 MB by default) is refused unread, with a message, declared or chunked
        big = json.dumps({"inputs": [rows[0].tolist()] * 20000}).encode()
        assert len(big) > 5 * 2**20
        for chunked in (False, True):
            status, answer = _raw_post(port, big, chunked)
            assert status == 413 and answer["error_code"] == "REQUEST_TOO_LARGE", answer
            assert "--max-request-mb" in answer["message"]
        status, answer = _raw_post(port, json.dumps({"inputs": rows[:3].tolist()}).encode(), chunked=True)
        assert status == 200 and len(answer["predictions"]) == 3  # a chunked body within the limit
    finally:
        proc.send_signal(stop)
        code = proc.wait(timeout=60)
    assert code == (143 if stop == signal.SIGTERM else 0)
    time.sleep(0.5)
    with socket.socket() as s:  # nothing listens any more
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_compress_measures_each_variant_and_registers_one_within_tolerance(registered):
    out = cli(registered, "compress", "digits", "--sparsities", "0.5,0.95", "--repeats", "5", "--tolerance", "0.02")
    assert out.returncode == 0, out.stderr + out.stdout
    client = MlflowClient(_uri(registered))
    (original,) = client.search_model_versions("name = 'digits' and tags.variant = 'float32'")
    path = client.download_artifacts(original.run_id, "compression/compression.csv", str(registered / "c"))
    import csv

    with open(path) as f:
        rows = {r["variant"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"float32", "int8", "pruned-0.5", "pruned-0.95"}
    assert float(rows["int8"]["size_x"]) < 0.5  # int8 weights: about a quarter of float32's
    assert float(rows["pruned-0.95"]["gzip_x"]) < float(rows["pruned-0.5"]["gzip_x"]) < 1.0
    for row in rows.values():
        assert float(row["batch1_ms"]) > 0 and float(row["batch64_ms"]) > 0
        lost = float(rows["float32"]["test/acc"]) - float(row["test/acc"])
        assert ("over tolerance" in row["flag"]) == (lost > 0.02)
        slowdown = max(float(row["batch1_x"]), float(row["batch64_x"]))
        if abs(slowdown - 2.0) > 0.01:  # the CSV's ratios are rounded
            assert ("slower" in row["flag"]) == (slowdown > 2.0), row
    assert "variant" in out.stdout and "pruned-0.95" in out.stdout
    chosen = [line for line in out.stdout.splitlines() if line.startswith("registered ")]
    if chosen:  # the chosen variant is a new version, tagged, and serves like the table says
        (version,) = [v for v in client.search_model_versions("name = 'digits'") if v.tags.get("compression")]
        assert rows[version.tags["compression"]]["flag"] == ""
        rows_, labels = _test_split()
        answer = _pyfunc(registered, f"models:/digits/{version.version}").predict(rows_)
        accuracy = float((answer["class"].to_numpy() == labels).mean())
        assert accuracy == pytest.approx(float(rows[version.tags["compression"]]["test/acc"]), abs=1e-3)
    else:
        assert all(r["flag"] for name, r in rows.items() if name != "float32")


def test_export_gives_files_that_agree_with_the_model(registered):
    out = cli(registered, "export", "digits", "--out", str(registered / "exported"))
    assert out.returncode == 0, out.stderr + out.stdout
    rows, _ = _test_split()
    expected = _pyfunc(registered).predict(rows)[[f"p_{d}" for d in range(10)]].to_numpy()
    import onnxruntime
    import torch

    scripted = torch.jit.load(str(registered / "exported" / "model.pt"))
    with torch.inference_mode():
        assert np.abs(scripted(torch.from_numpy(rows)).numpy() - expected).max() < 1e-5
    session = onnxruntime.InferenceSession(str(registered / "exported" / "model.onnx"),
                                           providers=["CPUExecutionProvider"])
    assert np.abs(session.run(None, {"x": rows})[0] - expected).max() < 1e-4
    client = MlflowClient(_uri(registered))
    (version,) = client.search_model_versions("name = 'digits' and tags.variant = 'float32'")
    assert {"export/model.pt", "export/model.onnx"} <= {a.path for a in client.list_artifacts(version.run_id, "export")}


@pytest.mark.parametrize("args, text", [
    (["serve", "nope"], "no model registered as 'nope'"),
    (["compress", "digits", "--sparsities", "2"], "--sparsities"),
    (["compress", "digits", "--max-slowdown", "0.5"], "--max-slowdown 0.5: give a multiple"),
    (["export", "digits", "--format", "tflite"], "--format"),
    (["serve", "0" * 32], "no MLflow run"),
])
def test_bad_model_commands_are_one_line(registered, args, text):
    out = cli(registered, *args)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and text in lines[0], out.stderr


def _mlflow() -> str:
    return str(Path(sys.executable).parent / "mlflow")


def _classes(answer: dict) -> list[int]:
    return [p["class"] for p in answer["predictions"]]


def test_the_model_takes_what_clients_send_from_pyfunc_mlflow_predict_and_mlflow_serve(registered, tmp_path):
    """float64 (what numpy and pandas make), int64 frames and arrays, lists, JSON and CSV."""
    import pandas as pd

    from sweeper.serving.serve import wait_for_ping

    rows, _ = _test_split()
    raw64, ints = rows[:20].astype(np.float64), rows[:20].astype(np.int64)  # digits pixels are 0-16
    columns = [f"pixel_{i}" for i in range(64)]
    model = _pyfunc(registered)
    expected = model.predict(rows[:20])["class"].tolist()
    for given in (raw64, ints, pd.DataFrame(raw64), pd.DataFrame(ints, columns=columns), raw64.tolist()):
        assert model.predict(given)["class"].tolist() == expected, type(given)
    meta = model.metadata.metadata
    assert meta["input_shape"] == [1, 8, 8] and "64 numbers" in meta["inputs"] and "standardises them" in meta["inputs"]

    csv_file = tmp_path / "rows.csv"
    pd.DataFrame(ints, columns=columns).to_csv(csv_file, index=False)
    # as in an activated environment: mlflow starts `uvicorn` from the PATH
    env = {**os.environ, "MLFLOW_TRACKING_URI": _uri(registered), "PYTHONWARNINGS": "ignore",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    result = tmp_path / "predictions.json"
    out = subprocess.run([_mlflow(), "models", "predict", "-m", "models:/digits/1", "-i", str(csv_file), "-t", "csv",
                          "-o", str(result), "--env-manager", "local"], env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert _classes(json.loads(result.read_text())) == expected

    port = _free_port()
    proc = subprocess.Popen([_mlflow(), "models", "serve", "-m", "models:/digits/1", "-p", str(port),
                             "--env-manager", "local"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for_ping(base, proc)
        request = urllib.request.Request(f"{base}/invocations", data=csv_file.read_bytes(),
                                         headers={"Content-Type": "text/csv"})
        with urllib.request.urlopen(request, timeout=60) as response:
            assert _classes(json.loads(response.read())) == expected
        split = {"dataframe_split": {"columns": columns, "data": ints.tolist()}}
        assert _classes(_post(f"{base}/invocations", split)) == expected
        assert _classes(_post(f"{base}/invocations", {"inputs": raw64.tolist()})) == expected
        try:
            _post(f"{base}/invocations", {"inputs": [[1, 2, 3]]})
            pytest.fail("a row of 3 numbers was answered")
        except urllib.error.HTTPError as exc:
            assert exc.code == 400 and "each input must hold 64 numbers" in exc.read().decode()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def test_model_commands_print_no_slurm_hints_on_a_slurm_machine(registered, tmp_path, monkeypatch):
    """Lightning's "srun is available" hint and "SLURM auto-requeueing enabled" line are
    for training jobs, not for scoring a saved model in this process."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    for key, value in {"SLURM_JOB_ID": "123", "SLURM_NTASKS": "1", "SLURM_JOB_NAME": "sweep",
                       "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}.items():
        monkeypatch.setenv(key, value)
    out = cli(registered, "evaluate", "digits")
    assert out.returncode == 0, out.stderr + out.stdout
    text = out.stdout + out.stderr
    assert "srun" not in text and "requeue" not in text.lower() and "GPU available" not in text, text
