"""The HTTP API, in process (over ``httpx.ASGITransport``) and, for the dispatcher's wake-ups and
the notify client, over real HTTP (uvicorn on 127.0.0.1); on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from http import HTTPStatus
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from syncbus import (
    IntegrationBus,
    InternalObject,
    TaskDataType,
    TaskType,
    create_app,
    request_tasks_processing,
)
from syncbus.dispatcher import Dispatcher
from tests.helpers import wait_for
from tests.http_server import asgi_client, running
from tests.seq import SEQ_TYPE, SeqConnector

TOKEN = "s3cret-token"


class PickyConnector(SeqConnector):
    """Skips objects marked skip; raises on objects marked bad; refuses unknown columns."""

    connector_name = "Picky"

    def prepare_internal_object(
        self, obj: Any, task_type: TaskType, data_type: TaskDataType, site_name: str | None
    ) -> InternalObject | None:
        if obj.get("skip"):
            return None
        if obj.get("bad"):
            raise ValueError("the CRM record has no key")
        data = {"counter_name": obj["key"], "n": obj.get("n", 0), **obj.get("extra", {})}
        return InternalObject("seq.counter", data)


@pytest.fixture
def http_bus(db_url: str) -> Iterator[IntegrationBus]:
    bus = IntegrationBus(db_url)
    bus.register_object_type(SEQ_TYPE)
    bus.create_schema()
    bus.register_connector(SeqConnector)
    bus.register_connector(PickyConnector)
    yield bus
    bus.close()


@pytest.fixture
def api(http_bus: IntegrationBus) -> Iterator[httpx.Client]:
    """A client of the app with a token; processing off so the queue stays put."""
    app = create_app(http_bus, api_token=TOKEN, run_dispatcher=False, max_body_bytes=4096)
    with asgi_client(app, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield client


def log(api: httpx.Client, connector: str = "Seq", **body: Any) -> httpx.Response:
    body.setdefault("task_type", "CreateObject")
    return api.post(f"/api/connectors/{connector}/tasks", json=body)


# -- logging -----------------------------------------------------------------------------------
def test_log_task_returns_201_and_the_id(api: httpx.Client, http_bus: IntegrationBus) -> None:
    r = log(api, object={"key": "a", "n": 1})
    assert r.status_code == 201
    task_id = r.json()["task_id"]
    assert [t.task_id for t in http_bus.list_tasks()] == [task_id]


def test_object_reaches_the_connector_as_parsed_json(
    api: httpx.Client, http_bus: IntegrationBus
) -> None:
    r = log(api, object={"key": "ü-ß", "n": 42}, task_type="updateobject")
    assert r.status_code == 201
    http_bus.process_tasks("Seq")
    assert http_bus.get_object("seq.counter", "ü-ß")["n"] == 42


def test_repeated_idempotency_key_is_200_with_the_first_id(
    api: httpx.Client, http_bus: IntegrationBus
) -> None:
    first = log(api, object={"key": "a", "n": 1}, idempotency_key="k1")
    again = log(api, object={"key": "a", "n": 2}, idempotency_key="k1")
    assert first.status_code == 201 and again.status_code == 200
    assert again.json() == first.json()
    assert len(http_bus.list_tasks()) == 1


def test_connector_skip_is_204(api: httpx.Client, http_bus: IntegrationBus) -> None:
    r = log(api, "Picky", object={"skip": True})
    assert r.status_code == 204 and r.content == b""
    assert http_bus.list_tasks() == []


def test_unknown_connector_is_404_and_disabled_is_409(
    api: httpx.Client, http_bus: IntegrationBus
) -> None:
    r = log(api, "Nope", object={"key": "a"})
    assert r.status_code == 404 and "Nope" in r.json()["detail"]
    http_bus.set_connector_enabled("Seq", False)
    r = log(api, object={"key": "a", "n": 1})
    assert r.status_code == 409 and "disabled" in r.json()["detail"]


def test_a_refused_input_is_echoed_short(http_bus: IntegrationBus) -> None:
    """A new user's trial got a megabyte back for a batch one task too long."""
    app = create_app(http_bus, api_token=TOKEN, run_dispatcher=False)  # the default body limit
    with asgi_client(app, headers={"Authorization": f"Bearer {TOKEN}"}) as api:
        _echoed_short(api, http_bus)


