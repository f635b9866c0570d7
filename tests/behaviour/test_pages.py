"""Page tasks: the site tree, cultures, publish/archive, move (CONTRACT §2 Page, §5 pages)."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event

from syncbus import IntegrationBus, Page, ProcessType, TaskDataType, TaskType
from tests.helpers import DictConnector, add_connector, log, put, run, site_id, user

CREATE = TaskType.CREATE_DOCUMENT
UPDATE_DOC = TaskType.UPDATE_DOCUMENT
SNAP = TaskDataType.SIMPLE_SNAPSHOT
NODE_KEYS = {
    "node_id",
    "node_guid",
    "node_alias_path",
    "node_parent_id",
    "node_class_name",
    "node_site_id",
}
DOCUMENT_KEYS = {"document_id", "document_culture", "document_name", "published", "archived"}
ARTICLE_KEYS = {"article_title", "article_summary", "article_text"}


@pytest.fixture
def conn(bus: IntegrationBus) -> DictConnector:
    return add_connector(bus)


def folder(name: str, **kw: Any) -> Page:
    return Page("cms.folder", name.title(), alias=name, **kw)


def article(name: str, title: str = "Title", **kw: Any) -> Page:
    fields = {"article_title": title, "article_summary": "sum", "article_text": "text"}
    return Page("cms.article", name.title(), alias=name, fields=fields, **kw)


def page(bus: IntegrationBus, path: str, culture: str = "en-US") -> dict[str, Any]:
    found = bus.get_page("main", path, culture)
    assert found is not None, f"no page {path} ({culture})"
    return found


def hello_again(guid: str, text: str) -> Page:
    """/news/hello renamed "Hello Again", its title "Changed", its summary "new"."""
    fields = {"article_title": "Changed", "article_summary": "new", "article_text": text}
    return Page(
        "cms.article", "Hello Again", alias="hello", node_guid=guid, parent_path="/news",
        fields=fields,
    )  # fmt: skip


def news_with_hello(bus: IntegrationBus) -> str:
    """Create /news and the article /news/hello; return the article's node GUID."""
    guid = str(uuid.uuid4())
    put(bus, folder("news"), CREATE)
    put(bus, article("hello", "Hello", node_guid=guid, parent_path="/news"), CREATE)
    return guid


# -- create ------------------------------------------------------------------------------------


def test_article_created_under_a_folder_by_parent_path(
    bus: IntegrationBus, conn: DictConnector
) -> None:
    news_with_hello(bus)
    news = page(bus, "/news")
    hello = page(bus, "/news/hello")
    assert hello.keys() >= NODE_KEYS | DOCUMENT_KEYS | ARTICLE_KEYS
    assert news.keys() >= NODE_KEYS | DOCUMENT_KEYS
    assert hello["node_parent_id"] == news["node_id"]
    assert hello["node_alias_path"] == "/news/hello"
    assert hello["node_class_name"] == "cms.article"
    assert news["node_class_name"] == "cms.folder"
    assert hello["node_site_id"] == site_id(bus)
    assert hello["document_culture"] == "en-US"
    assert hello["document_name"] == "Hello"
    assert hello["article_title"] == "Hello"
    assert hello["article_text"] == "text"


def test_page_without_parent_goes_under_the_root(bus: IntegrationBus, conn: DictConnector) -> None:
    put(bus, folder("news"), CREATE)
    news = page(bus, "/news")
    root = bus.get_page("main", "/")
    assert news["node_alias_path"] == "/news"
    if root is not None:
        assert news["node_parent_id"] == root["node_id"]


@pytest.mark.parametrize("task_type", [CREATE, UPDATE_DOC, TaskType.DELETE_DOCUMENT])
def test_no_task_writes_a_sites_root(
    bus: IntegrationBus, conn: DictConnector, task_type: TaskType
) -> None:
    """The root comes with its site: a task of its class is refused when logged, naming the
    problem, and nothing is queued (it used to create a second root under the first)."""
    from syncbus import InvalidObjectError

    with pytest.raises(InvalidObjectError, match="root of a site's tree"):
        bus.process_external_task(
            "TestConnector", Page("cms.root", "Root 2"), task_type=task_type, site_name="main"
        )
    assert bus.list_tasks() == []


