"""Serve the real ASGI app to tests: in process (most tests), or over a real socket (a few).

``asgi_client`` drives the app through ``httpx.ASGITransport`` on an event loop of its own, with
the app's lifespan run around it: no socket, no port. ``running`` serves it under uvicorn on a
socket bound before uvicorn starts, so no other process can take the port in between.
``spawn_listening`` starts a ``syncbus serve`` subprocess, which binds the port itself: it
retries with another port when that one was taken meanwhile.
"""

from __future__ import annotations

import errno
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import httpx
import uvicorn
from anyio.from_thread import BlockingPortal, start_blocking_portal
from fastapi import FastAPI

from .helpers import healthz, wait_for

CLIENT = ("127.0.0.1", 50000)  # the peer the app sees: loopback, as under uvicorn
BASE_URL = "http://127.0.0.1"


class _PortalTransport(httpx.BaseTransport):
    """A synchronous transport that runs each request through ``httpx.ASGITransport`` on the
    portal's event loop (the app's sync endpoints run in that loop's worker threads)."""

    def __init__(self, portal: BlockingPortal, app: FastAPI) -> None:
        self._portal = portal
        self._asgi = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=CLIENT)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        copy = httpx.Request(request.method, request.url, headers=request.headers, content=body)

        timeout = request.extensions.get("timeout", {}).get("read")

        async def send() -> httpx.Response:
            with anyio.fail_after(timeout):
                response = await self._asgi.handle_async_request(copy)
                content = await response.aread()
            return httpx.Response(response.status_code, headers=response.headers, content=content)

        try:
            return self._portal.call(send)
        except TimeoutError as exc:
            raise httpx.ReadTimeout(f"no answer within {timeout} s", request=request) from exc


@contextmanager
def asgi_client(app: FastAPI, **client_kw: Any) -> Iterator[httpx.Client]:
    """An ``httpx.Client`` on ``app`` in process, its lifespan (dispatcher included) running
    for as long as the client is open."""
    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(app.router.lifespan_context(app)),
        httpx.Client(
            transport=_PortalTransport(portal, app), base_url=BASE_URL, **client_kw
        ) as client,
    ):
        yield client


def free_port() -> int:
    """A port nothing listened on a moment ago (another process may take it: see
    ``spawn_listening``)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def running(app: FastAPI) -> Iterator[str]:
    """Serve ``app`` over real HTTP; yields its base URL; shuts down (lifespan included).

    The socket is bound (to a port the system picks) before uvicorn starts and handed to it.
    """
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    # No proxy headers, as `syncbus serve` runs it (the app decides whom to trust).
    config = uvicorn.Config(app, log_level="warning", lifespan="on", proxy_headers=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: healthz(url) or not thread.is_alive())
        assert thread.is_alive(), "uvicorn stopped while starting"
        yield url
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


def spawn_listening(
    command: Callable[[int], list[str]], attempts: int = 5, **popen_kw: Any
) -> tuple[subprocess.Popen[str], str]:
    """Start ``command(port)``, a process that serves HTTP on 127.0.0.1:port, and wait until it
    answers /healthz; its process and base URL. When another process took the port between
    choosing and binding it, the server exits saying so: start again on another port."""
    popen_kw = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True, **popen_kw}
    for _ in range(attempts):
        port = free_port()
        proc = subprocess.Popen(command(port), **popen_kw)
        if _started(proc, f"http://127.0.0.1:{port}"):
            return proc, f"http://127.0.0.1:{port}"
        out, err = proc.communicate()
        if not port_taken(f"{out}{err}"):
            raise AssertionError(f"the server exited with {proc.returncode}: {out}{err}")
    raise AssertionError(f"no free port in {attempts} attempts")


def _started(proc: subprocess.Popen[str], url: str) -> bool:
    """Wait until ``proc`` answers on ``url`` (True) or exits (False)."""
    wait_for(lambda: proc.poll() is not None or healthz(url), timeout=60)
    return proc.poll() is None


def port_taken(output: str) -> bool:
    """The output of a server that could not bind its port: another process holds it."""
    return f"[Errno {errno.EADDRINUSE}]" in output or "address already in use" in output.lower()
