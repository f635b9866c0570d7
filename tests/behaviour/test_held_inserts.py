"""Held-back INSERTs (``syncbus.content.writes``): in a batch's optimistic pass a new object,
node, document or fields row is inserted with an id reserved for it in advance
(``Dialect.reserve_ids``) and sent grouped with the batch's other inserts, instead of one
INSERT ... RETURNING per row. These tests hold that the grouping happens, that it keeps what
the order of the tasks ties together (a row is sent after the rows its foreign keys point at;
a row inserted without a reserved id never takes one that is reserved), and that an insert the
database refuses fails its own task alone. On both databases.

"Without a careful pass" is told by the statements: the careful pass puts each task in a
SAVEPOINT, the optimistic pass none."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa

from syncbus import (
    IntegrationBus,
    ObjectType,
    Page,
    PageType,
    ProcessType,
    TaskDataType,
    TaskType,
)
from syncbus.content.planner import GROWN
from syncbus.content.writes import WriteBehind
from syncbus.intake import TaskRequest
from tests.behaviour.test_intake_hardening import item
from tests.behaviour.test_write_behind import _items, _store_raw
from tests.helpers import CONNECTOR, add_connector, log, put, role, run, site_id, user

SNAP = TaskDataType.SIMPLE_SNAPSHOT
CREATE_DOC = TaskType.CREATE_DOCUMENT


class _Statements:
    """The SQL statements sent through an engine (an executemany counts once)."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    def __call__(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self.sent.append(" ".join(statement.split()).upper())

    def inserts(self, table: str) -> int:
        return sum(s.startswith(f"INSERT INTO {table.upper()} ") for s in self.sent)

    @property
    def savepoints(self) -> int:
        return sum(s.startswith("SAVEPOINT") for s in self.sent)


@contextmanager
def _spy(bus: IntegrationBus) -> Iterator[_Statements]:
    seen = _Statements()
    sa.event.listen(bus.engine, "before_cursor_execute", seen)
    try:
        yield seen
    finally:
        sa.event.remove(bus.engine, "before_cursor_execute", seen)


def _ids(bus: IntegrationBus, table: str, column: str) -> list[int]:
    with bus.engine.connect() as c:
        return [int(i) for i in c.execute(sa.text(f"SELECT {column} FROM {table}")).scalars()]


def test_a_batchs_new_objects_go_in_one_insert_with_ids_given_in_advance(
    bus: IntegrationBus,
) -> None:
    add_connector(bus)
    put(bus, user("before"))
    for i in range(30):
        log(bus, user(f"new{i}", first_name=f"N{i}"))
    with _spy(bus) as seen:
        result = run(bus)
    assert result.applied == 30 and result.failed == 0
    assert seen.savepoints == 0, "the batch went the careful way"
    assert seen.inserts("cms_user") == 1, seen.inserts("cms_user")
    if bus.engine.dialect.name == "postgresql":  # one short statement, the rows as one document
        [insert] = [s for s in seen.sent if s.startswith("INSERT INTO CMS_USER ")]
        assert "JSON_TO_RECORDSET" in insert, insert
    names = {u["user_name"]: u for u in bus.find_objects("cms.user")}
    assert all(names[f"new{i}"]["first_name"] == f"N{i}" for i in range(30))
    ids = _ids(bus, "cms_user", "user_id")
    assert len(ids) == len(set(ids))
    assert min(names[f"new{i}"]["user_id"] for i in range(30)) > names["before"]["user_id"]
    # A row numbered by the database afterwards takes none of those ids.
    put(bus, user("after"))
    ids = _ids(bus, "cms_user", "user_id")
    assert len(ids) == len(set(ids)) == 32