def test_names_in_any_script_give_aliases_of_their_own(
    bus: IntegrationBus, conn: DictConnector
) -> None:
    """From a new user's trial: every non-Latin name became /page, so the second such page
    failed ("another page already exists at '/page'") and stopped the queue."""
    names = ["Новый", "新闻", "Ελληνικά", "Čeština & Ünïcode \u2013 2024!", "Hello, world!"]
    for name in names:
        log(bus, Page("cms.folder", name), CREATE)
    result = run(bus)
    assert (result.applied, result.failed) == (5, 0)
    for path in ("/Новый", "/新闻", "/Ελληνικά", "/Cestina-Unicode-2024", "/Hello-world"):
        assert bus.get_page("main", path) is not None, path


def test_page_keeps_the_given_node_guid(bus: IntegrationBus, conn: DictConnector) -> None:
    guid = news_with_hello(bus)
    assert str(page(bus, "/news/hello")["node_guid"]).lower() == guid


def test_parent_id_is_translated_to_the_node_with_that_guid(
    bus: IntegrationBus, conn: DictConnector
) -> None:
    put(bus, folder("other", node_guid=str(uuid.uuid4())), CREATE)
    news_guid = str(uuid.uuid4())
    put(bus, folder("news", node_guid=news_guid), CREATE)
    conn.knows_page(77, news_guid)
    put(
        bus,
        article("hello", parent_id=77),
        CREATE,
        data_type=TaskDataType.SIMPLE_SNAPSHOT,
    )
    assert page(bus, "/news/hello")["node_parent_id"] == page(bus, "/news")["node_id"]


def test_parent_id_under_simple_is_the_internal_node_id(
    bus: IntegrationBus, conn: DictConnector
) -> None:
    put(bus, folder("news"), CREATE)
    news_id = page(bus, "/news")["node_id"]
    put(bus, article("hello", parent_id=news_id), CREATE)
    assert page(bus, "/news/hello")["node_parent_id"] == news_id
    # An external id given under the default Simple: the failure says what Simple means.
    task_id = log(bus, article("bye", parent_id=999_999), CREATE)
    assert run(bus).failed == 1
    error = bus.get_task(task_id).error_message  # type: ignore[union-attr]
    assert error is not None and "node id 999999" in error
    assert "log the task as SimpleSnapshot" in error


def test_missing_parent_id_fails_the_task_naming_the_parent(
    bus: IntegrationBus, conn: DictConnector
) -> None:
    task_id = log(bus, article("hello", parent_id=999999), CREATE)
    run(bus)
    info = bus.get_task(task_id)
    assert info is not None
    assert info.error_message and "parent" in info.error_message.lower()


def test_missing_parent_fails_the_task_naming_the_parent(
    bus: IntegrationBus, conn: DictConnector
) -> None:
    task_id = log(bus, article("hello", parent_path="/nope"), CREATE)
    result = run(bus)
    assert result.failed == 1
    info = bus.get_task(task_id)
    assert info is not None
    assert info.process_type is ProcessType.ERROR
    assert info.error_message and "/nope" in info.error_message
    assert bus.get_page("main", "/nope/hello") is None


# -- update and cultures -----------------------------------------------------------------------


def test_update_changes_fields(bus: IntegrationBus, conn: DictConnector) -> None:
    guid = news_with_hello(bus)
    before = page(bus, "/news/hello")
    put(
        bus,
        article("hello", "Changed", node_guid=guid, parent_path="/news"),
        TaskType.UPDATE_DOCUMENT,
    )
    after = page(bus, "/news/hello")
    assert after["article_title"] == "Changed"
    assert after["node_id"] == before["node_id"]
    assert after["document_id"] == before["document_id"]


def test_update_renames_the_document_and_changes_only_its_fields(
    bus: IntegrationBus, conn: DictConnector
) -> None:
    guid = news_with_hello(bus)
    put(bus, article("other", "Other", parent_path="/news"), CREATE)
    before, other = page(bus, "/news/hello"), page(bus, "/news/other")
    put(bus, hello_again(guid, text="new"), TaskType.UPDATE_DOCUMENT)
    after = page(bus, "/news/hello")
    assert after["document_name"] == "Hello Again"
    assert (after["article_title"], after["article_summary"]) == ("Changed", "new")
    assert after["document_id"] == before["document_id"]
    assert page(bus, "/news/other") == other


