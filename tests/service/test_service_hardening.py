"""Issue 10, the HTTP side: bad input is 4xx (never "database unavailable"), /readyz, form
limits, keyset pages of /api/tasks, busy tasks, the failure throttle, and auth everywhere.
In process (``httpx.ASGITransport``; `syncbus serve` itself over real HTTP), on SQLite and
PostgreSQL where a database is involved."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from syncbus import IntegrationBus, create_app
from syncbus.errors import ConfigurationError, TaskBusyError
from syncbus.store.tables import setting_table
from tests.admin import (
    TOKEN as ADMIN_TOKEN,
)
from tests.admin import (
    RecordingDispatcher,
    csrf_of,
    log_items,
    make_admin_bus,
    make_failed_task,
    sign_in,
    wait_job,
)
from tests.admin import admin_bus as admin_bus  # a fixture
from tests.http_server import asgi_client, spawn_listening
from tests.seq import SEQ_TYPE, SeqConnector

TOKEN = "hardening-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def seq_bus(db_url: str) -> Iterator[IntegrationBus]:
    bus = IntegrationBus(db_url)
    bus.register_object_type(SEQ_TYPE)
    bus.create_schema()
    bus.register_connector(SeqConnector)
    yield bus
    bus.close()


@pytest.fixture
def client(seq_bus: IntegrationBus) -> Iterator[httpx.Client]:
    """A client of the app, without the token."""
    app = create_app(seq_bus, api_token=TOKEN, run_dispatcher=False)
    with asgi_client(app) as c:
        yield c


@pytest.fixture
def api(client: httpx.Client) -> httpx.Client:
    """The same client, with the token."""
    client.headers.update(AUTH)
    return client


def locs(response: httpx.Response) -> list[list[Any]]:
    return [err["loc"] for err in response.json()["detail"]]


# -- 7. bad input is 422, an unavailable database 503 ----------------------------------------------
@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"site_name": "ma\x00in"}, "site_name"),
        ({"idempotency_key": "k\x00"}, "idempotency_key"),
        ({"object": {"key": "a\x00b", "n": 1}}, "object"),
        ({"object": {"key": "a", "n": 1, "tags": ["x", {"de\x00ep": 1}]}}, "object"),
    ],
)
def test_nul_in_the_body_is_422_naming_the_field(
    api: httpx.Client, seq_bus: IntegrationBus, extra: dict[str, Any], field: str
) -> None:
    body = {"task_type": "CreateObject", "object": {"key": "a", "n": 1}, **extra}
    r = api.post("/api/connectors/Seq/tasks", json=body)
    assert r.status_code == 422, r.text
    assert ["body", field] in locs(r)
    assert "NUL" in r.text
    batch = {"tasks": [{"task_type": "CreateObject", "object": {"key": "b", "n": 1}}, body]}
    r = api.post("/api/connectors/Seq/tasks/batch", json=batch)
    assert r.status_code == 422 and ["body", "tasks", 1, field] in locs(r)
    assert seq_bus.list_tasks() == []


@pytest.mark.parametrize(
    ("method", "path", "loc"),
    [
        ("POST", "/api/connectors/Se%00q/tasks", ["path"]),
        ("POST", "/api/connectors/Se%00q/tasks/batch", ["path"]),
        ("PATCH", "/api/connectors/Se%00q", ["path"]),
        ("GET", "/api/tasks?connector=Se%00q", ["query", "connector"]),
        ("POST", "/api/notify?connector=%00", ["query", "connector"]),
        ("GET", "/CMSPages/IntegrationNotify.aspx?connectorName=x%00", ["query", "connectorName"]),
    ],
)
def test_nul_in_the_path_or_query_is_422(
    api: httpx.Client, seq_bus: IntegrationBus, method: str, path: str, loc: list[str]
) -> None:
    body = {"task_type": "CreateObject", "object": {"key": "a", "n": 1}}
    r = api.request(method, path, json={"enabled": True} if method == "PATCH" else body)
    assert r.status_code == 422, r.text
    assert loc in locs(r) and "NUL" in r.text
    # Every error has the documented keys; the refused value is repeated, NUL escaped.
    assert all({"loc", "msg", "input"} <= set(e) for e in r.json()["detail"]), r.text
    assert any("\x00" in e["input"] for e in r.json()["detail"]), r.text
    assert seq_bus.list_tasks() == []


@pytest.mark.parametrize("route", ["/api/connectors/Seq/tasks", "/api/connectors/Seq/tasks/batch"])
def test_a_body_that_is_not_json_is_422_saying_where_and_why(
    api: httpx.Client, seq_bus: IntegrationBus, route: str
) -> None:
    """Trial 4: FastAPI answered `"msg": "JSON decode error", "input": {}`, and for a JSON
    body sent as text/plain "Input should be a valid dictionary"."""
    json_type = {"content-type": "application/json"}
    r = api.post(route, content=b'{"task_type": "CreateObject", "object": }', headers=json_type)
    assert r.status_code == 422, r.text
    (error,) = r.json()["detail"]
    assert error["loc"] == ["body", 40]
    assert error["msg"] == "the body is not valid JSON: Expecting value at character 40"
    assert error["input"].endswith('"object": }')
    good = b'{"task_type": "CreateObject", "object": {"key": "a", "n": 1}}'
    for headers, named in (({"content-type": "text/plain"}, "'text/plain'"), ({}, "none")):
        r = api.post(route, content=good, headers=headers)
        assert r.status_code == 422, r.text
        (error,) = r.json()["detail"]
        assert error["loc"] == ["body"] and "Content-Type: application/json" in error["msg"]
        assert error["msg"].endswith(f"(this request's content type: {named})"), error
    assert seq_bus.list_tasks() == []


def test_a_value_the_database_refuses_is_422(seq_bus: IntegrationBus) -> None:
    """Behind the edge checks: a driver's DataError / IntegrityError is bad input, not an
    outage. A test route runs a real statement that the database refuses."""
    app = create_app(seq_bus, api_token=TOKEN, run_dispatcher=False)

    def refused(kind: str) -> None:
        with seq_bus.engine.begin() as conn:
            if kind == "integrity":
                row = {"key": "dup", "value": ""}
                conn.execute(setting_table.insert().values(row))
                conn.execute(setting_table.insert().values(row))
            else:  # PostgreSQL: invalid_text_representation, a DataError
                conn.execute(sa.text("SELECT CAST(:v AS integer)"), {"v": "not a number"})

    app.add_api_route("/api/test-refused/{kind}", refused)
    with asgi_client(app, headers=AUTH) as client:
        r = client.get("/api/test-refused/integrity")
        assert r.status_code == 422, r.text
        assert "IntegrityError" in r.json()["detail"] and "INSERT" not in r.json()["detail"]
        if seq_bus.engine.dialect.name == "postgresql":
            r = client.get("/api/test-refused/data")
            assert r.status_code == 422 and "DataError" in r.json()["detail"], r.text
        assert "retry-after" not in r.headers


def test_an_unreachable_database_is_503_with_retry_after(tmp_path: Path, db_url: str) -> None:
    if db_url.startswith("sqlite"):
        bad = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'x.db'}"
    else:
        bad = "postgresql+psycopg://postgres@127.0.0.1:1/nowhere?connect_timeout=2"
    bus = IntegrationBus(bad)
    app = create_app(bus, api_token=TOKEN, run_dispatcher=False)
    with asgi_client(app) as client:
        r = client.get("/api/tasks", headers=AUTH)
        assert r.status_code == 503, r.text
        assert r.headers["retry-after"].isdigit() and "database unavailable" in r.text
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["status"] == "unavailable"
        assert "retry-after" in ready.headers
    bus.close()


# -- /readyz ---------------------------------------------------------------------------------------
def test_readyz_is_open_and_says_writable(client: httpx.Client) -> None:
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json() == {"status": "ready", "database": "writable"}


def test_readyz_is_503_within_2s_while_another_writer_holds_the_lock(
    client: httpx.Client, seq_bus: IntegrationBus
) -> None:
    if seq_bus.engine.dialect.name == "postgresql":
        holder: Any = seq_bus.engine.connect()
        holder.begin()
        holder.exec_driver_sql("LOCK TABLE syncbus_setting IN ACCESS EXCLUSIVE MODE")
    else:
        path = seq_bus.engine.url.database
        assert path
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
    # No stopwatch (a busy machine may be slow to answer): the lock stays held while the probe
    # runs, so a 503 that says "locked" can only come from the probe's own bounded lock wait
    # (an unbounded wait would hang until the client's timeout fails the test); that bound and
    # the probe's deadline are at most 2 s.
    from syncbus.service import ready

    assert ready.LOCK_WAIT_SECONDS < ready.DEADLINE_SECONDS <= 2
    try:
        r = client.get("/readyz", timeout=30)
        assert r.status_code == 503, r.text
        assert r.json()["database"] == (
            f"the database is locked by another writer (waited {ready.LOCK_WAIT_SECONDS:g} s)"
        )
        assert r.headers["retry-after"].isdigit()
    finally:
        holder.rollback() if isinstance(holder, sa.Connection) else holder.execute("ROLLBACK")
        holder.close()
    assert client.get("/readyz").status_code == 200
    assert seq_bus.settings.integration_enabled  # the probe left no row behind
    with seq_bus.reader.connect() as conn:
        keys = conn.execute(sa.select(setting_table.c.key)).scalars().all()
    assert not [k for k in keys if "readyz" in k]


def test_readyz_checks_the_free_space_of_sqlite(sqlite_url: str) -> None:
    from syncbus.service.ready import NotReady, check_writable

    bus = IntegrationBus(sqlite_url)
    bus.create_schema()
    check_writable(bus)
    with pytest.raises(NotReady, match="disk holding the database is full"):
        check_writable(bus, min_free_bytes=2**62)
    bus.close()


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs (needs root; skipped elsewhere)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_readyz_is_503_when_the_sqlite_disk_is_full(tiny_disk: Path) -> None:
    bus = IntegrationBus(f"sqlite:///{tiny_disk / 'syncbus.db'}")
    bus.create_schema()
    app = create_app(bus, api_token=TOKEN, run_dispatcher=False)
    with asgi_client(app) as client:
        assert client.get("/readyz").status_code == 200
        fd = os.open(tiny_disk / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:  # no space left on device
            pass
        finally:
            os.close(fd)
        r = client.get("/readyz")
        assert r.status_code == 503 and "full" in r.json()["database"], r.text
        assert str(tiny_disk) not in r.text  # names no path
        (tiny_disk / "filler").unlink()
        assert client.get("/readyz").status_code == 200
    bus.close()


# -- 8. forms --------------------------------------------------------------------------------------
def admin_app(bus: IntegrationBus, **kwargs: Any) -> Any:
    return create_app(
        bus,
        api_token=ADMIN_TOKEN,
        dispatcher=RecordingDispatcher(bus),
        run_dispatcher=False,
        **kwargs,
    )


@pytest.fixture
def admin_client(admin_bus: IntegrationBus) -> Iterator[httpx.Client]:
    """A client of the admin app, not signed in."""
    with asgi_client(admin_app(admin_bus)) as client:
        yield client


@pytest.fixture
def admin(admin_client: httpx.Client) -> httpx.Client:
    """The same client, signed in."""
    assert sign_in(admin_client).status_code == 303
    return admin_client


def test_sign_in_with_too_many_fields_is_400(admin_client: httpx.Client) -> None:
    body = "&".join(f"f{i}=x" for i in range(10_001)) + f"&token={ADMIN_TOKEN}"
    r = admin_client.post(
        "/admin/signin",
        content=body,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 400 and "more than 20 fields" in r.text


def post_form(client: httpx.Client, path: str, fields: list[tuple[str, str]]) -> httpx.Response:
    data: dict[str, list[str]] = {"csrf_token": [csrf_of(client.get("/admin/").text)]}
    for name, value in fields:
        data.setdefault(name, []).append(value)
    return client.post(path, data=data)


def test_too_many_selected_ids_is_a_clear_4xx(
    admin: httpx.Client, admin_bus: IntegrationBus
) -> None:
    ids = log_items(admin_bus, "Shop", ["a", "b"])
    r = post_form(admin, "/admin/jobs", [("op", "delete-selected")] + [("ids", "1")] * 10_000)
    assert r.status_code == 400 and "at most 5000 tasks" in r.text
    r = post_form(admin, "/admin/jobs", [("op", "delete-selected")] + [("ids", "1")] * 5_001)
    assert r.status_code == 422 and "5001 tasks are selected" in r.text
    assert [t.task_id for t in admin_bus.list_tasks()] == ids


@pytest.mark.parametrize("bad", ["\u00b2", "\u0661", "0", "-1", str(2**63), "1e3", " 7", ""])
def test_ids_must_be_task_ids(admin: httpx.Client, admin_bus: IntegrationBus, bad: str) -> None:
    [task_id] = log_items(admin_bus, "Shop", ["a"])
    fields = [("op", "delete-selected"), ("ids", str(task_id)), ("ids", bad)]
    r = post_form(admin, "/admin/jobs", fields)
    assert r.status_code == 422, r.text
    assert "is not a task id" in r.text
    assert admin_bus.get_task(task_id) is not None


def test_nul_in_an_admin_form_or_query_is_422(admin: httpx.Client) -> None:
    r = post_form(admin, "/admin/process", [("connector", "Sh\x00op")])
    assert r.status_code == 422 and "connector" in r.text and "NUL" in r.text
    r = admin.get("/admin/tasks", params={"text": "a\x00b"})
    assert r.status_code == 422 and ["query", "text"] in locs(r)


# -- 9. keyset pages of /api/tasks -----------------------------------------------------------------
def test_api_tasks_pages_by_key(api: httpx.Client, seq_bus: IntegrationBus) -> None:
    from syncbus.intake import TaskRequest

    outcomes = seq_bus.log_tasks("Seq", [TaskRequest({"key": f"k{i}", "n": i}) for i in range(250)])
    ids = [o.task_id for o in outcomes]
    first = api.get("/api/tasks").json()
    assert [t["task_id"] for t in first["tasks"]] == ids[:100]
    assert first["next_after"] == ids[99]
    second = api.get("/api/tasks", params={"after": first["next_after"]}).json()
    assert [t["task_id"] for t in second["tasks"]] == ids[100:200]
    last = api.get("/api/tasks", params={"after": second["next_after"]}).json()
    assert [t["task_id"] for t in last["tasks"]] == ids[200:]
    assert last["next_after"] is None
    exact = api.get("/api/tasks", params={"limit": 50, "after": ids[199]}).json()
    assert len(exact["tasks"]) == 50 and exact["next_after"] is None
    everything = api.get("/api/tasks", params={"limit": 1000, "connector": "Seq"}).json()
    assert len(everything["tasks"]) == 250 and everything["next_after"] is None
    for limit in (0, 1001):
        r = api.get("/api/tasks", params={"limit": limit})
        assert r.status_code == 422 and ["query", "limit"] in locs(r)


def test_api_tasks_of_an_unknown_connector_is_404(
    api: httpx.Client, seq_bus: IntegrationBus
) -> None:
    """As the CLI says: an unknown name is an error, not an empty queue."""
    assert api.get("/api/tasks", params={"connector": "Seq"}).json() == {
        "tasks": [],
        "next_after": None,
    }
    r = api.get("/api/tasks", params={"connector": "Nope"})
    assert r.status_code == 404 and "Nope" in r.text


# -- 11. busy tasks, and manual synchronizes in /metrics -------------------------------------------
def busy(task_id: int, **_: object) -> None:  # as delete_task(id, by=...)
    raise TaskBusyError(f"task {task_id} is in a batch that is being applied right now")


def test_api_answers_409_for_a_task_being_applied(
    api: httpx.Client, seq_bus: IntegrationBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bus raises TaskBusyError (issue 10, item 2); the API maps it to 409."""
    task_id = seq_bus.process_external_task("Seq", {"key": "a", "n": 1})
    monkeypatch.setattr(seq_bus, "synchronize_task", busy)
    monkeypatch.setattr(seq_bus, "delete_task", busy)
    for r in (api.post(f"/api/tasks/{task_id}/synchronize"), api.delete(f"/api/tasks/{task_id}")):
        assert r.status_code == 409 and "being applied right now" in r.json()["detail"]


