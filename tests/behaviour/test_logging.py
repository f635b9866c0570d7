"""Enumerations and the logging rules of process_external_task (CONTRACT §1, §3, §4)."""

from __future__ import annotations

import threading
import uuid
from collections import Counter

import pytest

from syncbus import (
    ConnectorNotFoundError,
    IntegrationBus,
    IntegrationDisabledError,
    InvalidObjectError,
    LogOutcome,
    ObjectType,
    Ordering,
    Page,
    ProcessType,
    SiteNotFoundError,
    SyncBusError,
    TaskDataType,
    TaskRequest,
    TaskType,
    TranslationError,
)
from tests.helpers import (
    CONNECTOR,
    FailingConnector,
    add_connector,
    ext,
    log,
    membership,
    pending,
    user,
)

SIMPLE_SNAPSHOT = TaskDataType.SIMPLE_SNAPSHOT

# -- enumerations ------------------------------------------------------------------------------

WIRE_VALUES = {
    TaskType: {
        "CREATE_OBJECT": "CreateObject",
        "UPDATE_OBJECT": "UpdateObject",
        "DELETE_OBJECT": "DeleteObject",
        "ADD_TO_SITE": "AddToSite",
        "REMOVE_FROM_SITE": "RemoveFromSite",
        "CREATE_DOCUMENT": "CreateDocument",
        "UPDATE_DOCUMENT": "UpdateDocument",
        "DELETE_DOCUMENT": "DeleteDocument",
        "DELETE_ALL_CULTURES": "DeleteAllCultures",
        "PUBLISH_DOCUMENT": "PublishDocument",
        "ARCHIVE_DOCUMENT": "ArchiveDocument",
        "MOVE_DOCUMENT": "MoveDocument",
    },
    TaskDataType: {
        "SIMPLE": "Simple",
        "SIMPLE_SNAPSHOT": "SimpleSnapshot",
        "SNAPSHOT": "Snapshot",
    },
    ProcessType: {
        "DEFAULT": "Default",
        "SKIP_ONCE": "SkipOnce",
        "SKIP_ON_ERROR": "SkipOnError",
        "DELETE_ON_ERROR": "DeleteOnError",
        "ERROR": "Error",
    },
    Ordering: {"CONNECTOR": "connector", "ENTITY": "entity"},
}


@pytest.mark.parametrize("enum", list(WIRE_VALUES), ids=lambda e: e.__name__)
def test_enum_members_have_the_wire_values(enum: type) -> None:
    assert {m.name: m.value for m in enum} == WIRE_VALUES[enum]
    for name, value in WIRE_VALUES[enum].items():
        assert enum[name] == value


@pytest.mark.parametrize(
    ("enum", "text", "member"),
    [
        (TaskType, "createobject", TaskType.CREATE_OBJECT),
        (TaskType, "DELETEALLCULTURES", TaskType.DELETE_ALL_CULTURES),
        (TaskDataType, "simplesnapshot", TaskDataType.SIMPLE_SNAPSHOT),
        (ProcessType, "SKIPONERROR", ProcessType.SKIP_ON_ERROR),
        (ProcessType, "deleteOnError", ProcessType.DELETE_ON_ERROR),
        (Ordering, "ENTITY", Ordering.ENTITY),
        (Ordering, " Connector ", Ordering.CONNECTOR),
    ],
)
def test_enum_parsing_is_case_insensitive(enum: type, text: str, member: object) -> None:
    assert enum(text) is member
    assert enum.parse(text) is member  # type: ignore[attr-defined]


@pytest.mark.parametrize("enum", list(WIRE_VALUES), ids=lambda e: e.__name__)
def test_enum_unknown_wire_value_is_an_error(enum: type) -> None:
    with pytest.raises(ValueError):
        enum.parse("NoSuchValue")  # type: ignore[attr-defined]
    with pytest.raises(ValueError):
        enum("NoSuchValue")


# -- a task is logged --------------------------------------------------------------------------


def test_logging_returns_the_new_task_id(bus: IntegrationBus) -> None:
    add_connector(bus)
    task_id = bus.process_external_task(
        CONNECTOR, user("alice"), task_type=TaskType.CREATE_OBJECT, site_name="main"
    )
    assert isinstance(task_id, int)
    assert pending(bus) == [task_id]
    info = bus.get_task(task_id)
    assert info is not None
    assert info.task_id == task_id
    assert info.connector_name == CONNECTOR
    assert info.task_type is TaskType.CREATE_OBJECT
    assert info.data_type is TaskDataType.SIMPLE
    assert info.process_type is ProcessType.DEFAULT
    assert info.object_type == "cms.user"
    assert info.site_name == "main"
    assert info.error_message is None