def _page_updates(bus: IntegrationBus) -> tuple[list[str], Any]:
    """The UPDATE statements of documents and article fields sent while it runs the queue."""
    return _updates(bus, "cms_document", "content_article")


def _updates(bus: IntegrationBus, *tables: str) -> tuple[list[str], Any]:
    """The UPDATE statements of ``tables`` sent while it runs the queue, and its result."""
    return _sent(bus, lambda statement: any(f"UPDATE {t}" in statement for t in tables))


def _sent(bus: IntegrationBus, wanted: Callable[[str], bool]) -> tuple[list[str], Any]:
    """The statements ``wanted`` picks among those sent while it runs the queue, and its
    result."""
    sent: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if wanted(statement):
            sent.append(statement)

    event.listen(bus.engine, "before_cursor_execute", count)
    try:
        return sent, run(bus)
    finally:
        event.remove(bus.engine, "before_cursor_execute", count)


def test_a_batchs_page_updates_go_in_one_statement_per_table(
    bus: IntegrationBus, conn: DictConnector
) -> None:
    """The optimistic pass holds the updates back (write-behind): the documents' renames go
    in one statement, the fields in another (an executemany on SQLite, a multi-row UPDATE on
    PostgreSQL), however many pages the batch updates."""
    put(bus, folder("news"), CREATE)
    guids = {name: str(uuid.uuid4()) for name in ("a", "b", "c")}
    for name, guid in guids.items():
        put(bus, article(name, "Hello", node_guid=guid, parent_path="/news"), CREATE)
    for name, guid in guids.items():
        log(bus, article(name, f"Changed {name}", node_guid=guid, parent_path="/news"), UPDATE_DOC)
    updates, result = _page_updates(bus)
    assert result.applied == 3
    assert len(updates) == 2, updates
    for name in guids:
        assert page(bus, f"/news/{name}")["article_title"] == f"Changed {name}"


def test_deleting_a_page_leaves_the_batchs_object_updates_held(
    bus: IntegrationBus, conn: DictConnector
) -> None:
    """A culture is deleted by its document's primary key where the batch knows it, which
    cannot tell the users' held updates: the two updates around it go in one statement."""
    guid = news_with_hello(bus)
    for name in ("alice", "bob"):
        put(bus, user(name, first_name="Old"))
    log(bus, user("alice", first_name="Alice"), TaskType.UPDATE_OBJECT)
    log(
        bus, article("hello", "Gone", node_guid=guid, parent_path="/news"), TaskType.DELETE_DOCUMENT
    )
    log(bus, user("bob", first_name="Bob"), TaskType.UPDATE_OBJECT)
    sent, result = _updates(bus, "cms_user")
    assert result.applied == 3
    assert len(sent) == 1, sent
    assert bus.get_page("main", "/news/hello") is None
    names = {u["user_name"]: u["first_name"] for u in bus.find_objects("cms.user")}
    assert (names["alice"], names["bob"]) == ("Alice", "Bob")


def test_a_batchs_parents_are_looked_up_with_its_nodes_not_page_by_page(
    bus: IntegrationBus, conn: DictConnector
) -> None:
    """Pages under three parents, by translated parent id (SIMPLE_SNAPSHOT) and by internal
    node id (SIMPLE): the parents come in the batch's one lookup of nodes by id, none page by
    page; each page lands under its own parent."""
    guids = {name: str(uuid.uuid4()) for name in ("a", "b")}
    for i, (name, guid) in enumerate(guids.items()):
        put(bus, folder(name, node_guid=guid), CREATE)
        conn.knows_page(100 + i, guid)
    put(bus, folder("c"), CREATE)
    c_id = page(bus, "/c")["node_id"]
    for n in range(4):
        for i in range(2):
            log(bus, article(f"p{i}{n}", parent_id=100 + i), CREATE, data_type=SNAP)
        log(bus, article(f"q{n}", parent_id=c_id), CREATE)
    by_id, result = _sent(
        bus,
        lambda sql: (
            "FROM cms_tree" in sql
            and sql.partition("WHERE")[2].strip().startswith("cms_tree.node_id ")
        ),
    )
    assert (result.applied, result.failed) == (12, 0)
    assert len(by_id) == 1, by_id
    for n in range(4):
        assert page(bus, f"/a/p0{n}")["node_parent_id"] == page(bus, "/a")["node_id"]
        assert page(bus, f"/b/p1{n}")["node_parent_id"] == page(bus, "/b")["node_id"]
        assert page(bus, f"/c/q{n}")["node_parent_id"] == c_id


