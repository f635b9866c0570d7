"""Who is calling, and may they: the client address (with an explicit trusted-proxy list), a
throttle on failed authentications per client, and the bearer-token check as ASGI middleware.

The check runs before routing and before the body is read, so an unauthenticated request gets
401 (or 429) whatever its body, and ``/openapi.json`` and ``/docs`` are covered like the API.
"""

from __future__ import annotations

import ipaddress
import math
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from syncbus.errors import ConfigurationError
from syncbus.service.limits import send_json

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# Routes answered without the bearer token: probes, and the admin UI (it has its own sign-in).
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
ADMIN_PREFIX = "/admin"


class FailureThrottle:
    """At most ``limit`` failed authentications per client in ``window`` seconds.

    Only failures are limited: a correct token always passes, so an attacker guessing from
    the operator's address cannot lock the operator out. Memory is bounded: at most
    ``max_clients`` addresses are tracked (the least recently failing are forgotten first).
    """

    def __init__(self, limit: int = 10, window: float = 300.0, max_clients: int = 10_000) -> None:
        self.limit = limit
        self.window = window
        self.max_clients = max_clients
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> deque[float] | None:
        failures = self._failures.get(client)
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        return failures

    def retry_after(self, client: str) -> int:
        """Seconds until ``client`` may try again; 0 when it may try now."""
        with self._lock:
            now = time.monotonic()
            failures = self._recent(client, now)
            if failures is None or len(failures) < self.limit:
                return 0
            return max(1, math.ceil(failures[0] + self.window - now))

    def failed(self, client: str) -> None:
        with self._lock:
            now = time.monotonic()
            failures = self._recent(client, now)
            if failures is None:
                failures = self._failures[client] = deque(maxlen=self.limit)
            failures.append(now)
            self._failures.move_to_end(client)
            while len(self._failures) > self.max_clients:
                self._failures.popitem(last=False)

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)

    def tracked(self) -> int:
        with self._lock:
            return len(self._failures)


def parse_networks(value: str | Iterable[str] | None) -> tuple[Network, ...]:
    """``"10.0.0.1, 10.1.0.0/16"`` (or a list of such) as networks; a bad entry is an error."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    networks: list[Network] = []
    for item in (i.strip() for i in items):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError as exc:
            raise ConfigurationError(
                f"trusted proxy {item!r} is not an IP address or network (e.g. 10.0.0.5 or "
                "10.0.0.0/8); check SYNCBUS_TRUSTED_PROXIES"
            ) from exc
    return tuple(networks)


def _in(host: str, networks: tuple[Network, ...]) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in net for net in networks)


def _header(scope: Scope, name: bytes) -> list[str]:
    return [v.decode("latin-1") for k, v in scope.get("headers") or [] if k == name]


class TrustedProxies:
    """Honour ``X-Forwarded-For`` / ``X-Forwarded-Proto`` only from the listed proxies.

    The socket peer is the client unless it is a trusted proxy; then the client is the last
    address in ``X-Forwarded-For`` that is not itself a trusted proxy. The scope's ``client``
    and ``scheme`` are rewritten, so the rest of the app simply reads ``request.client``.
    """

    def __init__(self, app: ASGIApp, networks: tuple[Network, ...]) -> None:
        self.app = app
        self.networks = networks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        peer = scope.get("client")
        if scope["type"] == "http" and self.networks and peer and _in(peer[0], self.networks):
            client = self._forwarded_client(scope)
            if client:
                scope["client"] = (client, 0)
            proto = [p.strip() for p in _header(scope, b"x-forwarded-proto")]
            if proto and proto[-1] in ("http", "https"):
                scope["scheme"] = proto[-1]
        await self.app(scope, receive, send)

    def _forwarded_client(self, scope: Scope) -> str | None:
        hops = [h.strip() for v in _header(scope, b"x-forwarded-for") for h in v.split(",")]
        hosts = [h for h in hops if h]
        untrusted = (h for h in reversed(hosts) if not _in(h, self.networks))
        return next(untrusted, hosts[0] if hosts else None)


def client_of(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def needs_token(path: str) -> bool:
    if path in OPEN_PATHS:
        return False
    return not (path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/"))


def bearer_of(scope: Scope) -> str | None:
    """The credentials of ``Authorization: Bearer x``; ``""`` for any other Authorization
    header (it presents something, so it counts as a failure); None without one."""
    values = _header(scope, b"authorization")
    if not values:
        return None
    scheme, _, credentials = values[0].partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else ""


class BearerAuth:
    """Every route but the open ones needs ``Authorization: Bearer <token>``: 401 without it;
    429 with ``Retry-After`` once a client has failed too often (a correct token still passes)."""

    def __init__(self, app: ASGIApp, token: str, throttle: FailureThrottle) -> None:
        self.app = app
        self.token = token.encode()
        self.throttle = throttle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not needs_token(scope["path"]):
            await self.app(scope, receive, send)
            return
        given = bearer_of(scope)
        if given and secrets.compare_digest(given.encode(), self.token):
            await self.app(scope, receive, send)
            return
        client = client_of(scope)
        wait = self.throttle.retry_after(client) if given is not None else 0
        if wait:
            detail = f"too many wrong tokens from {client}: try again in {wait} s"
            await send_json(send, 429, {"detail": detail}, {"Retry-After": str(wait)})
            return
        if given is not None:  # a request without any token guesses nothing
            self.throttle.failed(client)
        await send_json(
            send, 401, {"detail": "missing or wrong bearer token"}, {"WWW-Authenticate": "Bearer"}
        )
