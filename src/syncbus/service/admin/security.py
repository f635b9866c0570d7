"""Admin sessions and CSRF: a signed session cookie (HMAC-SHA256, per-process secret) holding
the operator's name, an expiry and the session's CSRF token; sign-in throttling.

The cookie is HttpOnly, SameSite=Strict and scoped to ``/admin``. Every state-changing request
is a POST that must carry the session's CSRF token (hidden form field ``csrf_token`` or header
``X-CSRF-Token``), compared in constant time; a cross-site ``Origin`` is refused as well.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from fastapi import Request

COOKIE = "syncbus_admin"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SESSION_SECONDS = 12 * 3600
MAX_NAME = 60


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


class SessionSigner:
    """Issues and verifies session cookie values: ``base64(json).base64(hmac)``."""

    def __init__(self, secret: bytes | None = None, lifetime: int = SESSION_SECONDS) -> None:
        self._secret = secret or secrets.token_bytes(32)
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


class SignInThrottle:
    """At most ``limit`` wrong tokens per client address in ``window`` seconds."""

    def __init__(self, limit: int = 10, window: float = 300.0) -> None:
        self.limit = limit
        self.window = window
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> deque[float]:
        failures = self._failures.setdefault(client, deque())
        while failures and failures[0] < now - self.window:
            failures.popleft()
        return failures

    def blocked(self, client: str) -> bool:
        with self._lock:
            return len(self._recent(client, time.monotonic())) >= self.limit

    def failed(self, client: str) -> None:
        with self._lock:
            now = time.monotonic()
            self._recent(client, now).append(now)
            if len(self._failures) > 10_000:  # forget addresses quiet for a whole window
                for key in [k for k, v in self._failures.items() if v[-1] < now - self.window]:
                    del self._failures[key]

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)


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


def parse_form(body: bytes) -> dict[str, list[str]]:
    """An ``application/x-www-form-urlencoded`` body (no multipart: the admin never uploads)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return {}
    return parse_qs(text, keep_blank_values=True, max_num_fields=10_000)


def safe_next(value: str | None) -> str:
    """Only paths inside the admin are followed after sign-in (no open redirect)."""
    if value and value.startswith("/admin/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/admin/"
