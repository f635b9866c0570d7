"""`syncbus serve --workers 0` beside `syncbus worker`: the service logs, says it applies
nothing, and applies nothing; the worker, another process, applies what it logged (woken by
NOTIFY on PostgreSQL, by polling on SQLite), and is woken by the service's notify and by a
switch turned on elsewhere, on SQLite too. SIGTERM ends both with status 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from syncbus.store.switches import PROCESSING, write_setting
from tests.helpers import ROOT, healthz, wait_for
from tests.http_server import spawn_listening
from tests.seq import make_bus

pytestmark = pytest.mark.multiprocess
CLI = [sys.executable, "-m", "syncbus.cli"]


def test_an_api_only_service_and_a_worker_elsewhere(db_url: str) -> None:
    bus = make_bus(db_url)
    serve = [*CLI, "serve", "--db", db_url, "--workers", "0", "--no-auth"]
    env = {**os.environ, "SYNCBUS_SCHEDULER_INTERVAL": "0.2"}
    proc, url = spawn_listening(lambda port: [*serve, "--port", str(port)], cwd=ROOT, env=env)
    worker: subprocess.Popen[str] | None = None
    try:
        wait_for(lambda: healthz(url, proc) == 200, timeout=30)

        def post(body: dict[str, object]) -> None:
            with httpx.Client(base_url=url, timeout=30) as client:
                assert client.post("/api/connectors/Seq/tasks", json=body).status_code == 201

        with httpx.Client(base_url=url, timeout=30) as client:
            for n in range(20):
                body = {"task_type": "UpdateObject", "object": {"key": f"k{n % 4}", "n": n}}
                assert client.post("/api/connectors/Seq/tasks", json=body).status_code == 201
            assert client.post("/api/notify").status_code == 200
        time.sleep(1.0)  # five scheduler intervals of the service's: it applies nothing
        assert bus.queue_size("Seq") == 20
        worker = subprocess.Popen(
            [*CLI, "worker", "--db", db_url, "--scheduler-interval", "3600"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        wait_for(lambda: bus.queue_size("Seq") == 0, timeout=60)
        assert [bus.get_object("seq.counter", f"k{k}")["n"] for k in range(4)] == [16, 17, 18, 19]  # type: ignore[index]
        # Logged while the worker idles (no scheduled run for an hour): it is woken.
        with httpx.Client(base_url=url, timeout=30) as client:
            body = {"task_type": "UpdateObject", "object": {"key": "k0", "n": 99}}
            assert client.post("/api/connectors/Seq/tasks", json=body).status_code == 201
        wait_for(lambda: bus.queue_size("Seq") == 0, timeout=30)
        assert bus.get_object("seq.counter", "k0")["n"] == 99  # type: ignore[index]
        # Processing switched off, a task logged (the worker looks, and leaves it), processing
        # switched on: the switch wakes the workers of every process, SQLite's too.
        bus.settings.process_external = False
        post({"task_type": "UpdateObject", "object": {"key": "k1", "n": 100}})
        time.sleep(1.5)
        assert bus.queue_size("Seq") == 1
        bus.settings.process_external = True
        wait_for(lambda: bus.queue_size("Seq") == 0, timeout=15)  # not an hour later
        # Switched on behind the workers' backs (SQL by hand, an older process): the API-only
        # service's notify is what tells them to look again.
        bus.settings.process_external = False
        post({"task_type": "UpdateObject", "object": {"key": "k1", "n": 101}})
        time.sleep(1.5)
        with bus.engine.begin() as conn:
            write_setting(conn, PROCESSING, "true")
        time.sleep(1.5)
        assert bus.queue_size("Seq") == 1
        with httpx.Client(base_url=url, timeout=30) as client:
            assert client.post("/api/notify").status_code == 200
        wait_for(lambda: bus.queue_size("Seq") == 0, timeout=15)  # not an hour later
        assert bus.get_object("seq.counter", "k1")["n"] == 101  # type: ignore[index]
    finally:
        for p in (worker, proc):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
        outputs = [p.communicate(timeout=60)[0] for p in (worker, proc) if p is not None]
        bus.close()
    assert worker is not None and worker.returncode == 0, outputs
    assert proc.returncode == 0, outputs
    assert "API only" in outputs[-1], outputs[-1]
