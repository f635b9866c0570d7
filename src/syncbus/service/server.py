"""Uvicorn, run so that a SIGTERM handled gracefully ends the process with status 0."""

from __future__ import annotations

import contextlib
import errno
import multiprocessing
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from multiprocessing import connection as mp_connection
from typing import Any

import uvicorn

from syncbus.errors import ConfigurationError
from syncbus.service.admin.security import SECRET_ENV
from syncbus.service.metrics import share_across_processes


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


_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
# How often a server process looks whether its parent (``serve --processes``) is still there.
_PARENT_CHECK_S = 0.5


def port_in_use(host: str, port: int, exc: OSError | None = None) -> ConfigurationError | None:
    """The error to show when ``host:port`` cannot be listened on: another process does, or
    ``host`` is no address of this machine (None when it is free, or ``exc`` is about
    something else)."""
    if exc is None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as bind_error:
                exc = bind_error
    if isinstance(exc, socket.gaierror) or (
        exc is not None and exc.errno in (errno.EADDRNOTAVAIL, errno.EINVAL)
    ):
        # EINVAL: an address the kernel cannot bind as given, such as a link-local IPv6
        # address without its interface.
        scope = (
            f" (a link-local address needs its interface: {host}%eth0)"
            if host.lower().startswith("fe80:") and "%" not in host
            else ""
        )
        return ConfigurationError(
            f"cannot listen on {host!r}: {exc.strerror or exc}{scope}; --host takes an address "
            "of this machine (127.0.0.1, 0.0.0.0 for all, ::1, ...) or a name that resolves to one"
        )
    if exc is not None and exc.errno == errno.EACCES:
        return ConfigurationError(
            f"cannot listen on port {port} of {host}: {exc.strerror}; ports below 1024 need "
            "privileges: choose a port of 1024 or more with --port, behind a reverse proxy"
        )
    if exc is None or exc.errno != errno.EADDRINUSE:
        return None
    return ConfigurationError(
        f"port {port} on {host} is in use by another process (another syncbus serve, or "
        "server processes left behind by one): stop it, or choose another port with --port"
    )


def _listening(host: str, port: int) -> socket.socket:
    """The socket every server process accepts on (a port in use: a one-line error)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        taken = port_in_use(host, port, exc)
        if taken is not None:
            raise taken from exc
        raise
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


METRICS_PREFIX = "syncbus-metrics-"  # + the serving process's pid + "-" + random


def sweep_metrics_dirs(where: str | None = None) -> list[str]:
    """Remove the metrics directories that killed services left behind (SIGKILL gives them
    no chance to clean up): this user's, named after a process that no longer runs. The
    directories removed."""
    base = where or tempfile.gettempdir()
    gone: list[str] = []
    try:
        names = os.listdir(base)
    except OSError:
        return gone
    for name in names:
        pid_text = name.removeprefix(METRICS_PREFIX).split("-", 1)[0]
        if not name.startswith(METRICS_PREFIX) or not pid_text.isdigit():
            continue
        path = os.path.join(base, name)
        try:
            if os.stat(path).st_uid != os.getuid() or _alive(int(pid_text)):
                continue
        except OSError:
            continue
        shutil.rmtree(path, ignore_errors=True)
        gone.append(path)
    return gone


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's: alive
        return True
    return True


def serve_processes(
    processes: int, host: str, port: int, build: Callable[[], tuple[Any, Callable[[], None]]]
) -> int:
    """Run ``processes`` server processes on one listening socket (the kernel spreads the
    connections over them). ``build`` runs in each process after the fork: it opens its own
    database connections and returns the ASGI app and what to close at the end. A process
    that dies (killed, crashed) is replaced, and said so on stderr; one that keeps dying
    within seconds of its start ends the service. /metrics in any process counts every
    process's work (``metrics.share_across_processes``). SIGTERM or Ctrl-C is passed to every
    process, which ends gracefully; the exit status is the worst of the last processes' (0
    when all ended well; a process replaced on the way does not count), 1 when they kept
    dying at start."""
    # One admin session secret for all of them: a connection may reach any process.
    os.environ.setdefault(SECRET_ENV, secrets.token_hex(32))
    sock = _listening(host, port)
    sweep_metrics_dirs()
    counters = tempfile.mkdtemp(prefix=f"{METRICS_PREFIX}{os.getpid()}-")
    share_across_processes(counters)
    ctx = multiprocessing.get_context("fork")
    stopping = False

    def start(i: int) -> Any:
        child = ctx.Process(target=_child, args=(sock, build), name=f"syncbus-serve-{i}")
        # Forked with SIGTERM and SIGINT held back: until the child has handlers of its own,
        # one arriving would run this process's handler there (``_child`` lets them in).
        held = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            child.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
        return child

    children = [start(i) for i in range(processes)]
    started = [time.monotonic()] * processes
    quick_deaths = 0

    def forward(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.pid is not None and child.is_alive():
                os.kill(child.pid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    worst = 0
    try:
        while any(child.is_alive() for child in children):
            mp_connection.wait([c.sentinel for c in children if c.is_alive()], timeout=1.0)
            for i, child in enumerate(children):
                if child.is_alive() or child.exitcode is None or stopping:
                    continue
                child.join()
                lived = time.monotonic() - started[i]
                quick_deaths = quick_deaths + 1 if lived < _QUICK else 0
                if quick_deaths > _QUICK_DEATHS:
                    _say(
                        f"server processes keep dying at start (the last, pid {child.pid}, "
                        f"with status {child.exitcode}); stopping"
                    )
                    forward(signal.SIGTERM, None)
                    worst = 1
                    break
                _say(
                    f"server process {i} (pid {child.pid}) ended with status "
                    f"{child.exitcode} after {lived:.0f} s; starting another"
                )
                children[i], started[i] = start(i), time.monotonic()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for child in children:
            child.join()
        sock.close()
        shutil.rmtree(counters, ignore_errors=True)
    return int(max(worst, *(abs(child.exitcode or 0) for child in children)))


# A server process that dies this soon after its start, more than this many times in a row,
# ends the service instead of being started again and again.
_QUICK, _QUICK_DEATHS = 5.0, 3


def _child(sock: socket.socket, build: Callable[[], tuple[Any, Callable[[], None]]]) -> None:
    # Forked from a parent whose handlers forward signals to its children: this process has
    # handlers of its own. A SIGTERM while it is still starting (a replacement, say) ends it
    # as gracefully as one that comes later.
    server: GracefulServer | None = None
    asked = False

    def on_signal(_signum: int, _frame: Any) -> None:
        nonlocal asked
        asked = True
        if server is not None:
            server.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)  # held back since the fork
    _stop_with_parent(on_signal)
    app, close = build()
    try:
        server = GracefulServer(uvicorn.Config(app, log_level="info", lifespan="on"))
        if not asked:
            server.run(sockets=[sock])
    finally:
        close()


def _stop_with_parent(stop: Callable[[int, Any], None]) -> None:
    """End this server process gracefully when its parent is gone (killed with SIGKILL, say):
    otherwise it would serve on, orphaned, holding the port, and a new ``serve`` could not
    start."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(_PARENT_CHECK_S)
        _say(f"the parent process (pid {parent}) is gone; server process {os.getpid()} stops")
        stop(signal.SIGTERM, None)

    threading.Thread(target=watch, name="syncbus-parent-watch", daemon=True).start()


def _say(message: str) -> None:
    """A line on stderr, as the processes of ``serve`` report what happens to them."""
    print(f"syncbus serve: {message}", file=sys.stderr, flush=True)
