"""Applying object tasks to the content repository (CONTRACT §4 processing, §5 object types)."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from syncbus import IntegrationBus, ObjectType, TaskDataType, TaskType
from syncbus.applier import Applier
from syncbus.content.pages import PageStore
from syncbus.enums import TASK_TYPES
from syncbus.errors import InvalidObjectError
from tests.helpers import (
    add_connector,
    ext,
    log,
    membership,
    object_id,
    pending,
    put,
    role,
    run,
    site_id,
    user,
)

SIMPLE_SNAPSHOT = TaskDataType.SIMPLE_SNAPSHOT
UPSERTS = [TaskType.CREATE_OBJECT, TaskType.UPDATE_OBJECT]


def post(guid: str, **data: object) -> dict[str, object]:
    return ext("forums.forumpost", post_guid=guid, **data)


def forum(name: str, **data: object) -> dict[str, object]:
    return ext("forums.forum", forum_name=name, **data)


def group(name: str) -> dict[str, object]:
    return ext("community.group", group_name=name, group_display_name=name.title())


# -- upsert by identity ------------------------------------------------------------------------


@pytest.mark.parametrize("second", UPSERTS)
def test_user_upserts_by_code_name(bus: IntegrationBus, second: TaskType) -> None:
    add_connector(bus)
    put(bus, user("alice", email="old@example.com"))
    first_id = object_id(bus, "cms.user", "alice")
    put(bus, user("alice", email="new@example.com"), second)
    rows = bus.find_objects("cms.user", user_name="alice")
    assert len(rows) == 1
    assert rows[0]["email"] == "new@example.com"
    assert rows[0]["user_id"] == first_id


def test_update_of_a_missing_object_creates_it(bus: IntegrationBus) -> None:
    add_connector(bus)
    put(bus, user("alice", email="a@example.com"), TaskType.UPDATE_OBJECT)
    assert bus.get_object("cms.user", "alice")["email"] == "a@example.com"


@pytest.mark.parametrize("second", UPSERTS)
def test_forum_post_upserts_by_guid(bus: IntegrationBus, second: TaskType) -> None:
    add_connector(bus)
    put(bus, forum("general"))
    forum_id = object_id(bus, "forums.forum", "general", "main")
    guid = str(uuid.uuid4())
    put(bus, post(guid, forum_id=forum_id, post_subject="first"))
    put(bus, post(guid, forum_id=forum_id, post_subject="second"), second)
    rows = bus.find_objects("forums.forumpost", post_guid=guid)
    assert len(rows) == 1
    assert rows[0]["post_subject"] == "second"


@pytest.mark.parametrize("second", UPSERTS)
def test_membership_upserts_by_its_pair_of_foreign_keys(
    bus: IntegrationBus, second: TaskType
) -> None:
    add_connector(bus)
    put(bus, user("alice"))
    put(bus, role("editors"))
    uid = object_id(bus, "cms.user", "alice")
    rid = object_id(bus, "cms.role", "editors", "main")
    put(bus, membership(uid, rid))
    put(bus, membership(uid, rid), second)
    assert len(bus.find_objects("cms.userrole", user_id=uid, role_id=rid)) == 1


def test_site_bound_object_is_stored_under_the_task_site(bus: IntegrationBus) -> None:
    add_connector(bus)
    other = bus.create_site("other")
    put(bus, role("editors", role_display_name="Main editors"))
    put(bus, role("editors", role_display_name="Other editors"), site="other")
    main_role = bus.get_object("cms.role", "editors", site_name="main")
    other_role = bus.get_object("cms.role", "editors", site_name="other")
    assert main_role["site_id"] == site_id(bus, "main")
    assert other_role["site_id"] == other
    assert main_role["role_display_name"] == "Main editors"
    assert other_role["role_display_name"] == "Other editors"
    assert len(bus.find_objects("cms.role", role_name="editors")) == 2


# -- delete ------------------------------------------------------------------------------------


def test_delete_object_deletes_it(bus: IntegrationBus) -> None:
    add_connector(bus)
    put(bus, user("alice"))
    put(bus, user("bob"))
    put(bus, user("alice"), TaskType.DELETE_OBJECT)
    assert bus.get_object("cms.user", "alice") is None
    assert bus.get_object("cms.user", "bob") is not None


def test_delete_of_a_membership_deletes_it_by_its_foreign_keys(bus: IntegrationBus) -> None:
    add_connector(bus)
    put(bus, user("alice"))
    put(bus, role("editors"))
    put(bus, role("authors"))
    uid = object_id(bus, "cms.user", "alice")
    editors = object_id(bus, "cms.role", "editors", "main")
    authors = object_id(bus, "cms.role", "authors", "main")
    put(bus, membership(uid, editors))
    put(bus, membership(uid, authors))
    put(bus, membership(uid, editors), TaskType.DELETE_OBJECT)
    assert [r["role_id"] for r in bus.find_objects("cms.userrole", user_id=uid)] == [authors]


def test_delete_of_a_missing_object_is_no_error(bus: IntegrationBus) -> None:
    add_connector(bus)
    task_id = log(bus, user("ghost"), TaskType.DELETE_OBJECT)
    result = run(bus)
    assert result.failed == 0
    assert not result.stopped
    assert bus.get_task(task_id) is None


# -- site bindings -----------------------------------------------------------------------------


def test_add_to_site_and_remove_from_site_bind_a_user(bus: IntegrationBus) -> None:
    add_connector(bus)
    other = bus.create_site("other")
    put(bus, user("alice"))
    uid = object_id(bus, "cms.user", "alice")
    assert bus.find_objects("cms.usersite", user_id=uid) == []
    put(bus, user("alice"), TaskType.ADD_TO_SITE, site="other")
    put(bus, user("alice"), TaskType.ADD_TO_SITE, site="other")
    put(bus, user("alice"), TaskType.ADD_TO_SITE, site="main")
    sites = sorted(r["site_id"] for r in bus.find_objects("cms.usersite", user_id=uid))
    assert sites == sorted([other, site_id(bus, "main")])
    put(bus, user("alice"), TaskType.REMOVE_FROM_SITE, site="other")
    sites = [r["site_id"] for r in bus.find_objects("cms.usersite", user_id=uid)]
    assert sites == [site_id(bus, "main")]
    assert bus.get_object("cms.user", "alice") is not None


# -- translation under SIMPLE_SNAPSHOT ---------------------------------------------------------


def test_membership_external_ids_are_translated(bus: IntegrationBus) -> None:
    conn = add_connector(bus)
    put(bus, user("alice"))
    put(bus, user("bob"))
    put(bus, role("editors"))
    conn.knows("cms.user", 101, "bob")
    conn.knows("cms.role", 202, "editors", site="main")
    put(bus, membership(101, 202), data_type=SIMPLE_SNAPSHOT)
    rows = bus.find_objects("cms.userrole")
    assert len(rows) == 1
    assert rows[0]["user_id"] == object_id(bus, "cms.user", "bob")
    assert rows[0]["role_id"] == object_id(bus, "cms.role", "editors", "main")


def test_translation_uses_the_site_of_the_referenced_object(bus: IntegrationBus) -> None:
    conn = add_connector(bus)
    bus.create_site("other")
    put(bus, user("alice"))
    put(bus, role("editors"))
    put(bus, role("editors"), site="other")
    conn.knows("cms.user", 1, "alice")
    conn.knows("cms.role", 2, "editors", site="other")
    put(bus, membership(1, 2), data_type=SIMPLE_SNAPSHOT)
    (row,) = bus.find_objects("cms.userrole")
    assert row["role_id"] == object_id(bus, "cms.role", "editors", "other")
    assert row["role_id"] != object_id(bus, "cms.role", "editors", "main")


def test_forum_group_is_translated(bus: IntegrationBus) -> None:
    conn = add_connector(bus)
    put(bus, group("fans"))
    conn.knows("community.group", 11, "fans", site="main")
    put(bus, forum("general", forum_group_id=11), data_type=SIMPLE_SNAPSHOT)
    stored = bus.find_objects("forums.forum", forum_name="general")
    assert len(stored) == 1
    assert stored[0]["forum_group_id"] == object_id(bus, "community.group", "fans", "main")
    assert stored[0]["site_id"] == site_id(bus)


def test_post_parent_forum_is_found_through_its_group(bus: IntegrationBus) -> None:
    conn = add_connector(bus)
    put(bus, user("alice"))
    put(bus, group("cats"))
    put(bus, group("dogs"))
    cats = object_id(bus, "community.group", "cats", "main")
    dogs = object_id(bus, "community.group", "dogs", "main")
    put(bus, forum("general", forum_group_id=cats))
    put(bus, forum("general", forum_group_id=dogs))
    conn.knows("cms.user", 5, "alice")
    conn.knows("community.group", 12, "dogs", site="main")
    conn.knows("forums.forum", 3, "general", site="main", group_id=12)
    guid = str(uuid.uuid4())
    put(bus, post(guid, forum_id=3, post_user_id=5, post_subject="woof"), data_type=SIMPLE_SNAPSHOT)
    (dogs_forum,) = bus.find_objects("forums.forum", forum_name="general", forum_group_id=dogs)
    stored = bus.get_object("forums.forumpost", guid)
    assert stored["forum_id"] == dogs_forum["forum_id"]
    assert stored["post_user_id"] == object_id(bus, "cms.user", "alice")
    assert stored["post_subject"] == "woof"


def test_reply_post_parent_is_translated_by_guid(bus: IntegrationBus) -> None:
    conn = add_connector(bus)
    put(bus, forum("general"))
    conn.knows("forums.forum", 3, "general", site="main")
    first, reply = str(uuid.uuid4()), str(uuid.uuid4())
    put(bus, post(first, forum_id=3, post_subject="q"), data_type=SIMPLE_SNAPSHOT)
    conn.knows("forums.forumpost", 40, first, parent_id=3)
    put(
        bus,
        post(reply, forum_id=3, post_parent_id=40, post_subject="a"),
        data_type=SIMPLE_SNAPSHOT,
    )
    assert bus.get_object("forums.forumpost", reply)["post_parent_id"] == object_id(
        bus, "forums.forumpost", first
    )


# -- SNAPSHOT ----------------------------------------------------------------------------------


def test_snapshot_stores_children_pointing_to_the_main_object(bus: IntegrationBus) -> None:
    conn = add_connector(bus)
    put(bus, user("alice"))
    conn.knows("cms.user", 5, "alice")
    guids = sorted(str(uuid.uuid4()) for _ in range(2))
    snapshot = {
        "type": "forums.forum",
        "data": {"forum_name": "general", "forum_display_name": "General"},
        "children": [post(g, post_user_id=5, post_subject=g[:4]) for g in guids],
    }
    put(bus, snapshot, data_type=TaskDataType.SNAPSHOT)
    forum_id = object_id(bus, "forums.forum", "general", "main")
    posts = bus.find_objects("forums.forumpost", forum_id=forum_id)
    assert sorted(p["post_guid"] for p in posts) == guids
    assert {p["post_user_id"] for p in posts} == {object_id(bus, "cms.user", "alice")}


# -- user-defined object types -----------------------------------------------------------------


def test_user_defined_type_is_stored_with_translated_foreign_key(bus: IntegrationBus) -> None:
    bus.register_object_type(
        ObjectType(
            "demo.item",
            "demo_item",
            "item_id",
            code_name_column="item_name",
            foreign_keys={"owner_id": "cms.user"},
            columns={"item_name": str, "value": int, "owner_id": int},
        )
    )
    bus.create_schema()
    conn = add_connector(bus)
    put(bus, user("alice"))
    conn.knows("cms.user", 9, "alice")
    put(bus, ext("demo.item", item_name="widget", value=1, owner_id=9), data_type=SIMPLE_SNAPSHOT)
    put(bus, ext("demo.item", item_name="widget", value=2), TaskType.UPDATE_OBJECT)
    item = bus.get_object("demo.item", "widget")
    assert item["value"] == 2
    assert item["owner_id"] == object_id(bus, "cms.user", "alice")
    assert len(bus.find_objects("demo.item")) == 1


def test_user_defined_type_maps_onto_an_existing_table(bus: IntegrationBus) -> None:
    md = sa.MetaData()
    legacy = sa.Table(
        "legacy_product",
        md,
        sa.Column("product_id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("sku", sa.String(50), nullable=False),
        sa.Column("price", sa.Integer),
    )
    md.create_all(bus.engine)
    with bus.engine.begin() as c:
        c.execute(legacy.insert(), [{"sku": "old-1", "price": 10}, {"sku": "old-2", "price": 20}])
    bus.register_object_type(
        ObjectType(
            "shop.product",
            "legacy_product",
            "product_id",
            code_name_column="sku",
            columns={"sku": str, "price": int},
        )
    )
    bus.create_schema()
    old_id = bus.get_object("shop.product", "old-1")["product_id"]
    add_connector(bus)
    put(bus, ext("shop.product", sku="old-1", price=11), TaskType.UPDATE_OBJECT)
    put(bus, ext("shop.product", sku="new-1", price=30))
    assert bus.get_object("shop.product", "old-1") == {
        "product_id": old_id,
        "sku": "old-1",
        "price": 11,
    }
    with bus.engine.connect() as c:
        rows = c.execute(sa.select(legacy.c.sku, legacy.c.price).order_by(legacy.c.sku)).all()
    assert [tuple(r) for r in rows] == [("new-1", 30), ("old-1", 11), ("old-2", 20)]


# -- reading -----------------------------------------------------------------------------------


def test_get_object_by_code_name_and_by_guid(bus: IntegrationBus) -> None:
    add_connector(bus)
    put(bus, user("alice", email="a@example.com", first_name="Alice"))
    put(bus, forum("general"))
    guid = str(uuid.uuid4())
    put(bus, post(guid, forum_id=object_id(bus, "forums.forum", "general", "main")))
    alice = bus.get_object("cms.user", "alice")
    assert alice["user_name"] == "alice"
    assert alice["first_name"] == "Alice"
    assert bus.get_object("forums.forumpost", guid)["post_guid"] == guid
    assert bus.get_object("cms.user", "nobody") is None
    assert bus.get_object("forums.forumpost", str(uuid.uuid4())) is None


def test_get_object_of_site_bound_type_uses_the_site(bus: IntegrationBus) -> None:
    add_connector(bus)
    bus.create_site("other")
    put(bus, role("editors"), site="other")
    assert bus.get_object("cms.role", "editors", site_name="other") is not None
    assert bus.get_object("cms.role", "editors", site_name="main") is None


def test_find_objects_filters_by_columns(bus: IntegrationBus) -> None:
    add_connector(bus)
    put(bus, user("alice", last_name="Smith"))
    put(bus, user("bob", last_name="Smith"))
    put(bus, user("carol", last_name="Jones"))
    smiths = bus.find_objects("cms.user", last_name="Smith")
    assert sorted(u["user_name"] for u in smiths) == ["alice", "bob"]
    assert bus.find_objects("cms.user", last_name="Nobody") == []
    assert len(bus.find_objects("cms.user", last_name="Smith", user_name="bob")) == 1
    assert pending(bus) == []


def test_a_task_type_is_one_row_of_the_table() -> None:
    """Every task type has its row in TASK_TYPES, and its handler exists on the applier
    (object tasks) or the page store (page tasks)."""
    assert set(TASK_TYPES) == set(TaskType)
    for task_type, spec in TASK_TYPES.items():
        owner = PageStore if spec.document else Applier
        assert callable(getattr(owner, spec.handler, None)), task_type
        assert task_type.is_document is spec.document
        assert task_type.spec is spec and spec.verb


def test_an_unknown_type_error_lists_the_stored_types_a_process_has_not_loaded(
    db_url: str,
) -> None:
    """A process that never registered a user's type (a worker, the CLI) loads it from its
    stored declaration on first use; a misspelt name's error lists it among the known types
    even before that, so it does not read as if the type had never been stored."""
    contact = ObjectType(
        "crm.contact", "crm_contact", "contact_id", code_name_column="code", columns={"code": str}
    )
    first = IntegrationBus(db_url)
    first.register_object_type(contact)
    first.create_schema()
    first.close()
    other = IntegrationBus(db_url)  # knows only the built-in types so far
    try:
        with pytest.raises(InvalidObjectError, match=r"unknown object type 'crm\.contakt'") as err:
            other.registry.object_type("crm.contakt")
        assert "crm.contact" in str(err.value) and "cms.user" in str(err.value)
        with pytest.raises(InvalidObjectError, match=r"known page types: .*cms\.article"):
            other.registry.page_type("crm.nopage")
    finally:
        other.close()


def _boxes(bus: IntegrationBus) -> None:
    bus.register_object_type(
        ObjectType(
            "box.box", "box_box", "box_id", code_name_column="box_name", columns={"box_name": str}
        )
    )
    bus.register_object_type(
        ObjectType(
            "box.thing",
            "box_thing",
            "thing_id",
            code_name_column="thing_name",
            parent=("box_id", "box.box"),
            columns={"thing_name": str, "city": str},
        )
    )
    bus.create_schema()
    add_connector(bus)
    for box in ("ada", "bob"):  # each box has a thing named "home"
        snapshot = {
            "type": "box.box",
            "data": {"box_name": box},
            "children": [{"type": "box.thing", "data": {"thing_name": "home", "city": box}}],
        }
        put(bus, snapshot, data_type=TaskDataType.SNAPSHOT)


def _things(bus: IntegrationBus) -> list[tuple[str, str, str]]:
    with bus.engine.connect() as c:
        rows = c.execute(
            sa.text(
                "SELECT b.box_name, t.thing_name, t.city FROM box_thing t "
                "JOIN box_box b ON b.box_id = t.box_id ORDER BY b.box_name, t.thing_name"
            )
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


@pytest.mark.parametrize("task_type", [TaskType.UPDATE_OBJECT, TaskType.DELETE_OBJECT])
def test_a_child_named_without_its_parent_is_never_another_parents(
    bus: IntegrationBus, task_type: TaskType
) -> None:
    """A new developer's trial: a task of a child type that left out its parent column wrote
    (or deleted) the first object of that code name, another parent's. When more than one
    object has the code name, the task now fails naming the column it must give; nothing is
    written. Given the parent, it writes that parent's object; when the code name is unique,
    leaving the parent out still finds it."""
    _boxes(bus)
    before = _things(bus)
    assert before == [("ada", "home", "ada"), ("bob", "home", "bob")]
    task_id = log(bus, ext("box.thing", thing_name="home", city="NOPARENT"), task_type)
    result = run(bus)
    assert result.stopped and result.applied == 0
    task = bus.get_task(task_id)
    assert task is not None and task.error_message is not None
    assert "more than one object has this code name" in task.error_message
    assert "'box_id'" in task.error_message
    assert _things(bus) == before
    bus.delete_task(task_id)

    bob = (bus.get_object("box.box", "bob") or {})["box_id"]
    put(bus, ext("box.thing", thing_name="home", city="moved", box_id=bob), TaskType.UPDATE_OBJECT)
    assert _things(bus) == [("ada", "home", "ada"), ("bob", "home", "moved")]
    put(bus, ext("box.thing", thing_name="office", city="x", box_id=bob))
    put(bus, ext("box.thing", thing_name="office", city="y"), TaskType.UPDATE_OBJECT)  # unique
    assert ("bob", "office", "y") in _things(bus)


@pytest.mark.parametrize(
    ("table", "said"),
    [
        ("cms_user", "belongs to object type 'cms.user'"),
        ("CMS_Role", "belongs to object type 'cms.role'"),
        ("content_article", "belongs to page type 'cms.article'"),
        ("cms_tree", "one of the bus's own"),
        ("syncbus_task", "one of the bus's own"),
    ],
)
def test_a_declared_type_cannot_take_a_table_another_owns(
    bus: IntegrationBus, table: str, said: str
) -> None:
    """A new developer's trial: declaring a type on the table of a built-in type was accepted,
    replaced that table's definition, and `create_schema` then advised adding the new type's
    columns to it. It is refused when registered, and the bus is left as it was."""
    from syncbus.errors import ConfigurationError

    declared = ObjectType("x.e", table, "e_id", code_name_column="e", columns={"e": str})
    with pytest.raises(ConfigurationError, match=said):
        bus.register_object_type(declared)
    bus.create_schema()  # nothing half-registered: the schema is as it was
    add_connector(bus)
    put(bus, user("still-here"))
    assert bus.get_object("cms.user", "still-here") is not None