def _echoed_short(api: httpx.Client, http_bus: IntegrationBus) -> None:
    one = {"task_type": "CreateObject", "object": {}}
    r = api.post("/api/connectors/Seq/tasks/batch", json={"tasks": [one] * 10_001})
    assert r.status_code == 422 and len(r.content) < 2_000
    [error] = r.json()["detail"]
    assert error["loc"] == ["body", "tasks"] and error["input"] == "(a list of 10001 items)"
    r = api.post("/api/connectors/Seq/tasks", json={**one, "idempotency_key": "k" * 5_000})
    assert r.status_code == 422 and len(r.content) < 2_000
    [error] = r.json()["detail"]
    assert error["loc"] == ["body", "idempotency_key"]
    assert error["input"].startswith("kkk") and error["input"].endswith("(5000 characters)")
    assert http_bus.list_tasks() == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"object": {"key": "a"}}, "task_type"),
        ({"task_type": "Explode", "object": {}}, "task_type"),
        ({"task_type": "CreateObject", "object": {}, "process_type": "Sometimes"}, "process_type"),
        ({"task_type": "CreateObject", "object": {}, "data_type": 7}, "data_type"),
        ({"task_type": "CreateObject", "object": {}, "idempotency_key": ""}, "idempotency_key"),
        ({"task_type": "CreateObject", "object": {}, "surprise": 1}, "surprise"),
    ],
)
def test_bad_body_is_422_naming_the_field(
    api: httpx.Client, http_bus: IntegrationBus, body: dict[str, Any], field: str
) -> None:
    r = api.post("/api/connectors/Seq/tasks", json=body)
    assert r.status_code == 422
    assert any(field in err["loc"] for err in r.json()["detail"])
    assert http_bus.list_tasks() == []


def test_invalid_object_is_422_with_the_reason(api: httpx.Client, http_bus: IntegrationBus) -> None:
    r = log(api, "Picky", object={"key": "a", "extra": {"colour": "red"}})
    assert r.status_code == 422 and "colour" in r.json()["detail"]
    r = log(api, "Picky", object={"bad": True})
    assert r.status_code == 422 and "the CRM record has no key" in r.json()["detail"]
    r = log(api, object={"key": "a", "n": 1}, site_name="nowhere")
    assert r.status_code == 422 and "nowhere" in r.json()["detail"]
    assert http_bus.list_tasks() == []