def test_a_row_is_sent_after_the_rows_its_foreign_keys_point_at(bus: IntegrationBus) -> None:
    """Held by hand, in this order: a membership of an existing user, a new user, the new
    user's membership, another new user and membership. The new users' memberships must not
    join the first run (sent before the users they name): they go in a run of their own, after
    the users'. A read of the memberships then sends the users first too."""
    add_connector(bus)
    put(bus, role("editors"))
    put(bus, user("u0"))
    users, roles = bus.registry.table("cms.user"), bus.registry.table("cms.role")
    members = bus.registry.table("cms.userrole")
    with bus.engine.begin() as c:
        editors = c.execute(sa.select(roles.c.role_id)).scalar_one()
        u0 = c.execute(sa.select(users.c.user_id)).scalar_one()
        with WriteBehind(c) as held, _spy(bus) as seen:

            def add_user(name: str) -> int:
                uid = held.allocate(users, "user_id")
                assert uid is not None
                held.insert(users, {"user_id": uid, "user_name": name, "user_guid": name})
                return uid

            def add_member(uid: int) -> None:
                rid = held.allocate(members, "user_role_id")
                held.insert(members, {"user_role_id": rid, "user_id": uid, "role_id": editors})

            add_member(u0)
            add_member(add_user("u1"))
            add_member(add_user("u2"))
            assert seen.inserts("cms_userrole") == seen.inserts("cms_user") == 0  # held
            held.flush()
        assert seen.inserts("cms_user") == 1 and seen.inserts("cms_userrole") == 2
        order = [s.split(" ")[2] for s in seen.sent if s.startswith("INSERT")]
        assert order == ["CMS_USERROLE", "CMS_USER", "CMS_USERROLE"], order
        with WriteBehind(c) as held, _spy(bus) as seen:
            uid = held.allocate(users, "user_id")
            assert uid is not None
            held.insert(users, {"user_id": uid, "user_name": "u3", "user_guid": "u3"})
            rid = held.allocate(members, "user_role_id")
            held.insert(members, {"user_role_id": rid, "user_id": uid, "role_id": editors})
            count = c.execute(sa.select(sa.func.count()).select_from(members)).scalar_one()
            assert count == 4
            order = [s.split(" ")[2] for s in seen.sent if s.startswith("INSERT")]
            assert order == ["CMS_USER", "CMS_USERROLE"], order


def test_a_batchs_new_pages_go_in_one_insert_per_table(bus: IntegrationBus) -> None:
    """Articles under a folder, by translated parent id, in one batch: their nodes, documents
    and fields rows each in one statement, the nodes before the documents that point at them
    and the documents before the fields rows."""
    conn = add_connector(bus)
    folder = str(uuid.uuid4())
    put(bus, Page("cms.folder", "News", alias="news", node_guid=folder), CREATE_DOC)
    conn.knows_page(7, folder)
    guids = [str(uuid.uuid4()) for _ in range(5)]
    for i, guid in enumerate(guids):
        fields = {"article_title": f"T{i}", "article_summary": "s", "article_text": "t"}
        page = Page(
            "cms.article", f"A{i}", alias=f"a{i}", node_guid=guid, parent_id=7, fields=fields
        )
        log(bus, page, CREATE_DOC, data_type=SNAP)
    with _spy(bus) as seen:
        result = run(bus)
    assert result.applied == 5 and result.failed == 0
    assert seen.savepoints == 0, "the batch went the careful way"
    for table in ("cms_tree", "cms_document", "content_article"):
        assert seen.inserts(table) == 1, (table, seen.inserts(table))
    news = bus.get_page("main", "/news")
    assert news is not None
    for i, guid in enumerate(guids):
        got = bus.get_page("main", f"/news/a{i}")
        assert got is not None and got["node_guid"] == guid
        assert got["node_parent_id"] == news["node_id"] and got["article_title"] == f"T{i}"


def test_a_row_inserted_without_a_reserved_id_never_takes_one(bus: IntegrationBus) -> None:
    """Site bindings of one batch, by CreateObject (held, with reserved ids) and by AddToSite
    (inserted at once, numbered by the database) in turn: on SQLite the one inserted at once
    is numbered after the table's largest id, so the ids are reserved again after it. None
    collide (a collision would send the batch the careful way)."""
    add_connector(bus)
    for name in ("a", "b", "c", "d"):
        put(bus, user(name))
    users = {u["user_name"]: int(u["user_id"]) for u in bus.find_objects("cms.user")}
    main = int(site_id(bus))
    binding = "cms.usersite"
    log(bus, {"type": binding, "data": {"user_id": users["a"], "site_id": main}})
    log(bus, user("b"), TaskType.ADD_TO_SITE)
    log(bus, {"type": binding, "data": {"user_id": users["c"], "site_id": main}})
    log(bus, user("d"), TaskType.ADD_TO_SITE)
    with _spy(bus) as seen:
        result = run(bus)
    assert result.applied == 4 and result.failed == 0
    assert seen.savepoints == 0, "the batch went the careful way"
    bound = sorted(int(b["user_id"]) for b in bus.find_objects(binding))
    assert bound == sorted(users.values())
    ids = _ids(bus, "cms_usersite", "user_site_id")
    assert len(ids) == len(set(ids)) == 4