def _path_lookups(bus: IntegrationBus) -> tuple[list[str], Any]:
    """The lookups of nodes by alias path sent while it runs the queue, and its result."""
    return _sent(
        bus,
        lambda sql: "FROM cms_tree" in sql and "node_alias_path" in sql.partition("WHERE")[2],
    )


def test_the_places_of_a_batchs_new_pages_are_looked_up_at_once(
    bus: IntegrationBus, conn: DictConnector
) -> None:
    """Before a page is made, its place must be free: a batch of new pages under known
    parents asks once for all their places, not once per page."""
    put(bus, folder("news"), CREATE)
    news_id = page(bus, "/news")["node_id"]
    put(bus, article("taken", parent_id=news_id), CREATE)
    for n in range(6):
        log(bus, article(f"new{n}", parent_id=news_id), CREATE)
    log(bus, article("taken", parent_id=news_id), CREATE)  # finds the page there: updates it
    sent, result = _path_lookups(bus)
    assert (result.applied, result.failed) == (7, 0)
    assert len(sent) == 1, sent
    assert [page(bus, f"/news/new{n}")["node_parent_id"] for n in range(6)] == [news_id] * 6


def test_a_place_taken_or_freed_earlier_in_the_batch_is_seen_by_the_tasks_after(
    bus: IntegrationBus, conn: DictConnector
) -> None:
    """The batch's view of what is where stays true through its writes: a page deleted frees
    its place for a page made after it in the same batch; a page made at a place looked up
    as free takes it, so a second page there is refused."""
    put(bus, folder("news"), CREATE)
    news_id = page(bus, "/news")["node_id"]
    first, second, third, fourth = (str(uuid.uuid4()) for _ in range(4))
    log(bus, article("spot", "First", node_guid=first, parent_id=news_id), CREATE)
    gone = article("spot", node_guid=first, parent_id=news_id)
    log(bus, gone, TaskType.DELETE_DOCUMENT)  # its only culture: the node goes
    log(bus, article("spot", "Second", node_guid=second, parent_id=news_id), CREATE)
    result = run(bus)
    assert (result.applied, result.failed) == (3, 0), result
    spot = page(bus, "/news/spot")
    assert (spot["node_guid"], spot["article_title"]) == (second, "Second")

    log(bus, article("other", "Third", node_guid=third, parent_id=news_id), CREATE)
    skip = ProcessType.SKIP_ON_ERROR
    taken = article("other", "Fourth", node_guid=fourth, parent_id=news_id)
    refused = log(bus, taken, CREATE, process_type=skip)
    result = run(bus)
    assert (result.applied, result.failed) == (1, 1), result
    assert "already exists" in bus.task_log(refused)[-1].error_message
    assert page(bus, "/news/other")["node_guid"] == third


def test_a_careful_page_update_is_one_update_statement_on_postgresql(
    bus: IntegrationBus, conn: DictConnector
) -> None:
    """Task by task (the careful pass: the task failed before), PostgreSQL renames the
    document in the statement that updates its fields; SQLite, which has no UPDATE inside
    WITH, runs two."""
    guid = news_with_hello(bus)
    task_id = log(bus, article("hello", "Changed", node_guid=guid, parent_path="/news"), UPDATE_DOC)
    with bus.engine.begin() as c:
        c.execute(
            sa.text("UPDATE syncbus_task SET error_message = 'before' WHERE task_id = :t"),
            {"t": task_id},
        )
    updates, result = _page_updates(bus)
    assert result.applied == 1
    assert page(bus, "/news/hello")["article_title"] == "Changed"
    postgres = bus.engine.dialect.name == "postgresql"
    assert len(updates) == (1 if postgres else 2), updates


