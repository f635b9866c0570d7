"""The HTTP logging paths: the real service app, over real HTTP, on the bench's own bus.

``serve(bus)`` runs ``syncbus.service.app.create_app(bus)`` under uvicorn on 127.0.0.1 (a port
the OS picks) and yields one keep-alive ``httpx.Client`` to it; ``log_single`` POSTs the tasks
one by one to ``/api/connectors/{name}/tasks``, ``log_batch`` in batches to
``.../tasks/batch``. Each raises :class:`BenchGateError` on the first response that is not 201
or whose ids do not strictly increase.

``log_concurrent`` POSTs the tasks one per request too, but from 32 keep-alive connections at
once, sent by a load generator in a process of its own (``httpload``: the client must not take
turns with the server for this process's interpreter lock). Requests that reach the service
together share one transaction and one commit (group commit, ``syncbus.service.gather``). Their
ids interleave across the clients, so the gate asks for a 201 and a new id for every request
(and, in the runner, as many queued tasks as sent), not for increasing ids.

What the timer covers: the request (built from a pre-encoded JSON body), the round trip over the
loopback, the whole service (ASGI stack, body limit, bearer-token check, pydantic validation,
FastAPI's thread pool, ``bus.log_tasks``, the commit) and reading the response. The JSON bodies
are encoded outside the timer, as the other paths generate the workload outside it.

The app is the production one with processing switched off (``run_dispatcher=False``: nothing
must apply the logged tasks), a random bearer token (so a ``SYNCBUS_API_TOKEN`` in the
environment cannot change the result) and uvicorn's access log off (it would write a line per
request into the bench's console). uvicorn runs with its defaults otherwise, like
``syncbus serve``.

Why a thread of the bench's process, not a subprocess: the app then runs on the bench's own
``IntegrationBus``, so its SQL statements are counted like every other path's (SQL stmts/task),
and nothing has to rebuild the bench connector in another interpreter. It does not distort the
figure: the client sends one request and blocks on the socket (releasing the GIL) until the
response is back, so client and server never compete for the interpreter; the work is strictly
sequential either way. Measured side by side (2 CPUs shared with another bench, 2,000 tasks per
path, thread and subprocess alternating, two rounds each), the same app under uvicorn in a
subprocess was no faster: SQLite single 230 and 298 tasks/s in a thread vs 276 and 246 in a
subprocess, batches of 200 2,836 and 2,517 vs 2,704 and 2,586; PostgreSQL single 233 and 234
vs 233 and 230, batches 1,412 and 1,291 vs 1,390 and 1,428.

The listening socket is made here (so no other process can take the port between choosing and
binding it) with ``IPPROTO_TCP`` as its protocol: asyncio sets ``TCP_NODELAY`` only on
connections of sockets whose protocol says TCP, and uvicorn writes a response's headers and body
in two sends, so with a protocol of 0 every response waited ~40 ms for a delayed ACK (20
requests/s, whatever the service did). ``syncbus serve`` lets uvicorn bind, which sets it right.

A profiler started by the bench (``--pyinstrument-phase log-http-single``) samples the bench's
own thread only, i.e. the client waiting on its socket (for ``log-http-concurrent``: waiting for
the load generator), not the server's threads.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn

import syncbus
from syncbus.bench.gate import BenchGateError
from syncbus.bench.prepare import chunks
from syncbus.bench.workload import BenchTask
from syncbus.bus import IntegrationBus
from syncbus.service.app import create_app

HOST = "127.0.0.1"
THREAD_NAME = "syncbus-bench-http"
MAX_BATCH = 10_000  # the batch endpoint's limit (TaskBatchIn.tasks)
BODY_LIMIT = 64 * 1024 * 1024  # MAX_BATCH tasks of the workload fit easily
START_SECONDS = 30.0
STOP_SECONDS = 30.0
SINGLE_CHUNK = 200  # tasks encoded (and progress shown) per step, outside the timer
LOAD_SECONDS = 600.0  # the concurrent path's load generator must be done by then

Advance = Callable[[int], None]


@dataclass
class HttpLog:
    """What one HTTP phase sent and got back."""

    sent: int = 0
    seconds: float = 0.0
    ids: list[int] = field(default_factory=list)
    client_cpu_seconds: float | None = None  # the load generator's, where it is a process


def task_body(task: BenchTask) -> dict[str, Any]:
    """The JSON body of one task, as an external system sends it (CONTRACT §6)."""
    return {
        "task_type": task.task_type.value,
        "data_type": task.data_type.value,
        "site_name": task.site_name,
        "object": task.obj,
    }


@contextmanager
def serve(bus: IntegrationBus) -> Iterator[httpx.Client]:
    """The app on ``bus``, served on 127.0.0.1 in a background thread; yields a keep-alive
    client to it. The server is always stopped (and its thread joined) on the way out."""
    token = secrets.token_urlsafe(24)
    app = create_app(bus, token, run_dispatcher=False, max_body_bytes=BODY_LIMIT)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    with serve_app(app, headers) as client:
        yield client


@contextmanager
def serve_app(app: Any, headers: dict[str, str] | None = None) -> Iterator[httpx.Client]:
    """``app`` under uvicorn on 127.0.0.1 (a port the OS picks) in a background thread; yields
    a keep-alive client to it that sends ``headers``. The server is always stopped (and its
    thread joined) on the way out."""
    # IPPROTO_TCP, not 0: see the module's docstring (TCP_NODELAY).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.bind((HOST, 0))
        port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            app,
            host=HOST,
            port=port,
            log_config=None,  # leave the process's logging alone
            log_level="warning",
            access_log=False,
            lifespan="on",
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name=THREAD_NAME, daemon=True
        )
        thread.start()
        try:
            _wait_started(server, thread)
            with httpx.Client(
                base_url=f"http://{HOST}:{port}",
                headers=headers,
                timeout=60.0,
                trust_env=False,  # no proxy from the environment: straight to 127.0.0.1
            ) as client:
                yield client
        finally:
            server.should_exit = True
            thread.join(STOP_SECONDS)
            if thread.is_alive():
                server.force_exit = True
                thread.join(STOP_SECONDS)
    finally:
        sock.close()


def _wait_started(server: uvicorn.Server, thread: threading.Thread) -> None:
    deadline = time.monotonic() + START_SECONDS
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the bench's HTTP server stopped while starting")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the bench's HTTP server did not start in {START_SECONDS:.0f} s")
        time.sleep(0.01)


def log_single(
    client: httpx.Client, connector: str, tasks: Iterator[BenchTask], phase: str, advance: Advance
) -> HttpLog:
    """One ``POST /api/connectors/{connector}/tasks`` per task, on one keep-alive connection."""
    url = f"/api/connectors/{connector}/tasks"
    out = HttpLog()
    last = 0
    for chunk in chunks(tasks, SINGLE_CHUNK):
        bodies = [json.dumps(task_body(t)).encode() for t in chunk]
        start = time.perf_counter()
        for task, body in zip(chunk, bodies, strict=True):
            response = client.post(url, content=body)
            if response.status_code != 201:
                raise _refused(phase, f"task {task.seq}", response)
            task_id = response.json().get("task_id")
            if not isinstance(task_id, int) or task_id <= last:
                detail = f"task {task.seq} got id {task_id!r} after id {last}"
                raise BenchGateError("log", phase, detail)
            last = task_id
            out.ids.append(task_id)
        out.seconds += time.perf_counter() - start
        out.sent += len(chunk)
        advance(out.sent)
    return out


def log_batch(
    client: httpx.Client,
    connector: str,
    tasks: Iterator[BenchTask],
    batch_size: int,
    phase: str,
    advance: Advance,
) -> HttpLog:
    """``POST /api/connectors/{connector}/tasks/batch`` with ``batch_size`` tasks per request."""
    if not 1 <= batch_size <= MAX_BATCH:
        raise ValueError(f"an HTTP batch holds 1 to {MAX_BATCH} tasks, not {batch_size}")
    url = f"/api/connectors/{connector}/tasks/batch"
    out = HttpLog()
    last = 0
    per_step = max(1, 1_000 // batch_size)  # batches encoded per step, outside the timer
    for group in chunks(chunks(tasks, batch_size), per_step):
        bodies = [json.dumps({"tasks": [task_body(t) for t in batch]}).encode() for batch in group]
        start = time.perf_counter()
        for batch, body in zip(group, bodies, strict=True):
            response = client.post(url, content=body)
            where = f"the batch of tasks {batch[0].seq}-{batch[-1].seq}"
            if response.status_code != 201:
                raise _refused(phase, where, response)
            ids = response.json().get("task_ids")
            if not isinstance(ids, list) or len(ids) != len(batch):
                got = len(ids) if isinstance(ids, list) else repr(ids)
                raise BenchGateError("log", phase, f"{where}: {got} ids for {len(batch)} tasks")
            for task, task_id in zip(batch, ids, strict=True):
                if not isinstance(task_id, int) or task_id <= last:
                    detail = f"task {task.seq} got id {task_id!r} after id {last}"
                    raise BenchGateError("log", phase, detail)
                last = task_id
            out.ids.extend(ids)
        out.seconds += time.perf_counter() - start
        out.sent += sum(len(batch) for batch in group)
        advance(out.sent)
    return out


def log_concurrent(
    client: httpx.Client,
    connector: str,
    tasks: Iterator[BenchTask],
    clients: int,
    phase: str,
    advance: Advance,
) -> HttpLog:
    """One ``POST /api/connectors/{connector}/tasks`` per task from ``clients`` keep-alive
    connections at once, sent by a process of its own (``httpload``) to the server ``client``
    talks to. Every request must be answered 201 with an id of its own: the ids need not
    increase in the order of the tasks (the clients' requests interleave), but each must be
    new. The JSON bodies are encoded here and the requests built by the load generator
    before its clock starts; the time is its own, from the first request to the last
    response."""
    token = str(client.headers["Authorization"]).removeprefix("Bearer ")
    bodies = [json.dumps(task_body(t)).encode() for t in tasks]
    config = {
        "host": client.base_url.host,
        "port": client.base_url.port,
        "path": f"/api/connectors/{connector}/tasks",
        "token": token,
        "clients": clients,
    }
    stdin = json.dumps(config).encode() + b"\n" + b"".join(body + b"\n" for body in bodies)
    result = _load(stdin, advance)
    if result["error"] is not None:
        raise BenchGateError("log", phase, str(result["error"]))
    ids = result["ids"]
    missing = [i for i, task_id in enumerate(ids) if not isinstance(task_id, int)]
    if len(ids) != len(bodies) or missing:
        detail = f"{len(ids)} answers for {len(bodies)} tasks, no id for tasks {missing[:5]}"
        raise BenchGateError("log", phase, detail)
    if len(set(ids)) != len(ids):
        detail = f"{len(ids) - len(set(ids))} of {len(ids)} answers repeat an id given before"
        raise BenchGateError("log", phase, detail)
    return HttpLog(len(bodies), float(result["seconds"]), ids, float(result["cpu_seconds"]))


def _load(stdin: bytes, advance: Advance) -> dict[str, Any]:
    """Run the load generator on ``stdin``; its result (see ``httpload``)."""
    source = str(Path(syncbus.__file__).resolve().parents[1])  # this bench's syncbus
    path = os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH")) if p)
    command = [sys.executable, "-m", "syncbus.bench.httpload"]
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
            env={**os.environ, "PYTHONPATH": path},
        )
        assert proc.stdin is not None and proc.stdout is not None
        timer = threading.Timer(LOAD_SECONDS, proc.kill)
        timer.start()
        try:
            try:
                proc.stdin.write(stdin)
                proc.stdin.close()
            except BrokenPipeError:
                pass  # it ended early: its status and stderr say why
            result = None
            for line in proc.stdout:
                if line.startswith(b"done "):
                    advance(int(line.split()[1]))
                elif line.strip():
                    result = json.loads(line)
            code = proc.wait()
        finally:
            timer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if code != 0 or result is None:
            errors.seek(0)
            said = errors.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"the HTTP load generator failed ({code}): {said}")
    advance(len(result["ids"]))
    return dict(result)


def _refused(phase: str, what: str, response: httpx.Response) -> BenchGateError:
    detail = f"{what}: HTTP {response.status_code} {response.text[:300]}"
    return BenchGateError("log", phase, detail)
