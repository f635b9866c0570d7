"""The page tree: nodes per site, one document per culture, page-type fields per document."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from syncbus.content import writes
from syncbus.content.builtin import ROOT_CLASS
from syncbus.content.caches import PageCache
from syncbus.content.coerce import Coercers, coerce_values, column_coercers
from syncbus.content.objects import diff
from syncbus.content.paths import join_path, make_alias, normalize_path
from syncbus.content.registry import TypeRegistry
from syncbus.content.tables import document_table as docs
from syncbus.content.tables import tree_table as tree
from syncbus.content.validation import check_fields
from syncbus.enums import TaskType, task_handlers
from syncbus.errors import ContentError, PageNotFoundError
from syncbus.model import Page
from syncbus.store.db import utcnow
from syncbus.store.dialect import dialect_of

ParentResolver = Callable[[], dict[str, Any]]

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
# Where the dialect takes data-modifying CTEs (PostgreSQL; SQLite has no DML in WITH), a page
# update renames its document in a CTE of the statement that updates its fields: one round
# trip instead of two.
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
# The same, by primary key where the batch knows the document's id: a held update of another
# table need not go before it then (writes.py).
_DELETE_DOCUMENT = docs.delete().where(docs.c.document_id == _bp("document"))
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
    # The alias path of a node that went with descendants, and the paths of those.
    subtree: tuple[str, list[str]] | None = None


class PageStore:
    """Page operations on a caller's connection; ``cache`` (optional) spares the lookups a
    batch prefetched."""

    def __init__(self, registry: TypeRegistry) -> None:
        self.registry = registry
        self._field_updates: dict[tuple[str, bool], tuple[sa.Table, Any]] = {}
        self._texts: dict[str, tuple[sa.Table | None, frozenset[str]]] = {}
        self._handlers = task_handlers(self, document=True)

    def _field_update(self, class_name: str, table: sa.Table, rename: bool) -> Any:
        """UPDATE of a document's page fields; with ``rename`` (where the database takes an
        UPDATE in a WITH clause), the document's name and modification time are updated by the
        same statement."""
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

    def node_by_path(
        self, conn: sa.Connection, site_id: int, path: str, cache: PageCache | None = None
    ) -> dict[str, Any] | None:
        """The node at ``path`` (with ``cache``: as the batch knows it, else looked up and
        kept)."""
        key = (site_id, normalize_path(path))
        if cache is not None and key in cache.paths:
            return cache.paths[key]
        row = conn.execute(_NODE_BY_PATH, {"site": key[0], "path": key[1]}).mappings().first()
        node = dict(row) if row else None
        if cache is not None:
            cache.paths[key] = node
        return node

    def node_by_guid(self, conn: sa.Connection, site_id: int, guid: str) -> dict[str, Any] | None:
        params = {"site": site_id, "guid": str(guid).lower()}
        row = conn.execute(_NODE_BY_GUID, params).mappings().first()
        return dict(row) if row else None

    def node_by_id(
        self, conn: sa.Connection, node_id: int, cache: PageCache | None = None
    ) -> dict[str, Any] | None:
        """The node with this id (with ``cache``, looked up once per batch: the parent of a
        batch's new pages is usually one of a few)."""
        if cache is not None and node_id in cache.by_id:
            return cache.by_id[node_id]
        row = conn.execute(_NODE_BY_ID, {"node": node_id}).mappings().first()
        node = dict(row) if row else None
        if cache is not None:
            cache.by_id[node_id] = node
        return node

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
        path = join_path(get_parent()["node_alias_path"], alias)
        return self.node_by_path(conn, site_id, path, cache)

    # -- apply ------------------------------------------------------------------------------
    def apply(
        self,
        conn: sa.Connection,
        task_type: TaskType,
        site_id: int,
        page: Page,
        get_parent: ParentResolver,
        cache: PageCache | None = None,
        changes: dict[str, list[Any]] | None = None,
    ) -> PageEffect:
        """Apply a page task. ``get_parent`` returns the parent node, or raises
        PageNotFoundError; it is called only where the parent matters, and always before the
        task writes anything (the engine lets a task that waits for its parent wait without
        rolling its batch back). Returns what the task did to the tree's nodes. With
        ``changes`` (history on), a create or update fills it with ``{column: [old, new]}`` of
        its document's name and fields."""
        pt = self.registry.page_type(page.class_name)
        check_fields(pt, page.fields)
        node = self.find_node(conn, site_id, page, get_parent, cache)
        handler = self._handlers.get(task_type)
        if handler is None:
            raise ContentError(f"task type {task_type.value} does not apply to pages")
        writes = changes is not None and handler == self._create_or_update
        old = self._document(conn, node, page, cache) if writes and node is not None else None
        effect: PageEffect = handler(conn, site_id, page, node, get_parent, cache)
        if writes and changes is not None:
            changes.update(diff(old, {"document_name": page.name, **self._fields(page)}))
        return effect

    def _document(
        self, conn: sa.Connection, node: dict[str, Any], page: Page, cache: PageCache | None
    ) -> dict[str, Any] | None:
        """A document's name and fields before a task writes them (history), or None: from
        what the batch prefetched where it can, else read now."""
        doc_id = self._document_id(conn, node, page, cache)
        if doc_id is None:
            return None
        table = self.registry.page_table(page.class_name)
        fields = [] if table is None else [table.c[f] for f in page.fields if f in table.c]
        if cache is not None and cache.keep_contents:
            if doc_id not in cache.loaded:  # the batch's documents of this type, at once
                cache.load_contents(conn, doc_id, page.class_name.lower(), table)
            known = cache.content(doc_id, ["document_name", *(c.name for c in fields)])
            if known is not None:
                return known
        cols: list[Any] = [docs.c.document_name]
        stmt = sa.select(*cols).where(docs.c.document_id == doc_id)
        if table is not None:
            stmt = stmt.add_columns(*fields).outerjoin(
                table, table.c.document_id == docs.c.document_id
            )
        row = conn.execute(stmt).mappings().first()
        return None if row is None else dict(row)

    def _text_columns(self, class_name: str, table: sa.Table | None) -> frozenset[str]:
        """The document's columns that read text back exactly as written (its name, and the
        page fields of a text type)."""
        cached = self._texts.get(class_name)
        if cached is None or cached[0] is not table:
            names = {"document_name"}
            if table is not None:
                names |= {
                    c.name
                    for c in table.c
                    if isinstance(c.type, sa.String) and not isinstance(c.type, sa.Enum)
                }
            cached = self._texts[class_name] = (table, frozenset(names))
        return cached[1]

    # One per page task type (enums.TASK_TYPES names them); same arguments, same result.
    def _create_or_update(
        self,
        conn: sa.Connection,
        site_id: int,
        page: Page,
        node: dict[str, Any] | None,
        get_parent: ParentResolver,
        cache: PageCache | None,
    ) -> PageEffect:
        effect = PageEffect()
        if node is None:
            node = self._create_node(conn, site_id, page, get_parent(), cache)
            effect.created = True
            if cache is not None:
                cache.nodes[(site_id, node["node_guid"])] = node
                cache.by_id[int(node["node_id"])] = node
                cache.paths[(site_id, normalize_path(node["node_alias_path"]))] = node
                # A node made just now has no document yet: no query to find one.
                cache.documents[(int(node["node_id"]), page.culture)] = None
        elif page.alias and page.alias != node["node_alias"]:
            if cache is not None:
                cache.clear()  # alias paths of the subtree change
            self._relocate(conn, node, self.node_by_id(conn, node["node_parent_id"]), page.alias)
        self._upsert_document(conn, node, page, cache)
        return effect

    def _delete_document(
        self,
        conn: sa.Connection,
        site_id: int,
        page: Page,
        node: dict[str, Any] | None,
        get_parent: ParentResolver,
        cache: PageCache | None,
    ) -> PageEffect:
        if node is None:
            return PageEffect()
        return self._delete_culture(conn, node, page.culture, cache)

    def _delete_all_cultures(
        self,
        conn: sa.Connection,
        site_id: int,
        page: Page,
        node: dict[str, Any] | None,
        get_parent: ParentResolver,
        cache: PageCache | None,
    ) -> PageEffect:
        if node is None:
            return PageEffect()
        return self._remove_node(conn, node, cache)

    def _publish(
        self,
        conn: sa.Connection,
        site_id: int,
        page: Page,
        node: dict[str, Any] | None,
        get_parent: ParentResolver,
        cache: PageCache | None,
    ) -> PageEffect:
        return self._set_published(conn, page, node, cache, publish=True)

    def _archive(
        self,
        conn: sa.Connection,
        site_id: int,
        page: Page,
        node: dict[str, Any] | None,
        get_parent: ParentResolver,
        cache: PageCache | None,
    ) -> PageEffect:
        return self._set_published(conn, page, node, cache, publish=False)

    def _move(
        self,
        conn: sa.Connection,
        site_id: int,
        page: Page,
        node: dict[str, Any] | None,
        get_parent: ParentResolver,
        cache: PageCache | None,
    ) -> PageEffect:
        if node is None:
            raise PageNotFoundError(f"page {self._describe(page)} to move does not exist")
        if cache is not None:
            cache.clear()
        self._relocate(conn, node, get_parent(), node["node_alias"])
        return PageEffect()

    def _set_published(
        self,
        conn: sa.Connection,
        page: Page,
        node: dict[str, Any] | None,
        cache: PageCache | None,
        *,
        publish: bool,
    ) -> PageEffect:
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
        return PageEffect()

    @staticmethod
    def _describe(page: Page) -> str:
        who = f"with node GUID {page.node_guid}" if page.node_guid else f"'{page.name}'"
        return f"{who} ({page.culture})"

    def _create_node(
        self,
        conn: sa.Connection,
        site_id: int,
        page: Page,
        parent: dict[str, Any],
        cache: PageCache | None = None,
    ) -> dict[str, Any]:
        alias = page.alias or make_alias(page.name)
        path = join_path(parent["node_alias_path"], alias)
        if self.node_by_path(conn, site_id, path, cache) is not None:
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
        held = None if cache is None else cache.writes
        reserved = None if held is None else held.allocate(tree, "node_id")
        if held is not None and reserved is not None:
            node["node_id"] = reserved
            held.insert(tree, dict(node))
        else:
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
        coercers: Coercers = pt.derived("coercers", lambda: column_coercers(pt.field_types()))
        if not coercers:
            return page.fields
        return coerce_values(f"page type {pt.class_name}", coercers, page.fields)

    def _upsert_document(
        self, conn: sa.Connection, node: dict[str, Any], page: Page, cache: PageCache | None
    ) -> None:
        doc_id = self._document_id(conn, node, page, cache)
        table = self.registry.page_table(page.class_name)
        fields = self._fields(page)
        if cache is not None and cache.keep_contents and doc_id is not None:
            self._keep(cache, doc_id, page, table, fields, inserted=False)
        held = None if cache is None else cache.writes
        if doc_id is None:
            document = {
                "document_node_id": node["node_id"],
                "document_culture": page.culture,
                "document_name": page.name,
                "published": True,
                "archived": False,
                "modified_at": utcnow(),
            }
            reserved = None if held is None else held.allocate(docs, "document_id")
            if held is not None and reserved is not None:
                doc_id = reserved
                held.insert(docs, {**document, "document_id": doc_id})
            else:
                doc_id = conn.execute(_INSERT_DOCUMENT, document).scalar_one()
            if cache is not None:
                cache.documents[(int(node["node_id"]), page.culture)] = int(doc_id)
                if cache.keep_contents:
                    self._keep(cache, int(doc_id), page, table, fields, inserted=True)
            if table is not None:
                if held is not None:
                    held.insert(table, {**fields, "document_id": doc_id})
                else:
                    conn.execute(table.insert(), {**fields, "document_id": doc_id})
            return
        if not fields:
            table = None  # nothing to SET in the fields table
        # One statement for both where the database takes an UPDATE in a WITH clause, unless
        # the updates are held back for multi-row UPDATEs: those take one table each.
        multirow = held is not None and held.multirow
        if table is not None and dialect_of(conn).dml_in_cte and not multirow:
            writes.update(
                conn,
                held,
                self._field_update(page.class_name, table, rename=True),
                {
                    **fields,
                    "syncbus_document_id": doc_id,
                    "syncbus_document_name": page.name,
                    "syncbus_modified_at": utcnow(),
                },
                (docs, table),
            )
            return
        writes.update(
            conn,
            held,
            _UPDATE_DOCUMENT,
            {"syncbus_document_id": doc_id, "document_name": page.name, "modified_at": utcnow()},
            (docs,),
        )
        if table is not None:
            writes.update(
                conn,
                held,
                self._field_update(page.class_name, table, rename=False),
                {**fields, "syncbus_document_id": doc_id},
                (table,),
            )

    def _keep(
        self,
        cache: PageCache,
        doc_id: int,
        page: Page,
        table: sa.Table | None,
        fields: dict[str, Any],
        *,
        inserted: bool,
    ) -> None:
        """Keep what a write leaves in a document (history on: the next task's old values).
        Its fields count only where the document has a row in the fields table (an UPDATE of
        a row that is not there changes nothing)."""
        values = {"document_name": page.name}
        if table is not None and (inserted or cache.has_fields_row(doc_id)):
            values.update((f, v) for f, v in fields.items() if f in table.c)
        texts = self._text_columns(page.class_name, table)
        cache.wrote(doc_id, values, texts, fields_row=inserted and table is not None)

    def _delete_culture(
        self, conn: sa.Connection, node: dict[str, Any], culture: str, cache: PageCache | None
    ) -> PageEffect:
        """Delete one culture; the node goes with its last one."""
        key = (int(node["node_id"]), culture)
        gone = None if cache is None else cache.documents.get(key)
        if gone is not None:  # (node, culture) is unique: this is the row
            conn.execute(_DELETE_DOCUMENT, {"document": gone})
        else:
            conn.execute(_DELETE_CULTURE, {"node": node["node_id"], "culture": culture})
        if cache is not None:
            if gone is not None:
                cache.contents.pop(gone, None)
            cache.documents[key] = None
        remaining = conn.execute(_COUNT_DOCUMENTS, {"node": node["node_id"]}).scalar_one()
        if remaining == 0:
            return self._remove_node(conn, node, cache)
        return PageEffect()

    @staticmethod
    def _remove_node(
        conn: sa.Connection, node: dict[str, Any], cache: PageCache | None
    ) -> PageEffect:
        """Delete a node with its documents; its subtree goes with it (ON DELETE CASCADE),
        which the effect names (the applier leaves it in the event log)."""
        leaf = conn.execute(_FIRST_CHILD, {"node": node["node_id"]}).first() is None
        below: list[str] = []
        if not leaf:
            path = str(node["node_alias_path"])
            below = [
                str(p)
                for p in conn.execute(
                    sa.select(tree.c.node_alias_path)
                    .where(
                        tree.c.node_site_id == node["node_site_id"],
                        tree.c.node_alias_path.startswith(path.rstrip("/") + "/", autoescape=True),
                    )
                    .order_by(tree.c.node_alias_path)
                ).scalars()
            ]
        conn.execute(_DELETE_NODE, {"node": node["node_id"]})
        if not leaf:
            if cache is not None:
                cache.clear()
            return PageEffect(subtree_removed=True, subtree=(str(node["node_alias_path"]), below))
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
    def cultures(self, conn: sa.Connection, site_id: int, alias_path: str) -> list[str]:
        """The cultures the page at ``alias_path`` has a document in (none: no such page)."""
        stmt = (
            sa.select(docs.c.document_culture)
            .join(tree, docs.c.document_node_id == tree.c.node_id)
            .where(
                tree.c.node_site_id == site_id,
                tree.c.node_alias_path == normalize_path(alias_path),
            )
            .order_by(docs.c.document_culture)
        )
        return [str(c) for c in conn.execute(stmt).scalars()]

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
