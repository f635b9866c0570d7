"""The server stack ``syncbus serve`` runs on: uvicorn's defaults ("auto") pick its C HTTP parser
(httptools) and uvloop when they are installed, and they are dependencies of syncbus: without
them uvicorn falls back to h11 and asyncio's loop (docs/performance.md, The HTTP logging paths)."""

from __future__ import annotations

import uvicorn


async def _app(scope: object, receive: object, send: object) -> None:  # never called
    raise AssertionError("not served")


def test_uvicorn_defaults_resolve_to_httptools() -> None:
    config = uvicorn.Config(_app)  # as ``syncbus serve`` and the bench build theirs
    config.load()
    assert config.http_protocol_class.__name__ == "HttpToolsProtocol"


def test_uvicorn_defaults_resolve_to_uvloop() -> None:
    import uvloop

    config = uvicorn.Config(_app)
    factory = config.get_loop_factory()
    assert factory is not None
    loop = factory()
    try:
        assert isinstance(loop, uvloop.Loop), type(loop)
    finally:
        loop.close()
