"""`create_app(bus, workers=0)` / `syncbus serve --workers 0`: the API and admin only, for a
deployment whose processing runs in `syncbus worker` processes. Nothing is applied here;
what asks for a run (notify, switching a connector on) wakes the other processes' workers
(PostgreSQL NOTIFY). On SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import psycopg
import pytest

from syncbus import IntegrationBus, TaskRequest, create_app
from syncbus.store.dialect import NOTIFY_CHANNEL
from syncbus.store.switches import read_setting
from syncbus.store.tables import WAKE_KEY
from tests.http_server import asgi_client
from tests.seq import make_bus


@pytest.fixture
def seq_bus(db_url: str) -> Iterator[IntegrationBus]:
    bus = make_bus(db_url)
    yield bus
    bus.close()


@pytest.fixture
def api_only(seq_bus: IntegrationBus) -> Iterator[httpx.Client]:
    # A scheduler interval that would have run the queue many times over, were it running.
    app = create_app(seq_bus, workers=0, scheduler_interval=0.05, no_auth=True)
    with asgi_client(app) as client:
        yield client


def test_an_api_only_service_logs_and_applies_nothing(
    seq_bus: IntegrationBus, api_only: httpx.Client
) -> None:
    ids = []
    for n in range(3):
        r = api_only.post(
            "/api/connectors/Seq/tasks",
            json={"task_type": "UpdateObject", "object": {"key": "a", "n": n}},
        )
        assert r.status_code == 201, r.text
        ids.append(r.json()["task_id"])
    assert api_only.post("/api/notify", params={"connector": "Seq"}).status_code == 200
    assert api_only.patch("/api/connectors/Seq", json={"enabled": True}).status_code == 200
    time.sleep(1.0)  # twenty scheduler intervals, the notify and the switch: nothing ran here
    assert [t.task_id for t in seq_bus.list_tasks("Seq")] == ids
    assert seq_bus.get_object("seq.counter", "a") is None
    result = seq_bus.process_tasks("Seq")  # what a worker elsewhere does
    assert result["Seq"].applied == 3  # type: ignore[index]
    assert seq_bus.get_object("seq.counter", "a")["n"] == 2  # type: ignore[index]


@pytest.mark.postgres
def test_an_api_only_service_wakes_the_workers_elsewhere(pg_url: str) -> None:
    """What would start a run in a full service sends the note `syncbus worker` listens for:
    the connector's name, or an empty note (every connector) for a notify of all."""
    bus = make_bus(pg_url)
    app = create_app(bus, workers=0, no_auth=True)
    conninfo = pg_url.replace("postgresql+psycopg://", "postgresql://")
    try:
        with asgi_client(app) as api, psycopg.connect(conninfo, autocommit=True) as listener:
            listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
            assert api.post("/api/notify", params={"connector": "Seq"}).status_code == 200
            first = [n.payload for n in listener.notifies(timeout=10, stop_after=1)]
            assert api.get("/CMSPages/IntegrationNotify.aspx").status_code == 200
            second = [n.payload for n in listener.notifies(timeout=10, stop_after=1)]
            assert api.patch("/api/connectors/Seq", json={"enabled": True}).status_code == 200
            third = [n.payload for n in listener.notifies(timeout=10, stop_after=1)]
    finally:
        bus.close()
    assert (first, second, third) == (["Seq"], [""], ["Seq"])


def test_logging_writes_no_wake_up_and_a_switch_turned_on_does(seq_bus: IntegrationBus) -> None:
    """SQLite's workers see a logged task by the task-id counter: logging (one task, a keyed
    one, a batch) writes nothing more; what they cannot see otherwise (a switch turned on, a
    wake-up asked for) moves the wake-up counter. PostgreSQL notifies instead: no counter."""

    def wakeups() -> str | None:
        with seq_bus.engine.connect() as conn:
            return read_setting(conn, WAKE_KEY)

    seq_bus.process_external_task("Seq", {"key": "a", "n": 1})
    seq_bus.process_external_task("Seq", {"key": "a", "n": 2}, idempotency_key="k1")
    seq_bus.log_tasks("Seq", [TaskRequest({"key": "b", "n": 1})])
    assert wakeups() is None
    seq_bus.settings.process_external = True
    seq_bus.wake_workers("Seq")
    sqlite = seq_bus.engine.dialect.name == "sqlite"
    assert wakeups() == ("2" if sqlite else None)
