"""What the admin UI tests share: the Shop and Refs connectors over two small object types (the
admin-scale bench profile's, ``syncbus.bench.adminscale``), a bus with them, task shortcuts and
the sign-in and CSRF helpers of a client."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from syncbus import (
    IntegrationBus,
    Ordering,
    ProcessType,
    TaskDataType,
    TaskType,
)
from syncbus.bench.adminscale import ITEM_TYPE as ITEM
from syncbus.bench.adminscale import REF_TYPE as REF
from syncbus.bench.adminscale import RefsConnector, ShopConnector
from syncbus.dispatcher import Dispatcher
from syncbus.intake import TaskRequest

from .helpers import DictConnector, log, membership, role, run, user, wait_for

TOKEN = "admin-s3cret"


class RecordingDispatcher(Dispatcher):
    """Remembers triggers instead of running anything (the app runs no dispatcher)."""

    def __init__(self, bus: IntegrationBus) -> None:
        super().__init__(bus)
        self.triggered: list[str | None] = []

    def trigger(self, connector_name: str | None = None) -> None:
        self.triggered.append(connector_name)


def make_admin_bus(url: str) -> IntegrationBus:
    bus = IntegrationBus(url)
    bus.register_object_type(REF)
    bus.register_object_type(ITEM)
    bus.create_schema()
    bus.register_connector(ShopConnector)
    bus.register_connector(RefsConnector)
    return bus


def item(name: str, ref: int | None = None, value: int = 0, **request: Any) -> TaskRequest:
    """A Shop item's task; ``request``: more ``TaskRequest`` fields (a process type, a key)."""
    obj: dict[str, Any] = {"kind": "item", "name": name, "value": value}
    if ref is not None:
        obj["ref"] = ref
    return TaskRequest(obj, data_type=TaskDataType.SIMPLE_SNAPSHOT, **request)


def log_items(bus: IntegrationBus, connector: str, names: list[str], **kw: Any) -> list[int]:
    outcomes = bus.log_tasks(connector, [item(n, **kw) for n in names])
    return [o.task_id for o in outcomes if o.task_id is not None]


def make_failed_task(bus: IntegrationBus, name: str = "needs-ref") -> int:
    """A Shop task that fails (ERROR, blocking) because ref 1 does not exist."""
    [task_id] = log_items(bus, "Shop", [name], ref=1)
    result = bus.process_tasks("Shop")["Shop"]
    assert result.failed == 1, result
    return task_id


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def row_ids(html: str) -> list[int]:
    return [int(m) for m in re.findall(r'<tr id="task-(\d+)"', html)]


def sign_in(client: httpx.Client, token: str = TOKEN, name: str = "Olivia") -> httpx.Response:
    return client.post("/admin/signin", data={"token": token, "name": name, "next": "/admin/"})


def wait_job(client: httpx.Client, job_url: str) -> str:
    """Poll a mass action's progress fragment until it ends; returns the fragment."""
    html = ""

    def ended() -> bool:
        nonlocal html
        html = client.get(job_url + "/progress").text
        return 'data-testid="job-state">running<' not in html

    wait_for(ended)
    return html


# -- an ENTITY connector with one halted lane and one waiting task (lane views) -------------
class EntityDictConnector(DictConnector):
    ordering = Ordering.ENTITY


@dataclass(frozen=True)
class LaneScene:
    """Task ids of ``make_lane_scene``: ``Lanes`` (ENTITY) has a membership waiting for user
    alice, and lane ``cms.user/erin`` halted by ``error`` with ``behind`` queued behind it;
    ``Plain`` (CONNECTOR) is blocked by ``plain_error`` with ``plain_behind`` behind it."""

    waiting: int
    error: int
    behind: int
    plain_error: int
    plain_behind: int


ERIN = "cms.user/erin"
WAITING_LANE = "cms.userrole/(cms.role/admin@main,cms.user/alice)"


def make_lane_scene(bus: IntegrationBus) -> LaneScene:
    """Log and run the scene on ``bus`` (its schema created): the membership's user is known
    to the connector's translations but not created yet, so it waits; erin's first task is
    logged with process type ERROR, so her lane halts; bob and the role are applied."""
    lanes = EntityDictConnector("Lanes")
    lanes.display_name = "Directory (entity lanes)"
    bus.register_connector(lanes)
    plain = DictConnector("Plain")
    plain.display_name = "Legacy feed"
    bus.register_connector(plain)
    lanes.knows("cms.user", 1, "alice")
    lanes.knows("cms.role", 2, "admin")
    snap = TaskDataType.SIMPLE_SNAPSHOT
    log(bus, role("admin"), connector="Lanes")
    log(bus, user("bob"), connector="Lanes")
    waiting = log(bus, membership(1, 2), connector="Lanes", data_type=snap)
    error = log(bus, user("erin"), connector="Lanes", process_type=ProcessType.ERROR)
    behind = log(bus, user("erin", email="e@x"), TaskType.UPDATE_OBJECT, connector="Lanes")
    result = run(bus, "Lanes")
    assert (result.applied, result.waiting) == (2, 1), result
    plain_error = log(bus, user("zed"), connector="Plain", process_type=ProcessType.ERROR)
    plain_behind = log(bus, user("yan"), connector="Plain")
    assert run(bus, "Plain").applied == 0
    return LaneScene(waiting, error, behind, plain_error, plain_behind)


@pytest.fixture
def admin_bus(db_url: str) -> Iterator[IntegrationBus]:
    """A bus with the admin tests' types and connectors (``make_admin_bus``)."""
    bus = make_admin_bus(db_url)
    yield bus
    bus.close()