def test_admin_shows_a_busy_task_as_a_message(
    admin: httpx.Client, admin_bus: IntegrationBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    [task_id] = log_items(admin_bus, "Shop", ["a"])
    monkeypatch.setattr(admin_bus, "synchronize_task", busy)
    monkeypatch.setattr(admin_bus, "delete_task", busy)
    expected = f"Task {task_id} is being applied right now; try again in a moment."
    token = csrf_of(admin.get("/admin/").text)
    for action in ("synchronize", "delete"):
        url = f"/admin/tasks/{task_id}/{action}"
        r = admin.post(url, data={"csrf_token": token, "back": f"/admin/tasks/{task_id}"})
        assert r.status_code == 303 and r.headers["location"] == f"/admin/tasks/{task_id}"
        page = admin.get(r.headers["location"])
        assert page.status_code == 200 and expected in page.text
        htmx = {"HX-Request": "true", "X-CSRF-Token": token}
        row = admin.post(url, headers=htmx)
        assert row.status_code == 200 and f'id="task-{task_id}"' in row.text
        assert "being applied right now" in row.text
    r = post_form(admin, "/admin/jobs", [("op", "sync-selected"), ("ids", str(task_id))])
    progress = wait_job(admin, r.headers["location"])
    assert "it is being applied right now" in progress
    assert admin_bus.get_task(task_id) is not None


def metric(text: str, name: str, connector: str) -> float:
    for line in text.splitlines():
        if line.startswith(f'{name}{{connector="{connector}"}} '):
            return float(line.split()[-1])
    return 0.0


def test_mass_synchronize_counts_in_metrics(admin: httpx.Client, admin_bus: IntegrationBus) -> None:
    failing = make_failed_task(admin_bus, "needs-ref")  # a run of this process: counted
    [ok] = log_items(admin_bus, "Refs", ["plain"])

    def counters() -> tuple[float, float]:
        text = admin.get("/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).text
        return (
            metric(text, "syncbus_tasks_applied_total", "Refs"),
            metric(text, "syncbus_tasks_failed_total", "Shop"),
        )

    before = counters()
    r = post_form(
        admin, "/admin/jobs", [("op", "sync-selected"), ("ids", str(failing)), ("ids", str(ok))]
    )
    wait_job(admin, r.headers["location"])
    [event] = [e for e in admin_bus.event_log() if e.code == "SYNCSELECTEDTASKS"]
    assert "1 applied, 1 failed" in event.message
    after = counters()
    assert (after[0] - before[0], after[1] - before[1]) == (1.0, 1.0)


# -- 12. the throttle of wrong tokens --------------------------------------------------------------
def test_a_correct_token_signs_in_after_many_wrong_ones(admin_client: httpx.Client) -> None:
    for _ in range(10):
        assert sign_in(admin_client, token="wrong").status_code == 401
    r = sign_in(admin_client, token="wrong")
    assert r.status_code == 429 and 0 < int(r.headers["retry-after"]) <= 300
    assert sign_in(admin_client).status_code == 303  # the operator is never locked out
    assert admin_client.get("/admin/").status_code == 200


def test_api_bearer_guesses_are_throttled_but_the_token_works(client: httpx.Client) -> None:
    for _ in range(10):
        r = client.get("/api/tasks", headers={"Authorization": "Bearer guess"})
        assert r.status_code == 401
    r = client.get("/api/tasks", headers={"Authorization": "Bearer guess"})
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    assert client.get("/api/tasks", headers=AUTH).status_code == 200
    assert client.get("/api/tasks").status_code == 401  # no token: not a guess, not 429


def test_sign_in_and_api_share_one_budget_per_client(admin_bus: IntegrationBus) -> None:
    with asgi_client(admin_app(admin_bus)) as client:
        for _ in range(5):
            assert sign_in(client, token="wrong").status_code == 401
            assert (
                client.get("/api/tasks", headers={"Authorization": "Bearer x"}).status_code == 401
            )
        assert sign_in(client, token="wrong").status_code == 429


def test_the_throttle_forgets_after_its_window_and_bounds_its_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from syncbus.service import auth

    now = [1000.0]  # the throttle's clock, moved by the test instead of waiting
    monkeypatch.setattr(auth, "time", SimpleNamespace(monotonic=lambda: now[0]))
    throttle = auth.FailureThrottle(limit=2, window=0.3, max_clients=100)
    throttle.failed("a")
    throttle.failed("a")
    assert throttle.retry_after("a") == 1 and throttle.retry_after("b") == 0
    now[0] += 0.29
    assert throttle.retry_after("a") == 1  # still inside the window
    now[0] += 0.02
    assert throttle.retry_after("a") == 0
    for n in range(5_000):
        throttle.failed(f"10.0.{n // 256}.{n % 256}")
    assert throttle.tracked() == 100


def test_forwarded_for_is_honoured_only_from_trusted_proxies(admin_bus: IntegrationBus) -> None:
    def guesses(client: httpx.Client, forwarded_for: str, n: int) -> list[int]:
        headers = {"Authorization": "Bearer guess", "X-Forwarded-For": forwarded_for}
        return [client.get("/api/tasks", headers=headers).status_code for _ in range(n)]

    # The peer is 127.0.0.1, as behind a proxy on the same machine.
    with asgi_client(admin_app(admin_bus)) as client:  # no trusted proxy: the header is ignored
        assert guesses(client, "203.0.113.1", 10) == [401] * 10
        assert guesses(client, "203.0.113.2", 1) == [429]
    with asgi_client(admin_app(admin_bus, trusted_proxies="127.0.0.1")) as client:
        assert guesses(client, "203.0.113.1", 11) == [401] * 10 + [429]
        assert guesses(client, "203.0.113.2", 1) == [401]  # another client behind the proxy
        assert guesses(client, "203.0.113.1, 203.0.113.2", 1) == [401]  # the last hop counts


@pytest.mark.multiprocess
def test_serve_does_not_believe_forwarded_for_from_loopback(tmp_path: Path) -> None:
    """`syncbus serve` as deployed: uvicorn alone would take X-Forwarded-For from any
    loopback peer as the client, and each guess would come from a 'new' address."""
    serve = [sys.executable, "-m", "syncbus.cli", "serve", "--db", f"sqlite:///{tmp_path}/s.db"]
    proc, base = spawn_listening(
        lambda port: [*serve, "--port", str(port)],
        env={**os.environ, "SYNCBUS_API_TOKEN": TOKEN},
    )
    try:
        statuses = []
        for n in range(11):
            headers = {"X-Forwarded-For": f"198.51.100.{n}"}
            r = httpx.post(base + "/admin/signin", data={"token": "wrong"}, headers=headers)
            statuses.append(r.status_code)
        assert statuses == [401] * 10 + [429]
        r = httpx.get(base + "/api/tasks", headers={**AUTH, "X-Forwarded-For": "198.51.100.99"})
        assert r.status_code == 200
        wrong = {"Authorization": "Bearer guess", "X-Forwarded-For": "198.51.100.77"}
        assert httpx.get(base + "/api/tasks", headers=wrong).status_code == 429
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


# -- 13. auth everywhere, no empty token, Secure flash, auth before validation ---------------------
@pytest.mark.parametrize("path", ["/openapi.json", "/docs", "/redoc", "/nowhere"])
def test_api_docs_need_the_token(client: httpx.Client, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    if path != "/nowhere":
        assert client.get(path, headers=AUTH).status_code == 200


def test_empty_token_refuses_to_build_the_app(
    seq_bus: IntegrationBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    for empty in ("", "   ", "\n"):
        with pytest.raises(ConfigurationError, match=r"api_token is empty.*no_auth"):
            create_app(seq_bus, api_token=empty, run_dispatcher=False)
    monkeypatch.setenv("SYNCBUS_API_TOKEN", " ")
    with pytest.raises(ConfigurationError, match="SYNCBUS_API_TOKEN is empty"):
        create_app(seq_bus, run_dispatcher=False)
    with pytest.raises(ConfigurationError, match="not both"):
        create_app(seq_bus, api_token="t", no_auth=True, run_dispatcher=False)
    app = create_app(seq_bus, no_auth=True, run_dispatcher=False)  # explicit: open
    with asgi_client(app) as client:
        assert client.get("/api/tasks").status_code == 200


def test_bad_trusted_proxy_setting_is_a_configuration_error(seq_bus: IntegrationBus) -> None:
    with pytest.raises(ConfigurationError, match=r"'proxy\.example' is not an IP"):
        create_app(seq_bus, api_token=TOKEN, trusted_proxies="10.0.0.1, proxy.example")


def test_flash_cookie_is_secure_over_https(admin_bus: IntegrationBus) -> None:
    app = admin_app(admin_bus, trusted_proxies=["127.0.0.1"])
    with asgi_client(app) as client:
        assert sign_in(client).status_code == 303
        token = csrf_of(client.get("/admin/").text)
        for proto, secure in (("https", True), ("http", False)):
            r = client.post(
                "/admin/process",
                data={"csrf_token": token},
                headers={"X-Forwarded-Proto": proto},
            )
            [flash] = [c for c in r.headers.get_list("set-cookie") if "syncbus_flash" in c]
            flags = {part.strip().lower() for part in flash.split(";")[1:]}
            assert ("secure" in flags) is secure, flash
            assert {"httponly", "samesite=strict"} <= flags


def test_authentication_comes_before_body_validation(
    client: httpx.Client, seq_bus: IntegrationBus
) -> None:
    bad = {"content-type": "application/json"}
    r = client.post("/api/connectors/Seq/tasks", content=b"{nope", headers=bad)
    assert r.status_code == 401
    r = client.post("/api/connectors/Seq/tasks", content=b"x" * (6 * 1024 * 1024))
    assert r.status_code == 401  # not 413: nothing is read for a caller without the token
    r = client.post("/api/connectors/Seq/tasks", content=b"{nope", headers={**bad, **AUTH})
    assert r.status_code == 422
    assert seq_bus.list_tasks() == []


def test_mass_delete_skips_a_task_a_running_batch_holds(pg_url: str) -> None:
    """PostgreSQL: a worker's batch holds its tasks' row locks (a stalled worker, for ever);
    a mass delete must not wait on them."""
    bus = make_admin_bus(pg_url)
    held, free = log_items(bus, "Shop", ["held", "free"])
    holder = bus.engine.connect()
    holder.begin()
    holder.exec_driver_sql(f"SELECT 1 FROM syncbus_task WHERE task_id = {held} FOR UPDATE")
    try:
        with asgi_client(admin_app(bus)) as client:
            assert sign_in(client).status_code == 303
            fields = [("op", "delete-selected"), ("ids", str(held)), ("ids", str(free))]
            r = post_form(client, "/admin/jobs", fields)
            progress = wait_job(client, r.headers["location"])
            assert "it is being applied right now" in progress
    finally:
        holder.rollback()
        holder.close()
    assert [t.task_id for t in bus.list_tasks()] == [held]
    [event] = [e for e in bus.event_log() if e.code == "DELETESELECTEDTASKS"]
    assert "1 deleted, 1 skipped" in event.message
    bus.close()


def test_metrics_directories_of_killed_services_are_swept(tmp_path: Path) -> None:
    """Trial 6: every SIGKILLed `serve --processes N` left its metrics directory in /tmp.
    A starting service removes those of processes that no longer run (its own user's)."""
    from syncbus.service.server import METRICS_PREFIX, sweep_metrics_dirs

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    stale = tmp_path / f"{METRICS_PREFIX}{int(dead.stdout)}-abc"
    live = tmp_path / f"{METRICS_PREFIX}{os.getpid()}-def"
    other = tmp_path / "syncbus-metrics-xyz"  # an older name, or not ours to judge
    for d in (stale, live, other):
        d.mkdir()
        (d / "counter_1.db").write_bytes(b"x")
    assert sweep_metrics_dirs(str(tmp_path)) == [str(stale)]
    assert not stale.exists() and live.exists() and other.exists()
