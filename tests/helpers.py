"""Reusable connectors and shortcuts for the behaviour suite."""

from __future__ import annotations

import datetime as dt
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from syncbus import (
    BaseIntegrationConnector,
    DocumentParams,
    IntegrationBus,
    InternalObject,
    ObjectParams,
    Page,
    ProcessResult,
    ProcessType,
    TaskDataType,
    TaskType,
)
from tests.conftest import PG_URL, _admin_engine, sqlite_copy

ROOT = Path(__file__).resolve().parent.parent  # the repository
CONNECTOR = "TestConnector"


def wait_for(check: Callable[[], object], timeout: float = 20.0, interval: float = 0.02) -> float:
    """Poll ``check`` until it returns something true; the seconds that took.

    ``timeout`` only keeps a broken test from hanging: it is generous, because a busy CI machine
    is slow, and no test may depend on it being short. Fails the test when it runs out.
    """
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)
    return time.monotonic() - start


def fresh_db_url(backend: str, template: Any) -> tuple[str, Callable[[], None] | None]:
    """A fresh migrated database per property-test example (fixtures are per test, not per
    example): a copy of the SQLite template file, or a clone of the PostgreSQL template
    database, and how to drop it (None for SQLite)."""
    if backend == "sqlite":
        return sqlite_copy(template, Path(tempfile.mkdtemp()) / "prop.db"), None
    assert template and PG_URL
    name = f"syncbus_p_{uuid.uuid4().hex[:12]}"
    admin = _admin_engine()
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    url = make_url(PG_URL).set(drivername="postgresql+psycopg", database=name)

    def drop() -> None:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()

    return url.render_as_string(hide_password=False), drop


def healthz(base_url: str, proc: subprocess.Popen[str] | None = None) -> int | None:
    """The status a service answers on /healthz, None while nothing listens yet (for wait_for).

    With ``proc``, a service process that has died fails the test with its output at once.
    """
    if proc is not None:
        assert proc.poll() is None, proc.communicate()
    try:
        return httpx.get(base_url + "/healthz", timeout=1).status_code
    except httpx.TransportError:
        return None


def to_internal(external: Any) -> InternalObject | Page | None:
    """``{"type", "data", "children"?}`` -> InternalObject; ready objects and pages pass through."""
    if external is None or isinstance(external, InternalObject | Page):
        return external
    return InternalObject(
        external["type"],
        dict(external["data"]),
        [c for c in (to_internal(c) for c in external.get("children", ())) if c is not None],
    )


class DictConnector(BaseIntegrationConnector):
    """Prepares dicts as internal objects; answers translations from dicts the test fills in.

    Every call is recorded, so tests can count them.
    """

    connector_name = CONNECTOR
    display_name = "Test connector"

    def __init__(self, name: str = CONNECTOR) -> None:
        self.connector_name = name
        self.objects: dict[tuple[str, Any], ObjectParams] = {}
        self.documents: dict[Any, DocumentParams] = {}
        self.prepare_calls: list[tuple[Any, TaskType, TaskDataType, str | None]] = []
        self.object_calls: list[tuple[Any, str]] = []
        self.document_calls: list[tuple[Any, str]] = []

    def knows(
        self,
        object_type: str,
        external_id: Any,
        code_name: str,
        site: str | None = None,
        parent_id: Any = None,
        group_id: Any = None,
    ) -> None:
        """Teach the connector which internal object an external id stands for."""
        self.objects[(object_type, external_id)] = ObjectParams(
            code_name, site, parent_id, group_id
        )

    def knows_page(self, external_id: Any, node_guid: str, culture: str = "en-US") -> None:
        self.documents[external_id] = DocumentParams(node_guid, culture, "main")

    def prepare_internal_object(
        self, obj: Any, task_type: TaskType, data_type: TaskDataType, site_name: str | None
    ) -> InternalObject | Page | None:
        self.prepare_calls.append((obj, task_type, data_type, site_name))
        return to_internal(obj)

    def get_internal_object_params(self, id: Any, object_type: str) -> ObjectParams | None:
        self.object_calls.append((id, object_type))
        return self.objects.get((object_type, id))

    def get_internal_document_params(self, id: Any, class_name: str) -> DocumentParams | None:
        self.document_calls.append((id, class_name))
        return self.documents.get(id)