def test_page_without_guid_is_identified_by_alias_path(
    bus: IntegrationBus, conn: DictConnector
) -> None:
    news_with_hello(bus)
    before = page(bus, "/news/hello")
    put(bus, article("hello", "By path", parent_path="/news"), TaskType.UPDATE_DOCUMENT)
    after = page(bus, "/news/hello")
    assert after["article_title"] == "By path"
    assert after["node_id"] == before["node_id"]


def test_second_culture_is_a_second_document_of_the_node(
    bus: IntegrationBus, conn: DictConnector
) -> None:
    guid = news_with_hello(bus)
    put(
        bus,
        article("hello", "Hallo", node_guid=guid, parent_path="/news", culture="de-DE"),
        CREATE,
    )
    en = page(bus, "/news/hello")
    de = page(bus, "/news/hello", "de-DE")
    assert de["article_title"] == "Hallo"
    assert de["document_culture"] == "de-DE"
    assert en["article_title"] == "Hello"
    assert de["node_id"] == en["node_id"]
    assert de["document_id"] != en["document_id"]


def test_a_culture_in_another_case_is_the_same_document(
    bus: IntegrationBus, conn: DictConnector
) -> None:
    """``en-us`` is ``en-US``: logged in either case, one document (a new user's trial had a
    page with both an en-US and an en-us document); read in either case as well."""
    guid = news_with_hello(bus)
    again = article("hello", "Again", node_guid=guid, parent_path="/news", culture="EN-us")
    put(bus, again, TaskType.UPDATE_DOCUMENT)
    assert bus.page_cultures("main", "/news/hello") == ["en-US"]
    assert page(bus, "/news/hello", "en-us")["article_title"] == "Again"
    put(
        bus, article("hello", "Hola", node_guid=guid, parent_path="/news", culture="es-419"), CREATE
    )
    put(
        bus,
        article("hello", "Ni", node_guid=guid, parent_path="/news", culture="ZH-hant-tw"),
        CREATE,
    )
    assert bus.page_cultures("main", "/news/hello") == ["en-US", "es-419", "zh-Hant-TW"]


@pytest.mark.parametrize("culture", ["xx_YY!!", "en US", "e", "en-", "-US", "en--US"])
def test_a_culture_that_is_no_culture_code_is_refused_when_logged(
    bus: IntegrationBus, conn: DictConnector, culture: str
) -> None:
    from syncbus import InvalidObjectError

    with pytest.raises(InvalidObjectError, match="a culture code is a language and a region"):
        log(bus, article("hello", culture=culture), CREATE)
    assert bus.queue_size() == 0


def test_delete_document_deletes_one_culture(bus: IntegrationBus, conn: DictConnector) -> None:
    guid = news_with_hello(bus)
    put(bus, article("hello", node_guid=guid, parent_path="/news", culture="de-DE"), CREATE)
    put(
        bus,
        article("hello", node_guid=guid, parent_path="/news", culture="de-DE"),
        TaskType.DELETE_DOCUMENT,
    )
    assert bus.get_page("main", "/news/hello", "de-DE") is None
    assert page(bus, "/news/hello")["article_title"] == "Hello"


def test_delete_all_cultures_deletes_every_culture(
    bus: IntegrationBus, conn: DictConnector
) -> None:
    guid = news_with_hello(bus)
    put(bus, article("hello", node_guid=guid, parent_path="/news", culture="de-DE"), CREATE)
    put(
        bus,
        article("hello", node_guid=guid, parent_path="/news"),
        TaskType.DELETE_ALL_CULTURES,
    )
    assert bus.get_page("main", "/news/hello") is None
    assert bus.get_page("main", "/news/hello", "de-DE") is None
    assert bus.get_page("main", "/news") is not None


