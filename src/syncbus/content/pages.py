"""The page tree: nodes per site, one document per culture, page-type fields per document."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import sqlalchemy as sa

from syncbus.content.objects import Coercers, coerce_values, column_coercers
from syncbus.content.registry import TypeRegistry
from syncbus.content.tables import document_table as docs
from syncbus.content.tables import tree_table as tree
from syncbus.content.types import ROOT_CLASS, external_id_problem, show, text_problem
from syncbus.enums import TaskType
from syncbus.errors import ContentError, InvalidObjectError, PageNotFoundError
from syncbus.model import Page
from syncbus.store.db import IN_CHUNK, utcnow

_ALIAS_BAD = re.compile(r"[^A-Za-z0-9_.~-]+")


def make_alias(name: str) -> str:
    """A URL-safe alias from a page name ("Hello, world!" -> "Hello-world")."""
    alias = _ALIAS_BAD.sub("-", name.strip()).strip("-.")
    return alias or "page"


def join_path(parent_path: str, alias: str) -> str:
    return ("" if parent_path == "/" else parent_path.rstrip("/")) + "/" + alias


def normalize_path(path: str) -> str:
    path = "/" + path.strip().strip("/")
    return path


ParentResolver = Callable[[], dict[str, Any]]

# Column lengths of cms_tree / cms_document (store.schema).
_ALIAS_MAX, _PATH_MAX, _NAME_MAX, _CULTURE_MAX, _GUID_MAX, _CLASS_MAX = 200, 450, 450, 10, 36, 100


def check_page(page: Page, *, simple: bool) -> None:
    """Refuse, at log time, a page that no task could store: text the database cannot hold,
    an alias that is not one path segment, a parent path that is not absolute. Under Simple,
    ``parent_id`` is an internal node id (a positive integer); else an external id."""
    _text("class_name", page.class_name, _CLASS_MAX)
    _text("name", page.name, _NAME_MAX)
    _text("culture", page.culture, _CULTURE_MAX, required=True)
    if page.node_guid is not None and not isinstance(page.node_guid, uuid.UUID):
        _text("node_guid", page.node_guid, _GUID_MAX, required=True)
    alias = page.alias
    if alias is not None:
        _text("alias", alias, _ALIAS_MAX, required=True)
        if "/" in alias:
            _bad("alias", alias, "an alias is one path segment: it must not contain '/'")
    elif len(make_alias(page.name)) > _ALIAS_MAX:
        _bad("name", page.name, f"its alias would be longer than {_ALIAS_MAX}; give an alias")
    path = page.parent_path
    if path is not None:
        _text("parent_path", path, _PATH_MAX, required=True)
        inner = path.strip().strip("/")
        if not path.strip().startswith("/") or "//" in path or (inner and not inner.strip()):
            _bad("parent_path", path, "give an absolute alias path such as '/news'")
        full = join_path(normalize_path(path), alias or make_alias(page.name))
        if len(full) > _PATH_MAX:
            _bad("alias", alias, f"the page's path {full[:60]!r}... is longer than {_PATH_MAX}")
    if page.parent_id is not None:
        _parent_id(page, simple)
    if not isinstance(page.fields, dict):
        _bad("fields", page.fields, "the page's fields must be a dict")


def _parent_id(page: Page, simple: bool) -> None:
    value = page.parent_id
    if not simple:
        problem = external_id_problem(value)
        if problem is not None:
            _bad("parent_id", value, problem)
    elif not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= _NODE_ID_MAX:
        _bad(
            "parent_id",
            value,
            f"under Simple, parent_id is the parent's internal node id (a positive integer up "
            f"to {_NODE_ID_MAX}); use SimpleSnapshot to pass an external id, or parent_path",
        )


_NODE_ID_MAX = 2**31 - 1


def _text(what: str, value: Any, max_length: int, *, required: bool = False) -> None:
    if not isinstance(value, str):
        _bad(what, value, f"{what} must be a string, not {type(value).__name__}")
    problem = text_problem(value, max_length)
    if problem is not None:
        _bad(what, value, problem)
    if required and not value.strip():
        _bad(what, value, f"{what} must not be empty")


def _bad(what: str, value: Any, problem: str) -> NoReturn:
    raise InvalidObjectError(f"page {what} {show(value)}: {problem}")


# Statements built once; values are bound per call.
_bp = sa.bindparam
_NODE_BY_PATH = sa.select(tree).where(
    tree.c.node_site_id == _bp("site"), tree.c.node_alias_path == _bp("path")
)
_NODE_BY_GUID = sa.select(tree).where(
    tree.c.node_site_id == _bp("site"), tree.c.node_guid == _bp("guid")
)
_NODE_BY_ID = sa.select(tree).where(tree.c.node_id == _bp("node"))
_INSERT_NODE = tree.insert().returning(tree.c.node_id)
_DELETE_NODE = tree.delete().where(tree.c.node_id == _bp("node"))
_DOCUMENT_ID = sa.select(docs.c.document_id).where(
    docs.c.document_node_id == _bp("node"), docs.c.document_culture == _bp("culture")
)
_INSERT_DOCUMENT = docs.insert().returning(docs.c.document_id)
# PostgreSQL: a page update renames its document in a data-modifying CTE of the statement that
# updates its fields, one round trip instead of two (SQLite has no DML in WITH).
_RENAME_DOCUMENT = (
    docs.update()
    .where(docs.c.document_id == _bp("syncbus_document_id"))
    .values(document_name=_bp("syncbus_document_name"), modified_at=_bp("syncbus_modified_at"))
    .returning(docs.c.document_id)
    .cte("syncbus_document")
)
# SET takes the columns present in the parameters; "syncbus_document_id" names the row.
_UPDATE_DOCUMENT = docs.update().where(docs.c.document_id == _bp("syncbus_document_id"))
_DELETE_CULTURE = docs.delete().where(
    docs.c.document_node_id == _bp("node"), docs.c.document_culture == _bp("culture")
)
_COUNT_DOCUMENTS = (
    sa.select(sa.func.count()).select_from(docs).where(docs.c.document_node_id == _bp("node"))
)


_FIRST_CHILD = sa.select(tree.c.node_id).where(tree.c.node_parent_id == _bp("node")).limit(1)


@dataclass
class PageEffect:
    """What a page task did to the tree's nodes (callers keep their caches true with it)."""

    created: bool = False  # a node was created
    removed: tuple[int, str] | None = None  # (site id, node GUID) of a leaf node that went
    subtree_removed: bool = False  # a node went with its descendants


