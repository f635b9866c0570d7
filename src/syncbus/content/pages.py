"""The page tree: nodes per site, one document per culture, page-type fields per document."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from syncbus.content.registry import TypeRegistry
from syncbus.content.types import ROOT_CLASS
from syncbus.enums import TaskType
from syncbus.errors import ContentError, PageNotFoundError
from syncbus.model import Page
from syncbus.store.schema import document_table as docs
from syncbus.store.schema import tree_table as tree

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


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class PageStore:
    """Page operations on a caller's connection."""

    def __init__(self, registry: TypeRegistry) -> None:
        self.registry = registry

    # -- nodes ------------------------------------------------------------------------------
    def root(self, conn: sa.Connection, site_id: int) -> dict[str, Any]:
        """The site's root node ``/``, created on first use."""
        node = self.node_by_path(conn, site_id, "/")
        if node is not None:
            return node
        conn.execute(
            tree.insert().values(
                node_guid=str(uuid.uuid4()),
                node_alias="",
                node_alias_path="/",
                node_parent_id=None,
                node_class_name=ROOT_CLASS,
                node_site_id=site_id,
                node_level=0,
            )
        )
        node = self.node_by_path(conn, site_id, "/")
        assert node is not None
        return node

    def node_by_path(self, conn: sa.Connection, site_id: int, path: str) -> dict[str, Any] | None:
        stmt = sa.select(tree).where(
            tree.c.node_site_id == site_id, tree.c.node_alias_path == normalize_path(path)
        )
        row = conn.execute(stmt).mappings().first()
        return dict(row) if row else None

    def node_by_guid(self, conn: sa.Connection, site_id: int, guid: str) -> dict[str, Any] | None:
        stmt = sa.select(tree).where(
            tree.c.node_site_id == site_id, tree.c.node_guid == str(guid).lower()
        )
        row = conn.execute(stmt).mappings().first()
        return dict(row) if row else None

    def node_by_id(self, conn: sa.Connection, node_id: int) -> dict[str, Any] | None:
        row = conn.execute(sa.select(tree).where(tree.c.node_id == node_id)).mappings().first()
        return dict(row) if row else None

    def find_node(
        self, conn: sa.Connection, site_id: int, page: Page, get_parent: ParentResolver
    ) -> dict[str, Any] | None:
        """The page's node: by node GUID, else by alias path under its parent."""
        if page.node_guid is not None:
            return self.node_by_guid(conn, site_id, str(page.node_guid))
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
    ) -> None:
        """Apply a page task. ``get_parent`` returns the parent node, or raises
        PageNotFoundError; it is called only where the parent matters."""
        pt = self.registry.page_type(page.class_name)
        pt.check_fields(page.fields)
        node = self.find_node(conn, site_id, page, get_parent)
        if task_type in (TaskType.CREATE_DOCUMENT, TaskType.UPDATE_DOCUMENT):
            if node is None:
                node = self._create_node(conn, site_id, page, get_parent())
            elif page.alias and page.alias != node["node_alias"]:
                self._relocate(
                    conn, node, self.node_by_id(conn, node["node_parent_id"]), page.alias
                )
            self._upsert_document(conn, node, page)
        elif task_type is TaskType.DELETE_DOCUMENT:
            if node is not None:
                self._delete_culture(conn, node, page.culture)
        elif task_type is TaskType.DELETE_ALL_CULTURES:
            if node is not None:
                conn.execute(tree.delete().where(tree.c.node_id == node["node_id"]))
        elif task_type in (TaskType.PUBLISH_DOCUMENT, TaskType.ARCHIVE_DOCUMENT):
            publish = task_type is TaskType.PUBLISH_DOCUMENT
            doc_id = self._document_id(conn, node, page) if node else None
            if node is None or doc_id is None:
                raise PageNotFoundError(f"page {self._describe(page)} does not exist")
            conn.execute(
                docs.update()
                .where(docs.c.document_id == doc_id)
                .values(published=publish, archived=not publish, modified_at=_now())
            )
        elif task_type is TaskType.MOVE_DOCUMENT:
            if node is None:
                raise PageNotFoundError(f"page {self._describe(page)} to move does not exist")
            self._relocate(conn, node, get_parent(), node["node_alias"])
        else:
            raise ContentError(f"task type {task_type.value} does not apply to pages")

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
        node_id = conn.execute(
            tree.insert()
            .values(
                node_guid=guid,
                node_alias=alias,
                node_alias_path=path,
                node_parent_id=parent["node_id"],
                node_class_name=page.class_name.lower(),
                node_site_id=site_id,
                node_level=parent["node_level"] + 1,
            )
            .returning(tree.c.node_id)
        ).scalar_one()
        node = self.node_by_id(conn, int(node_id))
        assert node is not None
        return node

    def _document_id(self, conn: sa.Connection, node: dict[str, Any], page: Page) -> int | None:
        stmt = sa.select(docs.c.document_id).where(
            docs.c.document_node_id == node["node_id"], docs.c.document_culture == page.culture
        )
        found = conn.execute(stmt).scalar()
        return None if found is None else int(found)

    def _upsert_document(self, conn: sa.Connection, node: dict[str, Any], page: Page) -> None:
        doc_id = self._document_id(conn, node, page)
        if doc_id is None:
            doc_id = conn.execute(
                docs.insert()
                .values(
                    document_node_id=node["node_id"],
                    document_culture=page.culture,
                    document_name=page.name,
                    published=True,
                    archived=False,
                    modified_at=_now(),
                )
                .returning(docs.c.document_id)
            ).scalar_one()
            is_new = True
        else:
            conn.execute(
                docs.update()
                .where(docs.c.document_id == doc_id)
                .values(document_name=page.name, modified_at=_now())
            )
            is_new = False
        table = self.registry.page_table(page.class_name)
        if table is None:
            return
        if is_new:
            conn.execute(table.insert().values(document_id=doc_id, **page.fields))
        elif page.fields:
            conn.execute(table.update().where(table.c.document_id == doc_id).values(page.fields))

    def _delete_culture(self, conn: sa.Connection, node: dict[str, Any], culture: str) -> None:
        conn.execute(
            docs.delete().where(
                docs.c.document_node_id == node["node_id"], docs.c.document_culture == culture
            )
        )
        remaining = conn.execute(
            sa.select(sa.func.count())
            .select_from(docs)
            .where(docs.c.document_node_id == node["node_id"])
        ).scalar_one()
        if remaining == 0:
            conn.execute(tree.delete().where(tree.c.node_id == node["node_id"]))

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
