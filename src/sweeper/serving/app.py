"""The web app ``sweeper serve`` runs: MLflow's own scoring server for one model
(``/ping``, ``/health``, ``/version``, ``/invocations``), behind a limit on the size of
a request's body.

A body larger than the limit is answered ``413`` with a JSON message and is never held
in memory: a ``Content-Length`` over the limit is refused before the app sees the
request, and a chunked body is buffered only up to the limit. The rest of a refused body
is read and dropped (up to 64 MB or 8x the limit) so that a client that is still sending
it gets the answer rather than a reset connection. Uvicorn runs :func:`create_app` (``--factory``) with the
model URI and the limit in the environment.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

MODEL_ENV = "SWEEPER_SERVE_MODEL_URI"
LIMIT_ENV = "SWEEPER_SERVE_MAX_REQUEST_BYTES"
DEFAULT_MAX_REQUEST_MB = 5.0

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


def _mb(n: int) -> str:
    return f"{n / 2**20:g} MB"


class BodyLimit:
    """ASGI middleware: answer ``413`` to any HTTP request whose body is over ``limit``
    bytes; pass every other request on with its body intact."""

    def __init__(self, app: App, limit: int) -> None:
        self.app = app
        self.limit = int(limit)

    async def _too_large(self, send: Send, size: str) -> None:
        body = json.dumps({
            "error_code": "REQUEST_TOO_LARGE",
            "message": f"the request body ({size}) is over this server's limit of {_mb(self.limit)} "
                       f"({self.limit} bytes); send fewer rows per request, or start the server with "
                       "a larger `sweeper serve --max-request-mb`",
        }).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def _discard(self, receive: Receive, more: bool) -> None:
        """Read and drop the rest of a refused body (kept in no buffer), up to
        :attr:`drain_limit` bytes, so that a client still sending it reads the 413 instead
        of a reset connection (what web servers call a lingering close)."""
        drained = 0
        while more and drained <= self.drain_limit:
            message = await receive()
            if message["type"] != "http.request":
                return
            drained += len(message.get("body", b""))
            more = bool(message.get("more_body", False))

    @property
    def drain_limit(self) -> int:
        return max(64 * 2**20, 8 * self.limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = next((v for k, v in scope.get("headers", []) if k.lower() == b"content-length"), None)
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                declared = -1
            if declared > self.limit:
                await self._discard(receive, declared <= self.drain_limit)
                await self._too_large(send, f"{declared} bytes")
                return
            if declared >= 0:
                await self.app(scope, receive, send)  # the server reads at most what it declared
                return
        # No (valid) length: read the body up to the limit, then hand it on whole.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message]), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                chunks.clear()
                await self._discard(receive, bool(message.get("more_body", False)))
                await self._too_large(send, f"more than {self.limit} bytes")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay([{"type": "http.request", "body": b"".join(chunks), "more_body": False}],
                                      receive), send)


def _replay(messages: list[Message], then: Receive | None = None) -> Receive:
    """A ``receive`` that gives ``messages`` first, then defers to ``then``."""
    queue = list(messages)

    async def receive() -> Message:
        if queue:
            return queue.pop(0)
        if then is None:
            return {"type": "http.disconnect"}
        return await then()

    return receive


def limit_bytes(max_request_mb: float) -> int:
    return max(1, int(max_request_mb * 2**20))


def create_app() -> App:
    """MLflow's scoring app for ``$SWEEPER_SERVE_MODEL_URI`` behind :class:`BodyLimit`."""
    from mlflow.pyfunc import scoring_server

    model = scoring_server.load_model_with_mlflow_config(os.environ[MODEL_ENV])
    limit = int(os.environ.get(LIMIT_ENV) or limit_bytes(DEFAULT_MAX_REQUEST_MB))
    return BodyLimit(scoring_server.init(model), limit)