def test_not_json_is_422(api: httpx.Client) -> None:
    r = api.post(
        "/api/connectors/Seq/tasks", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422


def test_body_over_the_limit_is_413(api: httpx.Client, http_bus: IntegrationBus) -> None:
    r = log(api, object={"key": "a", "n": 1, "padding": "x" * 5000})
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    assert http_bus.list_tasks() == []


def test_batch_logs_all(api: httpx.Client, http_bus: IntegrationBus) -> None:
    tasks = [{"task_type": "UpdateObject", "object": {"key": "a", "n": n}} for n in range(5)]
    r = api.post("/api/connectors/Seq/tasks/batch", json={"tasks": tasks})
    assert r.status_code == 201
    ids = r.json()["task_ids"]
    assert ids == sorted(ids) and len(ids) == 5
    assert [t.task_id for t in http_bus.list_tasks()] == ids


def test_batch_is_all_or_nothing(api: httpx.Client, http_bus: IntegrationBus) -> None:
    tasks = [
        {"task_type": "CreateObject", "object": {"key": "a"}},
        {"task_type": "CreateObject", "object": {"bad": True}},
    ]
    r = api.post("/api/connectors/Picky/tasks/batch", json={"tasks": tasks})
    assert r.status_code == 422
    assert http_bus.list_tasks() == []
    # Which task of up to 10,000 it was (a new user's trial had to search for it).
    assert r.json()["detail"].startswith("task 1 of the batch: ")
    r = api.post("/api/connectors/Nope/tasks/batch", json={"tasks": tasks})
    assert r.status_code == 404 and "task " not in r.json()["detail"]  # the whole call's


def test_batch_with_repeated_keys_keeps_the_first(
    api: httpx.Client, http_bus: IntegrationBus
) -> None:
    first = log(api, object={"key": "a", "n": 1}, idempotency_key="k1").json()["task_id"]
    tasks = [
        {"task_type": "CreateObject", "object": {"key": "b", "n": 1}, "idempotency_key": "k1"},
        {"task_type": "CreateObject", "object": {"key": "c", "n": 1}, "idempotency_key": "k2"},
        {"task_type": "CreateObject", "object": {"key": "d", "n": 1}, "idempotency_key": "k2"},
    ]
    r = api.post("/api/connectors/Seq/tasks/batch", json={"tasks": tasks})
    assert r.status_code == 201
    ids = r.json()["task_ids"]
    assert ids[0] == first and ids[1] == ids[2] != first
    assert len(http_bus.list_tasks()) == 2


# -- the queue ---------------------------------------------------------------------------------
def test_list_detail_log_synchronize_delete(api: httpx.Client, http_bus: IntegrationBus) -> None:
    a = log(api, object={"key": "a", "n": 1}, process_type="Error").json()["task_id"]
    b = log(api, object={"key": "b", "n": 2}).json()["task_id"]
    listed = api.get("/api/tasks", params={"connector": "Seq"}).json()["tasks"]
    assert [t["task_id"] for t in listed] == [a, b]
    assert listed[0]["process_type"] == "Error" and listed[0]["connector_name"] == "Seq"
    page = api.get("/api/tasks", params={"after": a, "limit": 1}).json()["tasks"]
    assert [t["task_id"] for t in page] == [b]
    detail = api.get(f"/api/tasks/{b}").json()
    assert detail["task_type"] == "CreateObject" and detail["object_type"] == "seq.counter"
    assert api.get(f"/api/tasks/{b}/log").json() == {"task_id": b, "log": []}
    r = api.post(f"/api/tasks/{b}/synchronize")
    assert r.status_code == 200 and r.json()["applied"] is True and r.json()["task"] is None
    assert http_bus.get_object("seq.counter", "b")["n"] == 2
    assert api.delete(f"/api/tasks/{a}").status_code == 204
    assert api.get("/api/tasks").json() == {"tasks": [], "next_after": None}


def test_wrongly_typed_value_is_422(api: httpx.Client, http_bus: IntegrationBus) -> None:
    r = log(api, object={"key": "x", "n": "not a number"})
    assert r.status_code == 422 and "'n'" in r.json()["detail"]
    assert http_bus.list_tasks() == []


def test_failed_synchronize_reports_the_error(api: httpx.Client, http_bus: IntegrationBus) -> None:
    task_id = log(api, object={"key": "x", "n": 1}).json()["task_id"]
    with http_bus.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE syncbus_task SET data = :d WHERE task_id = :t"),
            {"d": "{broken", "t": task_id},
        )
    r = api.post(f"/api/tasks/{task_id}/synchronize")
    assert r.status_code == 200 and r.json()["applied"] is False
    assert r.json()["task"]["process_type"] == "Error"
    log_entries = api.get(f"/api/tasks/{task_id}/log").json()["log"]
    assert len(log_entries) == 1 and log_entries[0]["error_message"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/tasks/999999"),
        ("GET", "/api/tasks/999999/log"),
        ("POST", "/api/tasks/999999/synchronize"),
        ("DELETE", "/api/tasks/999999"),
        ("PATCH", "/api/connectors/Ghost"),
        ("POST", "/api/notify?connector=Ghost"),
        ("GET", "/CMSPages/IntegrationNotify.aspx?connectorName=Ghost"),
    ],
)
def test_missing_things_are_404(api: httpx.Client, method: str, path: str) -> None:
    body = {"enabled": True} if method == "PATCH" else None
    r = api.request(method, path, json=body)
    assert r.status_code == 404, r.text


def test_connectors_list_and_patch(api: httpx.Client, http_bus: IntegrationBus) -> None:
    log(api, object={"key": "a", "n": 1})
    listed = {c["name"]: c for c in api.get("/api/connectors").json()["connectors"]}
    assert listed["Seq"]["enabled"] is True and listed["Seq"]["pending"] == 1
    r = api.patch("/api/connectors/Seq", json={"enabled": False})
    assert r.status_code == 200 and r.json()["enabled"] is False
    assert not next(c for c in http_bus.list_connectors() if c.name == "Seq").enabled
    assert api.patch("/api/connectors/Seq", json={"enabled": "maybe"}).status_code == 422
    assert api.patch("/api/connectors/Seq", json={"enabled": True}).json()["enabled"] is True


def test_metrics_expose_queue_and_counters(api: httpx.Client, http_bus: IntegrationBus) -> None:
    log(api, object={"key": "a", "n": 1})
    text = api.get("/metrics").text
    assert 'syncbus_queue_depth{connector="Seq"} 1.0' in text
    assert 'syncbus_tasks_logged_total{connector="Seq"} 1.0' in text
    assert "syncbus_oldest_task_age_seconds" in text
    assert "syncbus_run_duration_seconds" in text