class PageCache:
    """Nodes by (site, node GUID) and document ids by (node, culture), looked up set-wise for
    a batch (None: known to be absent). Writes keep it true; deletes and moves, which can
    change a whole subtree, empty it."""

    def __init__(self) -> None:
        self.nodes: dict[tuple[int, str], dict[str, Any] | None] = {}
        self.documents: dict[tuple[int, str], int | None] = {}

    def clear(self) -> None:
        self.nodes.clear()
        self.documents.clear()

    def forget_node(self, node: dict[str, Any]) -> None:
        """A leaf node went, with its documents."""
        node_id = int(node["node_id"])
        self.nodes[(int(node["node_site_id"]), str(node["node_guid"]))] = None
        for key in [k for k in self.documents if k[0] == node_id]:
            del self.documents[key]

    def prefetch(self, conn: sa.Connection, wanted: list[tuple[int, str, str]]) -> None:
        """Fetch the nodes and documents of ``(site_id, node GUID, culture)`` triples."""
        keys = {(site, guid.lower()) for site, guid, _ in wanted} - self.nodes.keys()
        guids = sorted({guid for _, guid in keys})
        for start in range(0, len(guids), IN_CHUNK):
            stmt = sa.select(tree).where(tree.c.node_guid.in_(guids[start : start + IN_CHUNK]))
            for row in conn.execute(stmt).mappings():
                key = (int(row["node_site_id"]), str(row["node_guid"]))
                if key in keys:
                    self.nodes[key] = dict(row)
        for key in keys:
            self.nodes.setdefault(key, None)
        docs_wanted: set[tuple[int, str]] = set()
        for site, guid, culture in wanted:
            node = self.nodes.get((site, guid.lower()))
            if node is not None:
                docs_wanted.add((int(node["node_id"]), culture))
        docs_wanted -= self.documents.keys()
        node_ids = sorted({node_id for node_id, _ in docs_wanted})
        for start in range(0, len(node_ids), IN_CHUNK):
            stmt = sa.select(
                docs.c.document_id, docs.c.document_node_id, docs.c.document_culture
            ).where(docs.c.document_node_id.in_(node_ids[start : start + IN_CHUNK]))
            for doc_id, node_id, culture in conn.execute(stmt):
                key = (int(node_id), str(culture))
                if key in docs_wanted:
                    self.documents[key] = int(doc_id)
        for key in docs_wanted:
            self.documents.setdefault(key, None)


