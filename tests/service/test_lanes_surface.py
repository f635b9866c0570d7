"""Where lanes and orderings show (entity lanes, step 1): ``syncbus tasks list|show`` and
``connectors list``, the HTTP API's task and connector JSON, the admin task page and dashboard."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from typer.testing import CliRunner

from syncbus import IntegrationBus, create_app
from syncbus.cli import app as cli_app
from tests.admin import TOKEN, sign_in
from tests.http_server import asgi_client

runner = CliRunner()


@pytest.fixture
def lane_bus(db_url: str) -> Iterator[IntegrationBus]:
    """Two connectors by import path, one per ordering, each with a task for user alice."""
    bus = IntegrationBus(db_url)
    bus.create_schema()
    bus.register_connector("tests.sample_connectors:SampleConnector")
    bus.register_connector("tests.sample_connectors:EntitySampleConnector")
    bus.process_external_task("Sample", {"login": "alice"})
    bus.process_external_task("EntitySample", {"login": "a/lice"})
    yield bus
    bus.close()


def cli(db_url: str, *args: str) -> str:
    # Wide enough that no table cell folds: the tests look for whole strings.
    result = runner.invoke(cli_app, ["--db", db_url, *args], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    return result.output


def test_cli_shows_lanes_and_orderings(db_url: str, lane_bus: IntegrationBus) -> None:
    listed = json.loads(cli(db_url, "tasks", "list", "--json"))
    assert [(t["connector_name"], t["lane"]) for t in listed] == [
        ("Sample", None),
        ("EntitySample", "cms.user/a%2Flice"),
    ]
    assert all(t["waiting_for"] is None for t in listed)
    table = cli(db_url, "tasks", "list")
    assert "lane" in table and "cms.user/a%2Flice" in table
    only_plain = cli(db_url, "tasks", "list", "--connector", "Sample")
    assert "lane" not in only_plain  # no column when no task has a lane
    shown = cli(db_url, "tasks", "show", str(listed[1]["task_id"]))
    assert '"lane": "cms.user/a%2Flice"' in shown
    connectors = json.loads(cli(db_url, "connectors", "list", "--json"))
    assert {c["name"]: c["ordering"] for c in connectors} == {
        "EntitySample": "entity",
        "Sample": "connector",
    }
    table = cli(db_url, "connectors", "list")
    assert "ordering" in table and "entity" in table


@pytest.fixture
def client(lane_bus: IntegrationBus) -> Iterator[httpx.Client]:
    app = create_app(lane_bus, api_token=TOKEN, run_dispatcher=False)
    with asgi_client(app, headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        yield c


def test_http_api_shows_lanes_and_orderings(client: httpx.Client) -> None:
    tasks = client.get("/api/tasks").json()["tasks"]
    assert [(t["lane"], t["waiting_for"]) for t in tasks] == [
        (None, None),
        ("cms.user/a%2Flice", None),
    ]
    one = client.get(f"/api/tasks/{tasks[1]['task_id']}").json()
    assert one["lane"] == "cms.user/a%2Flice"
    connectors = client.get("/api/connectors").json()["connectors"]
    assert {c["name"]: c["ordering"] for c in connectors} == {
        "EntitySample": "entity",
        "Sample": "connector",
    }


def test_admin_shows_lanes_and_orderings(client: httpx.Client) -> None:
    tasks = client.get("/api/tasks").json()["tasks"]
    assert sign_in(client).status_code == 303
    entity = client.get(f"/admin/tasks/{tasks[1]['task_id']}").text
    assert 'data-testid="task-lane"><code>cms.user/a%2Flice</code>' in entity
    plain = client.get(f"/admin/tasks/{tasks[0]['task_id']}").text
    assert "its connector keeps one queue" in plain
    dashboard = client.get("/admin/").text
    assert 'data-testid="ordering-EntitySample"' in dashboard
    assert ">entity</td>" in dashboard and ">connector</td>" in dashboard
