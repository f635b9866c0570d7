"""Lanes for operators (CONTRACT §8): the task list filtered by lane and to waiting tasks, in
the Python API, the HTTP API, the CLI and the admin UI; and the dashboard's "why is this not
moving", which names an ENTITY connector's halted lanes and what its tasks wait for, read by
index only. On both databases."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from syncbus import IntegrationBus, InvalidFilterError, create_app, readmodel
from syncbus.cli import app as cli_app
from syncbus.intake import TaskRequest
from syncbus.readmodel import TaskFilter
from syncbus.store import reads
from tests.admin import (
    ERIN,
    TOKEN,
    WAITING_LANE,
    LaneScene,
    csrf_of,
    make_lane_scene,
    row_ids,
    sign_in,
    wait_job,
)
from tests.helpers import user
from tests.http_server import asgi_client

runner = CliRunner()
BAD_LANES = ["", "cms.user/a\x01lice", "cms.user/\x00", "x" * 401]


@pytest.fixture
def scene(bus: IntegrationBus) -> LaneScene:
    return make_lane_scene(bus)


def ids(tasks: list[Any]) -> list[int]:
    return [t.task_id for t in tasks]


# -- the Python API and the read model ------------------------------------------------------
def test_list_tasks_filters_by_lane_and_to_waiting_tasks(
    bus: IntegrationBus, scene: LaneScene
) -> None:
    halted = [scene.error, scene.behind]
    assert ids(bus.list_tasks("Lanes", lane=ERIN)) == halted
    assert ids(bus.list_tasks(lane=ERIN)) == halted  # every connector's lane of that key
    assert ids(bus.list_tasks("Plain", lane=ERIN)) == []  # CONNECTOR tasks have no lane
    assert ids(bus.list_tasks(lane="cms.user/nobody")) == []
    assert ids(bus.list_tasks(lane=ERIN, after=scene.error)) == [scene.behind]
    [waiting] = bus.list_tasks(waiting=True)
    assert waiting.task_id == scene.waiting and waiting.lane == WAITING_LANE
    assert waiting.waiting_for == "cms.user 'alice'"
    assert waiting.waiting_since is not None
    assert (
        dt.timedelta(0) <= dt.datetime.now(dt.UTC) - waiting.waiting_since < dt.timedelta(minutes=5)
    )
    assert ids(bus.list_tasks("Lanes", lane=WAITING_LANE, waiting=True)) == [scene.waiting]
    assert ids(bus.list_tasks("Lanes", lane=ERIN, waiting=True)) == []
    assert ids(bus.list_tasks("Plain", waiting=True)) == []
    for task in bus.list_tasks():
        if task.task_id != scene.waiting:
            assert task.waiting_for is None and task.waiting_since is None
    # The operators' read model counts and pages with the same filters.
    assert readmodel.count_tasks(bus, TaskFilter(lane=ERIN)) == 2
    assert readmodel.count_tasks(bus, TaskFilter(connector="Lanes", waiting=True)) == 1
    page = readmodel.task_page(bus, TaskFilter(lane=ERIN), sort="desc", limit=1)
    assert ids(page.rows) == [scene.behind] and page.next_after == scene.behind
    matching = readmodel.matching_tasks(bus, TaskFilter(lane=ERIN, state="blocked"), 0, 10)
    assert [i for i, _title, _name in matching] == [scene.error]


def test_list_tasks_refuses_a_lane_no_task_can_have(bus: IntegrationBus, scene: LaneScene) -> None:
    for lane in BAD_LANES:
        with pytest.raises(InvalidFilterError, match="lane"):
            bus.list_tasks(lane=lane)
    assert ids(bus.list_tasks(lane="x" * 400)) == []  # as long as the column: fine


def test_dashboard_names_halted_lanes_and_what_tasks_wait_for(
    bus: IntegrationBus, scene: LaneScene
) -> None:
    found = {b.connector_name: b for b in readmodel.blockers(bus)}
    assert set(found) == {"Lanes", "Plain"}
    lanes = found["Lanes"]
    assert lanes.task is None and lanes.lanes is not None
    assert lanes.reason == (
        "1 lane halted by an Error task; 1 task waiting for an entity; its other lanes go on."
    )
    report = lanes.lanes
    assert report.halted == 1 and report.waiting == 1
    [halted] = report.halted_lanes
    assert (halted.lane, halted.task.task_id, halted.behind) == (ERIN, scene.error, 1)
    [waited] = report.waited_for
    assert (waited.entity, waited.lane, waited.tasks) == ("cms.user 'alice'", "cms.user/alice", 1)
    assert waited.first_task_id == scene.waiting and waited.since is not None
    # Under CONNECTOR nothing changes: the first ERROR task blocks the whole queue.
    plain = found["Plain"]
    assert plain.lanes is None and plain.task is not None
    assert (plain.task.task_id, plain.waiting_behind) == (scene.plain_error, 1)
    assert [b.connector_name for b in readmodel.blockers(bus, "Lanes")] == ["Lanes"]

    # Delete erin's ERROR task: her lane goes on; the membership still waits.
    bus.delete_task(scene.error)
    bus.process_tasks("Lanes")
    [lanes] = readmodel.blockers(bus, "Lanes")
    assert lanes.lanes is not None and lanes.lanes.halted == 0 and lanes.lanes.halted_lanes == []
    assert lanes.reason == "1 task waiting for an entity; its other lanes go on."
    # Alice arrives: the membership runs; nothing is left to explain.
    bus.process_external_task("Lanes", {"type": "cms.user", "data": {"user_name": "alice"}})
    bus.process_tasks("Lanes")
    assert bus.list_tasks("Lanes") == []
    assert readmodel.blockers(bus, "Lanes") == []


def test_the_dashboard_counts_and_names_a_few_of_many(
    bus: IntegrationBus, scene: LaneScene
) -> None:
    more = [
        bus.process_external_task(
            "Lanes",
            {"type": "cms.user", "data": {"user_name": f"u{n}"}},
            process_type="Error",
        )
        for n in range(5)
    ]
    report = readmodel.lane_report_of(bus, "Lanes")
    assert report.halted == 6
    assert [h.task.task_id for h in report.halted_lanes] == [scene.error, *more[:2]]
    assert len(report.halted_lanes) == readmodel.LANES_SHOWN


def _plans(bus: IntegrationBus, statements: list[tuple[str, Any]]) -> list[tuple[str, str]]:
    """(statement, its plan as text) for each recorded statement that reads the task table."""
    pg = bus.engine.dialect.name == "postgresql"
    out = []
    with bus.engine.connect() as conn:
        for statement, params in statements:
            if "syncbus_task" not in statement:
                continue
            explain = ("EXPLAIN " if pg else "EXPLAIN QUERY PLAN ") + statement
            rows = conn.exec_driver_sql(explain, params).all()
            out.append((statement, "\n".join(str(r[-1]) for r in rows)))
    return out


# The indexes a lane read may go by: the lane index with connector and lane, the partial
# indexes of ERROR and of waiting tasks, or one task by its id.
_SQLITE_OK = re.compile(
    r"USING (COVERING )?INDEX ix_syncbus_task_lane \(connector_id=\? AND lane=\?"
    r"|USING (COVERING )?INDEX ix_syncbus_task_(blocking|awaits)\b"
    r"|USING INTEGER PRIMARY KEY \(rowid=\?\)"
)
_PG_OK = re.compile(r"using (ix_syncbus_task_lane|ix_syncbus_task_blocking|ix_syncbus_task_awaits)")


def _full_reads(plan: str, postgres: bool) -> list[str]:
    """The lines of a plan that read the task table by anything but an index that holds only
    what the read asks for (a lane, ERROR tasks, waiting tasks, one id): a sequential scan,
    a walk of the whole queue or of a connector's, a lane index read without the lane."""
    lines = plan.splitlines()
    bad = []
    for n, line in enumerate(lines):
        if postgres:
            if "on syncbus_task" not in line:
                continue
            cond = next((x for x in lines[n + 1 : n + 3] if "Index Cond" in x), "")
            if "pk_syncbus_task" in line and "task_id = " in cond:
                continue
            lane_read = re.search(r"\blane\)?(::\w+)? = ", cond)
            if not _PG_OK.search(line) or ("task_lane" in line and not lane_read):
                bad.append(f"{line} / {cond}")
        elif re.search(r"\b(SCAN|SEARCH) syncbus_task\b", line) and not _SQLITE_OK.search(line):
            bad.append(line)
    return bad


