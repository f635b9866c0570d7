"""The latency profiles: a task's time from its POST to ``syncbus serve`` until it is applied.

``syncbus serve`` runs in a subprocess on the scratch database, as in production: its own
workers, the scheduler off (``--scheduler-interval 0``), so only the wake-up that logging a task
sends starts a run. The bench's connector is registered by class path (``LatencyConnector``)
and the setup records are applied before anything is timed.

Then, one task at a time, the bench POSTs the next task of the workload to
``/api/connectors/{name}/tasks`` and polls ``bus.get_task_data(id)`` every 0.5 ms until the task
has left the queue: the transaction that applies a task also removes it, so a task gone from the
queue is applied and committed. Its latency is the time from the start of the POST to that poll.
The bench pauses 20 ms between tasks, so each task meets idle workers. The gates afterwards:
every task was seen applied, none failed, none is left queued, and the content equals the
reference model of the tasks sent. No in-run baseline: the figures are times, not ratios.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import httpx
from rich.progress import Progress

import syncbus
from syncbus.bench.connector import LatencyConnector
from syncbus.bench.environment import Scratch, durability, machine
from syncbus.bench.gate import BenchGateError, Gates
from syncbus.bench.http import task_body
from syncbus.bench.prepare import BenchHooks, prepare_bus
from syncbus.bench.reference import ReferenceModel
from syncbus.bench.report import BenchReport, Timing
from syncbus.bench.workload import (
    CONNECTOR_NAME,
    LATENCY_KEYS,
    WORKLOAD_VERSION,
    BenchTask,
    Profile,
    Workload,
)
from syncbus.bus import IntegrationBus
from syncbus.errors import ConfigurationError

PHASE = "latency"
HOST = "127.0.0.1"
POLL_SECONDS = 0.0005
ERROR_CHECK_POLLS = 200
PAUSE_SECONDS = 0.02
APPLY_TIMEOUT_SECONDS = 60.0
START_SECONDS = 30.0
STOP_SECONDS = 30.0


def run_latency(
    profile: Profile, scratch: Scratch, progress: Progress, batch_size: int, hooks: BenchHooks
) -> BenchReport:
    if profile.keys != LATENCY_KEYS:  # the server's LatencyConnector builds its own workload
        raise ConfigurationError(f"a latency profile has a key space of {LATENCY_KEYS}")
    workload = Workload(profile)
    bus = IntegrationBus(scratch.url, batch_size=batch_size)
    gates = Gates(bus.registry, hooks.before_gate)
    report = BenchReport(
        profile.name, scratch.backend, WORKLOAD_VERSION, batch_size, scratch.name, {}, {}
    )
    report.gates = gates.passed
    n = profile.tasks
    try:
        prepare_bus(bus, workload, gates, LatencyConnector())
        report.machine, report.durability = machine(bus.engine), durability(bus.engine)
        bar = progress.add_task(f"[{scratch.backend}] POST to applied, one at a time", total=n)
        token = secrets.token_urlsafe(24)
        with _serve(scratch.url, token, batch_size) as base, _client(base, token) as client:

            def advance(done: int) -> None:
                progress.update(bar, completed=done)

            with hooks.wrap(PHASE):
                latencies = _measure(bus, client, workload.tasks(n), advance)
        gates.counts(PHASE, logged=n, applied=len(latencies), failed=0, queued=bus.queue_size())
        gates.content(PHASE, bus.engine, ReferenceModel.of(workload, n))
    finally:
        bus.close()
    timing = Timing("POST to applied", [s * 1000 for s in latencies])
    report.timings.append(timing)
    summary = timing.to_dict()
    for key in ("median_ms", "p95_ms", "p99_ms"):
        report.extra_summary[f"latency-{key.replace('_', '-')}"] = f"{summary[key]:.1f}"
    return report


def _measure(
    bus: IntegrationBus,
    client: httpx.Client,
    tasks: Iterator[BenchTask],
    advance: Callable[[int], None],
) -> list[float]:
    url = f"/api/connectors/{CONNECTOR_NAME}/tasks"
    latencies: list[float] = []
    for task in tasks:
        body = json.dumps(task_body(task)).encode()
        start = time.perf_counter()
        response = client.post(url, content=body)
        if response.status_code != 201:
            detail = f"task {task.seq}: HTTP {response.status_code} {response.text[:300]}"
            raise BenchGateError("log", PHASE, detail)
        _wait_applied(bus, int(response.json()["task_id"]))
        latencies.append(time.perf_counter() - start)
        advance(len(latencies))
        time.sleep(PAUSE_SECONDS)
    return latencies


def _wait_applied(bus: IntegrationBus, task_id: int) -> None:
    """Poll until the task has left the queue: ``get_task_data`` is one lookup by primary key
    (``get_task`` also reads the task's state, several times the cost, and would set the
    poll's resolution); the state is read every ``ERROR_CHECK_POLLS`` polls, for an error."""
    deadline = time.perf_counter() + APPLY_TIMEOUT_SECONDS
    polls = 0
    while bus.get_task_data(task_id) is not None:
        polls += 1
        if polls % ERROR_CHECK_POLLS == 0:
            info = bus.get_task(task_id)
            if info is not None and info.error_message:
                detail = f"task {task_id} failed: {info.error_message}"
                raise BenchGateError("counts", PHASE, detail)
        if time.perf_counter() > deadline:
            detail = f"task {task_id} not applied within {APPLY_TIMEOUT_SECONDS:.0f} s"
            raise BenchGateError("latency", PHASE, detail)
        time.sleep(POLL_SECONDS)


@contextmanager
def _client(base: str, token: str) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    with httpx.Client(base_url=base, headers=headers, timeout=60.0, trust_env=False) as client:
        yield client


@contextmanager
def _serve(url: str, token: str, batch_size: int) -> Iterator[str]:
    """``syncbus serve`` on ``url`` in a subprocess (the syncbus this bench runs, whatever
    the environment's path says); yields its base URL; stops it on the way out."""
    port = _free_port()
    command = [sys.executable, "-m", "syncbus.cli", "serve", "--db", url, "--host", HOST]
    command += ["--port", str(port), "--scheduler-interval", "0", "--batch-size", str(batch_size)]
    source = str(Path(syncbus.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "SYNCBUS_API_TOKEN": token, "PYTHONPATH": path}
    with tempfile.TemporaryFile() as output:
        server = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
        try:
            base = f"http://{HOST}:{port}"
            _wait_started(server, base, output)
            yield base
        finally:
            server.terminate()
            try:
                server.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _wait_started(server: subprocess.Popen[bytes], base: str, output: IO[bytes]) -> None:
    deadline = time.monotonic() + START_SECONDS
    while True:
        try:
            if httpx.get(f"{base}/healthz", timeout=1, trust_env=False).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            output.seek(0)
            said = output.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"syncbus serve did not start ({server.returncode}): {said}")
        time.sleep(0.05)