def test_a_page_that_goes_with_its_subtree_says_so_in_the_event_log(
    bus: IntegrationBus, conn: DictConnector
) -> None:
    """From a new user's trial: the last culture of a folder went, and its whole subtree with
    it, with nothing to show for it. It still goes (a node goes with its last culture, and its
    pages with the node), and the event log names what went."""
    guid = news_with_hello(bus)
    put(bus, article("hello", node_guid=guid, parent_path="/news", culture="de-DE"), CREATE)
    put(bus, folder("world", parent_path="/news"), CREATE)
    task_id = log(bus, folder("news"), TaskType.DELETE_DOCUMENT)
    run(bus)
    assert bus.get_page("main", "/news") is None and bus.get_page("main", "/news/hello") is None
    [event] = [e for e in bus.event_log() if e.code == "DELETESUBTREE"]
    assert event.message == (
        f"task {task_id} (DeleteDocument) deleted page '/news' on site 'main', and with it the "
        "2 pages below it: '/news/hello', '/news/world'"
    )
    # A leaf's delete leaves no such entry.
    put(bus, folder("solo"), CREATE)
    put(bus, folder("solo"), TaskType.DELETE_DOCUMENT)
    assert [e.code for e in bus.event_log()].count("DELETESUBTREE") == 1


# -- publish, archive, move --------------------------------------------------------------------


def test_publish_sets_published(bus: IntegrationBus, conn: DictConnector) -> None:
    guid = news_with_hello(bus)
    put(bus, article("hello", node_guid=guid, parent_path="/news"), TaskType.PUBLISH_DOCUMENT)
    assert page(bus, "/news/hello")["published"] is True


def test_archive_sets_archived(bus: IntegrationBus, conn: DictConnector) -> None:
    guid = news_with_hello(bus)
    assert page(bus, "/news/hello")["archived"] is False
    put(bus, article("hello", node_guid=guid, parent_path="/news"), TaskType.ARCHIVE_DOCUMENT)
    assert page(bus, "/news/hello")["archived"] is True


def test_move_moves_the_subtree_and_its_alias_paths(
    bus: IntegrationBus, conn: DictConnector
) -> None:
    x_guid = str(uuid.uuid4())
    put(bus, folder("a"), CREATE)
    put(bus, folder("b"), CREATE)
    put(bus, folder("x", node_guid=x_guid, parent_path="/a"), CREATE)
    put(bus, folder("y", parent_path="/a/x"), CREATE)
    put(bus, article("z", "Deep", parent_path="/a/x/y"), CREATE)
    z_before = page(bus, "/a/x/y/z")
    put(bus, folder("x", node_guid=x_guid, parent_path="/b"), TaskType.MOVE_DOCUMENT)
    for old in ("/a/x", "/a/x/y", "/a/x/y/z"):
        assert bus.get_page("main", old) is None, old
    assert page(bus, "/b/x")["node_parent_id"] == page(bus, "/b")["node_id"]
    assert page(bus, "/b/x/y")["node_parent_id"] == page(bus, "/b/x")["node_id"]
    z_after = page(bus, "/b/x/y/z")
    assert z_after["node_alias_path"] == "/b/x/y/z"
    assert z_after["node_id"] == z_before["node_id"]
    assert z_after["article_title"] == "Deep"
    assert page(bus, "/a")["node_id"] is not None


def test_simple_parent_id_must_be_an_internal_node_id(bus: IntegrationBus) -> None:
    from syncbus import BaseIntegrationConnector, InvalidObjectError

    class PageConnector(BaseIntegrationConnector):
        connector_name = "PageOnly"

        def prepare_internal_object(self, obj, task_type, data_type, site_name):  # type: ignore[no-untyped-def]
            return Page("cms.folder", "Child", parent_id=obj)

    bus.register_connector(PageConnector)
    with pytest.raises(InvalidObjectError, match="parent_id"):
        bus.process_external_task(
            "PageOnly", "not-a-node-id", task_type="CreateDocument", site_name="main"
        )
    assert bus.list_tasks() == []


# -- many operations on one page within one batch (the batch's page cache stays true) -----------