class FailingConnector(DictConnector):
    """A connector whose prepare_internal_object raises."""

    def prepare_internal_object(
        self, obj: Any, task_type: TaskType, data_type: TaskDataType, site_name: str | None
    ) -> InternalObject | Page | None:
        raise ValueError("external system said no")


# -- external objects --------------------------------------------------------------------------


def ext(object_type: str, **data: Any) -> dict[str, Any]:
    return {"type": object_type, "data": data}


def user(name: str, **data: Any) -> dict[str, Any]:
    return ext("cms.user", user_name=name, **data)


def role(name: str, **data: Any) -> dict[str, Any]:
    return ext("cms.role", role_name=name, **data)


def membership(user_id: Any, role_id: Any) -> dict[str, Any]:
    return ext("cms.userrole", user_id=user_id, role_id=role_id)


# -- bus shortcuts -----------------------------------------------------------------------------


def add_connector(bus: IntegrationBus, name: str = CONNECTOR) -> DictConnector:
    conn = DictConnector(name)
    bus.register_connector(conn)
    return conn


def log(
    bus: IntegrationBus,
    external: Any,
    task_type: TaskType = TaskType.CREATE_OBJECT,
    *,
    connector: str = CONNECTOR,
    data_type: TaskDataType = TaskDataType.SIMPLE,
    process_type: ProcessType = ProcessType.DEFAULT,
    site: str | None = "main",
    key: str | None = None,
) -> int:
    """Log one task and return its id (it must be logged)."""
    task_id = bus.process_external_task(
        connector,
        external,
        process_type=process_type,
        task_type=task_type,
        data_type=data_type,
        site_name=site,
        idempotency_key=key,
    )
    assert isinstance(task_id, int), task_id
    return task_id


def connector_id(bus: IntegrationBus, name: str = CONNECTOR) -> int:
    with bus.engine.connect() as conn:
        stmt = sa.text("SELECT connector_id FROM syncbus_connector WHERE connector_name = :n")
        return int(conn.execute(stmt, {"n": name}).scalar_one())


def run(bus: IntegrationBus, connector: str = CONNECTOR) -> ProcessResult:
    """Process one connector's queue and return its result."""
    results = bus.process_tasks(connector)
    if isinstance(results, Mapping):
        return results[connector]
    return results


def put(
    bus: IntegrationBus, external: Any, task_type: TaskType = TaskType.CREATE_OBJECT, **kw: Any
) -> None:
    """Log one task, process its connector, and check that the task was applied."""
    task_id = log(bus, external, task_type, **kw)
    result = run(bus, kw.get("connector", CONNECTOR))
    assert bus.get_task(task_id) is None, (result, bus.task_log(task_id))


def pending(bus: IntegrationBus, connector: str | None = None) -> list[int]:
    return [t.task_id for t in bus.list_tasks(connector_name=connector)]


def object_id(
    bus: IntegrationBus, object_type: str, code_name: str, site: str | None = None
) -> Any:
    """The internal id of an object (first column of its row)."""
    row = bus.get_object(object_type, code_name, site_name=site)
    assert row is not None, f"{object_type} {code_name!r} does not exist"
    id_column = {
        "cms.site": "site_id",
        "cms.user": "user_id",
        "cms.role": "role_id",
        "community.group": "group_id",
        "forums.forum": "forum_id",
        "forums.forumpost": "post_id",
    }[object_type]
    return row[id_column]


def site_id(bus: IntegrationBus, name: str = "main") -> Any:
    return object_id(bus, "cms.site", name)


def corrupt(bus: IntegrationBus, task_id: int, data: str = "{not json") -> None:
    """Overwrite a task's stored data with something undecodable."""
    with bus.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE syncbus_task SET data = :data WHERE task_id = :task_id"),
            {"data": data, "task_id": task_id},
        )


class Clock:
    """The clock of a bus's back-offs, moved by the test instead of by sleeping."""

    def __init__(self, bus: IntegrationBus) -> None:
        self.now = dt.datetime.now(dt.UTC)
        bus.runner.clock = self

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)