def test_an_insert_the_database_refuses_fails_alone(hard: IntegrationBus) -> None:
    """The refused INSERT is held back with the others and fails only when they are sent:
    the batch then goes task by task, and only that task fails."""
    bus = hard
    first = log(bus, item(item_name="a", count=1))
    refused = log(bus, item(item_name="b", count=2), process_type=ProcessType.SKIP_ON_ERROR)
    _store_raw(bus, refused, {"item_name": "b", "count": 10**30})
    behind = log(bus, item(item_name="c", count=3))
    result = run(bus)
    assert result.applied == 2 and result.failed == 1
    assert bus.get_task(first) is None and bus.get_task(behind) is None
    kept = bus.get_task(refused)
    assert kept is not None and kept.error_message
    got = _items(bus, ["a", "b", "c"])
    assert set(got) == {"a", "c"} and (got["a"]["count"], got["c"]["count"]) == (1, 3)


def test_an_update_of_a_row_inserted_in_the_batch_is_sent_after_its_insert(
    bus: IntegrationBus,
) -> None:
    """An update of an existing user opens a run; a new user is inserted (held) after it,
    then updated with the same columns: that update must not join the earlier run, which is
    sent before the insert (it would update nothing, and the new user keep its first values)."""
    add_connector(bus)
    put(bus, user("a", first_name="A0"))
    log(bus, user("a", first_name="A1"), TaskType.UPDATE_OBJECT)
    log(bus, user("b", first_name="B0"))
    log(bus, user("b", first_name="B1"), TaskType.UPDATE_OBJECT)
    log(bus, user("a", first_name="A2"), TaskType.UPDATE_OBJECT)
    with _spy(bus) as seen:
        result = run(bus)
    assert result.applied == 4 and result.failed == 0
    assert seen.savepoints == 0, "the batch went the careful way"
    names = {u["user_name"]: u["first_name"] for u in bus.find_objects("cms.user")}
    assert names == {"a": "A2", "b": "B1"}


def _planner_rows(bus: IntegrationBus, table: str) -> float:
    with bus.engine.connect() as c:
        stmt = sa.text("SELECT reltuples FROM pg_class WHERE oid = to_regclass(:t)")
        return float(c.execute(stmt, {"t": table}).scalar_one())


def test_a_table_a_load_fills_gets_its_statistics_refreshed(bus: IntegrationBus) -> None:
    """PostgreSQL keeps a prepared lookup's plan until the table's statistics change, so on a
    table a load fills from empty the batches' lookups would keep scanning it. Once a table
    has grown by ``GROWN`` rows (or by as many as the planner believed it held), the processor
    ANALYZEs it. Autovacuum is switched off for the table here: only the bus can analyse it."""
    if bus.engine.dialect.name != "postgresql":
        pytest.skip("SQLite's planner keeps no statistics that go stale")
    add_connector(bus)
    with bus.engine.begin() as c:
        c.execute(sa.text("ALTER TABLE cms_user SET (autovacuum_enabled = false)"))
    before = _planner_rows(bus, "cms_user")
    for start in range(0, GROWN - 1, 500):
        requests = [
            TaskRequest(user(f"u{i}"), site_name="main")
            for i in range(start, min(start + 500, GROWN - 1))
        ]
        bus.log_tasks(CONNECTOR, requests)
    assert run(bus).applied == GROWN - 1
    assert _planner_rows(bus, "cms_user") == before  # not grown enough yet
    bus.log_tasks(CONNECTOR, [TaskRequest(user(f"v{i}"), site_name="main") for i in range(2)])
    assert run(bus).applied == 2
    assert _planner_rows(bus, "cms_user") >= GROWN  # analysed: it knows the rows now


WALLET = ObjectType(
    "shop.wallet",
    "shop_wallet",
    "wallet_id",
    code_name_column="wallet_code",
    guid_column="wallet_guid",
    parent=("wallet_user_id", "cms.user"),
    columns={"wallet_code": sa.String(50), "wallet_guid": "guid"},
)


TAG = ObjectType("shop.tag", "shop_tag", "tag_id", code_name_column="tag_name")


