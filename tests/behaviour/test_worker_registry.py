"""The workers' registry (`IntegrationBus.list_workers`, `GET /api/workers`, the dashboard): a
dispatcher is listed while it runs and leaves when it stops; one that stops reporting (killed,
frozen) is listed as not alive after three heartbeats and forgotten after an hour; one
forgotten while frozen registers again. On SQLite and PostgreSQL."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest
import sqlalchemy as sa

from syncbus import create_app
from syncbus.dispatcher import Dispatcher
from syncbus.store import workers
from syncbus.store.dialect import dialect_of
from syncbus.store.tables import worker_table
from tests.helpers import wait_for
from tests.http_server import asgi_client
from tests.seq import make_bus


def test_a_dispatcher_is_listed_while_it_runs(db_url: str) -> None:
    bus = make_bus(db_url)
    disp = Dispatcher(bus, workers=3, scheduler_interval=None, heartbeat=0.2)
    try:
        assert bus.list_workers() == []
        disp.start()
        wait_for(lambda: len(bus.list_workers()) == 1, timeout=10)  # registered by its thread
        (w,) = bus.list_workers()
        facts = (w.kind, w.host, w.pid, w.threads, w.alive)
        assert facts == ("app", socket.gethostname(), os.getpid(), 3, True)
        time.sleep(0.6)  # three heartbeats: it was seen again since it registered
        assert bus.list_workers()[0].seen_seconds_ago < 0.35
        assert disp.stop()
        assert bus.list_workers() == []  # left on the way out
    finally:
        disp.stop()
        bus.close()


def test_a_worker_that_stops_reporting_is_not_alive_then_forgotten(db_url: str) -> None:
    bus = make_bus(db_url)
    try:
        with bus.engine.begin() as conn:
            workers.register(conn, "frozen", "worker", "elsewhere", 4242, 2, 0.1)
        wait_for(lambda: not bus.list_workers()[0].alive, timeout=5)  # three missed beats
        (w,) = bus.list_workers()
        assert (w.worker_id, w.pid, w.alive) == ("frozen", 4242, False)
        assert w.seen_seconds_ago >= 0.3
        # An hour later any process's heartbeat forgets it, and only it.
        with bus.engine.begin() as conn:
            workers.register(conn, "live", "worker", "here", 1, 1, 10.0)
            old = dialect_of(conn).now_epoch() - workers.FORGET_SECONDS - 1
            frozen = worker_table.c.worker_id == "frozen"
            conn.execute(worker_table.update().where(frozen).values(seen_at=old))
            assert workers.seen(conn, "live")
        assert [w.worker_id for w in bus.list_workers()] == ["live"]
    finally:
        bus.close()


def test_a_dispatcher_forgotten_while_frozen_registers_again(db_url: str) -> None:
    bus = make_bus(db_url)
    disp = Dispatcher(bus, scheduler_interval=None, heartbeat=0.1)
    try:
        disp.start()
        wait_for(lambda: len(bus.list_workers()) == 1, timeout=10)
        with bus.engine.begin() as conn:  # forgotten, as after an hour frozen
            assert conn.execute(sa.delete(worker_table)).rowcount == 1
        wait_for(lambda: [w.worker_id for w in bus.list_workers()] == [disp.worker_id], timeout=5)
    finally:
        disp.stop()
        bus.close()


def test_the_service_lists_its_workers_and_the_dashboard_warns_without_one(
    db_url: str,
) -> None:
    bus = make_bus(db_url)
    try:
        bus.process_external_task("Seq", {"key": "a", "n": 1})
        api_only = create_app(bus, workers=0, no_auth=True)
        with asgi_client(api_only) as client:
            assert client.get("/api/workers").json() == {"workers": [], "alive": 0}
            page = client.get("/admin/stats").text
            assert "No worker is running" in page and "the queued task waits for one" in page
        bus.set_connector_enabled("Seq", False)  # the service's own runs leave the task
        full = create_app(bus, no_auth=True, workers=2, heartbeat=0.2)
        with asgi_client(full) as client:
            wait_for(lambda: client.get("/api/workers").json()["alive"] == 1, timeout=10)
            body = client.get("/api/workers").json()
            (w,) = body["workers"]
            assert (w["kind"], w["pid"], w["threads"], w["alive"]) == (
                "serve",
                os.getpid(),
                2,
                True,
            )
            page = client.get("/admin/stats").text
            assert "No worker is running" not in page
            assert f"serve on {socket.gethostname()} (pid {os.getpid()}, 2 runs at once)" in page
        assert bus.list_workers() == []  # the service's lifespan ended: it left
    finally:
        bus.close()


def test_a_heartbeat_must_be_positive(db_url: str) -> None:
    bus = make_bus(db_url)
    try:
        with pytest.raises(ValueError, match="heartbeat"):
            Dispatcher(bus, heartbeat=0)
    finally:
        bus.close()


def test_stop_keeps_its_timeout_when_the_registry_cannot_be_written(db_url: str) -> None:
    """Leaving the list is a write: behind a writer that does not end (SQLite's write lock;
    the worker's row locked on PostgreSQL), stop still returns within its timeout, and the
    worker is left to be shown as having stopped reporting."""
    bus = make_bus(db_url)
    disp = Dispatcher(bus, scheduler_interval=None, heartbeat=30)
    disp.start()
    wait_for(lambda: len(bus.list_workers()) == 1, timeout=10)
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with bus.engine.begin() as conn:
            row = worker_table.c.worker_id == disp.worker_id
            conn.execute(worker_table.update().where(row).values(pid=os.getpid()))
            holding.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(10)
        start = time.monotonic()
        disp.stop(timeout=1.0)
        assert time.monotonic() - start < 3.0
    finally:
        release.set()
        holder.join()
        bus.close()