def test_logging_stores_the_given_types(bus: IntegrationBus) -> None:
    add_connector(bus)
    task_id = log(
        bus,
        user("alice"),
        TaskType.UPDATE_OBJECT,
        data_type=SIMPLE_SNAPSHOT,
        process_type=ProcessType.SKIP_ON_ERROR,
    )
    info = bus.get_task(task_id)
    assert info is not None
    assert info.task_type is TaskType.UPDATE_OBJECT
    assert info.data_type is TaskDataType.SIMPLE_SNAPSHOT
    assert info.process_type is ProcessType.SKIP_ON_ERROR


def test_prepare_runs_at_log_time_with_the_task_arguments(bus: IntegrationBus) -> None:
    conn = add_connector(bus)
    external = user("alice")
    log(bus, external, TaskType.UPDATE_OBJECT, data_type=SIMPLE_SNAPSHOT)
    assert conn.prepare_calls == [
        (external, TaskType.UPDATE_OBJECT, TaskDataType.SIMPLE_SNAPSHOT, "main")
    ]


def test_prepare_returning_none_logs_nothing(bus: IntegrationBus) -> None:
    conn = add_connector(bus)
    result = bus.process_external_task(
        CONNECTOR, None, task_type=TaskType.CREATE_OBJECT, site_name="main"
    )
    assert result is None
    assert len(conn.prepare_calls) == 1
    assert pending(bus) == []


# -- refusals: an error, and nothing logged ----------------------------------------------------


def test_unknown_connector_is_refused(bus: IntegrationBus) -> None:
    add_connector(bus)
    with pytest.raises(ConnectorNotFoundError, match="Nobody"):
        log(bus, user("alice"), connector="Nobody")
    assert pending(bus) == []


def test_disabled_connector_is_refused(bus: IntegrationBus) -> None:
    add_connector(bus)
    bus.set_connector_enabled(CONNECTOR, False)
    with pytest.raises(ConnectorNotFoundError, match=CONNECTOR):
        log(bus, user("alice"))
    assert pending(bus) == []


@pytest.mark.parametrize("setting", ["integration_enabled", "log_external"])
def test_logging_switched_off_is_refused(bus: IntegrationBus, setting: str) -> None:
    add_connector(bus)
    setattr(bus.settings, setting, False)
    with pytest.raises(IntegrationDisabledError):
        log(bus, user("alice"))
    setattr(bus.settings, setting, True)
    assert pending(bus) == []


def test_unknown_site_is_refused(bus: IntegrationBus) -> None:
    add_connector(bus)
    with pytest.raises(SiteNotFoundError, match="nowhere"):
        log(bus, user("alice"), site="nowhere")
    assert pending(bus) == []


def test_unknown_object_type_is_refused(bus: IntegrationBus) -> None:
    add_connector(bus)
    with pytest.raises(InvalidObjectError, match=r"cms\.nosuch"):
        log(bus, ext("cms.nosuch", name="x"))
    assert pending(bus) == []


def test_unknown_column_is_refused(bus: IntegrationBus) -> None:
    add_connector(bus)
    with pytest.raises(InvalidObjectError, match="shoe_size"):
        log(bus, user("alice", shoe_size=44))
    assert pending(bus) == []


def test_unknown_page_type_is_refused(bus: IntegrationBus) -> None:
    add_connector(bus)
    with pytest.raises(InvalidObjectError, match=r"cms\.nosuchpage"):
        log(bus, Page("cms.nosuchpage", "X", alias="x"), TaskType.CREATE_DOCUMENT)
    assert pending(bus) == []


def test_unknown_page_field_is_refused(bus: IntegrationBus) -> None:
    add_connector(bus)
    page = Page("cms.article", "X", alias="x", fields={"article_colour": "red"})
    with pytest.raises(InvalidObjectError, match="article_colour"):
        log(bus, page, TaskType.CREATE_DOCUMENT)
    assert pending(bus) == []