def test_a_delete_that_cascades_into_a_registered_type_sends_its_held_writes_first(
    bus: IntegrationBus,
) -> None:
    """Found by a trial: a registered type's table lives in the registry's MetaData, not the
    built-in one, so deleting a user did not see that it cascades into the user's wallets. The
    held update of a wallet (which must fail: its GUID is another wallet's) was sent after the
    delete had removed the row, matched nothing, and the batch applied both tasks. Applied one
    by one, the update fails and the delete behind it waits (the connector stops)."""
    bus.register_object_type(WALLET)
    bus.create_schema()
    conn = add_connector(bus)
    for name in ("u0", "u1"):
        conn.knows("cms.user", name, name)
    g1, g2 = str(uuid.uuid4()), str(uuid.uuid4())
    for code, owner, guid in (("w1", "u0", g1), ("wA", "u1", g2)):
        put(bus, user(owner))
        wallet = {"wallet_code": code, "wallet_user_id": owner, "wallet_guid": guid}
        put(bus, {"type": "shop.wallet", "data": wallet}, data_type=SNAP)
    taken = {"wallet_code": "w1", "wallet_user_id": "u0", "wallet_guid": g2}
    update = log(
        bus, {"type": "shop.wallet", "data": taken}, TaskType.UPDATE_OBJECT, data_type=SNAP
    )
    delete = log(bus, user("u0"), TaskType.DELETE_OBJECT)
    result = run(bus)
    assert result.applied == 0 and result.failed == 1 and result.stopped
    assert bus.get_task(update) is not None and bus.get_task(delete) is not None
    assert {u["user_name"] for u in bus.find_objects("cms.user")} == {"u0", "u1"}
    assert {w["wallet_code"] for w in bus.find_objects("shop.wallet")} == {"w1", "wA"}


def test_a_held_insert_pointing_at_a_deleted_row_goes_before_the_delete(
    bus: IntegrationBus,
) -> None:
    """A wallet created (held) for a user created in the batch, then the user deleted: the
    wallet's insert must reach the database before the delete (which cascades to it), not after
    it, where its foreign key would fail and send the batch the careful way."""
    bus.register_object_type(WALLET)
    bus.create_schema()
    conn = add_connector(bus)
    conn.knows("cms.user", "u0", "u0")
    put(bus, user("keep"))
    log(bus, user("u0"))
    wallet = {"wallet_code": "w0", "wallet_user_id": "u0", "wallet_guid": str(uuid.uuid4())}
    log(bus, {"type": "shop.wallet", "data": wallet}, data_type=SNAP)
    log(bus, user("u0"), TaskType.DELETE_OBJECT)
    log(bus, user("after"))
    with _spy(bus) as seen:
        result = run(bus)
    assert result.applied == 4 and result.failed == 0
    assert seen.savepoints == 0, "the batch went the careful way"
    assert {u["user_name"] for u in bus.find_objects("cms.user")} == {"keep", "after"}
    assert bus.find_objects("shop.wallet") == []


def test_a_registered_page_type_leaves_deletes_on_the_grouped_pass(bus: IntegrationBus) -> None:
    """Found by a trial: with a page type registered, the registry's MetaData holds a copy of
    the documents table whose foreign key names the tree, which is not in it; a delete by key
    failed to tell what it reaches (NoReferencedTableError) and every batch with one went the
    careful way. (A delete of a registered type's row: its table is in that MetaData.)"""
    bus.register_object_type(TAG)
    bus.register_page_type(PageType("shop.productpage", "shop_productpage", fields={"sku": str}))
    bus.create_schema()
    add_connector(bus)
    log(bus, {"type": "shop.tag", "data": {"tag_name": "gone"}})
    log(bus, {"type": "shop.tag", "data": {"tag_name": "gone"}}, TaskType.DELETE_OBJECT)
    log(bus, {"type": "shop.tag", "data": {"tag_name": "kept"}})
    with _spy(bus) as seen:
        result = run(bus)
    assert result.applied == 3 and result.failed == 0
    assert seen.savepoints == 0, "the batch went the careful way"
    assert {t["tag_name"] for t in bus.find_objects("shop.tag")} == {"kept"}


def test_a_binding_made_by_add_to_site_is_seen_by_a_later_task_of_the_batch(
    bus: IntegrationBus,
) -> None:
    """Found by a trial: AddToSite inserted the user's site binding behind the batch's target
    cache, which had found no such binding before the batch; a later CreateObject of that
    same binding trusted the cache, inserted again and failed on the unique binding. Applied
    one task at a time it updates the binding the AddToSite made."""
    conn = add_connector(bus)
    put(bus, user("u3"))
    conn.knows("cms.user", "u3", "u3")
    conn.knows("cms.site", "main", "main")
    log(bus, user("u3"), TaskType.ADD_TO_SITE)
    binding = {"type": "cms.usersite", "data": {"user_id": "u3", "site_id": "main"}}
    later = log(bus, binding, data_type=SNAP, process_type=ProcessType.SKIP_ON_ERROR)
    result = run(bus)
    assert result.applied == 2 and result.failed == 0, bus.get_task(later)
    assert len(bus.find_objects("cms.usersite")) == 1
