"""Log-time validation (issue 10): what a column cannot hold is refused when the task is
logged, as InvalidObjectError (HTTP 422) naming the type and the column, before any SQL runs;
whatever is accepted applies or fails alone (CONTRACT §4, §11)."""

from __future__ import annotations

import datetime as dt
import itertools
import math
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from syncbus import (
    IntegrationBus,
    InternalObject,
    InvalidObjectError,
    ObjectParams,
    ObjectType,
    Page,
    PageType,
    ProcessType,
    SiteNotFoundError,
    TaskDataType,
    TaskType,
    create_app,
)
from syncbus.content.builtin import BUILTIN_OBJECT_TYPES
from syncbus.intake import TaskRequest
from tests.helpers import (
    CONNECTOR,
    DictConnector,
    add_connector,
    ext,
    log,
    membership,
    object_id,
    pending,
    put,
    run,
    user,
)
from tests.http_server import asgi_client

SIMPLE_SNAPSHOT = TaskDataType.SIMPLE_SNAPSHOT
CREATE_PAGE = TaskType.CREATE_DOCUMENT

HARD = ObjectType(
    "hard.item",
    "hard_item",
    "item_id",
    code_name_column="item_name",
    columns={
        "item_name": "str",
        "count": int,
        "big": "bigint",
        "ratio": float,
        "day": "date",
        "at": "datetime",
        "flag": bool,
        "label": sa.String(10),
        "note": "text",
        "extra": "json",
    },
)


@pytest.fixture
def conn(bus: IntegrationBus) -> DictConnector:
    bus.register_object_type(HARD)
    bus.create_schema()
    return add_connector(bus)


def item(**data: Any) -> dict[str, Any]:
    return ext("hard.item", **{"item_name": "x", **data})


def article(name: str = "hello", title: str = "Title", **kw: Any) -> Page:
    fields = {"article_title": title, "article_summary": "sum", "article_text": "text"}
    return Page("cms.article", name.title(), **{"alias": name, "fields": fields, **kw})


