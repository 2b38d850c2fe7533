"""The request size limit of ``sweeper serve``: where it comes from, how a bad one is
refused, and what the app behind it answers (the ASGI middleware, driven directly)."""

from __future__ import annotations

import asyncio
import json

import pytest

from sweeper.serving.app import BodyLimit, limit_bytes
from sweeper.serving.serve import MAX_REQUEST_ENV, max_request_mb
from tests.conftest import in_process


def test_the_limit_comes_from_the_flag_then_the_environment_then_the_default(monkeypatch):
    monkeypatch.delenv(MAX_REQUEST_ENV, raising=False)
    assert max_request_mb(None) == 5.0
    monkeypatch.setenv(MAX_REQUEST_ENV, "0.5")
    assert max_request_mb(None) == 0.5
    assert max_request_mb(2.0) == 2.0  # the flag wins
    assert limit_bytes(0.5) == 2**19


@pytest.mark.parametrize(("argv", "env", "named"), [
    (["--max-request-mb", "0"], None, "--max-request-mb 0: give a positive number of MB"),
    (["--max-request-mb", "-3"], None, "--max-request-mb -3: give a positive number of MB"),
    ([], "lots", f"{MAX_REQUEST_ENV}='lots': give a positive number of MB"),
    ([], "0", f"{MAX_REQUEST_ENV}='0': give a positive number of MB"),
])
def test_a_bad_limit_is_refused_in_one_line_before_any_store_is_read(tmp_path, monkeypatch, argv, env, named):
    if env is None:
        monkeypatch.delenv(MAX_REQUEST_ENV, raising=False)
    else:
        monkeypatch.setenv(MAX_REQUEST_ENV, env)
    out = in_process(tmp_path, "serve", "digits", "--tracking-uri", f"sqlite:///{tmp_path}/nosuch.db", *argv)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [f"sweeper: error: {named}, e.g. 5"]
    assert list(tmp_path.iterdir()) == []  # no store was opened or created


def _call(limit: int, body: bytes, chunks: int, declare: bool) -> tuple[int, bytes, bytes]:
    """One request through :class:`BodyLimit`; the status, the answer, and what the app got."""
    got: list[bytes] = []

    async def app(scope, receive, send):
        while True:
            message = await receive()
            got.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    step = max(1, len(body) // chunks)
    parts = [body[i:i + step] for i in range(0, len(body), step)] or [b""]
    messages = [{"type": "http.request", "body": p, "more_body": i < len(parts) - 1} for i, p in enumerate(parts)]
    sent: list[dict] = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    headers = [(b"content-length", str(len(body)).encode())] if declare else []
    asyncio.run(BodyLimit(app, limit)({"type": "http", "headers": headers}, receive, send))
    return sent[0]["status"], sent[1]["body"], b"".join(got)


@pytest.mark.parametrize("declare", [True, False], ids=["content-length", "chunked"])
def test_a_body_over_a_configured_limit_gets_413_and_never_reaches_the_model(declare):
    status, answer, got = _call(1000, b"x" * 1500, chunks=3, declare=declare)
    assert status == 413
    message = json.loads(answer)
    assert message["error_code"] == "REQUEST_TOO_LARGE"
    assert "limit of" in message["message"] and "(1000 bytes)" in message["message"]
    assert "--max-request-mb" in message["message"]
    assert got == b""  # the app never saw the request


@pytest.mark.parametrize("declare", [True, False], ids=["content-length", "chunked"])
def test_a_body_at_the_limit_reaches_the_model_whole(declare):
    body = bytes(range(256)) * 3 + b"y" * 232  # exactly 1000 bytes
    status, answer, got = _call(1000, body, chunks=4, declare=declare)
    assert (status, answer, got) == (200, b"ok", body)