def test_openapi_is_served(api: httpx.Client) -> None:
    spec = api.get("/openapi.json").json()
    assert "/api/connectors/{name}/tasks" in spec["paths"]
    assert "/CMSPages/IntegrationNotify.aspx" in spec["paths"]


# -- auth --------------------------------------------------------------------------------------
PROTECTED = [
    ("POST", "/api/connectors/Seq/tasks"),
    ("POST", "/api/connectors/Seq/tasks/batch"),
    ("GET", "/CMSPages/IntegrationNotify.aspx"),
    ("POST", "/api/notify"),
    ("GET", "/api/tasks"),
    ("GET", "/api/tasks/1"),
    ("GET", "/api/tasks/1/log"),
    ("POST", "/api/tasks/1/synchronize"),
    ("DELETE", "/api/tasks/1"),
    ("GET", "/api/connectors"),
    ("PATCH", "/api/connectors/Seq"),
    ("GET", "/metrics"),
]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_every_route_but_healthz_needs_the_token(api: httpx.Client, method: str, path: str) -> None:
    del api.headers["Authorization"]
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        r = api.request(method, path, headers=headers, json={})
        assert r.status_code == 401, (headers, r.status_code)
        assert r.headers["www-authenticate"] == "Bearer"
    assert api.get("/healthz").json() == {"status": "ok", "database": "ok"}


def test_without_a_token_no_auth_is_asked(
    http_bus: IntegrationBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    # §11: an empty token is refused (test_service_hardening.py); no auth is asked when no
    # token is configured at all, or when no_auth=True says so.
    monkeypatch.delenv("SYNCBUS_API_TOKEN", raising=False)
    for app in (
        create_app(http_bus, run_dispatcher=False),
        create_app(http_bus, api_token="", no_auth=True, run_dispatcher=False),
    ):
        with asgi_client(app) as client:
            assert client.get("/api/tasks").status_code == 200


# -- processing in the background --------------------------------------------------------------
def test_logged_task_is_applied_at_once_without_the_scheduler(http_bus: IntegrationBus) -> None:
    # "At once" means: logging the task wakes the dispatcher. No scheduler, a poll an hour
    # apart and no start-up pass leave that wake-up as the only way the task can be applied,
    # so waiting for it proves the wake-up without a wall-clock bound (which a busy machine
    # could miss); without the wake-up the task is never applied and wait_for fails.
    dispatcher = Dispatcher(
        http_bus, scheduler_interval=None, poll_interval=3600, listen=False, initial_pass=False
    )
    app = create_app(http_bus, dispatcher=dispatcher)
    with running(app) as url:
        r = httpx.post(
            url + "/api/connectors/Seq/tasks",
            json={"task_type": "UpdateObject", "object": {"key": "fast", "n": 7}},
        )
        assert r.status_code == 201
        wait_for(lambda: http_bus.get_object("seq.counter", "fast") is not None)
    assert http_bus.get_object("seq.counter", "fast")["n"] == 7


def test_request_tasks_processing_honours_the_connector_name(db_url: str) -> None:
    bus = IntegrationBus(db_url)
    bus.register_object_type(SEQ_TYPE)
    bus.create_schema()
    bus.register_connector(SeqConnector)
    bus.register_connector(PickyConnector)
    # Tasks logged by another bus (as another program would), so no in-process wake-up.
    other = IntegrationBus(db_url)
    other.register_connector(SeqConnector)
    other.register_connector(PickyConnector)
    other.process_external_task("Seq", {"key": "s", "n": 1})
    other.process_external_task("Picky", {"key": "p", "n": 1})
    quiet = Dispatcher(
        bus, scheduler_interval=None, poll_interval=3600, listen=False, initial_pass=False
    )
    app = create_app(bus, api_token=TOKEN, dispatcher=quiet)
    with running(app) as url:
        assert request_tasks_processing(url, "Seq") is HTTPStatus.UNAUTHORIZED
        assert request_tasks_processing(url, "Ghost", token=TOKEN) is HTTPStatus.NOT_FOUND
        assert request_tasks_processing(url, "Seq", token=TOKEN) is HTTPStatus.OK
        wait_for(lambda: bus.queue_size("Seq") == 0)
        wait_for(quiet.idle)
        assert bus.queue_size("Picky") == 1  # only the named connector ran
        assert request_tasks_processing(url, token=TOKEN) is HTTPStatus.OK  # all of them
        wait_for(lambda: bus.queue_size() == 0)
    other.close()
    bus.close()