def test_one_batch_of_operations_on_the_same_page_ends_as_applied_one_by_one(
    bus: IntegrationBus, conn: DictConnector
) -> None:
    put(bus, folder("news"), CREATE)
    put(bus, folder("archive"), CREATE)
    guid = str(uuid.uuid4())

    def hello(title: str, culture: str = "en-US", alias: str = "hello", **kw: Any) -> Page:
        return article(alias, title, node_guid=guid, culture=culture, **kw)

    put(bus, hello("A", parent_path="/news"), CREATE)  # exists when the batch starts
    steps = [
        (hello("Hallo", "de-DE", parent_path="/news"), CREATE),
        (hello("Hallo", "de-DE", parent_path="/news"), TaskType.UPDATE_DOCUMENT),
        (hello("B", parent_path="/news"), TaskType.UPDATE_DOCUMENT),
        (hello("B", parent_path="/news"), TaskType.DELETE_DOCUMENT),  # en-US goes, node stays
        (hello("C", parent_path="/news"), TaskType.UPDATE_DOCUMENT),  # en-US comes back
        (hello("C", parent_path="/news"), TaskType.DELETE_ALL_CULTURES),  # node goes
        (hello("D", parent_path="/news"), CREATE),  # a new node with the same GUID
        (hello("E", alias="hello2", parent_path="/news"), TaskType.UPDATE_DOCUMENT),  # rename
        (hello("E", alias="hello2", parent_path="/archive"), TaskType.MOVE_DOCUMENT),
        (hello("F", alias="hello2", parent_path="/archive"), TaskType.UPDATE_DOCUMENT),
        (hello("Hallo 2", "de-DE", alias="hello2", parent_path="/archive"), CREATE),
        (hello("F", alias="hello2", parent_path="/archive"), TaskType.ARCHIVE_DOCUMENT),
    ]
    ids = [log(bus, p, t) for p, t in steps]
    result = run(bus)
    assert result.applied == len(steps), (result, [bus.task_log(i) for i in ids])
    assert bus.get_page("main", "/news/hello") is None
    assert bus.get_page("main", "/news/hello2") is None
    en = page(bus, "/archive/hello2")
    de = page(bus, "/archive/hello2", "de-DE")
    assert (en["article_title"], en["archived"], en["published"]) == ("F", True, False)
    assert (de["article_title"], de["archived"]) == ("Hallo 2", False)
    assert en["node_id"] == de["node_id"]
    assert en["node_guid"] == guid
    assert en["node_parent_id"] == page(bus, "/archive")["node_id"]


@pytest.mark.parametrize("removal", [TaskType.DELETE_DOCUMENT, TaskType.DELETE_ALL_CULTURES])
def test_a_parent_removed_and_recreated_in_the_batch_is_translated_to_its_new_node(
    bus: IntegrationBus, conn: DictConnector, removal: TaskType
) -> None:
    leaf, sub = str(uuid.uuid4()), str(uuid.uuid4())
    put(bus, folder("leaf", node_guid=leaf), CREATE)  # a node without children (a leaf)
    put(bus, folder("tree"), CREATE)
    put(bus, folder("sub", node_guid=sub, parent_path="/tree"), CREATE)  # goes with /tree
    put(bus, folder("keep"), CREATE)  # holds the highest node id: SQLite then reuses no id
    conn.knows_page(1, leaf)
    conn.knows_page(2, sub)
    snapshot = TaskDataType.SIMPLE_SNAPSHOT
    # Each batch resolves the parent up front (its translation prefetch), removes the parent
    # (a leaf; a subtree through its root), creates a new node with the same GUID, and a
    # page under it.
    batches = [
        [
            (folder("leaf", node_guid=leaf), removal, TaskDataType.SIMPLE),
            (folder("leaf2", node_guid=leaf), CREATE, TaskDataType.SIMPLE),
            (article("b1", parent_id=1), CREATE, snapshot),
        ],
        [
            (folder("tree"), removal, TaskDataType.SIMPLE),
            (folder("sub2", node_guid=sub), CREATE, TaskDataType.SIMPLE),
            (article("b2", parent_id=2), CREATE, snapshot),
        ],
    ]
    for steps in batches:
        ids = [log(bus, p, t, data_type=d) for p, t, d in steps]
        result = run(bus)
        assert result.applied == len(steps), (result, [bus.task_log(i) for i in ids])
    assert page(bus, "/leaf2/b1")["node_parent_id"] == page(bus, "/leaf2")["node_id"]
    assert page(bus, "/sub2/b2")["node_parent_id"] == page(bus, "/sub2")["node_id"]
    for path in ("/leaf", "/tree", "/tree/sub"):
        assert bus.get_page("main", path) is None, path