class PageStore:
    """Page operations on a caller's connection; ``cache`` (optional) spares the lookups a
    batch prefetched."""

    def __init__(self, registry: TypeRegistry) -> None:
        self.registry = registry
        self._field_updates: dict[tuple[str, bool], tuple[sa.Table, Any]] = {}

    def _field_update(self, class_name: str, table: sa.Table, rename: bool) -> Any:
        """UPDATE of a document's page fields; with ``rename`` (PostgreSQL), the document's
        name and modification time are updated by the same statement."""
        cached = self._field_updates.get((class_name, rename))
        if cached is None or cached[0] is not table:
            stmt = table.update().where(table.c.document_id == _bp("syncbus_document_id"))
            if rename:
                stmt = stmt.add_cte(_RENAME_DOCUMENT)
            cached = self._field_updates[(class_name, rename)] = (table, stmt)
        return cached[1]

    # -- nodes ------------------------------------------------------------------------------
    def root(self, conn: sa.Connection, site_id: int) -> dict[str, Any]:
        """The site's root node ``/``, created on first use."""
        node = self.node_by_path(conn, site_id, "/")
        if node is not None:
            return node
        conn.execute(
            _INSERT_NODE,
            {
                "node_guid": str(uuid.uuid4()),
                "node_alias": "",
                "node_alias_path": "/",
                "node_parent_id": None,
                "node_class_name": ROOT_CLASS,
                "node_site_id": site_id,
                "node_level": 0,
            },
        )
        node = self.node_by_path(conn, site_id, "/")
        assert node is not None
        return node

    def node_by_path(self, conn: sa.Connection, site_id: int, path: str) -> dict[str, Any] | None:
        params = {"site": site_id, "path": normalize_path(path)}
        row = conn.execute(_NODE_BY_PATH, params).mappings().first()
        return dict(row) if row else None

    def node_by_guid(self, conn: sa.Connection, site_id: int, guid: str) -> dict[str, Any] | None:
        params = {"site": site_id, "guid": str(guid).lower()}
        row = conn.execute(_NODE_BY_GUID, params).mappings().first()
        return dict(row) if row else None

    def node_by_id(self, conn: sa.Connection, node_id: int) -> dict[str, Any] | None:
        row = conn.execute(_NODE_BY_ID, {"node": node_id}).mappings().first()
        return dict(row) if row else None

    def find_node(
        self,
        conn: sa.Connection,
        site_id: int,
        page: Page,
        get_parent: ParentResolver,
        cache: PageCache | None = None,
    ) -> dict[str, Any] | None:
        """The page's node: by node GUID, else by alias path under its parent."""
        if page.node_guid is not None:
            key = (site_id, str(page.node_guid).lower())
            if cache is not None and key in cache.nodes:
                return cache.nodes[key]
            node = self.node_by_guid(conn, site_id, key[1])
            if cache is not None:
                cache.nodes[key] = node
            return node
        alias = page.alias or make_alias(page.name)
        return self.node_by_path(conn, site_id, join_path(get_parent()["node_alias_path"], alias))

    # -- apply ------------------------------------------------------------------------------
    def apply(
        self,
        conn: sa.Connection,
        task_type: TaskType,
        site_id: int,
        page: Page,
        get_parent: ParentResolver,
        cache: PageCache | None = None,
    ) -> PageEffect:
        """Apply a page task. ``get_parent`` returns the parent node, or raises
        PageNotFoundError; it is called only where the parent matters. Returns what the task
        did to the tree's nodes."""
        pt = self.registry.page_type(page.class_name)
        pt.check_fields(page.fields)
        node = self.find_node(conn, site_id, page, get_parent, cache)
        effect = PageEffect()
        if task_type in (TaskType.CREATE_DOCUMENT, TaskType.UPDATE_DOCUMENT):
            if node is None:
                node = self._create_node(conn, site_id, page, get_parent())
                effect.created = True
                if cache is not None:
                    cache.nodes[(site_id, node["node_guid"])] = node
            elif page.alias and page.alias != node["node_alias"]:
                if cache is not None:
                    cache.clear()  # alias paths of the subtree change
                self._relocate(
                    conn, node, self.node_by_id(conn, node["node_parent_id"]), page.alias
                )
            self._upsert_document(conn, node, page, cache)
        elif task_type is TaskType.DELETE_DOCUMENT:
            if node is not None:
                effect = self._delete_culture(conn, node, page.culture, cache)
        elif task_type is TaskType.DELETE_ALL_CULTURES:
            if node is not None:
                effect = self._remove_node(conn, node, cache)
        elif task_type in (TaskType.PUBLISH_DOCUMENT, TaskType.ARCHIVE_DOCUMENT):
            publish = task_type is TaskType.PUBLISH_DOCUMENT
            doc_id = self._document_id(conn, node, page, cache) if node else None
            if node is None or doc_id is None:
                raise PageNotFoundError(f"page {self._describe(page)} does not exist")
            conn.execute(
                _UPDATE_DOCUMENT,
                {
                    "syncbus_document_id": doc_id,
                    "published": publish,
                    "archived": not publish,
                    "modified_at": utcnow(),
                },
            )
        elif task_type is TaskType.MOVE_DOCUMENT:
            if node is None:
                raise PageNotFoundError(f"page {self._describe(page)} to move does not exist")
            if cache is not None:
                cache.clear()
            self._relocate(conn, node, get_parent(), node["node_alias"])
        else:
            raise ContentError(f"task type {task_type.value} does not apply to pages")
        return effect

    @staticmethod
    def _describe(page: Page) -> str:
        who = f"with node GUID {page.node_guid}" if page.node_guid else f"'{page.name}'"
        return f"{who} ({page.culture})"

    def _create_node(
        self, conn: sa.Connection, site_id: int, page: Page, parent: dict[str, Any]
    ) -> dict[str, Any]:
        alias = page.alias or make_alias(page.name)
        path = join_path(parent["node_alias_path"], alias)
        if self.node_by_path(conn, site_id, path) is not None:
            raise ContentError(f"another page already exists at {path!r}")
        guid = str(page.node_guid).lower() if page.node_guid else str(uuid.uuid4())
        node = {
            "node_guid": guid,
            "node_alias": alias,
            "node_alias_path": path,
            "node_parent_id": parent["node_id"],
            "node_class_name": page.class_name.lower(),
            "node_site_id": site_id,
            "node_level": parent["node_level"] + 1,
        }
        node["node_id"] = int(conn.execute(_INSERT_NODE, node).scalar_one())
        return node

    def _document_id(
        self,
        conn: sa.Connection,
        node: dict[str, Any],
        page: Page,
        cache: PageCache | None = None,
    ) -> int | None:
        key = (int(node["node_id"]), page.culture)
        if cache is not None and key in cache.documents:
            return cache.documents[key]
        params = {"node": node["node_id"], "culture": page.culture}
        found = conn.execute(_DOCUMENT_ID, params).scalar()
        doc_id = None if found is None else int(found)
        if cache is not None:
            cache.documents[key] = doc_id
        return doc_id

    def _fields(self, page: Page) -> dict[str, Any]:
        """The page's fields as their columns take them (a task's JSON holds dates as ISO
        text; SQLite's Date and DateTime take only Python objects). Coercers built once."""
        if not page.fields:
            return page.fields
        pt = self.registry.page_type(page.class_name)
        coercers: Coercers | None = pt.__dict__.get("_coercers")
        if coercers is None:
            coercers = pt.__dict__["_coercers"] = column_coercers(pt.field_types())
        if not coercers:
            return page.fields
        return coerce_values(f"page type {pt.class_name}", coercers, page.fields)

    def _upsert_document(
        self, conn: sa.Connection, node: dict[str, Any], page: Page, cache: PageCache | None
    ) -> None:
        doc_id = self._document_id(conn, node, page, cache)
        table = self.registry.page_table(page.class_name)
        fields = self._fields(page)
        if doc_id is None:
            doc_id = conn.execute(
                _INSERT_DOCUMENT,
                {
                    "document_node_id": node["node_id"],
                    "document_culture": page.culture,
                    "document_name": page.name,
                    "published": True,
                    "archived": False,
                    "modified_at": utcnow(),
                },
            ).scalar_one()
            if cache is not None:
                cache.documents[(int(node["node_id"]), page.culture)] = int(doc_id)
            if table is not None:
                conn.execute(table.insert(), {**fields, "document_id": doc_id})
            return
        if not fields:
            table = None  # nothing to SET in the fields table
        if table is not None and conn.dialect.name == "postgresql":
            conn.execute(
                self._field_update(page.class_name, table, rename=True),
                {
                    **fields,
                    "syncbus_document_id": doc_id,
                    "syncbus_document_name": page.name,
                    "syncbus_modified_at": utcnow(),
                },
            )
            return
        conn.execute(
            _UPDATE_DOCUMENT,
            {"syncbus_document_id": doc_id, "document_name": page.name, "modified_at": utcnow()},
        )
        if table is not None:
            conn.execute(
                self._field_update(page.class_name, table, rename=False),
                {**fields, "syncbus_document_id": doc_id},
            )

    def _delete_culture(
        self, conn: sa.Connection, node: dict[str, Any], culture: str, cache: PageCache | None
    ) -> PageEffect:
        """Delete one culture; the node goes with its last one."""
        conn.execute(_DELETE_CULTURE, {"node": node["node_id"], "culture": culture})
        if cache is not None:
            cache.documents[(int(node["node_id"]), culture)] = None
        remaining = conn.execute(_COUNT_DOCUMENTS, {"node": node["node_id"]}).scalar_one()
        if remaining == 0:
            return self._remove_node(conn, node, cache)
        return PageEffect()

    @staticmethod
    def _remove_node(
        conn: sa.Connection, node: dict[str, Any], cache: PageCache | None
    ) -> PageEffect:
        """Delete a node with its documents; its subtree goes with it (ON DELETE CASCADE)."""
        leaf = conn.execute(_FIRST_CHILD, {"node": node["node_id"]}).first() is None
        conn.execute(_DELETE_NODE, {"node": node["node_id"]})
        if not leaf:
            if cache is not None:
                cache.clear()
            return PageEffect(subtree_removed=True)
        if cache is not None:
            cache.forget_node(node)
        return PageEffect(removed=(int(node["node_site_id"]), str(node["node_guid"])))

    def _relocate(
        self,
        conn: sa.Connection,
        node: dict[str, Any],
        parent: dict[str, Any] | None,
        alias: str,
    ) -> None:
        """Put ``node`` under ``parent`` with ``alias``; rewrite the subtree's alias paths."""
        if parent is None:
            raise ContentError("the site root cannot be renamed or moved")
        old = node["node_alias_path"]
        if parent["node_alias_path"] == old or parent["node_alias_path"].startswith(old + "/"):
            raise ContentError(f"cannot move {old!r} under itself ({parent['node_alias_path']!r})")
        new = join_path(parent["node_alias_path"], alias)
        if new == old:
            return
        site_id = node["node_site_id"]
        if self.node_by_path(conn, site_id, new) is not None:
            raise ContentError(f"cannot move {old!r}: another page already exists at {new!r}")
        delta = parent["node_level"] + 1 - node["node_level"]
        prefix = old + "/"
        conn.execute(
            tree.update()
            .where(
                tree.c.node_site_id == site_id,
                sa.func.substr(tree.c.node_alias_path, 1, len(prefix)) == prefix,
            )
            .values(
                node_alias_path=sa.literal(new + "/")
                + sa.func.substr(tree.c.node_alias_path, len(prefix) + 1),
                node_level=tree.c.node_level + delta,
            )
        )
        conn.execute(
            tree.update()
            .where(tree.c.node_id == node["node_id"])
            .values(
                node_alias=alias,
                node_alias_path=new,
                node_parent_id=parent["node_id"],
                node_level=parent["node_level"] + 1,
            )
        )

    # -- reads ------------------------------------------------------------------------------
    def get(
        self, conn: sa.Connection, site_id: int, alias_path: str, culture: str
    ) -> dict[str, Any] | None:
        stmt = (
            sa.select(tree, docs)
            .join(docs, docs.c.document_node_id == tree.c.node_id)
            .where(
                tree.c.node_site_id == site_id,
                tree.c.node_alias_path == normalize_path(alias_path),
                docs.c.document_culture == culture,
            )
        )
        row = conn.execute(stmt).mappings().first()
        if row is None:
            return None
        page = dict(row)
        table = self.registry.page_table(page["node_class_name"])
        if table is not None:
            fields = (
                conn.execute(sa.select(table).where(table.c.document_id == page["document_id"]))
                .mappings()
                .first()
            )
            if fields:
                page.update({k: v for k, v in fields.items() if k != "document_id"})
        return page
