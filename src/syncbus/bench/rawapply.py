"""The minimum work one task needs, hand-written with SQLAlchemy Core.

Used by the raw SQL floor (in batches, like the bus) and by the peers' jobs (one transaction
per job). It reads the very payload the bus stored for the task, looks up each foreign key with
one SELECT by code name (or node GUID), and upserts or deletes the target rows of the real
content tables with single statements (``INSERT ... ON CONFLICT``). Statements are built once.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import sqlalchemy as sa

from syncbus.content.registry import TypeRegistry
from syncbus.content.tables import document_table, tree_table
from syncbus.store.dialect import dialect_of

_DELETES = ("DeleteObject", "DeleteDocument")
_bp = sa.bindparam


class RawApplyError(RuntimeError):
    """The hand-written loop met something it cannot apply (a bug in the bench, or data)."""


class RawApplier:
    """Applies one stored task payload to the content tables; no framework in between."""

    def __init__(self, engine: sa.Engine, registry: TypeRegistry) -> None:
        insert = dialect_of(engine).insert  # INSERT ... ON CONFLICT, as each backend spells it
        site = registry.table("cms.site")
        with engine.connect() as conn:
            self.sites = {
                str(n): int(i) for n, i in conn.execute(sa.select(site.c.site_name, site.c.site_id))
            }
        self._object_statements(registry, insert)
        self._page_statements(registry, insert)

    def _object_statements(self, registry: TypeRegistry, insert: Any) -> None:
        users, roles = registry.table("cms.user"), registry.table("cms.role")
        forums, posts = registry.table("forums.forum"), registry.table("forums.forumpost")
        members = registry.table("cms.userrole")
        self.user_id = sa.select(users.c.user_id).where(users.c.user_name == _bp("c"))
        self.role_id = sa.select(roles.c.role_id).where(
            roles.c.role_name == _bp("c"), roles.c.site_id == _bp("s")
        )
        self.forum_id = sa.select(forums.c.forum_id).where(
            forums.c.forum_name == _bp("c"), forums.c.site_id == _bp("s")
        )
        ins = insert(posts)
        self.upsert_post = ins.on_conflict_do_update(
            index_elements=[posts.c.post_guid],
            set_={
                c: ins.excluded[c]
                for c in ("forum_id", "post_user_id", "post_subject", "post_text")
            },
        )
        self.delete_post = posts.delete().where(posts.c.post_guid == _bp("g"))
        self.upsert_member = insert(members).on_conflict_do_nothing(
            index_elements=[members.c.user_id, members.c.role_id]
        )
        self.delete_member = members.delete().where(
            members.c.user_id == _bp("u"), members.c.role_id == _bp("r")
        )

    def _page_statements(self, registry: TypeRegistry, insert: Any) -> None:
        articles = registry.page_table("cms.article")
        assert articles is not None
        tree, docs = tree_table, document_table
        self.node = sa.select(tree.c.node_id, tree.c.node_alias_path, tree.c.node_level).where(
            tree.c.node_site_id == _bp("s"), tree.c.node_guid == _bp("g")
        )
        self.insert_node = tree.insert().returning(tree.c.node_id)
        ins = insert(docs)
        self.upsert_doc = ins.on_conflict_do_update(
            index_elements=[docs.c.document_node_id, docs.c.document_culture],
            set_={
                "document_name": ins.excluded.document_name,
                "modified_at": ins.excluded.modified_at,
            },
        ).returning(docs.c.document_id)
        ins = insert(articles)
        fields = ("article_title", "article_summary", "article_text")
        self.upsert_article = ins.on_conflict_do_update(
            index_elements=[articles.c.document_id], set_={f: ins.excluded[f] for f in fields}
        )
        node_of = sa.select(tree.c.node_id).where(
            tree.c.node_site_id == _bp("s"), tree.c.node_guid == _bp("g")
        )
        self.delete_doc = docs.delete().where(
            docs.c.document_culture == _bp("l"),
            docs.c.document_node_id == node_of.scalar_subquery(),
        )
        has_docs = sa.exists().where(docs.c.document_node_id == tree.c.node_id)
        self.delete_empty_node = tree.delete().where(
            tree.c.node_site_id == _bp("s"), tree.c.node_guid == _bp("g"), ~has_docs
        )

    def apply(self, conn: sa.Connection, task_type: str, site_name: str | None, data: str) -> None:
        body = json.loads(data)
        refs = {(r["t"], r["id"]): r for r in body.get("tr", ())}
        delete = task_type in _DELETES
        if "page" in body:
            self._page(conn, body["page"], refs, delete, site_name)
            return
        obj = body["object"]
        row = obj["data"]
        if obj["type"] == "forums.forumpost":
            if delete:
                conn.execute(self.delete_post, {"g": row["post_guid"]})
                return
            values = dict(row)
            values["forum_id"] = self._lookup(
                conn, self.forum_id, refs, "forums.forum", row["forum_id"]
            )
            values["post_user_id"] = self._lookup(
                conn, self.user_id, refs, "cms.user", row["post_user_id"]
            )
            conn.execute(self.upsert_post, values)
        elif obj["type"] == "cms.userrole":
            user = self._lookup(conn, self.user_id, refs, "cms.user", row["user_id"])
            role = self._lookup(conn, self.role_id, refs, "cms.role", row["role_id"])
            if delete:
                conn.execute(self.delete_member, {"u": user, "r": role})
            else:
                conn.execute(self.upsert_member, {"user_id": user, "role_id": role})
        else:
            raise RawApplyError(f"the raw floor does not handle {obj['type']!r}")

    def _lookup(
        self, conn: sa.Connection, stmt: sa.Select[Any], refs: dict[Any, Any], typ: str, ext: Any
    ) -> int:
        rec = refs.get((typ, ext))
        if rec is None:
            raise RawApplyError(f"no translation record for {typ} {ext!r}")
        params: dict[str, Any] = {"c": rec["c"]}
        if "s" in rec:
            params["s"] = self.sites[rec["s"]]
        found = conn.execute(stmt, params).scalar()
        if found is None:
            raise RawApplyError(f"cannot translate {typ} {rec['c']!r}")
        return int(found)

    def _page(
        self,
        conn: sa.Connection,
        page: dict[str, Any],
        refs: dict[Any, Any],
        delete: bool,
        site_name: str | None,
    ) -> None:
        site_id = self.sites[str(site_name)]
        guid = str(page["node_guid"]).lower()
        if delete:
            conn.execute(self.delete_doc, {"l": page["culture"], "s": site_id, "g": guid})
            conn.execute(self.delete_empty_node, {"s": site_id, "g": guid})
            return
        found = conn.execute(self.node, {"s": site_id, "g": guid}).first()
        if found is not None:
            node_id = int(found.node_id)
        else:
            rec = refs.get(("#page", page["parent_id"]))
            if rec is None:
                raise RawApplyError(f"no translation record for page {page['parent_id']!r}")
            parent = conn.execute(self.node, {"s": site_id, "g": rec["c"]}).first()
            if parent is None:
                raise RawApplyError(f"cannot translate parent page {rec['c']!r}")
            path = (
                ("" if parent.node_alias_path == "/" else parent.node_alias_path)
                + "/"
                + page["alias"]
            )
            node_id = conn.execute(
                self.insert_node,
                {
                    "node_guid": guid,
                    "node_alias": page["alias"],
                    "node_alias_path": path,
                    "node_parent_id": parent.node_id,
                    "node_class_name": page["class_name"],
                    "node_site_id": site_id,
                    "node_level": parent.node_level + 1,
                },
            ).scalar_one()
        doc_id = conn.execute(
            self.upsert_doc,
            {
                "document_node_id": node_id,
                "document_culture": page["culture"],
                "document_name": page["name"],
                "published": True,
                "archived": False,
                "modified_at": dt.datetime.now(dt.UTC),
            },
        ).scalar_one()
        conn.execute(self.upsert_article, {"document_id": doc_id, **page["fields"]})
