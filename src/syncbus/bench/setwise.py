"""The set-wise raw SQL floor: the best hand-written code for the bus's work on a batch.

Per batch of the bus's batch size, in one transaction over a copy of the bus's queue (the same
JSON payloads, same order): one SELECT of the queued rows in order; one lookup per referenced
type (users by user name, roles and forums by name and site, the pages' nodes and their parents'
together by node GUID), each an ``IN`` list; the writes grouped into one ``executemany`` per
statement; one DELETE of the batch's queue rows; one COMMIT. Statements are built once.

Every create and update writes the whole record and every delete removes it, so within a batch
the last operation per key decides the content (as in the reference model): the batch is first
reduced to that, per post GUID, per (user, role) binding and per page (node GUID, culture).
The upserts and the deletes left then touch different keys and need no order among them, so
each kind of write is one ``executemany`` (psycopg pipelines it; sqlite3 loops in C). Pages:
new nodes take their path and level from their parent (looked up with the batch's nodes) and
are inserted in one multi-row ``INSERT ... RETURNING`` (SQLAlchemy's "insertmanyvalues"), their
documents upserted the same way (``RETURNING`` the document ids), the article rows with one
``executemany``; page upserts run before page deletes, so a node that loses its last document
in the batch is removed, as one task after the other would leave it.

The content gate checks the result against the same reference model as the per-task floor.
Like that floor it never moves an existing node; unlike it, a page deleted and created again
within one batch keeps its node (and a post or binding its row id): internal ids may differ,
the content (by code name, GUID and alias path) does not. No syncbus engine code runs here.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa

from syncbus.bench.floors import queue_copy
from syncbus.bench.rawapply import RawApplyError
from syncbus.content.registry import TypeRegistry
from syncbus.content.tables import document_table, tree_table
from syncbus.store.dialect import dialect_of

_DELETES = ("DeleteObject", "DeleteDocument")
_bp = sa.bindparam
# The referenced object types the workload's tasks translate, and whether a code name is
# scoped to a site (then the lookup's key is (code name, site id), else (code name, None)).
_SCOPED = {"cms.user": False, "cms.role": True, "forums.forum": True}

Key = tuple[str, int | None]  # (code name, site id or None)
NodeKey = tuple[int, str]  # (site id, node GUID)
PageKey = tuple[int, str, str]  # (site id, node GUID, culture)
Refs = dict[tuple[str, Any], dict[str, Any]]  # a task's translation records by (type, ext id)
PageWrite = tuple[dict[str, Any], Refs]  # a page upsert: the page, its task's records


def _in(name: str) -> sa.BindParameter[Any]:
    return _bp(name, expanding=True)


class SetwiseApplier:
    """Applies one batch of stored task payloads with set-wise SQL; no framework in between."""

    def __init__(self, engine: sa.Engine, registry: TypeRegistry) -> None:
        insert = dialect_of(engine).insert  # INSERT ... ON CONFLICT, as each backend spells it
        site = registry.table("cms.site")
        with engine.connect() as conn:
            self.sites = {
                str(n): int(i) for n, i in conn.execute(sa.select(site.c.site_name, site.c.site_id))
            }
        self.writes = 0  # operations left after keeping the last one per key, over all batches
        self._lookups(registry)
        self._object_writes(registry, insert)
        self._page_writes(registry, insert)

    # -- statements -------------------------------------------------------------------------
    def _lookups(self, registry: TypeRegistry) -> None:
        users, roles = registry.table("cms.user"), registry.table("cms.role")
        forums = registry.table("forums.forum")
        self.lookup: dict[str, sa.Select[Any]] = {
            "cms.user": sa.select(users.c.user_name, sa.null(), users.c.user_id).where(
                users.c.user_name.in_(_in("names"))
            ),
            "cms.role": sa.select(roles.c.role_name, roles.c.site_id, roles.c.role_id).where(
                roles.c.role_name.in_(_in("names")), roles.c.site_id.in_(_in("sites"))
            ),
            "forums.forum": sa.select(
                forums.c.forum_name, forums.c.site_id, forums.c.forum_id
            ).where(forums.c.forum_name.in_(_in("names")), forums.c.site_id.in_(_in("sites"))),
        }
        tree = tree_table
        self.nodes = sa.select(
            tree.c.node_site_id,
            tree.c.node_guid,
            tree.c.node_id,
            tree.c.node_alias_path,
            tree.c.node_level,
        ).where(tree.c.node_guid.in_(_in("guids")), tree.c.node_site_id.in_(_in("sites")))

    def _object_writes(self, registry: TypeRegistry, insert: Any) -> None:
        posts, members = registry.table("forums.forumpost"), registry.table("cms.userrole")
        ins = insert(posts)
        self.upsert_posts = ins.on_conflict_do_update(
            index_elements=[posts.c.post_guid],
            set_={
                c: ins.excluded[c]
                for c in ("forum_id", "post_user_id", "post_subject", "post_text")
            },
        )
        self.delete_posts = posts.delete().where(posts.c.post_guid.in_(_in("guids")))
        self.upsert_members = insert(members).on_conflict_do_nothing(
            index_elements=[members.c.user_id, members.c.role_id]
        )
        self.delete_members = members.delete().where(
            members.c.user_id == _bp("u"), members.c.role_id == _bp("r")
        )

    def _page_writes(self, registry: TypeRegistry, insert: Any) -> None:
        articles = registry.page_table("cms.article")
        assert articles is not None
        tree, docs = tree_table, document_table
        self.insert_nodes = tree.insert().returning(
            tree.c.node_site_id, tree.c.node_guid, tree.c.node_id
        )
        ins = insert(docs)
        self.upsert_docs = ins.on_conflict_do_update(
            index_elements=[docs.c.document_node_id, docs.c.document_culture],
            set_={
                "document_name": ins.excluded.document_name,
                "modified_at": ins.excluded.modified_at,
            },
        ).returning(docs.c.document_node_id, docs.c.document_culture, docs.c.document_id)
        ins = insert(articles)
        fields = ("article_title", "article_summary", "article_text")
        self.upsert_articles = ins.on_conflict_do_update(
            index_elements=[articles.c.document_id], set_={f: ins.excluded[f] for f in fields}
        )
        self.delete_docs = docs.delete().where(
            docs.c.document_node_id == _bp("n"), docs.c.document_culture == _bp("l")
        )
        has_docs = sa.exists().where(docs.c.document_node_id == tree.c.node_id)
        self.delete_empty_nodes = tree.delete().where(tree.c.node_id.in_(_in("ids")), ~has_docs)

    # -- one batch ----------------------------------------------------------------------------
    def apply_batch(self, conn: sa.Connection, rows: Sequence[Any]) -> None:
        """Apply the batch's queued rows (in queue order) on ``conn``; the caller commits."""
        tasks = [_Task(row.task_type, row.site_name, row.data) for row in rows]
        ids = self._translate(conn, tasks)
        nodes = self._nodes(conn, tasks)
        posts: dict[str, dict[str, Any] | None] = {}
        members: dict[tuple[int, int], bool] = {}
        pages: dict[PageKey, PageWrite | None] = {}
        for t in tasks:  # later operations on a key replace earlier ones
            if t.page is not None:
                site_id = self.sites[str(t.site_name)]
                key = (site_id, str(t.page["node_guid"]).lower(), str(t.page["culture"]))
                pages[key] = None if t.delete else (t.page, t.refs)
            elif t.type == "forums.forumpost":
                row = t.data
                if t.delete:
                    posts[row["post_guid"]] = None
                else:
                    values = dict(row)
                    values["forum_id"] = self._id(ids, t, "forums.forum", row["forum_id"])
                    values["post_user_id"] = self._id(ids, t, "cms.user", row["post_user_id"])
                    posts[row["post_guid"]] = values
            elif t.type == "cms.userrole":
                user = self._id(ids, t, "cms.user", t.data["user_id"])
                role = self._id(ids, t, "cms.role", t.data["role_id"])
                members[(user, role)] = not t.delete
            else:
                raise RawApplyError(f"the set-wise floor does not handle {t.type!r}")
        self.writes += len(posts) + len(members) + len(pages)
        self._write_objects(conn, posts, members)
        self._write_pages(conn, pages, nodes)

    def _translate(self, conn: sa.Connection, tasks: list[_Task]) -> dict[str, dict[Key, int]]:
        """One lookup per referenced type: code name (and site) -> internal id."""
        wanted: dict[str, set[Key]] = {typ: set() for typ in _SCOPED}
        for t in tasks:
            for rec in t.refs.values():
                if rec["t"] in wanted:
                    wanted[rec["t"]].add(self._key(rec))
        found: dict[str, dict[Key, int]] = {}
        for typ, keys in wanted.items():
            if not keys:
                continue
            params: dict[str, Any] = {"names": sorted({c for c, _ in keys})}
            if _SCOPED[typ]:
                params["sites"] = sorted({s for _, s in keys if s is not None})
            rows = conn.execute(self.lookup[typ], params)
            found[typ] = {(str(c), None if s is None else int(s)): int(i) for c, s, i in rows}
        return found

    def _key(self, rec: dict[str, Any]) -> Key:
        return str(rec["c"]), self.sites[rec["s"]] if _SCOPED[rec["t"]] else None

    def _id(self, ids: dict[str, dict[Key, int]], t: _Task, typ: str, ext: Any) -> int:
        """The internal id of the object the task references as ``ext`` (external id)."""
        rec = t.refs.get((typ, ext))
        if rec is None:
            raise RawApplyError(f"no translation record for {typ} {ext!r}")
        found = ids.get(typ, {}).get(self._key(rec))
        if found is None:
            raise RawApplyError(f"cannot translate {typ} {rec['c']!r}")
        return found

    def _nodes(self, conn: sa.Connection, tasks: list[_Task]) -> dict[NodeKey, Any]:
        """The batch's page nodes and their parents' nodes, in one lookup by GUID."""
        wanted: set[NodeKey] = set()
        for t in tasks:
            if t.page is None:
                continue
            site_id = self.sites[str(t.site_name)]
            wanted.add((site_id, str(t.page["node_guid"]).lower()))
            rec = t.refs.get(("#page", t.page["parent_id"]))
            if rec is not None:
                wanted.add((self.sites[rec["s"]], str(rec["c"])))
        if not wanted:
            return {}
        params = {"guids": sorted({g for _, g in wanted}), "sites": sorted({s for s, _ in wanted})}
        return {
            (int(r.node_site_id), str(r.node_guid)): r for r in conn.execute(self.nodes, params)
        }

    def _write_objects(
        self,
        conn: sa.Connection,
        posts: dict[str, dict[str, Any] | None],
        members: dict[tuple[int, int], bool],
    ) -> None:
        gone = [guid for guid, values in posts.items() if values is None]
        if gone:
            conn.execute(self.delete_posts, {"guids": gone})
        kept = [values for values in posts.values() if values is not None]
        if kept:
            conn.execute(self.upsert_posts, kept)
        gone_pairs = [{"u": u, "r": r} for (u, r), keep in members.items() if not keep]
        if gone_pairs:
            conn.execute(self.delete_members, gone_pairs)
        kept_pairs = [{"user_id": u, "role_id": r} for (u, r), keep in members.items() if keep]
        if kept_pairs:
            conn.execute(self.upsert_members, kept_pairs)

    def _write_pages(
        self,
        conn: sa.Connection,
        pages: dict[PageKey, PageWrite | None],
        nodes: dict[NodeKey, Any],
    ) -> None:
        upserts = {key: write for key, write in pages.items() if write is not None}
        if upserts:
            self._upsert_pages(conn, upserts, nodes)
        # After the upserts: a node keeps a document another culture's upsert just wrote.
        gone = [
            (nodes[(site_id, guid)].node_id, culture)
            for (site_id, guid, culture), write in pages.items()
            if write is None and (site_id, guid) in nodes
        ]
        if gone:
            conn.execute(self.delete_docs, [{"n": n, "l": culture} for n, culture in gone])
            conn.execute(self.delete_empty_nodes, {"ids": sorted({n for n, _ in gone})})

    def _upsert_pages(
        self, conn: sa.Connection, upserts: dict[PageKey, PageWrite], nodes: dict[NodeKey, Any]
    ) -> None:
        """New nodes (one INSERT ... RETURNING), then documents (one upsert ... RETURNING),
        then the article rows (one executemany)."""
        node_ids = {key: int(row.node_id) for key, row in nodes.items()}
        new: dict[NodeKey, dict[str, Any]] = {}
        for (site_id, guid, _), (page, refs) in upserts.items():
            if (site_id, guid) in node_ids or (site_id, guid) in new:
                continue
            rec = refs.get(("#page", page["parent_id"]))
            if rec is None:
                raise RawApplyError(f"no translation record for page {page['parent_id']!r}")
            parent = nodes.get((self.sites[rec["s"]], str(rec["c"])))
            if parent is None:  # a parent created in the same batch is not looked for
                raise RawApplyError(f"cannot translate parent page {rec['c']!r}")
            base = "" if parent.node_alias_path == "/" else parent.node_alias_path
            new[(site_id, guid)] = {
                "node_guid": guid,
                "node_alias": page["alias"],
                "node_alias_path": f"{base}/{page['alias']}",
                "node_parent_id": parent.node_id,
                "node_class_name": page["class_name"],
                "node_site_id": site_id,
                "node_level": parent.node_level + 1,
            }
        if new:
            for site_id, guid, node_id in conn.execute(self.insert_nodes, list(new.values())):
                node_ids[(int(site_id), str(guid))] = int(node_id)
        now = dt.datetime.now(dt.UTC)
        docs = [
            {
                "document_node_id": node_ids[(site_id, guid)],
                "document_culture": culture,
                "document_name": page["name"],
                "published": True,
                "archived": False,
                "modified_at": now,
            }
            for (site_id, guid, culture), (page, _) in upserts.items()
        ]
        doc_ids = {(int(n), str(c)): int(d) for n, c, d in conn.execute(self.upsert_docs, docs)}
        conn.execute(
            self.upsert_articles,
            [
                {"document_id": doc_ids[(node_ids[(site_id, guid)], culture)], **page["fields"]}
                for (site_id, guid, culture), (page, _) in upserts.items()
            ],
        )


