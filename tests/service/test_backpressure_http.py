"""Backpressure over HTTP (CONTRACT §9): 429 with Retry-After when a connector's queue is
full; PATCH /api/connectors/{name} sets and removes the limit; a producer that honours
Retry-After gets every task logged exactly once; the client honours it too."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from http import HTTPStatus

import httpx
import pytest

from syncbus import IntegrationBus, create_app
from syncbus.client import request_tasks_processing, retry_after
from tests.http_server import asgi_client
from tests.seq import SEQ_TYPE, SeqConnector

TOKEN = "t0ken"


@pytest.fixture
def bus(db_url: str) -> Iterator[IntegrationBus]:
    b = IntegrationBus(db_url)
    b.register_object_type(SEQ_TYPE)
    b.create_schema()
    b.register_connector(SeqConnector)
    yield b
    b.close()


def post(api: httpx.Client, n: int, key: str | None = None) -> httpx.Response:
    body = {"object": {"key": f"k{n % 3}", "n": n}, "task_type": "UpdateObject"}
    if key is not None:
        body["idempotency_key"] = key
    return api.post("/api/connectors/Seq/tasks", json=body)


def test_a_full_queue_answers_429_with_retry_after(bus: IntegrationBus) -> None:
    app = create_app(bus, api_token=TOKEN, run_dispatcher=False)
    with asgi_client(app, headers={"Authorization": f"Bearer {TOKEN}"}) as api:
        r = api.patch("/api/connectors/Seq", json={"queue_limit": 2})
        assert r.status_code == 200 and r.json()["queue_limit"] == 2
        assert post(api, 1).status_code == 201
        assert post(api, 2).status_code == 201
        r = post(api, 3)
        assert r.status_code == 429
        assert int(r.headers["Retry-After"]) >= 1
        assert "its limit of 2 queued tasks" in r.json()["detail"]
        assert bus.queue_size("Seq") == 2
        assert 'syncbus_queue_rejected_total{connector="Seq"} 1.0' in api.get("/metrics").text
        r = api.patch("/api/connectors/Seq", json={"queue_limit": None})
        assert r.status_code == 200 and r.json()["queue_limit"] is None
        assert r.json()["enabled"] is True  # left as it was
        assert post(api, 3).status_code == 201
        assert api.patch("/api/connectors/Seq", json={"queue_limit": 0}).status_code == 422


def test_a_producer_that_honours_retry_after_logs_everything_once(
    bus: IntegrationBus,
) -> None:
    """Processing is off while the producer starts, so the queue fills and the producer is
    told to wait; processing comes back on; the producer finishes, every task logged once.
    (Processing comes back when the producer is first refused, not after a fixed time: on a
    loaded machine the producer once had not filled the queue in half a second.)"""
    bus.settings.process_external = False
    app = create_app(bus, api_token=TOKEN, scheduler_interval=None)
    total, waits, refused = 60, 0.0, 0
    with asgi_client(app, headers={"Authorization": f"Bearer {TOKEN}"}) as api:
        assert api.patch("/api/connectors/Seq", json={"queue_limit": 5}).status_code == 200
        n = 1
        while n <= total:
            r = post(api, n, key=f"task-{n}")
            if r.status_code == 429:
                refused += 1
                bus.settings.process_external = True
                pause = retry_after(r)
                assert pause is not None
                waits += pause
                time.sleep(pause)
                continue  # the same task again, after the pause
            assert r.status_code in (200, 201), r.text
            n += 1
        deadline = time.monotonic() + 30
        while bus.queue_size("Seq") and time.monotonic() < deadline:
            time.sleep(0.05)
    assert bus.queue_size("Seq") == 0
    assert refused >= 1, "the producer never met the limit: the test proves nothing"
    final = {f"k{i}": max(n for n in range(1, total + 1) if n % 3 == i) for i in range(3)}
    assert {k: bus.get_object("seq.counter", k)["n"] for k in final} == final
    print(f"\n{total} tasks, {refused} refusals, {waits:.0f} s waited")


def test_the_client_waits_for_retry_after(monkeypatch: pytest.MonkeyPatch) -> None:
    """request_tasks_processing asks again after a 429 or 503 with Retry-After, at most
    ``retries`` times and never longer than ``max_wait`` each."""
    answers = [
        httpx.Response(429, headers={"Retry-After": "0.2"}),
        httpx.Response(503, headers={"Retry-After": "30"}),
        httpx.Response(200, json={"status": "processing", "connector": "Seq"}),
    ]
    calls: list[float] = []

    def fake_get(url: str, **_kw: object) -> httpx.Response:
        calls.append(time.monotonic())
        return answers[len(calls) - 1]

    monkeypatch.setattr(httpx, "get", fake_get)
    status = request_tasks_processing("http://127.0.0.1:1", "Seq", retries=3, max_wait=0.3)
    assert status is HTTPStatus.OK and len(calls) == 3
    assert calls[1] - calls[0] >= 0.2  # waited as asked
    assert 0.3 <= calls[2] - calls[1] < 5  # 30 s asked, max_wait 0.3 s honoured
    calls.clear()
    answers[:] = [httpx.Response(429, headers={"Retry-After": "0"})] * 5
    assert request_tasks_processing("http://x", retries=2) is HTTPStatus.TOO_MANY_REQUESTS
    assert len(calls) == 3  # one try and two retries


def test_patching_an_unknown_connector_is_404_whatever_the_body(bus: IntegrationBus) -> None:
    app = create_app(bus, api_token=TOKEN, run_dispatcher=False)
    with asgi_client(app, headers={"Authorization": f"Bearer {TOKEN}"}) as api:
        for body in ({}, {"enabled": None}, {"queue_limit": 3}, {"enabled": True}):
            assert api.patch("/api/connectors/Nobody", json=body).status_code == 404, body
        r = api.patch("/api/connectors/Seq", json={})
        assert r.status_code == 200 and r.json()["enabled"] is True


def test_patching_takes_a_switch_and_a_limit_as_they_are_typed(bus: IntegrationBus) -> None:
    """A new producer's trial: `{"enabled": "yes"}` was taken for true. Strings and numbers
    that look like a bool or a number are refused (422), and change nothing."""
    app = create_app(bus, api_token=TOKEN, run_dispatcher=False)
    with asgi_client(app, headers={"Authorization": f"Bearer {TOKEN}"}) as api:
        assert api.patch("/api/connectors/Seq", json={"enabled": False}).status_code == 200
        for body in (
            {"enabled": "yes"},
            {"enabled": 1},
            {"queue_limit": "5"},
            {"queue_limit": 5.0},
        ):
            r = api.patch("/api/connectors/Seq", json=body)
            assert r.status_code == 422, body
            assert r.json()["detail"][0]["loc"][-1] == next(iter(body)), r.json()
        info = api.get("/api/connectors").json()["connectors"]
        assert [(c["enabled"], c["queue_limit"]) for c in info if c["name"] == "Seq"] == [
            (False, None)
        ]


def test_admin_and_cli_show_a_task_backing_off(db_url: str) -> None:
    """A failed SKIP_ON_ERROR task shows its attempts and its next try in the admin's list
    and task page and in `syncbus tasks list`."""
    from typer.testing import CliRunner

    from syncbus import ProcessType, TaskDataType
    from syncbus.cli import app as cli
    from tests.admin import sign_in
    from tests.helpers import add_connector, log, membership, run

    bus = IntegrationBus(db_url)
    bus.create_schema()
    conn = add_connector(bus)
    conn.knows("cms.user", 1, "alice")
    conn.knows("cms.role", 2, "admin", site="main")
    task = log(
        bus,
        membership(1, 2),
        data_type=TaskDataType.SIMPLE_SNAPSHOT,
        process_type=ProcessType.SKIP_ON_ERROR,
    )
    assert run(bus).failed == 1
    try:
        app = create_app(bus, api_token=TOKEN, run_dispatcher=False)
        with asgi_client(app) as admin:
            sign_in(admin, TOKEN)
            listing = admin.get("/admin/tasks").text
            assert f'data-testid="next-try-{task}"' in listing
            assert re.search(r"attempt 1, next try <time [^>]*>in (9|10|11) s<", listing)
            page = admin.get(f"/admin/tasks/{task}").text
            assert 'data-testid="attempts">1; next try' in page
        out = CliRunner().invoke(cli, ["tasks", "list", "--db", db_url], env={"COLUMNS": "250"})
        assert out.exit_code == 0, out.output
        assert re.search(r"\(attempt 1, next try in (9|10|11) s\)", out.output), out.output
    finally:
        bus.close()


def test_the_dashboard_shows_how_full_a_limited_queue_is(bus: IntegrationBus) -> None:
    from tests.admin import sign_in

    app = create_app(bus, api_token=TOKEN, run_dispatcher=False)
    bus.set_queue_limit("Seq", 4)
    for n in range(3):
        bus.process_external_task("Seq", {"key": "k", "n": n})
    with asgi_client(app) as admin:
        sign_in(admin, TOKEN)
        assert re.search(r'data-testid="fill-Seq"[^>]*>of 4 · 75 %', admin.get("/admin/").text)
        bus.process_external_task("Seq", {"key": "k", "n": 4})
        page = admin.get("/admin/").text
        assert re.search(
            r'data-testid="fill-Seq"[^>]*>of 4 · <span class="badge blocked">full', page
        )
        bus.set_queue_limit("Seq", None)
        assert 'data-testid="fill-Seq"' not in admin.get("/admin/").text