def test_lane_reads_are_served_by_indexes(bus: IntegrationBus, scene: LaneScene) -> None:
    """The reads of a big queue: 3,000 more tasks in many lanes and 3,000 under CONNECTOR.
    SQLite plans without statistics (nothing runs ANALYZE); PostgreSQL with them, as its
    autovacuum keeps them."""
    for name in ("Lanes", "Plain"):
        bus.log_tasks(name, [TaskRequest(user(f"p{n % 700}", email=f"{n}@x")) for n in range(3000)])
    if bus.engine.dialect.name == "postgresql":
        with bus.engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE syncbus_task")
    statements: list[tuple[str, Any]] = []

    def record(_c: Any, _cur: Any, statement: str, params: Any, *_: Any) -> None:
        statements.append((statement, params))

    sa.event.listen(bus.engine, "before_cursor_execute", record)
    try:
        readmodel.lane_report_of(bus, "Lanes")
        bus.list_tasks(lane=ERIN)
        bus.list_tasks("Lanes", lane=ERIN)
        bus.list_tasks(waiting=True)
        bus.list_tasks("Lanes", waiting=True)
        readmodel.count_tasks(bus, TaskFilter(lane=ERIN))
        readmodel.count_tasks(bus, TaskFilter(connector="Lanes", waiting=True))
        with bus.reader.connect() as conn:  # the rows halted behind an Error of their lane
            assert reads.first_errors(conn, [("Lanes", ERIN), ("Plain", ERIN)]) == {
                ("Lanes", ERIN): scene.error
            }
        for flt in (TaskFilter(lane=ERIN), TaskFilter(waiting=True)):
            readmodel.task_page(bus, flt, after=1)
            readmodel.task_page(bus, flt, sort="desc", before=scene.behind)
            readmodel.matching_tasks(bus, flt, 1, 10)
        readmodel.task_detail(bus, scene.behind)  # its place in its lane
    finally:
        sa.event.remove(bus.engine, "before_cursor_execute", record)
    plans = _plans(bus, statements)
    assert len(plans) >= 10, plans
    postgres = bus.engine.dialect.name == "postgresql"
    full = [
        (statement, plan)
        for statement, plan in plans
        if _full_reads(plan, postgres)
        # the task page's place in the connector's queue: not a lane read
        and not ("count(*)" in statement and "task_id <=" in statement and "lane" not in statement)
    ]
    assert full == [], "\n\n".join(f"{s}\n{_full_reads(p, postgres)}" for s, p in full)