def statements(bus: IntegrationBus) -> list[str]:
    """Every SQL statement the bus's engine runs from now on."""
    seen: list[str] = []
    sa.event.listen(bus.engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
    return seen


# -- item 1: what a column cannot hold ---------------------------------------------------------

REFUSED_OBJECTS = [
    # (id, external object, data type, fragments the message must contain)
    ("simple-fk-10**30", membership(10**30, 1), None, ["'user_id'", "cms.userrole"]),
    ("simple-fk-negative", membership(-1, 1), None, ["'user_id'", "positive"]),
    ("simple-fk-zero", membership(1, 0), None, ["'role_id'", "positive"]),
    ("simple-fk-bool", membership(True, 1), None, ["'user_id'"]),
    ("snapshot-fk-nul", membership("u\x00", "r"), SIMPLE_SNAPSHOT, ["'user_id'", "NUL"]),
    ("snapshot-fk-nan", membership(math.nan, "r"), SIMPLE_SNAPSHOT, ["'user_id'", "finite"]),
    ("snapshot-fk-10**5000", membership(10**5000, "r"), SIMPLE_SNAPSHOT, ["'user_id'", "64"]),
    ("binding-end-missing", ext("cms.userrole", user_id=1), None, ["'role_id'"]),
    ("id-10**30", user("a", user_id=10**30), None, ["'user_id'", "cms.user", "range"]),
    ("user-name-nul", user("a\x00b"), None, ["'user_name'", "NUL"]),
    ("user-name-null", ext("cms.user", user_name=None), None, ["'user_name'", "required"]),
    ("user-name-missing", ext("cms.user", email="a@b"), None, ["'user_name'", "required"]),
    ("user-name-blank", user("  "), None, ["'user_name'", "empty"]),
    ("first-name-overlong", user("a", first_name="x" * 101), None, ["'first_name'", "100"]),
    ("email-nested", user("a", email={"x": 1}), None, ["'email'", "dict"]),
    ("enabled-2", user("a", enabled=2), None, ["'enabled'", "bool"]),
    ("enabled-text", user("a", enabled="yes"), None, ["'enabled'", "bool"]),
    ("int-2**31", item(count=2**31), None, ["'count'", "hard.item", "range"]),
    ("int-bool", item(count=True), None, ["'count'", "int"]),
    ("int-float", item(count=1.5), None, ["'count'", "int"]),
    ("int-list", item(count=[1]), None, ["'count'", "list"]),
    ("bigint-2**63", item(big=2**63), None, ["'big'", "range"]),
    ("bigint-10**30", item(big=10**30), None, ["'big'", "range"]),
    ("float-nan", item(ratio=math.nan), None, ["'ratio'", "finite"]),
    ("float-inf", item(ratio=-math.inf), None, ["'ratio'", "finite"]),
    ("float-huge-int", item(ratio=10**30), None, ["'ratio'", "float"]),
    ("date-datetime-string", item(day="2024-05-06T10:30:00"), None, ["'day'", "only"]),
    ("date-datetime", item(day=dt.datetime(2024, 5, 6, 10, 30)), None, ["'day'", "date"]),
    ("date-nonsense", item(day="yesterday"), None, ["'day'", "ISO date"]),
    ("datetime-nonsense", item(at="noon"), None, ["'at'", "ISO date"]),
    ("datetime-past-9999-utc", item(at="9999-12-31T23:00:00-05:00"), None, ["'at'", "UTC"]),
    ("str-overlong", item(label="x" * 11), None, ["'label'", "at most 10"]),
    ("code-name-overlong", item(item_name="x" * 451), None, ["'item_name'", "450"]),
    ("text-nul", item(note="a\x00b"), None, ["'note'", "NUL"]),
    ("text-surrogate", item(note="a\ud800b"), None, ["'note'", "Unicode"]),
    ("json-nan", item(extra={"a": [math.nan]}), None, ["'extra'", "JSON"]),
    # Accepted by the log-time check, then refused by PostgreSQL when applied (a trial).
    ("json-surrogate", item(extra={"a": ["\ud800"]}), None, ["'extra'", "surrogate"]),
    ("json-key-surrogate", item(extra={"\udfff": 1}), None, ["'extra'", "surrogate"]),
]


@pytest.mark.parametrize(
    ("external", "data_type", "fragments"),
    [pytest.param(o, d, f, id=i) for i, o, d, f in REFUSED_OBJECTS],
)
def test_value_a_column_cannot_hold_is_refused_at_log_time(
    bus: IntegrationBus,
    conn: DictConnector,
    external: dict[str, Any],
    data_type: TaskDataType | None,
    fragments: list[str],
) -> None:
    with pytest.raises(InvalidObjectError) as caught:
        log(bus, external, data_type=data_type or TaskDataType.SIMPLE)
    for fragment in fragments:
        assert fragment in str(caught.value)
    assert pending(bus) == []


def test_values_at_the_edge_of_their_columns_are_accepted_and_applied(
    bus: IntegrationBus, conn: DictConnector
) -> None:
    put(
        bus,
        item(
            item_name="x" * 450,
            count=2**31 - 1,
            big=-(2**63),
            ratio=2**62,
            day="2024-05-06",
            at="2024-05-06T10:30:00+02:00",
            flag=1,
            label="x" * 10,
            note="ünïcødé ✓",
            extra={"a": [1, "b\x00", 10**30]},
        ),
    )
    row = bus.get_object("hard.item", "x" * 450)
    assert row is not None and row["count"] == 2**31 - 1 and row["big"] == -(2**63)
    assert row["day"] == dt.date(2024, 5, 6) and row["flag"] is True


@pytest.mark.parametrize(
    "given",
    [
        "2020-01-01T09:00:00+01:00",
        "2020-01-01T08:00:00Z",
        "2020-01-01T08:00:00",  # no offset: UTC, as documented
        "2020-01-01T03:00:00-05:00",
        dt.datetime(2020, 1, 1, 9, tzinfo=dt.timezone(dt.timedelta(hours=1))),
    ],
    ids=str,
)
def test_a_datetime_keeps_its_instant_on_both_databases(
    bus: IntegrationBus, conn: DictConnector, given: object
) -> None:
    """A new developer's trial: on SQLite a datetime's offset was dropped (09:00+01:00 was
    stored as 09:00, an hour late); PostgreSQL kept the instant. Both now store it in UTC."""
    put(bus, ext("hard.item", item_name="t", at=given))
    row = bus.get_object("hard.item", "t")
    assert row is not None
    at = row["at"] if row["at"].tzinfo else row["at"].replace(tzinfo=dt.UTC)
    assert at == dt.datetime(2020, 1, 1, 8, tzinfo=dt.UTC), row["at"]


def test_page_fields_of_every_accepted_kind_apply(bus: IntegrationBus, conn: DictConnector) -> None:
    """Dates, datetimes and 0/1 booleans in page fields are accepted at log time, so they must
    apply (they failed on SQLite, whose Date type takes only date objects)."""
    bus.register_page_type(PageType("my.event", "my_event", {"day": "date", "at": "datetime"}))
    bus.register_page_type(PageType("my.flag", "my_flag", {"ok": bool}))
    bus.create_schema()
    fields = {"day": "2024-05-06", "at": "2024-05-06T10:00:00+00:00"}
    put(bus, Page("my.event", "E", alias="e", fields=fields), CREATE_PAGE)
    put(bus, Page("my.flag", "F", alias="f", fields={"ok": 1}), CREATE_PAGE)
    fields = {"day": "2024-05-07", "at": "2024-05-07T10:00:00+00:00"}
    put(bus, Page("my.event", "E", alias="e", fields=fields), TaskType.UPDATE_DOCUMENT)
    event, flag = bus.get_page("main", "/e"), bus.get_page("main", "/f")
    assert event is not None and flag is not None
    assert event["day"] == dt.date(2024, 5, 7) and flag["ok"] is True


PAGE_ATTRIBUTES = [
    # (id, page, data type, fragments)
    ("node-guid-nul", article(node_guid="1234\x00"), None, ["node_guid", "NUL"]),
    ("node-guid-overlong", article(node_guid="x" * 37), None, ["node_guid", "36"]),
    ("title-nul", article(title="Hi\x00"), None, ["'article_title'", "cms.article", "NUL"]),
    ("name-nul", Page("cms.folder", "a\x00", alias="a"), None, ["name", "NUL"]),
    ("name-not-text", Page("cms.folder", 5), None, ["name", "string"]),  # type: ignore[arg-type]
    ("class-nul", Page("cms.fol\x00der", "a"), None, ["class_name", "NUL"]),
    ("culture-nul", article(culture="en\x00"), None, ["culture", "NUL"]),
    ("culture-overlong", article(culture="en-US-x-long"), None, ["culture", "10"]),
    ("alias-slash", article("a/b"), None, ["alias", "'/'"]),
    ("alias-empty", article(""), None, ["alias", "empty"]),
    ("alias-overlong", article("x" * 201), None, ["alias", "200"]),
    ("alias-from-long-name", Page("cms.folder", "x" * 300), None, ["alias"]),
    ("parent-path-relative", article(parent_path="news"), None, ["parent_path", "absolute"]),
    ("parent-path-double", article(parent_path="/a//b"), None, ["parent_path", "absolute"]),
    ("parent-path-nul", article(parent_path="/a\x00"), None, ["parent_path", "NUL"]),
    ("parent-id-negative", article(parent_id=-3), None, ["parent_id", "positive"]),
    ("parent-id-10**30", article(parent_id=10**30), None, ["parent_id", "positive"]),
    ("parent-id-nul", article(parent_id="p\x00"), SIMPLE_SNAPSHOT, ["parent_id", "NUL"]),
]


@pytest.mark.parametrize(
    ("page", "data_type", "fragments"),
    [pytest.param(p, d, f, id=i) for i, p, d, f in PAGE_ATTRIBUTES],
)
def test_page_the_tree_cannot_hold_is_refused_at_log_time(
    bus: IntegrationBus,
    conn: DictConnector,
    page: Page,
    data_type: TaskDataType | None,
    fragments: list[str],
) -> None:
    with pytest.raises(InvalidObjectError) as caught:
        log(bus, page, CREATE_PAGE, data_type=data_type or TaskDataType.SIMPLE)
    for fragment in fragments:
        assert fragment in str(caught.value)
    assert pending(bus) == []


def test_identity_with_nul_from_the_connector_is_refused(
    bus: IntegrationBus, conn: DictConnector
) -> None:
    conn.objects[("cms.user", 7)] = ObjectParams("ali\x00ce")
    conn.knows("cms.role", 8, "editors", "main")
    with pytest.raises(InvalidObjectError, match=r"code_name.*NUL"):
        log(bus, membership(7, 8), data_type=SIMPLE_SNAPSHOT)
    assert pending(bus) == []


# -- item 7: names the logging call passes to SQL ----------------------------------------------


@pytest.mark.parametrize(
    ("connector", "site", "key", "what"),
    [
        (CONNECTOR, "ma\x00in", None, "site_name"),
        (CONNECTOR + "\x00", "main", None, "connector name"),
        (CONNECTOR, "main", "k\x00", "idempotency_key"),
        (CONNECTOR, "main", "k" * 201, "idempotency_key"),
    ],
    ids=["site", "connector", "key", "key-overlong"],
)
def test_bad_name_is_refused_before_any_sql(
    bus: IntegrationBus, conn: DictConnector, connector: str, site: str, key: str | None, what: str
) -> None:
    seen = statements(bus)
    with pytest.raises(InvalidObjectError, match=what):
        bus.process_external_task(connector, user("a"), site_name=site, idempotency_key=key)
    assert seen == []
    assert pending(bus) == []


def test_bad_argument_of_a_later_task_in_a_batch_is_refused_before_any_sql(
    bus: IntegrationBus, conn: DictConnector
) -> None:
    seen = statements(bus)
    requests = [
        TaskRequest(user("a"), site_name="main"),
        TaskRequest(user("b"), site_name="main", process_type="nope"),
    ]
    with pytest.raises(InvalidObjectError, match="process_type"):
        bus.log_tasks(CONNECTOR, requests)
    requests[1] = TaskRequest(user("b"), site_name="ma\x00in")
    with pytest.raises(InvalidObjectError, match="site_name"):
        bus.log_tasks(CONNECTOR, requests)
    assert seen == []
    assert conn.prepare_calls == []


def test_unknown_site_says_how_to_create_one(bus: IntegrationBus, conn: DictConnector) -> None:
    with pytest.raises(SiteNotFoundError) as caught:
        log(bus, user("a"), site="nowhere")
    assert "bus.create_site('nowhere')" in str(caught.value)
    assert "'main'" in str(caught.value)


# -- item 10: inputs that can only fail --------------------------------------------------------


def test_a_task_logged_as_error_says_why_it_blocks(
    bus: IntegrationBus, conn: DictConnector
) -> None:
    """CONTRACT §4 keeps Error loggable (an Error task at the head stops the run); the task
    says why from the start, so the stop is never silent."""
    for value in (ProcessType.ERROR, "Error", "error"):
        task_id = bus.process_external_task(
            CONNECTOR, user("a"), process_type=value, site_name="main"
        )
        assert task_id is not None
        info = bus.get_task(task_id)
        assert info is not None and info.process_type is ProcessType.ERROR
        assert info.error_message and "logged with process type Error" in info.error_message
    result = bus.process_tasks(CONNECTOR)[CONNECTOR]
    assert result.stopped and result.applied == 0
    assert result.error and "logged with process type Error" in result.error
    assert len(pending(bus)) == 3


@pytest.mark.parametrize("field", ["process_type", "task_type", "data_type"])
def test_unknown_enum_value_names_the_field_and_the_allowed_values(
    bus: IntegrationBus, conn: DictConnector, field: str
) -> None:
    with pytest.raises(InvalidObjectError) as caught:
        bus.process_external_task(CONNECTOR, user("a"), site_name="main", **{field: "nope"})
    assert isinstance(caught.value, ValueError)  # what parse() raised before
    assert str(caught.value).startswith(f"{field}: unknown")
    allowed = {"process_type": "SkipOnError", "task_type": "CreateObject", "data_type": "Simple"}
    assert allowed[field] in str(caught.value)
    assert pending(bus) == []


def test_enum_parse_error_is_both_invalid_object_and_value_error() -> None:
    for bad in ("nope", None, 5, ["Default"]):
        with pytest.raises(InvalidObjectError, match="expected one of: Default, SkipOnce"):
            ProcessType.parse(bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            ProcessType.parse(bad)  # type: ignore[arg-type]


# -- item 3: one id per task, in order ---------------------------------------------------------


class TwinConnector(DictConnector):
    """Preparing an object marked ``twin`` first logs it through another call with the same
    idempotency key: a concurrent twin that wins the key between the check and the insert."""

    bus: IntegrationBus

    def prepare_internal_object(
        self, obj: Any, task_type: TaskType, data_type: TaskDataType, site_name: str | None
    ) -> InternalObject | Page | None:
        twin = obj.get("twin") if isinstance(obj, dict) else None
        if twin:
            self.twin_id = self.bus.process_external_task(
                self.connector_name, user(twin), site_name="main", idempotency_key=twin
            )
            obj = user(twin)
        return super().prepare_internal_object(obj, task_type, data_type, site_name)


def test_batch_with_a_used_key_and_a_key_won_by_a_twin_gets_one_id_per_task(
    bus: IntegrationBus,
) -> None:
    twins = TwinConnector()
    twins.bus = bus
    bus.register_connector(twins)
    first = log(bus, user("a"), key="k1")
    requests = [  # the trial's batch: [k1 (already used), k2]; here a twin wins k2
        TaskRequest(user("a"), site_name="main", idempotency_key="k1"),
        TaskRequest({"twin": "k2"}, site_name="main", idempotency_key="k2"),
    ]
    outcomes = bus.log_tasks(CONNECTOR, requests)
    assert [(o.task_id, o.created) for o in outcomes] == [(first, False), (twins.twin_id, False)]
    assert pending(bus) == [first, twins.twin_id]
    # ... and with a task without a key behind them
    requests.append(TaskRequest(user("c"), site_name="main"))
    requests[1] = TaskRequest({"twin": "k3"}, site_name="main", idempotency_key="k3")
    outcomes = bus.log_tasks(CONNECTOR, requests)
    assert [o.task_id for o in outcomes][:2] == [first, twins.twin_id]
    assert [o.created for o in outcomes] == [False, False, True]


def test_batch_with_a_used_key_gets_one_id_per_task(bus: IntegrationBus) -> None:
    add_connector(bus)
    first = log(bus, user("a"), key="k1")
    for keys in (["k1", "k2"], ["k2", "k1", "k3", "k3"], [None, "k1"]):
        requests = [TaskRequest(user("x"), site_name="main", idempotency_key=k) for k in keys]
        outcomes = bus.log_tasks(CONNECTOR, requests)
        assert len(outcomes) == len(requests)
        ids = dict(zip(keys, (o.task_id for o in outcomes), strict=True))
        assert ids.get("k1", first) == first


def test_a_key_repeated_inside_a_batch_is_answered_as_a_retry_of_the_batch_is(
    bus: IntegrationBus,
) -> None:
    """Trial 4: the repeat of a key inside one batch was prepared again: a repeat the
    connector skips answered null the first time and the first id on a retry, and a repeat
    with a bad object failed the whole batch the first time only."""
    add_connector(bus)
    skipped = None  # DictConnector skips a task whose external object is None
    bad = ext("cms.user", user_name="b", no_such_column=1)
    for repeat in (skipped, bad, user("other")):
        key = f"k-{len(pending(bus))}"
        requests = [
            TaskRequest(user("a"), site_name="main", idempotency_key=key),
            TaskRequest(repeat, site_name="main", idempotency_key=key),
        ]
        first = bus.log_tasks(CONNECTOR, requests)
        again = bus.log_tasks(CONNECTOR, requests)
        assert first[0].created and first[0].task_id is not None
        assert [o.task_id for o in first] == [first[0].task_id] * 2
        assert [(o.task_id, o.created) for o in again] == [(first[0].task_id, False)] * 2
    assert len(pending(bus)) == 3  # one task per key, nothing else logged


# -- item 5: aliases are one segment; renames touch whole segments only ------------------------


def test_rename_of_a_prefix_page_leaves_a_sibling_sharing_the_prefix(
    bus: IntegrationBus, conn: DictConnector
) -> None:
    a_guid = str(uuid.uuid4())
    put(bus, Page("cms.folder", "A", alias="a", node_guid=a_guid), CREATE_PAGE)
    put(bus, Page("cms.folder", "Y", alias="y", parent_path="/a"), CREATE_PAGE)
    put(bus, Page("cms.folder", "Ab", alias="ab"), CREATE_PAGE)
    put(bus, Page("cms.folder", "X", alias="x", parent_path="/ab"), CREATE_PAGE)
    put(bus, Page("cms.folder", "A", alias="c", node_guid=a_guid), TaskType.UPDATE_DOCUMENT)
    paths = {p: bus.get_page("main", p) is not None for p in ("/c", "/c/y", "/ab", "/ab/x")}
    assert paths == {"/c": True, "/c/y": True, "/ab": True, "/ab/x": True}
    assert bus.get_page("main", "/a/y") is None


def test_alias_with_a_slash_cannot_hijack_another_subtree(
    bus: IntegrationBus, conn: DictConnector
) -> None:
    """The trial: a page logged with alias 'a/b' at the root took the path /a/b, and renaming
    /a then moved it. Now the alias is refused when logged."""
    put(bus, Page("cms.folder", "A", alias="a"), CREATE_PAGE)
    with pytest.raises(InvalidObjectError, match="one path segment"):
        log(bus, Page("cms.folder", "B", alias="a/b"), CREATE_PAGE)
    assert pending(bus) == []


@pytest.mark.parametrize("control", ["\n", "\r", "\t", "\x1b", "\x7f", "\x85"])
def test_a_control_character_is_no_part_of_an_alias_or_a_parent_path(
    bus: IntegrationBus, conn: DictConnector, control: str
) -> None:
    """A new user's trial: a line break in an alias was accepted, giving a page whose path no
    URL can name plainly. Refused when logged, naming the problem; nothing is queued."""
    put(bus, Page("cms.folder", "A", alias="a"), CREATE_PAGE)
    with pytest.raises(InvalidObjectError, match="must not contain control characters"):
        log(bus, Page("cms.folder", "B", alias=f"b{control}c", parent_path="/a"), CREATE_PAGE)
    with pytest.raises(InvalidObjectError, match="a path is part of the page's URL"):
        log(bus, Page("cms.folder", "B", alias="b", parent_path=f"/a{control}"), CREATE_PAGE)
    assert pending(bus) == []
    # A name with one still makes a clean alias of its own.
    put(bus, Page("cms.folder", f"B{control}C", parent_path="/a"), CREATE_PAGE)
    assert bus.get_page("main", "/a/B-C") is not None


@pytest.mark.parametrize("dots", [".", "..", " .. "])
def test_dot_segments_are_no_alias_and_no_parent_path(
    bus: IntegrationBus, conn: DictConnector, dots: str
) -> None:
    """A new developer's trial: alias '..' was accepted and made the page
    '/Electronics/Phones/..'; a parent path through '..' named no page either."""
    put(bus, Page("cms.folder", "A", alias="a"), CREATE_PAGE)
    with pytest.raises(InvalidObjectError, match=r"'\.' and '\.\.' name a page's own path"):
        log(bus, Page("cms.folder", "B", alias=dots, parent_path="/a"), CREATE_PAGE)
    with pytest.raises(InvalidObjectError, match=r"'\.' and '\.\.' are no page's alias"):
        log(bus, Page("cms.folder", "B", alias="b", parent_path=f"/a/{dots}"), CREATE_PAGE)
    assert pending(bus) == []
    put(bus, Page("cms.folder", "B", alias="b.", parent_path="/a"), CREATE_PAGE)  # dots inside
    assert bus.get_page("main", "/a/b.") is not None


# -- the same checks over HTTP (422) -----------------------------------------------------------


@pytest.fixture
def api(bus: IntegrationBus, conn: DictConnector) -> Iterator[httpx.Client]:
    app = create_app(bus, api_token="t", run_dispatcher=False)
    with asgi_client(app, headers={"Authorization": "Bearer t"}) as client:
        yield client


def test_http_answers_422_for_what_a_column_cannot_hold(
    api: httpx.Client, bus: IntegrationBus
) -> None:
    def post(obj: Any, connector: str = CONNECTOR, **body: Any) -> httpx.Response:
        body = {"task_type": "CreateObject", "object": obj, "site_name": "main", **body}
        return api.post(f"/api/connectors/{connector}/tasks", json=body)

    cases = [
        (post(membership(10**30, 1)), "'user_id'"),
        (post(item(day="2024-05-06T10:30:00")), "'day'"),
        (post(user("a\x00")), "NUL"),
        (post(user("a"), site_name="ma\x00in"), "site_name"),
        (post(user("a"), idempotency_key="k\x00"), "idempotency_key"),
        # The service refuses a NUL in the URL path before the connector name is read.
        (post(user("a"), connector="Test%00"), "the URL path must not contain a NUL"),
    ]
    for response, fragment in cases:
        assert response.status_code == 422, response.text
        assert fragment in response.text, response.text
    assert pending(bus) == []


def test_http_batch_with_a_used_key_answers_one_id_per_task(
    api: httpx.Client, bus: IntegrationBus
) -> None:
    first = log(bus, user("a"), key="k1")
    tasks = [
        {
            "task_type": "CreateObject",
            "object": user("b"),
            "site_name": "main",
            "idempotency_key": k,
        }
        for k in ("k1", "k2")
    ]
    r = api.post(f"/api/connectors/{CONNECTOR}/tasks/batch", json={"tasks": tasks})
    assert r.status_code == 201, r.text
    ids = r.json()["task_ids"]
    assert len(ids) == 2 and ids[0] == first and ids[1] != first


# -- the property: refused at log time, or applied, or failed alone ----------------------------

_unique = itertools.count()

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([2**31, 2**63, -(2**63) - 1, 10**30, -1, 0])
    | st.floats()
    | st.text(max_size=30)
    | st.sampled_from(["a\x00b", "2024-05-06", "2024-05-06T10:30:00", "x" * 500, "a/b", "/"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)

# Values of each column's own kind, so that many tasks get past the log-time checks and the
# property also exercises processing (the JSON values above are mostly refused).
typed_values = (
    st.text(max_size=40)
    | st.integers(-3, 2**31)
    | st.booleans()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.dates().map(str)
    | st.datetimes().map(str)
    | st.uuids().map(str)
)

FUZZED = [(ot.name, col) for ot in BUILTIN_OBJECT_TYPES for col in ot.all_columns()] + [
    ("cms.article", field)
    for field in (
        "article_title",
        "article_summary",
        "article_text",
        "name",
        "alias",
        "culture",
        "node_guid",
        "parent_path",
        "parent_id",
    )
]


class World:
    """Objects that the fuzzed tasks' valid parts point to (created once per bus)."""

    def __init__(self, bus: IntegrationBus) -> None:
        put(bus, user("base-user"))
        put(bus, ext("cms.role", role_name="base-role"))
        put(bus, ext("community.group", group_name="base-group"))
        put(bus, ext("forums.forum", forum_name="base-forum"))
        self.ids = {
            "user": object_id(bus, "cms.user", "base-user"),
            "role": object_id(bus, "cms.role", "base-role", "main"),
            "group": object_id(bus, "community.group", "base-group", "main"),
            "forum": object_id(bus, "forums.forum", "base-forum", "main"),
            "site": object_id(bus, "cms.site", "main"),
        }

    def valid(self, type_name: str, n: int) -> InternalObject | Page:
        ids = self.ids
        data: dict[str, dict[str, Any]] = {
            "cms.site": {"site_name": f"site{n}", "site_display_name": "S"},
            "cms.user": {"user_name": f"user{n}"},
            "cms.usersite": {"user_id": ids["user"], "site_id": ids["site"]},
            "cms.role": {"role_name": f"role{n}"},
            "cms.userrole": {"user_id": ids["user"], "role_id": ids["role"]},
            "community.group": {"group_name": f"group{n}"},
            "forums.forum": {"forum_name": f"forum{n}", "forum_group_id": ids["group"]},
            "forums.forumpost": {"post_guid": str(uuid.uuid4()), "forum_id": ids["forum"]},
        }
        if type_name == "cms.article":
            return article(f"page{n}")
        return InternalObject(type_name, data[type_name])


def fuzzed(world: World, type_name: str, column: str, value: Any) -> InternalObject | Page:
    obj = world.valid(type_name, next(_unique))
    if isinstance(obj, Page):
        if column.startswith("article_"):
            obj.fields[column] = value
        else:
            setattr(obj, column, value)
    else:
        obj.data[column] = value
    return obj


def test_any_json_value_is_refused_or_applies_or_fails_alone(db_url: str) -> None:
    bus = IntegrationBus(db_url)
    bus.create_schema()
    add_connector(bus)
    world = World(bus)

    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(target=st.sampled_from(FUZZED), value=json_values | typed_values)
    # The values that wedged connectors in the trial, always tried:
    @example(target=("cms.userrole", "user_id"), value=10**30)
    @example(target=("cms.article", "node_guid"), value="1234\x00")
    @example(target=("cms.article", "article_title"), value="Hi\x00")
    @example(target=("cms.article", "alias"), value="a/b")
    def check(target: tuple[str, str], value: Any) -> None:
        type_name, column = target
        obj = fuzzed(world, type_name, column, value)
        task_type = CREATE_PAGE if isinstance(obj, Page) else TaskType.CREATE_OBJECT
        try:
            task_id = log(bus, obj, task_type, process_type=ProcessType.SKIP_ON_ERROR)
        except InvalidObjectError:
            event("refused at log time")
            assert pending(bus) == []
            return
        n = next(_unique)
        behind = log(bus, user(f"behind{n}"))
        run(bus)
        assert bus.get_task(behind) is None, bus.task_log(behind)  # applied
        assert bus.get_object("cms.user", f"behind{n}") is not None
        left = bus.get_task(task_id)
        event("applied" if left is None else "failed alone")
        if left is not None:  # it failed alone, with its own error
            errors = bus.task_log(task_id)
            assert errors and errors[-1].error_message
            bus.delete_task(task_id)
        assert pending(bus) == []

    try:
        check()
    finally:
        bus.close()


def test_a_task_of_a_type_whose_table_is_missing_is_refused_when_logged(
    db_url: str,
) -> None:
    """A new developer's trial: with a type registered but `create_schema()` never run (or
    failed), its tasks were logged, then failed with "no such table" and stopped the queue.
    They are refused when logged, saying what to do; over HTTP that is a 503 (the service is
    not set up), and nothing is queued. Once the schema exists, the same call logs."""
    from syncbus import SchemaMissingError, create_app

    bus = IntegrationBus(db_url)
    try:
        bus.register_object_type(HARD)  # registered, its table not created
        add_connector(bus)
        with pytest.raises(SchemaMissingError, match="create_schema"):
            log(bus, item(item_name="a"))
        app = create_app(bus, run_dispatcher=False)
        with asgi_client(app) as api:
            r = api.post(
                "/api/connectors/TestConnector/tasks",
                json={"task_type": "CreateObject", "object": item(item_name="b")},
            )
        assert r.status_code == 503 and "hard_item" in r.json()["detail"], r.text
        assert pending(bus) == []
        bus.create_schema()
        put(bus, item(item_name="c"))
        assert bus.get_object("hard.item", "c") is not None
    finally:
        bus.close()
