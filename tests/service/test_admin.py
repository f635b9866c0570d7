"""The admin UI in process (over httpx.ASGITransport), on SQLite and PostgreSQL: sign-in and the
session cookie, CSRF, the task list's filters and keyset paging, task detail, row and mass
actions with the event log, the dashboard's switches. Browser tests: test_admin_browser.py."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from syncbus import (
    IntegrationBus,
    create_app,
)
from syncbus.intake import TaskRequest
from tests.admin import (
    TOKEN,
    RecordingDispatcher,
    csrf_of,
    log_items,
    make_failed_task,
    row_ids,
    sign_in,
    wait_job,
)
from tests.admin import admin_bus as admin_bus  # a fixture
from tests.http_server import asgi_client


@pytest.fixture
def dispatcher(admin_bus: IntegrationBus) -> RecordingDispatcher:
    return RecordingDispatcher(admin_bus)


@pytest.fixture
def app(admin_bus: IntegrationBus, dispatcher: RecordingDispatcher) -> FastAPI:
    return create_app(admin_bus, api_token=TOKEN, dispatcher=dispatcher, run_dispatcher=False)


@pytest.fixture
def admin(app: FastAPI) -> Iterator[httpx.Client]:
    """A signed-in client of the app, in process (processing off, so the queue stays put)."""
    with asgi_client(app) as client:
        assert sign_in(client).status_code == 303
        yield client


# -- sign-in, session, CSRF ---------------------------------------------------------------------
def test_no_session_redirects_to_sign_in(app: FastAPI) -> None:
    with asgi_client(app) as client:
        r = client.get("/admin/tasks?state=failed")
        assert r.status_code == 303
        assert r.headers["location"] == "/admin/signin?next=%2Fadmin%2Ftasks%3Fstate%3Dfailed"
        r = client.get("/admin/stats", headers={"HX-Request": "true"})
        assert r.headers["HX-Redirect"].startswith("/admin/signin")
        assert client.get("/admin/signin").status_code == 200
        assert client.get("/admin").status_code == 307
        forged = "eyJuIjoiZXZlIiwiYyI6IngiLCJlIjo5OTk5OTk5OTk5fQ.AAAA"
        client.cookies.set("syncbus_admin", forged, path="/admin")
        assert client.get("/admin/").status_code == 303


def test_sign_in_refuses_a_wrong_token_and_sets_a_strict_cookie(app: FastAPI) -> None:
    with asgi_client(app) as client:
        r = sign_in(client, token="wrong")
        assert r.status_code == 401 and "Wrong token" in r.text
        assert "set-cookie" not in r.headers
        r = client.post(
            "/admin/signin", data={"token": TOKEN, "name": "Olivia", "next": "/admin/tasks"}
        )
        assert r.status_code == 303 and r.headers["location"] == "/admin/tasks"
        cookie = r.headers["set-cookie"]
        flags = {part.strip().lower() for part in cookie.split(";")[1:]}
        assert {"httponly", "samesite=strict", "path=/admin"} <= flags
        page = client.get("/admin/")
        assert page.status_code == 200 and "Olivia" in page.text
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        r = client.post("/admin/signout", data={"csrf_token": csrf_of(page.text)})
        assert r.status_code == 303
        assert client.get("/admin/").status_code == 303  # the cookie was cleared


def test_sign_in_never_redirects_off_site(app: FastAPI) -> None:
    with asgi_client(app) as client:
        for target in ("https://evil.example/", "//evil.example/", "/api/tasks"):
            r = client.post("/admin/signin", data={"token": TOKEN, "next": target})
            assert r.headers["location"] == "/admin/"


def test_post_without_csrf_token_is_403(admin: httpx.Client, admin_bus: IntegrationBus) -> None:
    [task_id] = log_items(admin_bus, "Shop", ["a"])
    url = f"/admin/tasks/{task_id}/delete"
    assert admin.post(url).status_code == 403
    assert admin.post(url, data={"csrf_token": "forged"}).status_code == 403
    token = csrf_of(admin.get("/admin/").text)
    other_site = {"Origin": "https://evil.example"}
    assert admin.post(url, data={"csrf_token": token}, headers=other_site).status_code == 403
    assert admin.post("/admin/settings", data={"key": "integration_enabled"}).status_code == 403
    assert admin_bus.get_task(task_id) is not None
    assert admin.post(url, headers={"X-CSRF-Token": token}).status_code == 303
    assert admin_bus.get_task(task_id) is None


def test_without_a_token_the_admin_is_open_but_still_checks_csrf(
    admin_bus: IntegrationBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SYNCBUS_API_TOKEN", raising=False)
    app = create_app(admin_bus, run_dispatcher=False)
    with asgi_client(app) as client:
        page = client.get("/admin/")
        assert page.status_code == 200 and "Sign out" not in page.text
        assert client.post("/admin/process").status_code == 403
        r = client.post("/admin/process", data={"csrf_token": csrf_of(page.text)})
        assert r.status_code == 303


# -- the task list --------------------------------------------------------------------------------
def test_filters_narrow_the_list(admin: httpx.Client, admin_bus: IntegrationBus) -> None:
    failed = make_failed_task(admin_bus, "blocked item")
    waiting = log_items(admin_bus, "Shop", ["apple", "pear"])
    refs = admin_bus.log_tasks("Refs", [TaskRequest({"kind": "ref", "name": "ref9"})])
    ref_task = refs[0].task_id
    everything = [failed, *waiting, ref_task]

    def ids(**params: str) -> list[int]:
        r = admin.get("/admin/tasks", params=params)
        assert r.status_code == 200
        return row_ids(r.text)

    assert ids() == everything
    listing = admin.get("/admin/tasks").text
    assert '<option value="cms.article"' in listing  # the type filter offers what tasks carry
    assert '<option value="cms.root"' not in listing  # a site's root: no task writes it
    assert ids(connector="Shop") == [failed, *waiting]
    assert ids(connector="Refs") == [ref_task]
    unknown = admin.get("/admin/tasks", params={"connector": "Nope"})  # not "0 tasks match"
    assert unknown.status_code == 404 and "No connector named &#39;Nope&#39;" in unknown.text
    assert ids(state="failed") == [failed]
    assert ids(state="blocked") == [failed]
    assert ids(state="pending") == [*waiting, ref_task]
    assert ids(type="adm.ref") == [ref_task]
    assert ids(type="adm.item", text="PEAR") == [waiting[1]]
    assert ids(text="100%_") == []  # LIKE wildcards are taken literally
    assert ids(sort="desc") == everything[::-1]
    page = admin.get("/admin/tasks", params={"connector": "Shop"}).text
    assert "Shop</strong> is blocked by" in page and "Cannot translate columns" in page
    assert f"task #{failed}" in page


def test_keyset_paging(admin: httpx.Client, admin_bus: IntegrationBus) -> None:
    ids = log_items(admin_bus, "Shop", [f"item {i:03}" for i in range(120)])
    first = admin.get("/admin/tasks", params={"limit": 50}).text
    assert row_ids(first) == ids[:50]
    next_link = re.search(r'href="/admin/tasks\?([^"]+)" rel="next"', first)
    assert next_link and f"after={ids[49]}" in next_link.group(1)
    second = admin.get("/admin/tasks?" + next_link.group(1).replace("&amp;", "&")).text
    assert row_ids(second) == ids[50:100]
    third = admin.get("/admin/tasks", params={"limit": 50, "after": ids[99]}).text
    assert row_ids(third) == ids[100:] and 'rel="next"' not in third
    back = admin.get("/admin/tasks", params={"limit": 50, "before": ids[100]}).text
    assert row_ids(back) == ids[50:100]
    newest = admin.get("/admin/tasks", params={"limit": 50, "sort": "desc"}).text
    assert row_ids(newest) == ids[::-1][:50]
    older = admin.get("/admin/tasks", params={"limit": 50, "sort": "desc", "after": ids[70]})
    assert row_ids(older.text) == ids[::-1][50:100]


def test_task_detail_shows_object_records_and_errors(
    admin: httpx.Client, admin_bus: IntegrationBus
) -> None:
    task_id = make_failed_task(admin_bus, "needs <ref>")
    admin_bus.synchronize_task(task_id)  # a second failed attempt
    page = admin.get(f"/admin/tasks/{task_id}")
    assert page.status_code == 200
    html = page.text
    assert "needs &lt;ref&gt;" in html and "<ref>" not in html  # escaped
    assert "&#34;item_name&#34;: &#34;needs &lt;ref&gt;&#34;" in html  # the pretty JSON
    records = re.search(r'<table class="records">.*?</table>', html, re.S)
    assert records and "adm.ref" in records.group(0) and "ref1" in records.group(0)
    errors = re.search(r'<table class="log">.*?</table>', html, re.S)
    assert errors and errors.group(0).count("Cannot translate columns") == 2
    assert admin.get("/admin/tasks/999999").status_code == 404
    # An address no task can have: a page saying so, not the API's JSON (a new user's trial).
    bad = admin.get("/admin/tasks/abc")
    assert bad.status_code == 404 and bad.headers["content-type"].startswith("text/html")
    assert "task_id" in bad.text and "&#39;abc&#39;" in bad.text


# -- actions ------------------------------------------------------------------------------
def test_row_actions_return_the_row_for_htmx(
    admin: httpx.Client, admin_bus: IntegrationBus
) -> None:
    failed = make_failed_task(admin_bus)
    [ok] = log_items(admin_bus, "Refs", ["plain"])
    headers = {"HX-Request": "true", "X-CSRF-Token": csrf_of(admin.get("/admin/").text)}
    r = admin.post(f"/admin/tasks/{failed}/synchronize", headers=headers)
    assert f'id="task-{failed}"' in r.text and "failed again" in r.text
    r = admin.post(f"/admin/tasks/{ok}/synchronize", headers=headers)
    assert f"Task #{ok} was applied" in r.text and admin_bus.get_task(ok) is None
    r = admin.post(f"/admin/tasks/{failed}/delete", headers=headers)
    assert f"Task #{failed} was deleted" in r.text and admin_bus.list_tasks() == []
    # Who deleted it is in the event log (trial 6: only mass actions said so).
    [event] = [e for e in admin_bus.event_log() if e.code == "DELETETASK"]
    assert f"task {failed} (" in event.message and "Olivia in the admin UI from " in event.message


def start_job(admin: httpx.Client, **fields: Any) -> httpx.Response:
    fields["csrf_token"] = csrf_of(admin.get("/admin/").text)
    return admin.post("/admin/jobs", data=fields)


def test_mass_delete_selected_writes_the_event_log(
    admin: httpx.Client, admin_bus: IntegrationBus
) -> None:
    ids = log_items(admin_bus, "Shop", ["a", "b", "c", "d"])
    r = start_job(admin, op="delete-selected", ids=[str(i) for i in ids[:3]])
    assert r.status_code == 303 and r.headers["location"].startswith("/admin/jobs/")
    progress = wait_job(admin, r.headers["location"])
    assert (
        "finished" in progress and "Deleting &#39;Create adm.item &#39;a&#39;&#39; task" in progress
    )
    assert [t.task_id for t in admin_bus.list_tasks()] == ids[3:]
    [event] = [e for e in admin_bus.event_log() if e.code == "DELETESELECTEDTASKS"]
    assert event.source == "Integration bus"
    assert "3 of 3" in event.message and "Olivia" in event.message
    assert "127.0.0.1" in event.message


def test_delete_all_asks_for_confirmation_and_keeps_other_rows(
    admin: httpx.Client, admin_bus: IntegrationBus
) -> None:
    shop = log_items(admin_bus, "Shop", ["x1", "x2", "keep me"])
    refs = log_items(admin_bus, "Refs", ["x3"])
    form = {"op": "delete-all", "f_connector": "Shop", "f_text": "x"}
    r = start_job(admin, **form)
    assert r.status_code == 200 and "Delete 2 tasks?" in r.text
    assert len(admin_bus.list_tasks()) == 4
    r = start_job(admin, **form, confirm="yes")
    wait_job(admin, r.headers["location"])
    assert [t.task_id for t in admin_bus.list_tasks()] == [shop[2], *refs]
    [event] = [e for e in admin_bus.event_log() if e.code == "DELETEALLTASKS"]
    assert "2 of 2" in event.message and "title containing 'x'" in event.message


def test_sync_all_skips_disabled_connectors(admin: httpx.Client, admin_bus: IntegrationBus) -> None:
    log_items(admin_bus, "Shop", ["s1", "s2"])
    log_items(admin_bus, "Refs", ["r1"])
    admin_bus.set_connector_enabled("Refs", False)
    r = start_job(admin, op="sync-all")
    progress = wait_job(admin, r.headers["location"])
    assert "Processing &#39;Create adm.item &#39;s1&#39;&#39; task" in progress
    assert (
        "Skipping &#39;Create adm.item &#39;r1&#39;&#39; task - associated connector is disabled"
        in progress
    )
    assert [t.connector_name for t in admin_bus.list_tasks()] == ["Refs"]
    [event] = [e for e in admin_bus.event_log() if e.code == "SYNCALLTASKS"]
    assert "2 applied, 0 failed, 1 skipped" in event.message


def test_a_mass_action_can_be_cancelled(admin: httpx.Client, admin_bus: IntegrationBus) -> None:
    ids = log_items(admin_bus, "Shop", [f"n{i}" for i in range(1500)])
    r = start_job(admin, op="sync-selected", ids=[str(i) for i in ids])
    job_url = r.headers["location"]
    token = csrf_of(admin.get(job_url).text)
    assert admin.post(job_url + "/cancel", data={"csrf_token": token}).status_code == 303
    progress = wait_job(admin, job_url)
    assert "cancelled" in progress
    assert admin_bus.queue_size() > 0
    [event] = [e for e in admin_bus.event_log() if e.code == "SYNCSELECTEDTASKS"]
    assert "cancelled" in event.message


# -- dashboard ------------------------------------------------------------------------------
def test_dashboard_counts_switches_and_process_now(
    admin: httpx.Client, admin_bus: IntegrationBus, dispatcher: RecordingDispatcher
) -> None:
    make_failed_task(admin_bus)
    log_items(admin_bus, "Shop", ["behind"])
    stats = admin.get("/admin/stats").text
    assert re.search(r'data-testid="queued-Shop">2<', stats)
    assert re.search(r'data-testid="failed-Shop">1<', stats)
    assert "0 applied, 1 failed" in stats  # the last run, from the lease
    token = csrf_of(stats)
    htmx = {"HX-Request": "true", "X-CSRF-Token": token}
    r = admin.post(
        "/admin/settings", data={"key": "process_external", "value": "off"}, headers=htmx
    )
    assert 'id="stats"' in r.text and "Processing of incoming tasks is switched off" in r.text
    assert admin_bus.settings.process_external is False
    r = admin.post("/admin/connectors/Shop/enabled", data={"enabled": "false"}, headers=htmx)
    assert admin_bus.list_connectors()[1].enabled is False
    admin.post("/admin/connectors/Shop/enabled", data={"enabled": "true"}, headers=htmx)
    admin.post("/admin/process", data={"connector": "Shop"}, headers=htmx)
    r = admin.post("/admin/process", data={"csrf_token": token})
    assert r.status_code == 303
    assert dispatcher.triggered[-3:] == ["Shop", "Shop", None]


def test_static_files_are_local(app: FastAPI) -> None:
    with asgi_client(app) as client:
        js = client.get("/admin/static/htmx.min.js")
        assert js.status_code == 200 and "htmx" in js.text[:200]
        assert client.get("/admin/static/admin.css").status_code == 200
        page = client.get("/admin/signin").text
        assert "http://" not in page and "https://" not in page