def test_refusals_are_syncbus_errors() -> None:
    for error in (
        ConnectorNotFoundError,
        IntegrationDisabledError,
        SiteNotFoundError,
        InvalidObjectError,
        TranslationError,
    ):
        assert issubclass(error, SyncBusError)


def test_prepare_raising_reaches_the_caller_and_logs_nothing(bus: IntegrationBus) -> None:
    bus.register_connector(FailingConnector())
    with pytest.raises(ValueError, match="said no"):
        log(bus, user("alice"))
    assert pending(bus) == []


# -- translation at log time -------------------------------------------------------------------


def test_missing_translation_is_refused_naming_the_column(bus: IntegrationBus) -> None:
    conn = add_connector(bus)
    conn.knows("cms.user", 1, "alice")
    with pytest.raises(TranslationError, match="role_id"):
        log(bus, membership(1, 2), data_type=SIMPLE_SNAPSHOT)
    assert pending(bus) == []


def test_a_blank_code_name_from_the_connector_is_refused_at_log_time(
    bus: IntegrationBus,
) -> None:
    """A new developer's trial: ``ObjectParams("  ")`` was accepted, and the task failed when
    applied (no object has a blank code name), stopping the queue behind it."""
    conn = add_connector(bus)
    conn.knows("cms.user", 1, "alice")
    conn.knows("cms.role", 2, "   ", site="main")
    with pytest.raises(TranslationError, match="blank code_name"):
        log(bus, membership(1, 2), data_type=SIMPLE_SNAPSHOT)
    assert pending(bus) == []


def test_an_identity_its_columns_cannot_hold_is_refused_at_log_time(
    bus: IntegrationBus,
) -> None:
    """A new developer's trial: ``ObjectParams(42)`` for a role (a text code name) or a
    ``site_name`` that is not text was accepted, and the task failed only when applied."""
    conn = add_connector(bus)
    conn.knows("cms.user", 1, "alice")
    conn.knows("cms.role", 2, 42, site="main")  # type: ignore[arg-type]
    with pytest.raises(TranslationError, match=r"code_name 42, which its identity column"):
        log(bus, membership(1, 2), data_type=SIMPLE_SNAPSHOT)
    conn.knows("cms.role", 2, "admin", site=7)  # type: ignore[arg-type]
    with pytest.raises(TranslationError, match=r"site_name 7: a site name is text"):
        log(bus, membership(1, 2), data_type=SIMPLE_SNAPSHOT)
    assert pending(bus) == []
    # A code name of the type its column holds still goes through, int or text.
    bus.register_object_type(
        ObjectType(
            "demo.badge",
            "demo_badge",
            "badge_id",
            code_name_column="badge_no",
            columns={"badge_no": int},
        )
    )
    bus.register_object_type(
        ObjectType(
            "demo.award",
            "demo_award",
            "award_id",
            code_name_column="award_name",
            foreign_keys={"badge_id": "demo.badge"},
            columns={"award_name": str, "badge_id": int},
        )
    )
    bus.create_schema()
    conn.knows("demo.badge", 9, 1009)  # type: ignore[arg-type]
    conn.knows("cms.role", 2, "admin", site="main")
    log(bus, ext("demo.award", award_name="gold", badge_id=9), data_type=SIMPLE_SNAPSHOT)
    log(bus, membership(1, 2), data_type=SIMPLE_SNAPSHOT)
    assert len(pending(bus)) == 2


@pytest.mark.parametrize("flag", [True, False])
def test_a_bool_is_no_external_id(bus: IntegrationBus, flag: bool) -> None:
    """A new operator's trial: ``"role_id": true`` under SimpleSnapshot was accepted and,
    through a connector whose ids are dict keys, translated as the record with id 1."""
    conn = add_connector(bus)
    conn.knows("cms.user", 1, "alice")
    conn.knows("cms.role", 1, "admin", site="main")
    conn.knows("cms.role", 0, "guests", site="main")
    with pytest.raises(InvalidObjectError, match=f"must be a string or a number, not {flag}"):
        log(bus, membership(1, flag), data_type=SIMPLE_SNAPSHOT)
    assert pending(bus) == [] and conn.object_calls == []  # refused before any lookup


def test_missing_page_translation_is_refused(bus: IntegrationBus) -> None:
    add_connector(bus)
    page = Page("cms.folder", "X", alias="x", parent_id=77)
    with pytest.raises(TranslationError):
        log(bus, page, TaskType.CREATE_DOCUMENT, data_type=SIMPLE_SNAPSHOT)
    assert pending(bus) == []