class _Task:
    """One queued row, decoded: what it writes, and its translation records by (type, id)."""

    __slots__ = ("data", "delete", "page", "refs", "site_name", "type")

    def __init__(self, task_type: str, site_name: str | None, data: str) -> None:
        body = json.loads(data)
        self.site_name = site_name
        self.delete = task_type in _DELETES
        self.refs: Refs = {(r["t"], r["id"]): r for r in body.get("tr", ())}
        self.page: dict[str, Any] | None = body.get("page")
        obj = body.get("object") or {}
        self.type: str = "page" if self.page is not None else obj["type"]
        self.data: dict[str, Any] = obj.get("data", {})


def setwise_process(
    engine: sa.Engine, applier: SetwiseApplier, batch_size: int, progress: Callable[[int], None]
) -> tuple[float, int]:
    """Drain the queue copy in order, ``batch_size`` tasks per transaction, each batch set-wise:
    one read, the lookups, the grouped writes, one delete of its queue rows, one commit.
    (seconds, applied)"""
    q = queue_copy
    read = (
        sa.select(q.c.id, q.c.task_type, q.c.site_name, q.c.data)
        .where(q.c.id > _bp("after"))
        .order_by(q.c.id)
        .limit(batch_size)
    )
    remove = q.delete().where(q.c.id <= _bp("upto"))
    after, applied = 0, 0
    start = time.perf_counter()
    while True:
        with engine.begin() as conn:
            rows = conn.execute(read, {"after": after}).all()
            if not rows:
                break
            applier.apply_batch(conn, rows)
            conn.execute(remove, {"upto": rows[-1].id})
        after = rows[-1].id
        applied += len(rows)
        progress(applied)
    return time.perf_counter() - start, applied
