"""The caches a batch keeps of what it writes, looked up set-wise before it is applied.

``TargetCache``: ids of the objects a batch writes. Without it every upsert first SELECTs its
object by identity (one round trip per task); with it the batch's identities are fetched with
one query per object type, and each task goes straight to its UPDATE or INSERT. The cache
stays true within the batch: inserts add their id, deletes mark their row absent and drop the
other types that cascade from them.

``PageCache`` (``TargetCache.pages``): the batch's page nodes and documents, the same way.

With history on (``TargetCache(rows=True)``), both also keep what the batch's targets hold (an
object's whole row; a document's name and page fields), fetched by the same set-wise queries and
kept true by the writes, so what a task changes is known without a query of its own.

(The translation of foreign keys has its own batch cache: ``translation.Resolver``.)
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from typing import Any

import sqlalchemy as sa

from syncbus.content.coerce import coerce_row
from syncbus.content.paths import join_path, normalize_path
from syncbus.content.registry import TypeRegistry
from syncbus.content.tables import document_table as docs
from syncbus.content.tables import tree_table as tree
from syncbus.content.types import ObjectType
from syncbus.content.writes import WriteBehind
from syncbus.store.db import IN_CHUNK
from syncbus.store.dialect import Dialect, dialect_of, prebuilt

TargetKey = tuple[str, tuple[Any, ...], int | None]
# A batch holds a lock per object it may write (see ``TargetCache.hold``) up to this many; a
# larger batch holds its object types whole instead (the server's lock table is finite).
MAX_OBJECT_LOCKS = 256
# In ``PageCache.contents``: whether the document has a row in its fields table.
FIELDS_ROW = "syncbus:fields-row"


def target_key(ot: ObjectType, values: Mapping[str, Any], site_id: int | None) -> TargetKey | None:
    """The exact identity of an object row, or None when it cannot be cached (an identity
    column left out means "any value", which only a query answers)."""
    parts = []
    for col in ot.identity_columns():
        value = values.get(col)
        if value is None:
            return None
        parts.append(value)
    return ot.name, tuple(parts), site_id if ot.site_column and not ot.is_binding else None


def lock_key(*parts: Any) -> int:
    """A 64-bit lock key for an identity (the same from every process: not ``hash``)."""
    text = json.dumps(parts, default=str, separators=(",", ":"), sort_keys=True)
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class PageCache:
    """Nodes by (site, node GUID) and document ids by (node, culture), looked up set-wise for
    a batch (None: known to be absent). Writes keep it true; deletes and moves, which can
    change a whole subtree, empty it."""

    def __init__(self, contents: bool = False) -> None:
        self.nodes: dict[tuple[int, str], dict[str, Any] | None] = {}
        self.documents: dict[tuple[int, str], int | None] = {}
        # With ``contents`` (history on): by document id, its name and page fields as stored
        # (a column missing from an entry is not known: ask the database).
        self.keep_contents = contents
        self.contents: dict[int, dict[str, Any]] = {}
        self.loaded: set[int] = set()  # documents whose contents were fetched (or tried)
        self.writes: WriteBehind | None = None  # the batch's held-back updates (writes.py)
        # Each object task's translated row as the prefetch made it (by ``id`` of the task's
        # object), with the resolver's generation then: still true while that has not moved.
        self.translations: dict[int, tuple[int, dict[str, Any]]] = {}
        # Nodes looked up by id (a page's parent), None: known to be absent.
        self.by_id: dict[int, dict[str, Any] | None] = {}
        # Nodes by (site, alias path), None: no node there (a new page's place is free).
        self.paths: dict[tuple[int, str], dict[str, Any] | None] = {}

    def clear(self) -> None:
        self.nodes.clear()
        self.documents.clear()
        self.contents.clear()
        self.loaded.clear()
        self.by_id.clear()
        self.paths.clear()

    def forget_node(self, node: dict[str, Any]) -> None:
        """A leaf node went, with its documents."""
        node_id = int(node["node_id"])
        self.nodes[(int(node["node_site_id"]), str(node["node_guid"]))] = None
        self.by_id[node_id] = None
        self.paths[(int(node["node_site_id"]), normalize_path(str(node["node_alias_path"])))] = None
        for key in [k for k in self.documents if k[0] == node_id]:
            doc_id = self.documents.pop(key)
            if doc_id is not None:
                self.contents.pop(doc_id, None)

    def content(self, doc_id: int, columns: Iterable[str]) -> dict[str, Any] | None:
        """What document ``doc_id`` holds in ``columns``, when all of them are known."""
        known = self.contents.get(doc_id)
        if known is None:
            return None
        try:
            return {c: known[c] for c in columns}
        except KeyError:
            return None

    def has_fields_row(self, doc_id: int) -> bool:
        """Whether the document is known to have a row in its page type's fields table."""
        return bool(self.contents.get(doc_id, {}).get(FIELDS_ROW))

    def wrote(
        self,
        doc_id: int,
        values: Mapping[str, Any],
        string_columns: AbstractSet[str],
        fields_row: bool = False,
    ) -> None:
        """Document ``doc_id`` was written with ``values`` (``fields_row``: a row of its
        fields table was inserted): keep what it now holds where the value reads back exactly
        as written (text in a text column, or NULL); forget the others."""
        if not self.keep_contents:
            return
        known = self.contents.setdefault(doc_id, {})
        if fields_row:
            known[FIELDS_ROW] = True
        for col, value in values.items():
            if value is None or (isinstance(value, str) and col in string_columns):
                known[col] = value
            else:
                known.pop(col, None)

    def load_contents(
        self, conn: sa.Connection, doc_id: int, class_name: str, table: sa.Table | None
    ) -> None:
        """Fetch the name and page fields of document ``doc_id`` and, in the same query, of
        the batch's other documents of nodes of page type ``class_name`` (lower case, as nodes
        store it) not fetched yet. Read in the batch's transaction, they include what its
        earlier tasks wrote."""
        nodes = {
            int(n["node_id"])
            for n in self.nodes.values()
            if n is not None and n["node_class_name"] == class_name
        }
        ids = sorted(
            other
            for (node_id, _), other in self.documents.items()
            if other is not None and node_id in nodes and other not in self.loaded
        )
        if doc_id not in self.loaded and doc_id not in ids:
            ids.append(doc_id)
        self.loaded.update(ids)
        cols: list[Any] = [docs.c.document_id, docs.c.document_name]
        names = ["document_name"]
        base: Any = docs
        if table is not None:
            fields = [c for c in table.c if c.name not in ("document_id", "document_name")]
            cols += [*fields, table.c.document_id.is_not(None)]
            names += [*(c.name for c in fields), FIELDS_ROW]
            base = docs.outerjoin(table, table.c.document_id == docs.c.document_id)
        dialect = dialect_of(conn)
        stmt = prebuilt(
            docs if table is None else table,
            ("contents", dialect.name),
            lambda: (
                sa.select(*cols).select_from(base).where(dialect.any_of(docs.c.document_id, "ids"))
            ),
        )
        for start in range(0, len(ids), IN_CHUNK):
            args = dialect.any_of_args(docs.c.document_id, "ids", ids[start : start + IN_CHUNK])
            for row in conn.execute(stmt, args):
                self.contents[int(row[0])] = dict(zip(names, row[1:], strict=True))

    def prefetch(
        self,
        conn: sa.Connection,
        wanted: list[tuple[int, str, str]],
        parents: Iterable[int] = (),
        places: Iterable[tuple[int, str | None, int, str]] = (),
    ) -> None:
        """Fetch the nodes and documents of ``(site_id, node GUID, culture)`` triples, the
        nodes with the ids in ``parents`` (the batch's pages' parents), and what is at the
        places ``(site_id, node GUID or None, parent node id, alias)`` of pages whose node is
        not known by its GUID (where a new page would go)."""
        dialect = dialect_of(conn)
        keys = {(site, guid.lower()) for site, guid, _ in wanted} - self.nodes.keys()
        guids = sorted({guid for _, guid in keys})
        stmt = _by_any(dialect, tree.c.node_guid)
        for start in range(0, len(guids), IN_CHUNK):
            args = dialect.any_of_args(tree.c.node_guid, "in", guids[start : start + IN_CHUNK])
            for row in conn.execute(stmt, args).mappings():
                key = (int(row["node_site_id"]), str(row["node_guid"]))
                if key in keys:
                    found = self.nodes[key] = dict(row)
                    self.by_id.setdefault(int(found["node_id"]), found)
        for key in keys:
            self.nodes.setdefault(key, None)
        self._prefetch_by_id(conn, parents)
        self._prefetch_paths(conn, places)
        docs_wanted: set[tuple[int, str]] = set()
        for site, guid, culture in wanted:
            node = self.nodes.get((site, guid.lower()))
            if node is not None:
                docs_wanted.add((int(node["node_id"]), culture))
        docs_wanted -= self.documents.keys()
        node_ids = sorted({node_id for node_id, _ in docs_wanted})
        stmt = prebuilt(
            docs,
            ("documents", dialect.name),
            lambda: sa.select(
                docs.c.document_id, docs.c.document_node_id, docs.c.document_culture
            ).where(dialect.any_of(docs.c.document_node_id, "in")),
        )
        for start in range(0, len(node_ids), IN_CHUNK):
            chunk = node_ids[start : start + IN_CHUNK]
            args = dialect.any_of_args(docs.c.document_node_id, "in", chunk)
            for doc_id, node_id, culture in conn.execute(stmt, args):
                key = (int(node_id), str(culture))
                if key in docs_wanted:
                    self.documents[key] = int(doc_id)
        for key in docs_wanted:
            self.documents.setdefault(key, None)

    def _prefetch_by_id(self, conn: sa.Connection, node_ids: Iterable[int]) -> None:
        dialect = dialect_of(conn)
        ids = sorted(set(node_ids) - self.by_id.keys())
        stmt = _by_any(dialect, tree.c.node_id)
        for start in range(0, len(ids), IN_CHUNK):
            args = dialect.any_of_args(tree.c.node_id, "in", ids[start : start + IN_CHUNK])
            for row in conn.execute(stmt, args).mappings():
                self.by_id[int(row["node_id"])] = dict(row)
        for node_id in ids:
            self.by_id.setdefault(node_id, None)

    def _prefetch_paths(
        self, conn: sa.Connection, places: Iterable[tuple[int, str | None, int, str]]
    ) -> None:
        wanted: set[tuple[int, str]] = set()
        for site, guid, parent_id, alias in places:
            parent = self.by_id.get(parent_id)
            if parent is None or (guid is not None and self.nodes.get((site, guid.lower()))):
                continue
            wanted.add((site, normalize_path(join_path(parent["node_alias_path"], alias))))
        keys = sorted(wanted - self.paths.keys())
        dialect = dialect_of(conn)
        stmt = _by_any(dialect, _PLACE)
        for start in range(0, len(keys), IN_CHUNK):
            args = dialect.any_of_args(_PLACE, "in", keys[start : start + IN_CHUNK])
            for row in conn.execute(stmt, args).mappings():
                self.paths[(int(row["node_site_id"]), str(row["node_alias_path"]))] = dict(row)
        for key in keys:
            self.paths.setdefault(key, None)


