"""Request limits as plain ASGI middleware: body size (413 past it), no NUL in path or query."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl, unquote_plus, unquote_to_bytes

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from syncbus.service.common import ECHO_CHARS


async def send_json(
    send: Send, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None
) -> None:
    """A whole JSON response, from middleware that answers before the app runs."""
    raw = json.dumps(payload, separators=(",", ":")).encode()  # as the app's answers
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


def utf8_error(loc: list[str | int], what: str, raw: bytes, shown: str) -> dict[str, Any] | None:
    """The validation error of a percent-encoded ``raw`` whose escapes are not UTF-8 text
    (``%E9`` alone, Latin-1's é), or None when they are. Decoded, each bad byte would be
    U+FFFD, and a read would look for a name nobody gave. ``shown``: the input as sent, its
    escapes as they were."""
    try:
        unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = exc.object[exc.start : exc.end].hex(" ").upper()
        cut = shown if len(shown) <= ECHO_CHARS else shown[:ECHO_CHARS] + "…"
        return {
            "loc": loc,
            "msg": f"{what} is not UTF-8 text: its escapes give the byte(s) {bad}, which are "
            "not UTF-8; percent-encode the UTF-8 bytes of each character (%C3%A9 for é)",
            "type": "value_error.utf8",
            "input": cut,
        }
    return None


class NulGuard:
    """Refuse, with 422 naming it, a NUL character in the URL path or a query parameter, and
    an escape there that is not UTF-8 text.

    PostgreSQL cannot store (or even compare) text with NUL; answered here, such input never
    reaches the database as a confusing driver error. A byte that is not UTF-8 would be read
    as U+FFFD (the server's and Starlette's decoding): a name nobody sent, answered as missing.
    JSON bodies are checked by the schemas.
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
        raw_path = scope.get("raw_path") or b""
        if b"%" in raw_path and (
            found := utf8_error(["path"], "the URL path", raw_path, raw_path.decode("latin-1"))
        ):
            errors.append(found)
        query = scope.get("query_string", b"").decode("latin-1")
        if "%00" in query or "\x00" in query:
            for name, value in parse_qsl(query, keep_blank_values=True):
                if "\x00" in name or "\x00" in value:
                    label = name.replace("\x00", "\\u0000")
                    what = f"query parameter {label!r}"
                    errors.append(nul_error(["query", label], what, value))
        if "%" in query:
            errors += NulGuard._query_utf8(query)
        return errors

    @staticmethod
    def _query_utf8(query: str) -> list[dict[str, Any]]:
        """The query parameters whose name or value has escapes that are not UTF-8 (each
        named as Starlette reads it; the value shown as sent)."""
        errors = []
        for pair in query.split("&"):
            name, _, value = pair.partition("=")
            label = unquote_plus(name)
            for part in (name, value):
                raw = part.replace("+", " ").encode("latin-1")
                found = b"%" in raw and utf8_error(
                    ["query", label], f"query parameter {label!r}", raw, value
                )
                if found:
                    errors.append(found)
                    break
        return errors
