"""Admin sessions and CSRF: a signed session cookie (HMAC-SHA256, per-process secret) holding
the operator's name, an expiry and the session's CSRF token; form parsing with limits.

The cookie is HttpOnly, SameSite=Strict and scoped to ``/admin``. Every state-changing request
is a POST that must carry the session's CSRF token (hidden form field ``csrf_token`` or header
``X-CSRF-Token``), compared in constant time; a cross-site ``Origin`` is refused as well.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from fastapi import Request

COOKIE = "syncbus_admin"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SESSION_SECONDS = 12 * 3600
MAX_NAME = 60
# A mass action on selected tasks takes at most this many ids (more: act on a filter).
MAX_SELECTED = 5_000
MAX_FORM_FIELDS = MAX_SELECTED + 50
MAX_SIGNIN_FIELDS = 20


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Session:
    """A signed-in operator (``name`` is what they typed, for the event log)."""

    name: str
    csrf: str
    expires: int


SECRET_ENV = "SYNCBUS_SESSION_SECRET"


class SessionSigner:
    """Issues and verifies session cookie values: ``base64(json).base64(hmac)``."""

    def __init__(self, secret: bytes | None = None, lifetime: int = SESSION_SECONDS) -> None:
        # Shared by every process of one service (``serve --processes``, or processes behind
        # one address) when SYNCBUS_SESSION_SECRET is set; else made per process.
        shared = os.environ.get(SECRET_ENV, "").strip()
        self._secret = secret or (shared.encode() if shared else secrets.token_bytes(32))
        self.lifetime = lifetime

    def _mac(self, data: str) -> str:
        return _b64(hmac.new(self._secret, data.encode("ascii"), hashlib.sha256).digest())

    def sign(self, payload: dict[str, object]) -> str:
        data = _b64(json.dumps(payload, separators=(",", ":")).encode())
        return f"{data}.{self._mac(data)}"

    def unsign(self, value: str | None) -> dict[str, object] | None:
        if not value or value.count(".") != 1:
            return None
        data, mac = value.split(".")
        if not hmac.compare_digest(mac.encode("ascii", "replace"), self._mac(data).encode()):
            return None
        try:
            payload = json.loads(_unb64(data))
        except ValueError:
            return None
        return payload if isinstance(payload, dict) else None

    def issue(self, name: str) -> tuple[Session, str]:
        session = Session(
            name=(name.strip() or "admin")[:MAX_NAME],
            csrf=secrets.token_urlsafe(32),
            expires=int(time.time()) + self.lifetime,
        )
        value = self.sign({"n": session.name, "c": session.csrf, "e": session.expires})
        return session, value

    def read(self, value: str | None) -> Session | None:
        payload = self.unsign(value)
        if payload is None:
            return None
        name, csrf, expires = payload.get("n"), payload.get("c"), payload.get("e")
        if not (isinstance(name, str) and isinstance(csrf, str) and isinstance(expires, int)):
            return None
        if expires < time.time():
            return None
        return Session(name, csrf, expires)


def token_matches(given: str, token: str) -> bool:
    return secrets.compare_digest(given.encode(), token.encode())


def csrf_matches(given: str | None, session: Session) -> bool:
    return bool(given) and secrets.compare_digest(str(given).encode(), session.csrf.encode())


def same_origin(request: Request) -> bool:
    """False for a request a browser marks as coming from another site."""
    if request.headers.get("sec-fetch-site") == "cross-site":
        return False
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin != "null"
    host = request.headers.get("host", "")
    return urlsplit(origin).netloc == host


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


class BadForm(Exception):
    """A form the admin's pages never send (400, or 422 for a value no field may hold)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def parse_form(body: bytes, max_fields: int = MAX_FORM_FIELDS) -> dict[str, list[str]]:
    """An ``application/x-www-form-urlencoded`` body (no multipart: the admin never uploads).

    The body's size is bounded by the service; here the number of fields is (a form of
    100,000 empty fields is small but costly to parse), and text a database cannot store."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadForm("the form is not UTF-8 text") from exc
    try:
        fields = parse_qs(text, keep_blank_values=True, max_num_fields=max_fields)
    except ValueError as exc:
        raise BadForm(
            f"the form has more than {max_fields} fields: select at most {MAX_SELECTED} tasks "
            "at a time, or act on all tasks matching a filter"
        ) from exc
    for name, values in fields.items():
        if "\x00" in name or any("\x00" in value for value in values):
            shown = name.replace("\x00", "\\u0000")
            raise BadForm(f"form field {shown!r} must not contain a NUL character", 422)
    return fields


def safe_next(value: str | None) -> str:
    """Only paths inside the admin are followed after sign-in (no open redirect)."""
    if value and value.startswith("/admin/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/admin/"
