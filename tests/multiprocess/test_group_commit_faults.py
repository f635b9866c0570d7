"""Group commit over HTTP under faults: an answered 201 means a committed task, whatever happens
next. `syncbus serve` killed (SIGKILL) under load from concurrent clients, and, on PostgreSQL,
the server's sessions ended (``pg_terminate_backend``) under load: every task answered 201 is
in the database and is applied exactly once; no request waits for ever."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import sqlalchemy as sa

from syncbus import IntegrationBus, create_app
from syncbus.store.tables import history_table
from tests.helpers import ROOT, healthz, wait_for
from tests.http_server import running, spawn_listening
from tests.seq import make_bus
from tests.workers import end_other_sessions

pytestmark = pytest.mark.multiprocess

CLIENTS = 16
URL = "/api/connectors/Seq/tasks"


def load(url: str, stop: threading.Event, limit: int = 100_000) -> tuple[list[int], list[int]]:
    """``CLIENTS`` clients POST tasks one per request until ``stop`` (or the server is gone);
    the ids answered 201, and the status of every other answer."""
    acknowledged: list[int] = []
    others: list[int] = []
    counter = iter(range(limit))
    lock = threading.Lock()

    def client() -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            while not stop.is_set():
                with lock:
                    n = next(counter, None)
                if n is None:
                    return
                body = {"task_type": "UpdateObject", "object": {"key": f"k{n % 7}", "n": n}}
                try:
                    r = http.post(URL, json=body)
                except httpx.TransportError:
                    return  # the server is gone
                with lock:
                    if r.status_code == 201:
                        acknowledged.append(int(r.json()["task_id"]))
                    else:
                        others.append(r.status_code)

    with ThreadPoolExecutor(CLIENTS) as pool:
        for f in [pool.submit(client) for _ in range(CLIENTS)]:
            f.result(timeout=120)
    return acknowledged, others


def applied_once(bus: IntegrationBus, ids: list[int]) -> None:
    """Drain what is left; every id of ``ids`` then has its history record, applied, and no
    request was logged as two tasks (each request's ``n`` is its own)."""

    def drained() -> bool:  # a killed server's lease runs out first (--lease-seconds 1)
        bus.process_tasks()
        return bus.queue_size() == 0

    wait_for(drained, timeout=60)
    h = history_table
    with bus.engine.connect() as conn:
        rows = conn.execute(sa.select(h.c.task_id, h.c.state, h.c.external)).all()
    recorded = {int(task_id) for task_id, _, _ in rows}
    missing = [i for i in ids if i not in recorded]
    assert missing == [], f"{len(missing)} tasks answered 201 were lost: {missing[:10]}"
    assert {state for _, state, _ in rows} == {"applied"}
    ns = [json.loads(external)["n"] for _, _, external in rows]
    assert len(ns) == len(set(ns)), "a request was logged twice"


def serve(db_url: str) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, "-m", "syncbus.cli", "serve", "--db", db_url, "--no-auth"]
    command += ["--lease-seconds", "1"]
    return spawn_listening(
        lambda port: [*command, "--port", str(port)], cwd=ROOT, env={**os.environ}
    )


def test_serve_killed_under_load_loses_no_answered_task(db_url: str) -> None:
    bus = make_bus(db_url)
    proc, url = serve(db_url)
    try:
        wait_for(lambda: healthz(url, proc) == 200, timeout=30)
        stop = threading.Event()
        result: list[tuple[list[int], list[int]]] = []
        clients = threading.Thread(target=lambda: result.append(load(url, stop)))
        clients.start()
        wait_for(lambda: bus.queue_size() + _applied(bus) >= 300, timeout=60)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
        stop.set()
        clients.join(120)
        acknowledged, others = result[0]
        assert len(acknowledged) >= 100 and set(others) <= {503}, others
        applied_once(bus, acknowledged)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        bus.close()


def _applied(bus: IntegrationBus) -> int:
    with bus.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(history_table)).scalar())


def test_sessions_ended_under_load_lose_no_answered_task(pg_url: str) -> None:
    """PostgreSQL: the server's sessions are ended three times while 16 clients log; a request
    whose group met the end is answered 503 (never left waiting), every 201 is committed."""
    bus = make_bus(pg_url)
    app = create_app(bus, run_dispatcher=False)
    killer = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
    try:
        with running(app) as url:
            stop = threading.Event()
            result: list[tuple[list[int], list[int]]] = []
            clients = threading.Thread(target=lambda: result.append(load(url, stop)))
            clients.start()
            for at in (200, 400, 600):
                wait_for(_queued_at_least(bus, at), timeout=60)
                end_other_sessions(killer)
            wait_for(_queued_at_least(bus, 800), timeout=60)
            stop.set()
            clients.join(120)
        acknowledged, others = result[0]
        assert set(others) <= {503}, others
        applied_once(bus, acknowledged)
    finally:
        killer.dispose()
        bus.close()


def _queued_at_least(bus: IntegrationBus, n: int) -> Callable[[], bool]:
    def check() -> bool:
        try:
            return bus.queue_size() >= n
        except sa.exc.OperationalError:  # our own session was ended too
            return False

    return check
