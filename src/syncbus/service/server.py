"""Uvicorn, run so that a SIGTERM handled gracefully ends the process with status 0."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import secrets
import signal
import socket
from collections.abc import Callable, Iterator
from typing import Any

import uvicorn

from syncbus.service.admin.security import SECRET_ENV


class GracefulServer(uvicorn.Server):
    """Uvicorn re-raises SIGTERM after its graceful shutdown (exit status -15); service
    managers read that as a failure. Here the shutdown is the end: the process exits with 0.

    Uvicorn's own proxy-header handling is switched off: by default it believes
    ``X-Forwarded-For`` from any loopback peer, so a local caller could pose as any address
    (and dodge the throttle of wrong tokens). The app honours those headers itself, from the
    proxies listed in ``SYNCBUS_TRUSTED_PROXIES`` only."""

    def __init__(self, config: uvicorn.Config) -> None:
        config.proxy_headers = False
        super().__init__(config)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        previous = {
            sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def serve_processes(
    processes: int, host: str, port: int, build: Callable[[], tuple[Any, Callable[[], None]]]
) -> int:
    """Run ``processes`` server processes on one listening socket (the kernel spreads the
    connections over them). ``build`` runs in each process after the fork: it opens its own
    database connections and returns the ASGI app and what to close at the end. SIGTERM or
    Ctrl-C is passed to every process, which ends gracefully; the exit status is the worst of
    theirs (0 when all ended well)."""
    # One admin session secret for all of them: a connection may reach any process.
    os.environ.setdefault(SECRET_ENV, secrets.token_hex(32))
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    ctx = multiprocessing.get_context("fork")
    children = [
        ctx.Process(target=_child, args=(sock, build), name=f"syncbus-serve-{i}")
        for i in range(processes)
    ]
    for child in children:
        child.start()

    def forward(signum: int, _frame: Any) -> None:
        for child in children:
            if child.pid is not None and child.is_alive():
                os.kill(child.pid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for child in children:
            child.join()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
    return max(abs(child.exitcode or 0) for child in children)


def _child(sock: socket.socket, build: Callable[[], tuple[Any, Callable[[], None]]]) -> None:
    app, close = build()
    server = GracefulServer(uvicorn.Config(app, log_level="info", lifespan="on"))
    try:
        server.run(sockets=[sock])
    finally:
        close()