# -- the HTTP API -----------------------------------------------------------------------------
@pytest.fixture
def client(bus: IntegrationBus, scene: LaneScene) -> Iterator[httpx.Client]:
    app = create_app(bus, api_token=TOKEN, run_dispatcher=False)
    with asgi_client(app, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        yield c


def test_http_task_list_filters_by_lane_and_waiting(client: httpx.Client, scene: LaneScene) -> None:
    def listed(**params: Any) -> list[int]:
        r = client.get("/api/tasks", params=params)
        assert r.status_code == 200, r.text
        return [t["task_id"] for t in r.json()["tasks"]]

    assert listed(lane=ERIN) == [scene.error, scene.behind]
    assert listed(lane=ERIN, connector="Lanes", limit=1) == [scene.error]
    assert listed(waiting="true") == [scene.waiting]
    assert listed(waiting="false", connector="Plain") == [scene.plain_error, scene.plain_behind]
    [task] = client.get("/api/tasks", params={"waiting": "1"}).json()["tasks"]
    assert task["waiting_for"] == "cms.user 'alice'" and task["lane"] == WAITING_LANE
    assert dt.datetime.fromisoformat(task["waiting_since"]).tzinfo is not None
    one = client.get(f"/api/tasks/{scene.waiting}").json()
    assert one["waiting_since"] == task["waiting_since"]
    for params in ({"lane": ""}, {"lane": "x" * 401}, {"waiting": "perhaps"}):
        r = client.get("/api/tasks", params=params)
        assert r.status_code == 422, (params, r.text)
    r = client.get("/api/tasks", params={"lane": "cms.user/a\x01lice"})
    assert r.status_code == 422 and "control characters" in r.text


# -- the CLI ------------------------------------------------------------------------------------
def cli(db_url: str, *args: str) -> Any:
    return runner.invoke(cli_app, ["--db", db_url, *args], env={"COLUMNS": "400"})


def test_cli_lists_a_lane_and_the_waiting_tasks(db_url: str, scene: LaneScene) -> None:
    r = cli(db_url, "tasks", "list", "--lane", ERIN, "--json")
    assert r.exit_code == 0, r.output
    assert [t["task_id"] for t in json.loads(r.output)] == [scene.error, scene.behind]
    r = cli(db_url, "tasks", "list", "--waiting", "--json")
    assert [t["task_id"] for t in json.loads(r.output)] == [scene.waiting]
    r = cli(db_url, "tasks", "list", "--waiting")
    assert r.exit_code == 0 and "waiting for cms.user 'alice' since" in r.output
    r = cli(db_url, "tasks", "list", "--connector", "Lanes", "--lane", "")
    assert r.exit_code == 2 and "invalid lane" in r.output and "Traceback" not in r.output


# -- the admin UI ---------------------------------------------------------------------------
@pytest.fixture
def admin(client: httpx.Client) -> httpx.Client:
    assert sign_in(client).status_code == 303
    return client


def test_admin_task_list_shows_and_filters_lanes(admin: httpx.Client, scene: LaneScene) -> None:
    page = admin.get("/admin/tasks", params={"connector": "Lanes", "lane": ERIN}).text
    assert row_ids(page) == [scene.error, scene.behind]
    assert "failed, halts its lane" in page
    assert f'data-testid="halted-{scene.behind}">halted by #{scene.error}</a>' in page
    assert "2</strong> tasks match (connector Lanes, lane cms.user/erin)" in page
    assert 'name="f_lane" value="cms.user/erin"' in page  # "all matching" acts on the lane
    link = "/admin/tasks?connector=Lanes&amp;lane=cms.user%2Ferin"
    assert f'href="{link}" title="Tasks of this lane" data-testid="lane-{scene.error}"' in page
    page = admin.get("/admin/tasks", params={"waiting": "1"}).text
    assert row_ids(page) == [scene.waiting]
    assert f'data-testid="waiting-{scene.waiting}">waiting for cms.user &#39;alice&#39; for' in page
    assert '<span class="badge waiting">waiting</span>' in page
    assert 'id="f-waiting" name="waiting" type="checkbox" value="1" checked' in page
    page = admin.get("/admin/tasks", params={"connector": "Plain"}).text
    assert "failed, blocks" in page and "lane " not in page.split("<tbody>")[1]
    assert "halted" not in page.split("<tbody>")[1]  # CONNECTOR: behind the error, as before
    for bad in ("cms.user/a\x01lice", "x" * 401):
        r = admin.get("/admin/tasks", params={"lane": bad})
        assert r.status_code == 400 and "Invalid filter" in r.text
    r = admin.get("/admin/tasks", params={"waiting": "perhaps"})
    assert r.status_code == 400 and "waiting filter" in r.text


def test_admin_task_page_shows_lane_and_wait(admin: httpx.Client, scene: LaneScene) -> None:
    page = admin.get(f"/admin/tasks/{scene.waiting}").text
    assert 'data-testid="task-waiting"' in page
    assert "<strong>Waiting for cms.user &#39;alice&#39;</strong> since" in page
    page = admin.get(f"/admin/tasks/{scene.behind}").text
    assert f'data-testid="task-lane"><code>{ERIN}</code>' in page
    assert (
        'data-testid="lane-link">2 tasks in this lane</a>; this one is number 2 (1 ahead)' in page
    )
    assert "halts its lane" not in page
    assert f'halted</strong> behind <a href="/admin/tasks/{scene.error}"' in page
    page = admin.get(f"/admin/tasks/{scene.error}").text
    assert "this task halts its lane (the connector&#39;s other lanes go on)" in page
    page = admin.get(f"/admin/tasks/{scene.plain_error}").text
    assert "this task blocks its connector&#39;s queue" in page


def test_admin_dashboard_explains_lanes(admin: httpx.Client, scene: LaneScene) -> None:
    page = admin.get("/admin/").text
    lanes = page.split('data-testid="lanes-Lanes"')[1].split("</div>")[0]
    assert "1 lane halted by an Error task; 1 task waiting for an entity" in lanes
    assert (
        'lane <a class="lane-key" href="/admin/tasks?connector=Lanes&amp;lane=cms.user%2Ferin">'
        in lanes
    )
    assert f'is halted by <a href="/admin/tasks/{scene.error}">task #{scene.error}' in lanes
    assert "(1 behind it)" in lanes
    assert f'<a href="/admin/tasks/{scene.waiting}">1 task</a> waits for' in lanes
    assert "cms.user &#39;alice&#39;" in lanes
    assert 'href="/admin/tasks?connector=Lanes&amp;waiting=1"' in lanes
    assert "is blocked by" not in lanes
    # CONNECTOR: as before.
    assert (
        f'<strong>Plain</strong> is blocked by\n      <a href="/admin/tasks/{scene.plain_error}">'
        in page
    )


def test_delete_all_of_a_lane_deletes_that_lane_only(
    admin: httpx.Client, bus: IntegrationBus, scene: LaneScene
) -> None:
    def start(**fields: Any) -> httpx.Response:
        fields["csrf_token"] = csrf_of(admin.get("/admin/").text)
        return admin.post("/admin/jobs", data=fields)

    form = {"op": "delete-all", "f_connector": "Lanes", "f_lane": ERIN}
    r = start(**form)
    assert r.status_code == 200 and "Delete 2 tasks?" in r.text
    assert 'name="f_lane" value="cms.user/erin"' in r.text
    r = start(**{**form, "f_lane": "cms.user/\x01"}, confirm="yes")  # never widened to all
    assert r.status_code == 303 and "/admin/jobs/" not in r.headers["location"]
    assert "is not a lane key" in admin.get(r.headers["location"]).text  # the flash says why
    assert len(bus.list_tasks()) == 5
    r = start(**form, confirm="yes")
    wait_job(admin, r.headers["location"])
    assert ids(bus.list_tasks()) == [scene.waiting, scene.plain_error, scene.plain_behind]
