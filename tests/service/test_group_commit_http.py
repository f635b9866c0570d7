"""Group commit over HTTP (``service.gather``), on both databases: single-task requests that
arrive together are logged in one trip to a worker thread, one transaction and one commit, and
each is answered with its own id or its own error, exactly as if it had come alone. One bad
request never fails the requests beside it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI

from syncbus import IntegrationBus, create_app
from syncbus.intake import LogOutcome, TaskRequest
from tests.helpers import (
    CONNECTOR,
    FailingConnector,
    add_connector,
    ext,
    pending,
    run,
    user,
    wait_for,
)
from tests.http_server import asgi_client

URL = f"/api/connectors/{CONNECTOR}/tasks"


@pytest.fixture
def app(bus: IntegrationBus) -> FastAPI:
    add_connector(bus)
    return create_app(bus, run_dispatcher=False)


@pytest.fixture
def api(app: FastAPI) -> Iterator[httpx.Client]:
    with asgi_client(app) as client:
        yield client


Call = Sequence[tuple[str, TaskRequest]]


def hold_first_group(app: FastAPI, behind: int) -> list[int]:
    """The first group's worker waits until ``behind`` more requests wait for the next group
    (so the second group holds all of them, whatever the machine's speed); returns the sizes
    of the groups as they are logged."""
    gatherer = app.state.log_gatherer
    original = gatherer._log_each
    sizes: list[int] = []

    def log_each(calls: Call) -> list[LogOutcome | Exception]:
        sizes.append(len(calls))
        if len(sizes) == 1:
            wait_for(lambda: gatherer.waiting() >= behind, timeout=30)
        return list(original(calls))

    gatherer._log_each = log_each
    return sizes


def at_once(api: httpx.Client, bodies: list[tuple[str, dict[str, Any]]]) -> list[httpx.Response]:
    """POST each (path, body) from a thread of its own, all at once."""
    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(lambda pb: api.post(pb[0], json=pb[1]), bodies))


def first_then(
    api: httpx.Client, app: FastAPI, bodies: list[tuple[str, dict[str, Any]]]
) -> tuple[list[int], httpx.Response, list[httpx.Response]]:
    """One request that leads the first group, then ``bodies`` all at once behind it: they
    make the second group."""
    sizes = hold_first_group(app, len(bodies))
    first: list[httpx.Response] = []
    lead = threading.Thread(
        target=lambda: first.append(
            api.post(URL, json={"task_type": "CreateObject", "object": user("lead")})
        )
    )
    lead.start()
    wait_for(lambda: len(sizes) == 1)
    answers = at_once(api, bodies)
    lead.join(30)
    return sizes, first[0], answers


def counting_commits(bus: IntegrationBus) -> Callable[[], int]:
    counted = [0]
    sa.event.listen(bus.engine, "commit", lambda _c: counted.__setitem__(0, counted[0] + 1))
    return lambda: counted[0]


def test_requests_arriving_together_share_one_commit(
    bus: IntegrationBus, app: FastAPI, api: httpx.Client
) -> None:
    commits = counting_commits(bus)
    bodies = [(URL, {"task_type": "CreateObject", "object": user(f"u{i}")}) for i in range(10)]
    sizes, lead, answers = first_then(api, app, bodies)
    assert lead.status_code == 201, lead.text
    assert sizes == [1, 10]
    assert [r.status_code for r in answers] == [201] * 10, [r.text for r in answers]
    ids = [r.json()["task_id"] for r in answers]
    assert len(set(ids)) == 10 and lead.json()["task_id"] not in ids
    assert commits() == 2  # the lead's, then one for the ten behind it
    assert sorted(pending(bus)) == sorted([lead.json()["task_id"], *ids])
    run(bus)
    assert pending(bus) == []
    assert all(bus.get_object("cms.user", f"u{i}") is not None for i in range(10))


def test_a_lone_request_does_not_wait_for_company(
    app: FastAPI, api: httpx.Client, bus: IntegrationBus
) -> None:
    sizes = hold_first_group(app, 0)
    for i in range(3):
        r = api.post(URL, json={"task_type": "CreateObject", "object": user(f"solo{i}")})
        assert r.status_code == 201, r.text
    assert sizes == [1, 1, 1]
    assert len(pending(bus)) == 3


def test_one_bad_request_in_a_group_fails_alone(
    bus: IntegrationBus, app: FastAPI, api: httpx.Client
) -> None:
    """Each kind of failure a request can meet, all in one group with good requests between
    them: each answers its own error, every good one is logged."""
    bus.register_connector(FailingConnector("Failing"))
    add_connector(bus, "Off")
    bus.set_connector_enabled("Off", False)
    bad = [
        (
            "/api/connectors/Failing/tasks",
            {"task_type": "CreateObject", "object": user("x")},
            422,
        ),  # connector code raises
        (
            "/api/connectors/Nobody/tasks",
            {"task_type": "CreateObject", "object": user("x")},
            404,
        ),  # no such connector
        (
            "/api/connectors/Off/tasks",
            {"task_type": "CreateObject", "object": user("x")},
            409,
        ),  # disabled
        (
            URL,
            {"task_type": "CreateObject", "object": user("x"), "site_name": "nowhere"},
            422,
        ),  # no such site
        (
            URL,
            {"task_type": "CreateObject", "object": ext("cms.nothing", name="x")},
            422,
        ),  # no such object type
        (
            URL,
            {"task_type": "CreateObject", "object": ext("cms.user", email="x@y")},
            422,
        ),  # a required column missing
    ]
    bodies: list[tuple[str, dict[str, Any]]] = []
    expected: list[int] = []
    for i, (path, body, code) in enumerate(bad):  # a good request before each bad one
        bodies += [(URL, {"task_type": "CreateObject", "object": user(f"g{i}")}), (path, body)]
        expected += [201, code]
    sizes, _, answers = first_then(api, app, bodies)
    assert sizes[:2] == [1, len(bodies)]
    assert [r.status_code for r in answers] == expected, [r.text for r in answers]
    details = [r.json()["detail"] for r in answers[1::2]]
    assert "external system said no" in details[0]
    assert "Nobody" in details[1] and "disabled" in details[2] and "nowhere" in details[3]
    assert "cms.nothing" in str(details[4]) and "user_name" in str(details[5])
    assert len(pending(bus, CONNECTOR)) == 1 + len(bad)
    assert pending(bus, "Failing") == [] and pending(bus, "Off") == []


def test_a_task_the_database_refuses_fails_alone(
    bus: IntegrationBus, app: FastAPI, api: httpx.Client
) -> None:
    """A task refused at insert time rolls back its group's transaction; the group's tasks
    are then inserted one by one, so only the refused one fails."""
    original = bus.intake._prepare

    def prepare(*args: Any) -> Any:
        row = original(*args)
        if isinstance(row, dict) and row["title"].endswith("'bad'"):
            row = {**row, "task_type": None}  # NOT NULL: refused by the database
        return row

    bus.intake._prepare = prepare  # type: ignore[method-assign]
    names = ["a1", "a2", "bad", "a3", "a4"]
    sizes, _, answers = first_then(
        api, app, [(URL, {"task_type": "CreateObject", "object": user(n)}) for n in names]
    )
    assert sizes[:2] == [1, 5]
    codes = dict(zip(names, [r.status_code for r in answers], strict=True))
    assert codes == {"a1": 201, "a2": 201, "bad": 422, "a3": 201, "a4": 201}, answers[2].text
    assert len(pending(bus)) == 5


def test_a_repeated_idempotency_key_in_one_group_logs_one_task(
    bus: IntegrationBus, app: FastAPI, api: httpx.Client
) -> None:
    body = {"task_type": "CreateObject", "object": user("k1"), "idempotency_key": "order-9"}
    _, _, answers = first_then(api, app, [(URL, body)] * 8)
    assert sorted(r.status_code for r in answers) == [200] * 7 + [201]
    assert len({r.json()["task_id"] for r in answers}) == 1
    assert len(pending(bus)) == 2


def test_a_queue_limit_holds_within_a_group(
    bus: IntegrationBus, app: FastAPI, api: httpx.Client
) -> None:
    bus.set_queue_limit(CONNECTOR, 4)  # the lead's task, and three more
    _, lead, answers = first_then(
        api, app, [(URL, {"task_type": "CreateObject", "object": user(f"q{i}")}) for i in range(6)]
    )
    assert lead.status_code == 201
    codes = sorted(r.status_code for r in answers)
    assert codes == [201] * 3 + [429] * 3, [r.text for r in answers]
    refused = next(r for r in answers if r.status_code == 429)
    assert "limit of 4" in refused.json()["detail"] and "Retry-After" in refused.headers
    assert len(pending(bus)) == 4


def test_a_database_gone_answers_every_request_of_the_group(
    bus: IntegrationBus, app: FastAPI, api: httpx.Client
) -> None:
    """When the group's trip fails as a whole (the database cannot be reached), every
    request of it gets that error, and none waits for ever."""
    gatherer = app.state.log_gatherer

    def unreachable(calls: Call) -> list[LogOutcome | Exception]:
        raise sa.exc.OperationalError("connect", {}, Exception("server closed the connection"))

    gatherer._log_each = unreachable
    answers = at_once(
        api, [(URL, {"task_type": "CreateObject", "object": user(f"d{i}")}) for i in range(5)]
    )
    assert [r.status_code for r in answers] == [503] * 5
    assert all("database unavailable" in r.json()["detail"] for r in answers)
    assert pending(bus) == []


def test_a_connection_lost_during_the_checks_fails_only_its_request(
    bus: IntegrationBus, app: FastAPI, api: httpx.Client
) -> None:
    """The checks of a group share a connection: when it is lost on one request's check, that
    request is answered 503 and the rest are checked on a new connection and logged."""
    original = bus.intake._check
    refused: list[str | None] = []

    def check(conn: sa.Connection, name: str, site: str | None, key: str | None) -> Any:
        if key == "lost":
            refused.append(key)
            conn.invalidate()  # as when the server ended the session
            raise sa.exc.OperationalError("SELECT", {}, Exception("server closed the connection"))
        return original(conn, name, site, key)

    bus.intake._check = check  # type: ignore[method-assign]
    names = ["c1", "c2", "lost", "c3", "c4"]
    bodies = [
        (URL, {"task_type": "CreateObject", "object": user(n), "idempotency_key": n}) for n in names
    ]
    sizes, _, answers = first_then(api, app, bodies)
    assert sizes[:2] == [1, 5] and refused == ["lost"]
    codes = dict(zip(names, [r.status_code for r in answers], strict=True))
    assert codes == {"c1": 201, "c2": 201, "lost": 503, "c3": 201, "c4": 201}, answers[2].text
    assert len(pending(bus)) == 5


def test_a_failed_commit_fails_its_group_and_logs_nothing_twice(
    bus: IntegrationBus, app: FastAPI, api: httpx.Client
) -> None:
    """A COMMIT that fails may have gone through (the connection lost before its answer):
    the group's tasks are not inserted again one by one, which could log each twice. Every
    request of the group is answered with the error (503: retry it, with its idempotency key
    if it has one); requests after it are logged as usual."""
    commits = [0]

    def failing_second_commit(_conn: sa.Connection) -> None:
        commits[0] += 1
        if commits[0] == 2:  # the group behind the lead
            raise sa.exc.OperationalError("COMMIT", {}, Exception("server closed the connection"))

    sa.event.listen(bus.engine, "commit", failing_second_commit)
    _, lead, answers = first_then(
        api, app, [(URL, {"task_type": "CreateObject", "object": user(f"c{i}")}) for i in range(4)]
    )
    sa.event.remove(bus.engine, "commit", failing_second_commit)
    assert lead.status_code == 201
    assert [r.status_code for r in answers] == [503] * 4, [r.text for r in answers]
    assert pending(bus) == [lead.json()["task_id"]]  # nothing inserted again, task by task
    after = api.post(URL, json={"task_type": "CreateObject", "object": user("later")})
    assert after.status_code == 201