def test_simple_tasks_do_not_ask_for_translations(bus: IntegrationBus) -> None:
    conn = add_connector(bus)
    log(bus, membership(1, 2))
    log(bus, Page("cms.folder", "X", alias="x", parent_id=77), TaskType.CREATE_DOCUMENT)
    assert conn.object_calls == []
    assert conn.document_calls == []
    assert len(pending(bus)) == 2


def test_translation_is_asked_once_per_distinct_external_id(bus: IntegrationBus) -> None:
    bus.register_object_type(
        ObjectType(
            "demo.review",
            "demo_review",
            "review_id",
            code_name_column="review_name",
            foreign_keys={"owner_id": "cms.user", "editor_id": "cms.user", "judge_id": "cms.user"},
            columns={"review_name": str, "owner_id": int, "editor_id": int, "judge_id": int},
        )
    )
    bus.create_schema()
    conn = add_connector(bus)
    conn.knows("cms.user", 5, "alice")
    conn.knows("cms.user", 6, "bob")
    review = ext("demo.review", review_name="r", owner_id=5, editor_id=5, judge_id=6)
    log(bus, review, data_type=SIMPLE_SNAPSHOT)
    assert Counter(conn.object_calls) == {(5, "cms.user"): 1, (6, "cms.user"): 1}


def test_snapshot_children_ask_once_per_distinct_external_id(bus: IntegrationBus) -> None:
    conn = add_connector(bus)
    conn.knows("cms.user", 5, "alice")
    posts = [
        ext("forums.forumpost", post_guid=str(uuid.uuid4()), post_user_id=5, post_subject=s)
        for s in ("a", "b", "c")
    ]
    forum = {"type": "forums.forum", "data": {"forum_name": "general"}, "children": posts}
    log(bus, forum, data_type=TaskDataType.SNAPSHOT)
    assert Counter(conn.object_calls) == {(5, "cms.user"): 1}


def test_parent_and_group_ids_are_translated_recursively(bus: IntegrationBus) -> None:
    conn = add_connector(bus)
    conn.knows("forums.forum", 3, "general", site="main", group_id=11)
    conn.knows("community.group", 11, "fans", site="main")
    conn.knows("cms.user", 5, "alice")
    post = ext(
        "forums.forumpost",
        post_guid=str(uuid.uuid4()),
        forum_id=3,
        post_user_id=5,
        post_subject="s",
    )
    log(bus, post, data_type=SIMPLE_SNAPSHOT)
    assert Counter(conn.object_calls) == {
        (3, "forums.forum"): 1,
        (11, "community.group"): 1,
        (5, "cms.user"): 1,
    }


def test_page_parent_is_translated_through_document_params(bus: IntegrationBus) -> None:
    conn = add_connector(bus)
    conn.knows_page(77, str(uuid.uuid4()))
    page = Page("cms.article", "A", alias="a", parent_id=77)
    log(bus, page, TaskType.CREATE_DOCUMENT, data_type=SIMPLE_SNAPSHOT)
    assert [call[0] for call in conn.document_calls] == [77]


# -- idempotency -------------------------------------------------------------------------------


def test_idempotency_key_returns_the_first_task_id(bus: IntegrationBus) -> None:
    add_connector(bus)
    first = log(bus, user("alice"), key="order-1")
    again = log(bus, user("alice", email="changed@example.com"), key="order-1")
    assert again == first
    assert pending(bus) == [first]


def test_other_idempotency_key_logs_a_new_task(bus: IntegrationBus) -> None:
    add_connector(bus)
    first = log(bus, user("alice"), key="order-1")
    second = log(bus, user("alice"), key="order-2")
    assert second != first
    assert pending(bus) == [first, second]


def test_idempotency_key_is_per_connector(bus: IntegrationBus) -> None:
    add_connector(bus)
    add_connector(bus, "Other")
    first = log(bus, user("alice"), key="order-1")
    other = log(bus, user("alice"), key="order-1", connector="Other")
    assert other != first
    assert pending(bus, "Other") == [other]


