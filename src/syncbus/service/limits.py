"""Request limits as plain ASGI middleware: body size (413 past it), no NUL in path or query."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from syncbus.service.common import ECHO_CHARS


async def send_json(
    send: Send, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
) -> None:
    """A whole JSON response, from middleware that answers before the app runs."""
    raw = json.dumps(payload).encode()
    extra = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(raw)).encode()),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": raw})


class BodySizeLimit:
    """Refuse request bodies larger than ``max_bytes`` with 413, before the app reads them."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send) -> None:
        detail = f"request body is larger than the limit of {self.max_bytes} bytes"
        await send_json(send, 413, {"detail": detail})


NUL_MESSAGE = "must not contain a NUL character (\\u0000 / %00): no database can store it"


def nul_error(loc: list[str | int], what: str, value: str) -> dict[str, Any]:
    """One validation error in FastAPI's shape (``loc``, ``msg``, ``type``, ``input``: the
    refused value, cut short)."""
    shown = value if len(value) <= ECHO_CHARS else value[:ECHO_CHARS] + "…"
    return {"loc": loc, "msg": f"{what} {NUL_MESSAGE}", "type": "value_error.nul", "input": shown}


class NulGuard:
    """Refuse a NUL character in the URL path or a query parameter with 422, naming it.

    PostgreSQL cannot store (or even compare) text with NUL; answered here, such input never
    reaches the database as a confusing driver error. JSON bodies are checked by the schemas.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            errors = self._errors(scope)
            if errors:
                await send_json(send, 422, {"detail": errors})
                return
        await self.app(scope, receive, send)

    @staticmethod
    def _errors(scope: Scope) -> list[dict[str, Any]]:
        errors = []
        if "\x00" in scope["path"]:
            errors.append(nul_error(["path"], "the URL path", scope["path"]))
        query = scope.get("query_string", b"").decode("latin-1")
        if "%00" in query or "\x00" in query:
            for name, value in parse_qsl(query, keep_blank_values=True):
                if "\x00" in name or "\x00" in value:
                    label = name.replace("\x00", "\\u0000")
                    what = f"query parameter {label!r}"
                    errors.append(nul_error(["query", label], what, value))
        return errors
