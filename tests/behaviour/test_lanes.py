"""Entity lanes (CONTRACT §8): a connector's ``ordering`` and ``dependency_timeout``, the lane
key stored with each task of an ENTITY connector, and no change at all for CONNECTOR
connectors. How lanes are scheduled: test_lane_scheduling.py."""

from __future__ import annotations

import math
import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from syncbus import (
    BaseIntegrationConnector,
    ConnectorLoadError,
    IntegrationBus,
    Ordering,
    Page,
    TaskDataType,
    TaskType,
)
from syncbus.intake import TaskRequest
from syncbus.store.connectors import set_connector_rules
from tests.helpers import (
    CONNECTOR,
    DictConnector,
    add_connector,
    ext,
    log,
    membership,
    role,
    run,
    user,
)
from tests.sample_connectors import EntitySampleConnector

ENTITY = "Lanes"
SNAP = TaskDataType.SIMPLE_SNAPSHOT


class EntityConnector(DictConnector):
    ordering = Ordering.ENTITY


@pytest.fixture
def lanes(bus: IntegrationBus) -> EntityConnector:
    conn = EntityConnector(ENTITY)
    bus.register_connector(conn)
    return conn


def lane(bus: IntegrationBus, task_id: int) -> str | None:
    task = bus.get_task(task_id)
    assert task is not None
    assert task.waiting_for is None  # nothing here has run
    return task.lane


def stored_lanes(bus: IntegrationBus) -> dict[int, str | None]:
    with bus.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT task_id, lane FROM syncbus_task ORDER BY task_id"))
        return {int(tid): value for tid, value in rows}


# -- the attributes ----------------------------------------------------------------------------
def test_the_defaults_are_kenticos(bus: IntegrationBus) -> None:
    assert BaseIntegrationConnector.ordering is Ordering.CONNECTOR
    assert BaseIntegrationConnector.dependency_timeout == 3600.0
    conn = add_connector(bus)
    assert conn.ordering is Ordering.CONNECTOR
    [info] = bus.list_connectors()
    assert info.ordering is Ordering.CONNECTOR


def test_ordering_may_be_given_by_its_wire_name(bus: IntegrationBus) -> None:
    class ByName(DictConnector):
        ordering = "ENTITY"  # type: ignore[assignment]
        dependency_timeout = 5  # an int is a number of seconds too

    conn = bus.register_connector(ByName("ByName"))
    assert conn.ordering is Ordering.ENTITY
    assert conn.dependency_timeout == 5.0 and isinstance(conn.dependency_timeout, float)
    [info] = bus.list_connectors()
    assert info.ordering is Ordering.ENTITY


@pytest.mark.parametrize(
    ("attribute", "value", "says"),
    [
        ("ordering", "sideways", "unknown Ordering 'sideways'; expected one of: connector, entity"),
        ("ordering", None, "ordering must be an Ordering"),
        ("ordering", 1, "ordering must be an Ordering"),
        ("dependency_timeout", -1, "dependency_timeout must be a finite number of seconds >= 0"),
        ("dependency_timeout", math.inf, "dependency_timeout must be a finite number"),
        ("dependency_timeout", math.nan, "dependency_timeout must be a finite number"),
        ("dependency_timeout", "60", "dependency_timeout must be a finite number"),
        ("dependency_timeout", True, "dependency_timeout must be a finite number"),
        ("dependency_timeout", None, "dependency_timeout must be a finite number"),
    ],
)
def test_a_bad_value_is_refused_at_registration(
    bus: IntegrationBus, attribute: str, value: Any, says: str
) -> None:
    conn = DictConnector("Bad")
    setattr(conn, attribute, value)
    with pytest.raises(ConnectorLoadError) as caught:
        bus.register_connector(conn)
    message = str(caught.value)
    assert "connector 'Bad'" in message and attribute in message and says in message
    assert bus.list_connectors() == []  # nothing was registered