def test_idempotency_key_holds_under_concurrent_logging(bus: IntegrationBus, db_url: str) -> None:
    add_connector(bus)
    buses = []
    for _ in range(6):
        b = IntegrationBus(db_url)
        add_connector(b)
        buses.append(b)
    barrier = threading.Barrier(len(buses))
    ids: list[int] = []
    errors: list[BaseException] = []

    def worker(b: IntegrationBus) -> None:
        barrier.wait()
        try:
            ids.append(log(b, user("alice"), key="once"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(b,)) for b in buses]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for b in buses:
        b.close()
    assert errors == []
    assert len(ids) == len(buses)
    assert len(set(ids)) == 1
    assert pending(bus) == ids[:1]


# -- several tasks in one call (log_tasks) -----------------------------------------------------


def test_log_tasks_logs_in_order_with_increasing_ids(bus: IntegrationBus) -> None:
    add_connector(bus)
    bus.create_site("other", "Other site")
    requests = [
        TaskRequest(ext("cms.role", role_name=f"r{n}"), site_name="main" if n % 2 else "other")
        for n in range(7)
    ]
    outcomes = bus.log_tasks(CONNECTOR, requests)
    ids = [o.task_id for o in outcomes]
    assert all(isinstance(o, LogOutcome) and o.created for o in outcomes)  # both public
    assert all(i is not None for i in ids) and ids == sorted(ids) and len(set(ids)) == 7
    tasks = {t.task_id: t for t in bus.list_tasks(connector_name=CONNECTOR)}
    assert [tasks[i].site_name for i in ids if i is not None] == [r.site_name for r in requests]
    assert [tasks[i].title for i in ids if i is not None] == [
        f"Create cms.role 'r{n}'" for n in range(7)
    ]


def test_log_tasks_with_one_unknown_site_logs_nothing(bus: IntegrationBus) -> None:
    add_connector(bus)
    requests = [TaskRequest(ext("cms.role", role_name=f"r{n}"), site_name="main") for n in range(3)]
    requests.append(TaskRequest(ext("cms.role", role_name="r9"), site_name="nowhere"))
    with pytest.raises(SiteNotFoundError, match=r"^task 3 of the batch: .*nowhere"):
        bus.log_tasks(CONNECTOR, requests)
    assert pending(bus) == []
    requests[3] = TaskRequest(ext("cms.role", role_name="r9", no_such_column=1), site_name="main")
    with pytest.raises(InvalidObjectError, match=r"^task 3 of the batch: .*no_such_column"):
        bus.log_tasks(CONNECTOR, requests)
    with pytest.raises(SyncBusError, match=r"^no connector named 'Nope'"):  # the whole call's
        bus.log_tasks("Nope", requests)
    assert pending(bus) == []


def test_a_batch_keeps_the_logging_lock_when_a_keyed_task_is_a_duplicate(pg_url: str) -> None:
    """PostgreSQL: a batch's keyed tasks go in SAVEPOINTs. The connector's logging lock (which
    keeps ids in commit order) must outlive the rollback of a task whose key was taken: it
    was taken inside that SAVEPOINT, and released with it, before the fix."""
    import datetime as dt

    import sqlalchemy as sa

    from syncbus.intake import Intake

    bus = IntegrationBus(pg_url)
    try:
        bus.create_schema()
        add_connector(bus)
        first = bus.process_external_task(CONNECTOR, user("taken"), idempotency_key="k1")
        assert first is not None
        with bus.engine.begin() as conn:
            cid = conn.exec_driver_sql(
                "SELECT connector_id FROM syncbus_connector WHERE connector_name = 'TestConnector'"
            ).scalar_one()
            row = {
                "connector_id": cid,
                "task_type": "CreateObject",
                "data_type": "Simple",
                "process_type": "Default",
                "object_type": "cms.user",
                "class_name": None,
                "title": "t",
                "site_name": None,
                "created_at": dt.datetime.now(dt.UTC),
                "data": "{}",
                "error_message": None,
            }
            rows = [{**row, "idempotency_key": "k1"}, {**row, "idempotency_key": "k2"}]
            outcomes = Intake._insert(conn, CONNECTOR, rows, True)
            assert [o.created for o in outcomes] == [False, True]
            assert outcomes[0].task_id == first
            held = conn.execute(
                sa.text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                    "AND pid = pg_backend_pid() AND classid = :a AND objid = :b"
                ),
                {"a": 0x5342, "b": cid},
            ).scalar_one()
            assert held == 1
            conn.rollback()
    finally:
        bus.close()
