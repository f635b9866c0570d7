"""The load generator of ``log-http-concurrent``: a process of its own with N keep-alive clients.

Run as ``python -m syncbus.bench.httpload`` by ``http.log_concurrent``. It reads one JSON line
(``host``, ``port``, ``path``, ``token``, ``clients``) and then one JSON body per line from stdin,
until EOF. It opens ``clients`` connections, then each of them POSTs the next body not yet sent
and reads its response before sending another, until all are sent. It prints ``done N`` lines
while it runs and one JSON line at the end: ``seconds`` (from the first request sent to the
last response read; the connections are opened before), ``ids`` (the ``task_id`` of each
body, in input order, ``None`` where none came back), ``error`` (the first failure, or None)
and ``cpu_seconds`` (this process's CPU time over the same span).

Why a separate process: the server's process has one interpreter lock; a client in it would
take turns with the server's threads. Why not httpx: the load generator shares the machine's
CPUs with the server (and, on PostgreSQL, with the database). A plain HTTP/1.1 client on
asyncio streams, every request built before the clock starts, used about 0.07 ms of CPU per
request here, where 32 threads of ``httpx.Client`` used 0.52 and 0.65 ms (two runs each of
3,000 requests, SQLite, the same server, measured side by side): time the server does not get
on a 2-CPU machine.

It speaks just what the route answers: ``HTTP/1.1`` with a ``content-length``; anything else
(another status, a chunked or closed response) is a failure.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from typing import Any

PROGRESS_EVERY = 500


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Failure(Exception):
    pass


def _requests(config: dict[str, Any], bodies: list[bytes]) -> list[bytes]:
    head = (
        f"POST {config['path']} HTTP/1.1\r\n"
        f"host: {config['host']}:{config['port']}\r\n"
        f"authorization: Bearer {config['token']}\r\n"
        "content-type: application/json\r\n"
        "content-length: "
    ).encode()
    return [head + str(len(body)).encode() + b"\r\n\r\n" + body for body in bodies]


async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ", 2)[1])
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length is None:
        raise _Failure(f"HTTP {status} without a content-length: {head[:300]!r}")
    return status, await reader.readexactly(length)


async def _run(config: dict[str, Any], bodies: list[bytes]) -> dict[str, Any]:
    requests = _requests(config, bodies)
    ids: list[int | None] = [None] * len(requests)
    pending = iter(range(len(requests)))
    done = 0
    failures: list[str] = []

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal done
        for i in pending:  # one iterator shared by every client: each takes the next body
            if failures:
                return
            writer.write(requests[i])
            try:
                status, body = await _response(reader)
            except (OSError, ValueError, asyncio.IncompleteReadError, _Failure) as exc:
                failures.append(f"task {i}: {type(exc).__name__}: {exc}")
                return
            task_id = json.loads(body).get("task_id") if status == 201 else None
            if not isinstance(task_id, int):
                text = body[:300].decode(errors="replace")
                failures.append(f"task {i}: HTTP {status} {text}")
                return
            ids[i] = task_id
            done += 1
            if done % PROGRESS_EVERY == 0:
                print(f"done {done}", flush=True)

    host, port = config["host"], int(config["port"])
    connections = [await asyncio.open_connection(host, port) for _ in range(config["clients"])]
    cpu = _cpu_seconds()
    start = time.perf_counter()
    await asyncio.gather(*(client(r, w) for r, w in connections))
    seconds = time.perf_counter() - start
    cpu = _cpu_seconds() - cpu
    for _, writer in connections:
        writer.close()
    error = failures[0] if failures else None
    return {"seconds": seconds, "ids": ids, "error": error, "cpu_seconds": cpu}


def main() -> None:
    config = json.loads(sys.stdin.buffer.readline())
    bodies = [line.rstrip(b"\n") for line in sys.stdin.buffer if line.strip()]
    result = asyncio.run(_run(config, bodies))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
