"""The history routes of the HTTP API (CONTRACT §10), in process, on SQLite and PostgreSQL: a
task's record, an object's records, edit and replay."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from syncbus import IntegrationBus, create_app
from syncbus.errors import ConnectorNotFoundError, TaskBusyError
from tests.helpers import DictConnector, add_connector, ext, membership, role, run, user
from tests.http_server import asgi_client

TOKEN = "history-token"
CONNECTOR = "TestConnector"


@pytest.fixture
def conn(bus: IntegrationBus) -> DictConnector:
    return add_connector(bus)


@pytest.fixture
def api(bus: IntegrationBus, conn: DictConnector) -> Iterator[httpx.Client]:
    """A client of the app with a token; processing off so the queue stays put."""
    app = create_app(bus, api_token=TOKEN, run_dispatcher=False, max_body_bytes=4096)
    with asgi_client(app, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield client


def log(api: httpx.Client, obj: Any, **body: Any) -> int:
    body.setdefault("task_type", "CreateObject")
    body.setdefault("site_name", "main")
    r = api.post(f"/api/connectors/{CONNECTOR}/tasks", json={"object": obj, **body})
    assert r.status_code == 201, r.text
    return int(r.json()["task_id"])


def task_row(bus: IntegrationBus, task_id: int) -> dict[str, Any]:
    """Everything the queue stores of a task (to prove that a refused replace changed nothing)."""
    with bus.engine.connect() as c:
        rows = c.execute(sa.text("SELECT * FROM syncbus_task WHERE task_id = :t"), {"t": task_id})
        return dict(rows.mappings().one())


def failed_membership(api: httpx.Client, bus: IntegrationBus, conn: DictConnector) -> int:
    """A membership of mia in ops that failed: mia does not exist."""
    conn.knows("cms.user", 1, "mia")
    conn.knows("cms.role", 2, "ops", site="main")
    log(api, role("ops"))
    broken = log(api, membership(1, 2), data_type="SimpleSnapshot")
    run(bus)
    assert [t.task_id for t in bus.list_tasks()] == [broken]
    return broken


# -- GET /api/tasks/{id}/history ---------------------------------------------------------------
def test_history_of_a_queued_task_and_of_an_applied_one(
    api: httpx.Client, bus: IntegrationBus
) -> None:
    task_id = log(api, user("ada", email="a@x.org"))
    queued = api.get(f"/api/tasks/{task_id}/history")
    assert queued.status_code == 200, queued.text
    record = queued.json()
    assert record["state"] == "queued" and record["finished_at"] is None
    assert record["external"] == user("ada", email="a@x.org")
    assert record["task_type"] == "CreateObject" and record["object_type"] == "cms.user"
    assert record["changes"] is None and record["errors"] == []

    assert record["idempotency_key"] is None
    update = log(api, user("ada", email="b@x.org"), task_type="UpdateObject", idempotency_key="u1")
    run(bus)
    applied = api.get(f"/api/tasks/{update}/history").json()
    assert applied["state"] == "applied" and applied["code_name"] == "ada"
    assert applied["idempotency_key"] == "u1"
    assert applied["changes"] == {"email": ["a@x.org", "b@x.org"]}
    finished = dt.datetime.fromisoformat(applied["finished_at"])
    logged = dt.datetime.fromisoformat(applied["logged_at"])
    assert finished.tzinfo is not None and logged <= finished
    # The JSON is the record as the bus has it, field for field.
    direct = bus.task_history(update)
    assert direct is not None and applied["task_id"] == direct.task_id
    assert applied["internal"] == direct.internal
    assert applied["translations"] == direct.translations


def test_history_of_a_failed_task_has_its_errors(
    api: httpx.Client, bus: IntegrationBus, conn: DictConnector
) -> None:
    broken = failed_membership(api, bus, conn)
    record = api.get(f"/api/tasks/{broken}/history").json()
    assert record["state"] == "failed" and record["finished_at"] is None
    assert len(record["errors"]) == 1
    entry = record["errors"][0]
    assert set(entry) == {"time", "error_message"} and "mia" in entry["error_message"]
    assert [t["identity"]["code_name"] for t in record["translations"]] == ["mia", "ops"]
    assert all(t["internal_id"] is None for t in record["translations"])


def test_history_of_an_unknown_or_pruned_task_is_404(
    api: httpx.Client, bus: IntegrationBus
) -> None:
    r = api.get("/api/tasks/999999/history")
    assert r.status_code == 404
    assert "no record of task 999999" in r.json()["detail"]
    assert "history_retention_days = 7" in r.json()["detail"]
    task_id = log(api, user("bea"))
    run(bus)
    assert api.get(f"/api/tasks/{task_id}/history").status_code == 200
    bus.settings.history_retention_days = 0  # keeps nothing: the record goes
    bus.prune()
    r = api.get(f"/api/tasks/{task_id}/history")
    assert r.status_code == 404 and "history_retention_days = 0" in r.json()["detail"]


# -- GET /api/objects/{type}/{code_name}/history ----------------------------------------------
def test_object_history_lists_the_tasks_that_wrote_it_newest_first(
    api: httpx.Client, bus: IntegrationBus
) -> None:
    first = log(api, user("cleo", email="c1@x.org"))
    second = log(api, user("cleo", email="c2@x.org"), task_type="UpdateObject")
    log(api, user("other"))
    run(bus)
    r = api.get("/api/objects/cms.user/cleo/history")
    assert r.status_code == 200, r.text
    records = r.json()["records"]
    assert [x["task_id"] for x in records] == [second, first]
    assert records[0]["changes"] == {"email": ["c1@x.org", "c2@x.org"]}
    assert records[1]["changes"]["email"] == [None, "c1@x.org"]
    limited = api.get("/api/objects/cms.user/cleo/history", params={"limit": 1}).json()
    assert [x["task_id"] for x in limited["records"]] == [second]
    assert api.get("/api/objects/cms.user/nobody/history").json() == {"records": []}
    assert api.get("/api/objects/cms.user/cleo/history?limit=0").status_code == 422


class Coalescing(DictConnector):
    coalesce = True


def test_object_history_lists_coalesced_tasks_with_their_carrier(
    api: httpx.Client, bus: IntegrationBus
) -> None:
    bus.register_connector(Coalescing("Coalescer"))
    body = {"task_type": "CreateObject", "site_name": "main"}
    ids = [
        api.post(
            "/api/connectors/Coalescer/tasks", json={**body, "object": user("hal", email=e)}
        ).json()["task_id"]
        for e in ("h1@x.org", "h2@x.org")
    ]
    assert run(bus, "Coalescer").coalesced == 1
    records = api.get("/api/objects/cms.user/hal/history").json()["records"]
    assert [(r["task_id"], r["state"], r["into_task_id"]) for r in records] == [
        (ids[1], "applied", None),
        (ids[0], "coalesced", ids[1]),
    ]
    absorbed = api.get(f"/api/tasks/{ids[0]}/history").json()
    assert absorbed["state"] == "coalesced" and absorbed["into_task_id"] == ids[1]
    assert absorbed["carried_task_ids"] == []
    # The carrier lists what it carried (its changes are theirs and its own together).
    assert [r["carried_task_ids"] for r in records] == [[ids[0]], []]
    carrier = api.get(f"/api/tasks/{ids[1]}/history").json()
    assert carrier["carried_task_ids"] == [ids[0]] and carrier["into_task_id"] is None


def test_object_history_by_site(api: httpx.Client, bus: IntegrationBus) -> None:
    task_id = log(api, role("editors"))
    run(bus)
    on_main = api.get("/api/objects/cms.role/editors/history", params={"site_name": "main"})
    assert [x["task_id"] for x in on_main.json()["records"]] == [task_id]
    elsewhere = api.get("/api/objects/cms.role/editors/history", params={"site_name": "other"})
    assert elsewhere.json() == {"records": []}


def test_object_history_of_a_code_name_with_a_slash(api: httpx.Client, bus: IntegrationBus) -> None:
    task_id = log(api, user("dept/alice"))
    run(bus)
    r = api.get("/api/objects/cms.user/dept%2Falice/history")
    assert r.status_code == 200, r.text
    assert [x["task_id"] for x in r.json()["records"]] == [task_id]


def test_object_history_of_an_unknown_type_is_422(api: httpx.Client) -> None:
    r = api.get("/api/objects/no.such.type/x/history")
    assert r.status_code == 422
    assert "unknown object type 'no.such.type'" in r.json()["detail"]
    r = api.get("/api/objects/cms.userrole/dan%2Fops/history")
    assert r.status_code == 422
    assert "cms.userrole is a binding type" in r.json()["detail"]


# -- PUT /api/tasks/{id}/object ----------------------------------------------------------------
def test_replace_fixes_a_failed_task_and_synchronize_applies_it(
    api: httpx.Client, bus: IntegrationBus, conn: DictConnector
) -> None:
    broken = failed_membership(api, bus, conn)
    before = api.get(f"/api/tasks/{broken}").json()
    conn.knows("cms.user", 3, "nora")
    log(api, user("nora"))
    bus.synchronize_task(bus.list_tasks()[-1].task_id)  # nora exists now

    r = api.put(f"/api/tasks/{broken}/object", json={"object": membership(3, 2)})
    assert r.status_code == 200, r.text
    task = r.json()
    assert set(task) == set(before)  # the shape of GET /api/tasks/{id}
    assert task["task_id"] == broken and task["created_at"] == before["created_at"]
    assert task == api.get(f"/api/tasks/{broken}").json()
    record = api.get(f"/api/tasks/{broken}/history").json()
    assert record["external"] == membership(3, 2) and record["state"] == "failed"
    assert [t["identity"]["code_name"] for t in record["translations"]] == ["nora", "ops"]

    synced = api.post(f"/api/tasks/{broken}/synchronize")
    assert synced.status_code == 200 and synced.json()["applied"] is True
    done = api.get(f"/api/tasks/{broken}/history").json()
    assert done["state"] == "applied" and done["external"] == membership(3, 2)
    assert all(t["internal_id"] is not None for t in done["translations"])
    assert len(done["errors"]) == 1  # the error log is kept
    assert api.get(f"/api/tasks/{broken}").status_code == 404


@pytest.mark.parametrize(
    ("replacement", "reason"),
    [
        (ext("cms.user", user_name="x", no_such_column=1), "no_such_column"),
        (ext("no.such.type", a=1), "no.such.type"),
        (membership(404, 2), "404"),  # the connector knows no user 404
        ("not a dict", "the connector could not prepare the object"),  # the connector raises
    ],
)
def test_a_bad_replacement_is_422_and_changes_nothing(
    api: httpx.Client, bus: IntegrationBus, conn: DictConnector, replacement: Any, reason: str
) -> None:
    broken = failed_membership(api, bus, conn)
    before = task_row(bus, broken)
    r = api.put(f"/api/tasks/{broken}/object", json={"object": replacement})
    assert r.status_code == 422, r.text
    assert reason in r.json()["detail"]
    assert task_row(bus, broken) == before


def test_replace_body_must_be_an_object_field(
    api: httpx.Client, bus: IntegrationBus, conn: DictConnector
) -> None:
    task_id = log(api, user("eve"))
    before = task_row(bus, task_id)
    for body in ({}, {"obj": user("x")}, {"object": user("x"), "extra": 1}):
        r = api.put(f"/api/tasks/{task_id}/object", json=body)
        assert r.status_code == 422, body
    r = api.put(f"/api/tasks/{task_id}/object", json={"object": user("x\x00y")})
    assert r.status_code == 422 and "NUL" in r.text
    assert task_row(bus, task_id) == before


def test_replace_of_a_task_not_queued_is_404(api: httpx.Client, bus: IntegrationBus) -> None:
    task_id = log(api, user("fay"))
    run(bus)
    r = api.put(f"/api/tasks/{task_id}/object", json={"object": user("fay2")})
    assert r.status_code == 404 and f"no queued task with id {task_id}" in r.json()["detail"]
    assert api.put("/api/tasks/999999/object", json={"object": user("x")}).status_code == 404
    assert bus.get_object("cms.user", "fay2") is None


def test_replace_of_a_task_being_applied_is_409(
    api: httpx.Client, bus: IntegrationBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    task_id = log(api, user("gus"))

    def busy(task_id: int, external_obj: Any, **_kw: Any) -> Any:
        raise TaskBusyError(f"task {task_id} is being applied by a running batch right now")

    monkeypatch.setattr(bus, "replace_task_object", busy)
    r = api.put(f"/api/tasks/{task_id}/object", json={"object": user("gus2")})
    assert r.status_code == 409 and "right now" in r.json()["detail"]


# -- auth and schema ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/tasks/1/history"),
        ("PUT", "/api/tasks/1/object"),
        ("GET", "/api/objects/cms.user/alice/history"),
    ],
)
def test_history_routes_need_the_token(api: httpx.Client, method: str, path: str) -> None:
    del api.headers["Authorization"]
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        r = api.request(method, path, headers=headers, json={"object": {}})
        assert r.status_code == 401, (headers, r.status_code)


def test_history_routes_are_in_the_openapi_schema(api: httpx.Client) -> None:
    paths = api.get("/openapi.json").json()["paths"]
    assert "get" in paths["/api/tasks/{task_id}/history"]
    assert "put" in paths["/api/tasks/{task_id}/object"]
    assert "get" in paths["/api/objects/{object_type}/{code_name}/history"]


def test_reading_a_task_that_left_the_queue_says_where_its_record_is(
    api: httpx.Client, bus: IntegrationBus
) -> None:
    """GET /api/tasks/N of an applied task is 404 (the queue's view, CONTRACT), and its detail
    says that the task left the queue, how, and where its record is; an id never logged says
    that there is no record either."""
    task_id = log(api, user("gil"))
    run(bus)
    r = api.get(f"/api/tasks/{task_id}")
    detail = r.json()["detail"]
    assert r.status_code == 404 and f"no queued task with id {task_id}" in detail
    assert "left the queue (applied at " in detail
    assert f"GET /api/tasks/{task_id}/history" in detail
    assert api.get(f"/api/tasks/{task_id}/history").json()["state"] == "applied"
    r = api.get("/api/tasks/987654")
    assert r.status_code == 404 and "no record of it" in r.json()["detail"]


def test_deleting_a_task_that_left_the_queue_says_where_its_record_is(
    api: httpx.Client, bus: IntegrationBus
) -> None:
    """Trial 6: DELETE said only "no queued task with id N" where GET, PUT and synchronize
    on the same id say how it left and where its record is."""
    task_id = log(api, user("hal"))
    run(bus)
    r = api.delete(f"/api/tasks/{task_id}")
    detail = r.json()["detail"]
    assert r.status_code == 404 and "left the queue (applied at " in detail
    assert f"GET /api/tasks/{task_id}/history" in detail
    r = api.delete("/api/tasks/987654")
    assert r.status_code == 404 and "no record of it" in r.json()["detail"]
    queued = log(api, user("ivy"))
    assert api.delete(f"/api/tasks/{queued}").status_code == 204
    [event] = [e for e in bus.event_log() if e.code == "DELETETASK"]
    assert f"task {queued} (" in event.message and "by the HTTP API from " in event.message


def test_a_connector_name_in_the_wrong_case_is_pointed_out(
    api: httpx.Client, bus: IntegrationBus
) -> None:
    """Trial 6: /api/connectors/testconnector/tasks answered only that no such connector is
    registered; names are case-sensitive, which is easy to miss in a URL."""
    body = {"task_type": "CreateObject", "object": user("ida"), "site_name": "main"}
    r = api.post("/api/connectors/testconnector/tasks", json=body)
    assert r.status_code == 404
    assert r.json()["detail"] == (
        "no connector named 'testconnector' is registered; did you mean 'TestConnector'? "
        "(connector names are case-sensitive)"
    )
    r = api.post("/api/connectors/Nobody/tasks", json=body)
    assert r.json()["detail"] == "no connector named 'Nobody' is registered"
    r = api.get("/api/tasks", params={"connector": "TESTCONNECTOR"})
    assert r.status_code == 404 and "did you mean 'TestConnector'?" in r.json()["detail"]
    with pytest.raises(ConnectorNotFoundError, match="did you mean 'TestConnector'"):
        bus.process_tasks("testConnector")