def test_zero_is_a_valid_timeout(bus: IntegrationBus) -> None:
    conn = DictConnector("NoWait")
    conn.dependency_timeout = 0
    assert bus.register_connector(conn).dependency_timeout == 0.0


def test_a_bad_value_in_a_class_loaded_by_another_process_is_a_load_error(
    bus: IntegrationBus, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    bus.register_connector("tests.sample_connectors:EntitySampleConnector")
    monkeypatch.setattr(EntitySampleConnector, "dependency_timeout", -5)
    other = IntegrationBus(db_url)
    try:
        with pytest.raises(ConnectorLoadError, match=r"'EntitySample'.*dependency_timeout"):
            other.get_connector("EntitySample")
        [info] = other.list_connectors()
        assert info.load_error and "dependency_timeout" in info.load_error
    finally:
        other.close()


def test_another_process_knows_the_ordering_from_the_connector_row(
    bus: IntegrationBus, db_url: str
) -> None:
    bus.register_connector("tests.sample_connectors:EntitySampleConnector")
    other = IntegrationBus(db_url)
    try:
        [info] = other.list_connectors()  # the class is not loaded here
        assert info.ordering is Ordering.ENTITY
        task_id = other.process_external_task("EntitySample", {"login": "alice"})
        assert task_id is not None
        assert lane(other, task_id) == "cms.user/alice"
    finally:
        other.close()


def test_loading_a_class_whose_ordering_changed_updates_the_row(
    bus: IntegrationBus, db_url: str
) -> None:
    bus.register_connector("tests.sample_connectors:EntitySampleConnector")
    with bus.engine.begin() as conn:  # as if registered when the class said CONNECTOR
        set_connector_rules(conn, "EntitySample", {"ordering": Ordering.CONNECTOR.value})
    other = IntegrationBus(db_url)
    try:
        other.get_connector("EntitySample")
    finally:
        other.close()
    third = IntegrationBus(db_url)
    try:
        [info] = third.list_connectors()
        assert info.ordering is Ordering.ENTITY
    finally:
        third.close()


# -- CONNECTOR: nothing changes ----------------------------------------------------------------
def test_connector_ordering_stores_no_lane(bus: IntegrationBus) -> None:
    conn = add_connector(bus)
    conn.knows("cms.user", 7, "alice")
    conn.knows("cms.role", 3, "admin")
    ids = [
        log(bus, user("alice")),
        log(bus, role("admin")),
        log(bus, membership(7, 3), data_type=SNAP),
        log(bus, Page("cms.folder", "News", alias="news"), TaskType.CREATE_DOCUMENT),
    ]
    assert [lane(bus, i) for i in ids] == [None] * 4
    assert stored_lanes(bus) == dict.fromkeys(ids)
    assert run(bus).applied == 4


def test_a_translated_bindings_title_names_its_ends(bus: IntegrationBus) -> None:
    """Its columns hold the external system's ids (7, 3), which an operator would take for
    internal ones: the title names the ends as the lane does (a new user's trial). Under
    Simple the ids are internal and stay as they are."""
    conn = add_connector(bus)
    conn.knows("cms.user", 7, "alice")
    conn.knows("cms.role", 3, "admin")
    translated = log(bus, membership(7, 3), data_type=SNAP)
    simple = log(bus, membership(7, 3))
    titles = {t.task_id: t.title for t in bus.list_tasks()}
    assert titles[translated] == "Create cms.userrole (cms.role/admin@main,cms.user/alice)"
    assert titles[simple] == "Create cms.userrole 'role_id=3, user_id=7'"


# -- ENTITY: every kind of identity gets its lane ----------------------------------------------
def test_entity_ordering_stores_the_lane_of_each_object(
    bus: IntegrationBus, lanes: EntityConnector
) -> None:
    lanes.knows("cms.user", 7, "alice")
    lanes.knows("cms.role", 3, "admin")
    guid = str(uuid.uuid4())
    expected = {
        log(bus, user("alice"), connector=ENTITY): "cms.user/alice",
        log(bus, ext("cms.site", site_name="b"), connector=ENTITY): "cms.site/b",
        log(bus, role("admin"), connector=ENTITY): "cms.role/admin@main",
        log(bus, membership(7, 3), connector=ENTITY, data_type=SNAP): (
            "cms.userrole/(cms.role/admin@main,cms.user/alice)"
        ),
        log(bus, ext("cms.usersite", user_id=12, site_id=1), connector=ENTITY): (
            "cms.usersite/(cms.site#1,cms.user#12)"
        ),
        log(bus, ext("community.group", group_name="g/1"), connector=ENTITY): (
            "community.group/g%2F1@main"
        ),
        log(
            bus, ext("forums.forumpost", post_guid=guid, post_subject="hi"), connector=ENTITY
        ): f"forums.forumpost/{guid}",
        log(bus, user("alice"), TaskType.ADD_TO_SITE, connector=ENTITY): "cms.user/alice",
    }
    assert {i: lane(bus, i) for i in expected} == expected
    assert stored_lanes(bus) == expected


def test_entity_ordering_stores_the_lane_of_each_page(
    bus: IntegrationBus, lanes: EntityConnector
) -> None:
    guid = str(uuid.uuid4())
    lanes.knows_page("ext-news", guid)
    expected = {
        log(
            bus,
            Page("cms.folder", "News", alias="news", node_guid=guid.upper()),
            TaskType.CREATE_DOCUMENT,
            connector=ENTITY,
        ): f"page@main/{guid}",
        log(
            bus,
            Page("cms.article", "Hello", parent_path="/news"),
            TaskType.CREATE_DOCUMENT,
            connector=ENTITY,
        ): "page@main:/news/Hello",
        log(
            bus,
            Page("cms.article", "Hi", alias="hi", parent_id="ext-news"),
            TaskType.CREATE_DOCUMENT,
            connector=ENTITY,
            data_type=SNAP,
        ): f"page@main:{{{guid}}}/hi",
    }
    assert {i: lane(bus, i) for i in expected} == expected
    assert run(bus, ENTITY).applied == 3
    assert bus.get_page("main", "/news/hi") is not None


@pytest.mark.parametrize("keyed", [False, True], ids=["one-insert", "keyed"])
def test_a_batch_stores_each_tasks_lane(
    bus: IntegrationBus, lanes: EntityConnector, keyed: bool
) -> None:
    key = "k1" if keyed else None  # a key takes the per-task INSERTs; none, one multi-row INSERT
    outcomes = bus.log_tasks(
        ENTITY,
        [TaskRequest(user(n), site_name="main") for n in ("a", "b")]
        + [TaskRequest(role("r"), site_name="main", idempotency_key=key)],
    )
    lanes_of = [lane(bus, o.task_id) for o in outcomes if o.task_id is not None]
    assert lanes_of == ["cms.user/a", "cms.user/b", "cms.role/r@main"]


def test_the_lane_index_is_there(bus: IntegrationBus) -> None:
    indexes = {i["name"]: i for i in sa.inspect(bus.engine).get_indexes("syncbus_task")}
    assert indexes["ix_syncbus_task_lane"]["column_names"] == ["connector_id", "lane", "task_id"]


# -- ENTITY is still processed in connector order (lanes are not scheduled yet) ------------------
def test_connector_and_entity_connectors_side_by_side(
    bus: IntegrationBus, lanes: EntityConnector
) -> None:
    add_connector(bus)
    plain = log(bus, user("carol"))
    entity = log(bus, user("carol"), connector=ENTITY)
    assert (lane(bus, plain), lane(bus, entity)) == (None, "cms.user/carol")
    assert run(bus, CONNECTOR).applied == 1 and run(bus, ENTITY).applied == 1
