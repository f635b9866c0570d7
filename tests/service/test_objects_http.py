"""`GET /api/objects/{type}/{code_name}`: an object as it is now, over HTTP (a new user's
trial had only Python to read back what a task wrote). Every column type reads back as JSON
carries it; bad input is a clear 4xx. On SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncbus import IntegrationBus, create_app
from syncbus.errors import SyncBusError
from syncbus.readmodel import plain
from tests.behaviour.test_intake_hardening import HARD, item, typed_values
from tests.helpers import log, put, run, user
from tests.http_server import asgi_client
from tests.service.test_history_cli import cli, one_line_error

_n = itertools.count()


@pytest.fixture
def api(hard: IntegrationBus) -> Iterator[httpx.Client]:
    with asgi_client(create_app(hard, run_dispatcher=False, no_auth=True)) as client:
        yield client


def test_an_object_reads_back_as_it_is_now(hard: IntegrationBus, api: httpx.Client) -> None:
    put(hard, user("alice"))
    r = api.get("/api/objects/cms.user/alice")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object_type"] == "cms.user"
    assert body["object"] == plain(hard.get_object("cms.user", "alice"))  # type: ignore[arg-type]
    assert body["object"]["user_name"] == "alice"
    # A code name with a slash, and the history route beside it still answers.
    put(hard, item(item_name="a/b", count=3))
    assert api.get("/api/objects/hard.item/a/b").json()["object"]["count"] == 3
    assert api.get("/api/objects/hard.item/a/b/history").json()["records"][0]["state"] == "applied"
    # A code name that ends in /history: the path form is the history route (a new user's
    # trial read x's history there); the query form reads the object.
    put(hard, item(item_name="x/history", count=5))
    r = api.get("/api/objects/hard.item", params={"code_name": "x/history"})
    assert r.status_code == 200 and r.json()["object"]["count"] == 5, r.text


@pytest.mark.parametrize(
    ("path", "status", "says"),
    [
        ("/api/objects/cms.user/nobody", 404, "no cms.user 'nobody'"),
        ("/api/objects/no.such/x", 422, "unknown object type 'no.such'"),
        ("/api/objects/cms.userrole/x", 422, "no code name"),
        ("/api/objects/cms.role/admin?site_name=nosite", 422, "site 'nosite' not found"),
        ("/api/objects/cms.user/a%00b", 422, "NUL"),
        ("/api/objects/cms.role/admin", 422, "belong to a site: give its site name"),
        ("/api/objects/cms.user/", 422, "a code name (or GUID) of the cms.user is needed"),
        ("/api/objects/cms.user", 422, "code_name"),
    ],
)
def test_bad_reads_are_clear(api: httpx.Client, path: str, status: int, says: str) -> None:
    r = api.get(path)
    assert r.status_code == status, r.text
    assert says in r.text


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(column=st.sampled_from(sorted(set(HARD.columns) - {"item_name"})), value=typed_values)
def test_any_value_of_any_column_reads_back(
    hard: IntegrationBus, api: httpx.Client, column: str, value: Any
) -> None:
    """Whatever a task stored in a column (or failed to: then there is nothing to read),
    the route answers 200 with JSON equal to the row as Python reads it, made plain."""
    name = f"rd{next(_n)}"
    try:
        log(hard, item(item_name=name, **{column: value}))
    except SyncBusError:
        return  # refused at log time: nothing stored
    run(hard)
    row = hard.get_object("hard.item", name)
    r = api.get(f"/api/objects/hard.item/{name}")
    if row is None:
        assert r.status_code == 404
        hard.delete_tasks([t.task_id for t in hard.list_tasks()])
        return
    assert r.status_code == 200, r.text
    assert r.json()["object"] == plain(row)


def test_a_float_that_is_not_finite_reads_as_a_string(
    hard: IntegrationBus, api: httpx.Client
) -> None:
    """Written outside the bus (SQLite keeps infinities; PostgreSQL NaN and infinities)."""
    put(hard, item(item_name="odd", ratio=1.0))
    with hard.engine.begin() as conn:
        conn.execute(sa.text("UPDATE hard_item SET ratio = :r"), {"r": math.inf})
    r = api.get("/api/objects/hard.item/odd")
    assert r.status_code == 200, r.text
    assert json.loads(r.text)["object"]["ratio"] == "Infinity"


def test_the_command_line_shows_an_object_as_the_api_does(
    hard: IntegrationBus, db_url: str
) -> None:
    put(hard, user("alice"))
    put(hard, item(item_name="a/b", count=3, day="2024-01-02"))
    shown = cli(db_url, "objects", "show", "hard.item/a/b", "--json")
    assert shown.exit_code == 0, shown.output
    with asgi_client(create_app(hard, run_dispatcher=False, no_auth=True)) as api:
        assert json.loads(shown.stdout) == api.get("/api/objects/hard.item/a/b").json()
    table = cli(db_url, "objects", "show", "cms.user/alice")
    assert table.exit_code == 0 and '"alice"' in table.stdout
    assert "no cms.user 'bob'" in one_line_error(cli(db_url, "objects", "show", "cms.user/bob"))
    assert "belong to a site" in one_line_error(cli(db_url, "objects", "show", "cms.role/x"))
    assert "TYPE/CODE_NAME" in one_line_error(cli(db_url, "objects", "show", "cms.user"))
