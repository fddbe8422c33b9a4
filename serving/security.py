"""Bearer-token check and body-size limit, as one ASGI middleware in front of every route.

Runs before any route reads a byte of the body: an unauthorized request is answered 401 without
reading it, an oversize one 413 as soon as it passes the limit (by ``Content-Length`` or while
streaming). Both answer a FHIR ``OperationOutcome``. Liveness (``/healthz``, ``/livez``) stays
open so an orchestrator can probe without a secret; everything else, readiness and metrics
included, needs a token from ``EHRMAMBA_SERVE_TOKENS`` (comma-separated, so tokens can be rotated).
With no token configured every protected request is refused: the service never runs open.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson

TOKENS_ENV = "EHRMAMBA_SERVE_TOKENS"
MAX_BODY_ENV = "EHRMAMBA_SERVE_MAX_BODY_MB"
DEFAULT_MAX_BODY_MB = 64.0
OPEN_PATHS = frozenset({"/healthz", "/livez"})

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def tokens_from_env() -> list[str]:
    return [t.strip() for t in os.environ.get(TOKENS_ENV, "").split(",") if t.strip()]


def max_body_from_env() -> int:
    return int(float(os.environ.get(MAX_BODY_ENV) or DEFAULT_MAX_BODY_MB) * 1024 * 1024)


def outcome_body(diagnostics: str, code: str) -> bytes:
    return orjson.dumps(
        {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": code, "diagnostics": diagnostics}],
        }
    )


async def send_outcome(
    send: Send,
    status: int,
    diagnostics: str,
    code: str,
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    body = outcome_body(diagnostics, code)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/fhir+json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class GuardMiddleware:
    """401 without a valid ``Authorization: Bearer <token>``; 413 above the body limit."""

    def __init__(
        self,
        app: Callable[[Scope, Receive, Send], Awaitable[None]],
        tokens: Sequence[str] | None = None,
        max_body_bytes: int | None = None,
    ) -> None:
        self.app = app
        self.tokens = [t.encode() for t in (tokens if tokens is not None else tokens_from_env())]
        self.max_body = max_body_bytes if max_body_bytes is not None else max_body_from_env()

    def _authorized(self, scope: Scope) -> bool:
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                token = token.strip()
                return scheme.lower() == b"bearer" and any(
                    hmac.compare_digest(token, t) for t in self.tokens
                )
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["path"] not in OPEN_PATHS and not self._authorized(scope):
            why = (
                "this request needs an Authorization: Bearer token"
                if self.tokens
                else f"the server has no API token configured ({TOKENS_ENV}); it refuses all"
            )
            await send_outcome(send, 401, why, "login", [(b"www-authenticate", b"Bearer")])
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            await send_outcome(send, 413, self._too_large(), "too-long")
            return
        if scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        # read the body here, bounded, and hand it on whole
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away mid-body
                await self.app(scope, _replay([], receive, message), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await send_outcome(send, 413, self._too_large(), "too-long")
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        await self.app(scope, _replay(chunks, receive), send)

    def _too_large(self) -> str:
        return f"the body is larger than this server's limit of {self.max_body / 2**20:g} MiB"


def _replay(chunks: list[bytes], receive: Receive, pending: Message | None = None) -> Receive:
    """The buffered body as one message, then the connection's own messages (disconnect)."""
    body = b"".join(chunks)
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if pending is not None:
            return pending
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