# -- a batch's view of the tree, attacked ------------------------------------------------------
_page_op = st.tuples(
    st.sampled_from(["create", "update", "delete", "move"]),
    st.integers(0, 2),  # which page
    st.integers(0, 1),  # which parent
    st.sampled_from(["x", "y"]),  # alias: pages collide on purpose
)
_mode = itertools.count()


def _tree_ops(bus: IntegrationBus, ops: list[tuple[str, int, int, str]], batch: bool) -> Any:
    """Apply ``ops`` under two new folders, in one batch or one task per batch; what ends where
    (parent, alias, page, title) and each task's outcome."""
    n = next(_mode)
    parents = []
    for j in range(2):
        put(bus, folder(f"m{n}p{j}"), CREATE)
        parents.append(page(bus, f"/m{n}p{j}")["node_id"])
    guids = [str(uuid.uuid4()) for _ in range(3)]
    kinds = {
        "create": CREATE,
        "update": UPDATE_DOC,
        "delete": TaskType.DELETE_DOCUMENT,
        "move": TaskType.MOVE_DOCUMENT,
    }
    ids = []
    for step, (kind, i, j, alias) in enumerate(ops):
        p = article(alias, f"t{step}", node_guid=guids[i], parent_id=parents[j])
        ids.append(log(bus, p, kinds[kind], process_type=ProcessType.SKIP_ON_ERROR))
        if not batch:
            run(bus)
    if batch:
        run(bus)
    outcomes = [bus.task_history(t).state for t in ids]  # type: ignore[union-attr]
    where = set()
    for j in range(2):
        for alias in ("x", "y"):
            found = bus.get_page("main", f"/m{n}p{j}/{alias}")
            if found is not None:
                where.add((j, alias, guids.index(found["node_guid"]), found["article_title"]))
    return outcomes, where


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=st.lists(_page_op, min_size=1, max_size=10))
def test_a_batch_of_page_operations_ends_as_applied_one_by_one(
    bus: IntegrationBus, conn: DictConnector, ops: list[tuple[str, int, int, str]]
) -> None:
    """Creates, renames, deletes and moves of three pages under two parents, colliding on two
    aliases, by parent id (what the batch fetches set-wise: parents, the places of new pages):
    one batch ends exactly as one task per batch, task outcomes included."""
    assert _tree_ops(bus, ops, batch=True) == _tree_ops(bus, ops, batch=False)


def test_a_page_updates_record_lists_only_what_changed_from_before_its_batch(
    bus: IntegrationBus, conn: DictConnector
) -> None:
    """History of page updates (CONTRACT §10): the old values are the document's as the
    batch found them (read with the batch's lookups), and a second update of the same
    document in the batch starts from what the first wrote; a culture the node lacks is
    created, its record listing every value it set."""
    guid = news_with_hello(bus)
    put(bus, article("other", "Other", parent_path="/news"), CREATE)
    first = log(bus, article("hello", "Changed", node_guid=guid, parent_path="/news"), UPDATE_DOC)
    second = log(bus, hello_again(guid, text="text"), UPDATE_DOC)
    german = log(
        bus, article("hello", "Hallo", node_guid=guid, parent_path="/news", culture="de-DE"), CREATE
    )
    result = run(bus)
    assert result.applied == 3
    records = {t: bus.task_history(t) for t in (first, second, german)}
    assert all(r is not None and r.state == "applied" for r in records.values())
    assert records[first].changes == {"article_title": ["Hello", "Changed"]}  # type: ignore[union-attr]
    assert records[second].changes == {  # type: ignore[union-attr]
        "document_name": ["Hello", "Hello Again"],
        "article_summary": ["sum", "new"],
    }
    assert records[german].changes == {  # type: ignore[union-attr]
        "document_name": [None, "Hello"],
        "article_title": [None, "Hallo"],
        "article_summary": [None, "sum"],
        "article_text": [None, "text"],
    }