# Where a new page would go: its site and alias path.
_PLACE = sa.tuple_(tree.c.node_site_id, tree.c.node_alias_path)


def _by_any(dialect: Dialect, column: Any) -> Any:
    """``SELECT`` of whole tree rows whose ``column`` is one of the ``in`` values."""
    key = ("nodes", dialect.name, str(column))
    return prebuilt(tree, key, lambda: sa.select(tree).where(dialect.any_of(column, "in")))


class TargetCache:
    """Known ids (None: known to be absent) of target objects, by exact identity; and the
    batch's page nodes and documents."""

    def __init__(self, rows: bool = False) -> None:
        self.ids: dict[TargetKey, int | None] = {}
        self.pages = PageCache(contents=rows)
        # With ``rows`` (history on), the whole row of each target is fetched too, so what a
        # task changes is computed without a query of its own (CONTRACT §10).
        self.keep_rows = rows
        self.rows: dict[TargetKey, dict[str, Any]] = {}
        self.writes: WriteBehind | None = None  # the batch's held-back updates (writes.py)
        # Each object task's translated row as the prefetch made it (by ``id`` of the task's
        # object), with the resolver's generation then: still true while that has not moved.
        self.translations: dict[int, tuple[int, dict[str, Any]]] = {}

    def hold_writes(self, writes: WriteBehind | None) -> None:
        """Let the batch's UPDATEs of objects and documents be held back and sent grouped."""
        self.writes = self.pages.writes = writes

    def translated(self, obj: Any, generation: int) -> dict[str, Any] | None:
        """A copy of the row the prefetch translated for ``obj`` if nothing it resolved has
        changed since (the resolver is at the same ``generation``), else None."""
        known = self.translations.get(id(obj))
        if known is None or known[0] != generation:
            return None
        return dict(known[1])

    def clear(self) -> None:
        """Forget everything (after a rolled-back task: what it wrote is gone again)."""
        self.translations.clear()
        self.ids.clear()
        self.rows.clear()
        self.pages.clear()

    def row(self, key: TargetKey | None) -> dict[str, Any] | None:
        """The prefetched (and since updated) row of an object known to exist, or None."""
        return None if key is None else self.rows.get(key)

    def forget_row(self, key: TargetKey | None) -> None:
        """What the batch knew of this object's row no longer holds (it was written)."""
        if key is not None:
            self.rows.pop(key, None)

    def get(self, key: TargetKey | None) -> tuple[bool, int | None]:
        if key is None or key not in self.ids:
            return False, None
        return True, self.ids[key]

    def put(self, key: TargetKey | None, oid: int | None) -> None:
        if key is not None:
            self.ids[key] = oid

    def forget(self, type_names: AbstractSet[str]) -> None:
        if type_names:
            self.ids = {k: v for k, v in self.ids.items() if k[0] not in type_names}
            self.rows = {k: v for k, v in self.rows.items() if k[0] not in type_names}

    def prefetch(
        self,
        conn: sa.Connection,
        registry: TypeRegistry,
        targets: Iterable[tuple[ObjectType, Mapping[str, Any], int | None]],
        also_held: Iterable[tuple[ObjectType, Mapping[str, Any], int | None]] = (),
    ) -> None:
        """Look up every (type, row, site) identity with one query per type, once the
        batch holds them (``hold``); ``also_held``: identities to hold, not look up (a
        SNAPSHOT's children)."""
        wanted: dict[str, dict[TargetKey, ObjectType]] = defaultdict(dict)
        for ot, row, site_id in targets:
            key = target_key(ot, coerce_row(ot, row), site_id)
            if key is not None and key not in self.ids:
                wanted[ot.name][key] = ot
        held: dict[str, dict[TargetKey, ObjectType]] = defaultdict(dict)
        for ot, row, site_id in also_held:  # by code name or GUID (see ``hold``)
            column = ot.key_column
            if ot.is_binding or column is None or row.get(column) is None:
                continue
            try:
                value = coerce_row(ot, {column: row[column]})[column]
            except Exception:  # a value its column refuses: the task says so when applied
                continue
            held[ot.name][(ot.name, (value,), site_id if ot.site_column else None)] = ot
        for name, keys in wanted.items():
            held[name].update(keys)
        self.hold(conn, held)
        for keys in wanted.values():
            ot = next(iter(keys.values()))
            self._fetch(conn, registry, ot, list(keys))

    @staticmethod
    def hold(conn: sa.Connection, wanted: Mapping[str, Mapping[TargetKey, ObjectType]]) -> None:
        """Lock the objects the batch may write until it commits, before they are looked up
        (PostgreSQL, where runs of other connectors overlap). Without it, two runs creating
        one object both found it missing and both inserted it (the identity's index is not
        unique), and two updating it both recorded the same old values. An object is locked
        by its type, code name (or GUID) and site, its parent and group left out, so a
        SNAPSHOT's child, whose parent may not exist yet, is locked the same way as by a
        task of its own (a binding: by its whole identity). Each type is held shared and
        each object exclusively; past ``MAX_OBJECT_LOCKS`` objects, their types
        exclusively. Held in ascending order, types first: a deadlock (still possible with a
        row lock) is retried as any transient error is."""
        if not wanted or not dialect_of(conn).row_locks:
            return
        kinds = [lock_key("type", name) for name in wanted]
        objects = {
            lock_key(*key) if ot.is_binding else lock_key(key[0], key[1][0], key[2])
            for keys in wanted.values()
            for key, ot in keys.items()
        }
        if len(objects) > MAX_OBJECT_LOCKS:
            dialect_of(conn).hold_keys(conn, [], kinds)
        else:
            dialect_of(conn).hold_keys(conn, kinds, sorted(objects))

    def _fetch(
        self, conn: sa.Connection, registry: TypeRegistry, ot: ObjectType, keys: list[TargetKey]
    ) -> None:
        table = registry.table(ot.name)
        ident = ot.identity_columns()
        scope = ot.site_column if ot.site_column and not ot.is_binding else None
        cols = [table.c[ot.id_column], *(table.c[c] for c in ident)]
        if scope:
            cols.append(table.c[scope])
        width = len(cols)
        if self.keep_rows:  # the whole row after the key columns
            cols.extend(table.c)
        # By the whole identity: a binding type's first column alone (e.g. the role of a
        # user-role binding) would match a large share of the table in every batch.
        identity: Any = (
            table.c[ident[0]] if len(ident) == 1 else sa.tuple_(*(table.c[c] for c in ident))
        )
        dialect = dialect_of(conn)
        stmt = prebuilt(
            table,
            ("targets", dialect.name, ot.name, self.keep_rows),
            lambda: sa.select(*cols).where(dialect.any_of(identity, "wanted")),
        )
        wanted = sorted({k[1][0] if len(ident) == 1 else k[1] for k in keys}, key=repr)
        names = table.c.keys()  # a new list on every call: once, not per row
        found: dict[TargetKey, int] = {}
        for start in range(0, len(wanted), IN_CHUNK):
            args = dialect.any_of_args(identity, "wanted", wanted[start : start + IN_CHUNK])
            for row in conn.execute(stmt, args):
                site = row[width - 1] if scope else None
                key = (ot.name, tuple(row[1 : 1 + len(ident)]), site)
                if key not in found or row[0] < found[key]:
                    found[key] = int(row[0])
                    if self.keep_rows:
                        self.rows[key] = dict(zip(names, row[width:], strict=True))
        for key in keys:
            self.ids[key] = found.get(key)
