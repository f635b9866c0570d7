"""Uvicorn, run so that a SIGTERM handled gracefully ends the process with status 0."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

import uvicorn


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
