"""Applying one decoded task to the content repository (no queue bookkeeping here)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from syncbus.content.caches import PageCache, TargetCache
from syncbus.content.objects import ObjectStore
from syncbus.content.pages import PageEffect, PageStore
from syncbus.content.paths import make_alias
from syncbus.content.registry import TypeRegistry
from syncbus.content.tables import BUILTIN_TABLES
from syncbus.content.types import ObjectType
from syncbus.enums import TaskDataType, TaskType, task_handlers
from syncbus.errors import (
    ContentError,
    PageNotFoundError,
    SiteNotFoundError,
    SyncBusError,
    TranslationError,
)
from syncbus.model import InternalObject, Page
from syncbus.payload import PAGE_RECORD, Payload, id_key
from syncbus.store.db import MAX_ID
from syncbus.store.logs import write_event
from syncbus.translation import Resolver

_site_table = BUILTIN_TABLES["cms.site"]
_site_type = "cms.site"


@dataclass(slots=True)
class _ObjectTask:
    """What an object task's handler works with."""

    task_type: TaskType
    data_type: TaskDataType
    ot: ObjectType
    row: dict[str, Any]
    site_id: int | None
    payload: Payload
    resolver: Resolver
    task_site: str | None
    targets: TargetCache | None
    changes: dict[str, list[Any]] | None = None


class Applier:
    """Turns a task's payload into content changes, translating foreign keys on the way."""

    def __init__(self, registry: TypeRegistry, objects: ObjectStore, pages: PageStore) -> None:
        self.registry = registry
        self.objects = objects
        self.pages = pages
        self._handlers: dict[TaskType, Callable[[sa.Connection, _ObjectTask], None]] = (
            task_handlers(self, document=False)
        )

    @staticmethod
    def site_ids(conn: sa.Connection) -> dict[str, int]:
        stmt = sa.select(_site_table.c.site_name, _site_table.c.site_id)
        return {str(name): int(sid) for name, sid in conn.execute(stmt)}

    def apply(
        self,
        conn: sa.Connection,
        row: sa.Row[Any],
        payload: Payload,
        resolver: Resolver,
        sites: dict[str, int],
        targets: TargetCache | None = None,
        changes: dict[str, list[Any]] | None = None,
    ) -> None:
        """Apply the task. With ``changes`` (history on), fill it with ``{column: [old,
        new]}`` of what the task changed in its object (a page: its document's name and
        fields)."""
        task_type = TaskType.parse(row.task_type)
        data_type = TaskDataType.parse(row.data_type)
        site_id: int | None = None
        if row.site_name:
            site_id = sites.get(row.site_name)
            if site_id is None:
                raise SiteNotFoundError(f"site {row.site_name!r} of the task no longer exists")
        if payload.page is not None:
            if not task_type.is_document:
                raise ContentError(f"task type {task_type.value} needs an object, not a page")
            if site_id is None:
                raise SiteNotFoundError("a page task needs a site")
            pages = targets.pages if targets is not None else None
            effect = self._apply_page(
                conn,
                task_type,
                data_type,
                site_id,
                payload,
                resolver,
                row.site_name,
                pages,
                changes,
            )
            if effect.subtree is not None:  # pages the task did not name went too: say so
                path, below = effect.subtree
                shown = ", ".join(repr(p) for p in below[:5]) + (" ..." if len(below) > 5 else "")
                write_event(
                    conn,
                    "Integration",
                    "DELETESUBTREE",
                    f"task {row.task_id} ({task_type.value}) deleted page {path!r} on site "
                    f"{row.site_name!r}, and with it the {len(below)} pages below it: {shown}",
                    "W",
                )
            return
        if payload.obj is None or task_type.is_document:
            raise ContentError(f"task type {task_type.value} needs a page, not an object")
        self._apply_object(
            conn, task_type, data_type, site_id, payload, resolver, row.site_name, targets, changes
        )

    def prefetch_targets(
        self,
        conn: sa.Connection,
        tasks: list[tuple[Any, Payload]],
        resolver: Resolver,
        sites: dict[str, int],
        rows: bool = False,
    ) -> TargetCache:
        """Look up, set-wise, the objects a batch's tasks will write (with ``rows``, their
        whole rows: what a task changes is then known without a query of its own)."""
        targets = TargetCache(rows)
        wanted = []
        children: list[tuple[ObjectType, dict[str, Any], int | None]] = []
        pages: list[tuple[int, str, str]] = []
        parents: list[int] = []
        places: list[tuple[int, str | None, int, str]] = []
        for row, payload in tasks:
            if (page := payload.page) is not None:
                site_id = sites.get(row.site_name) if row.site_name else None
                guid = None if page.node_guid is None else str(page.node_guid)
                if site_id is not None and guid is not None:
                    pages.append((site_id, guid, page.culture))
                parent = self._parent_id(row, payload, resolver)
                if parent is not None:
                    parents.append(parent)
                    if site_id is not None:
                        places.append((site_id, guid, parent, page.alias or make_alias(page.name)))
                continue
            if payload.obj is None:
                continue
            try:
                ot = self.registry.object_type(payload.obj.object_type)
                data_type = TaskDataType.parse(row.data_type)
                values = self.translate(
                    ot, payload.obj, data_type, payload, resolver, row.site_name
                )
            except Exception:  # the task will fail when applied, with its own error
                continue
            targets.translations[id(payload.obj)] = (resolver.generation, dict(values))
            site_id = sites.get(row.site_name) if row.site_name else None
            if ot.site_column:
                values[ot.site_column] = site_id
            wanted.append((ot, values, site_id if ot.site_column else None))
            if data_type is TaskDataType.SNAPSHOT and payload.obj.children:
                children.extend(self._children_to_lock(payload.obj, site_id))
        targets.prefetch(conn, self.registry, wanted, children)
        if pages or parents:
            targets.pages.prefetch(conn, pages, parents, places)
        return targets

    def _children_to_lock(
        self, obj: InternalObject, site_id: int | None
    ) -> Iterator[tuple[ObjectType, dict[str, Any], int | None]]:
        """A SNAPSHOT's children (and theirs): locked with the batch's targets by code name
        or GUID, not looked up (``TargetCache.prefetch``)."""
        stack = list(obj.children)
        while stack:
            child = stack.pop()
            stack.extend(child.children)
            try:
                ct = self.registry.object_type(child.object_type)
            except SyncBusError:
                continue
            yield ct, dict(child.data), site_id if ct.site_column else None

    def unknown_references(self, conn: sa.Connection, row: Any, payload: Payload) -> str | None:
        """After a task failed on a foreign key: which of its object's reference columns
        hold an id no object has (read now, in the task's transaction), and, for a ``SIMPLE``
        task, that its ids are taken as internal ids; None when that cannot be told."""
        obj = payload.obj
        if obj is None:
            return None
        try:
            ot = self.registry.object_type(obj.object_type)
            simple = TaskDataType.parse(row.data_type) is TaskDataType.SIMPLE
        except (SyncBusError, ValueError):
            return None
        if not simple:
            return None  # its ids were translated: the object they named went meanwhile
        missing = []
        for column, target in ot.references().items():
            value = obj.data.get(column)
            if value is None or isinstance(value, bool) or not isinstance(value, int | str):
                continue
            try:
                with conn.begin_nested():  # a value its column refuses must not end the batch
                    found = self.objects.exists(conn, self.registry.object_type(target), value)
            except (SyncBusError, sa.exc.SQLAlchemyError):
                return None
            if not found:
                missing.append(f"{column} = {value!r} (no {target} has that id)")
        if not missing:
            return None
        return (
            f"{', '.join(missing)}: a Simple task's reference columns hold internal ids as "
            "given; to have the connector translate the external system's ids, log the task "
            "as SimpleSnapshot (or Snapshot)"
        )

    @staticmethod
    def _parent_id(row: Any, payload: Payload, resolver: Resolver) -> int | None:
        """The node id of a page task's parent where the batch's lookups already tell it
        (prefetched with the batch's nodes), else None: the task looks it up itself."""
        if payload.page is None or payload.page.parent_id is None:
            return None
        try:
            data_type = TaskDataType.parse(row.data_type)
            _, found = Applier._parent_ref(payload, data_type, resolver, row.site_name)
        except Exception:  # the task will fail when applied, with its own error
            return None
        # An id no node can have (out of a BIGINT's range) is left to the task to refuse.
        return int(found) if found is not None and 0 < int(found) <= MAX_ID else None

    @staticmethod
    def _parent_ref(
        payload: Payload, data_type: TaskDataType, resolver: Resolver, task_site: str | None
    ) -> tuple[int | None, int | None]:
        """A page task's parent (it has a ``parent_id``): the index of its translation record
        (None under SIMPLE, where the id is the node's own) and the node id it stands for."""
        assert payload.page is not None and payload.page.parent_id is not None
        if data_type is TaskDataType.SIMPLE:
            return None, int(payload.page.parent_id)
        i = payload.record_index().get(id_key(PAGE_RECORD, payload.page.parent_id))
        return i, None if i is None else resolver.resolve(payload, i, task_site)

    # -- objects ----------------------------------------------------------------------------
    def translate(
        self,
        ot: ObjectType,
        obj: InternalObject,
        data_type: TaskDataType,
        payload: Payload,
        resolver: Resolver,
        task_site: str | None,
    ) -> dict[str, Any]:
        """The object's row with external ids replaced by internal ids (snapshot types)."""
        row = dict(obj.data)
        if data_type is TaskDataType.SIMPLE:
            return row
        index = payload.record_index()
        missing: list[str] = []
        awaited: list[Any] | None = []  # None: some reference has no record to wait for
        for col, target in ot.references().items():
            value = row.get(col)
            if value is None:
                continue
            i = index.get(id_key(target, value))
            internal = None if i is None else resolver.resolve(payload, i, task_site)
            if internal is None:
                missing.append(self._describe_missing(col, target, value, payload, i))
                awaited = None if i is None or awaited is None else [*awaited, payload.records[i]]
            else:
                row[col] = internal
        if missing:
            raise TranslationError(
                f"Cannot translate columns {', '.join(m.split(' ')[0] for m in missing)} "
                f"of {ot.name}: {'; '.join(missing)}. Import the dependent objects first.",
                tuple(awaited or ()),
            )
        return row

    @staticmethod
    def _describe_missing(
        col: str, target: str, value: Any, payload: Payload, index: int | None
    ) -> str:
        if index is None:
            return f"{col} (external id {value!r}: no translation record in the task)"
        rec = payload.records[index]
        where = f" on site {rec.site_name!r}" if rec.site_name else ""
        return f"{col} ({target} {rec.code_name!r}{where}, external id {value!r}, not found)"

    def _apply_object(
        self,
        conn: sa.Connection,
        task_type: TaskType,
        data_type: TaskDataType,
        site_id: int | None,
        payload: Payload,
        resolver: Resolver,
        task_site: str | None,
        targets: TargetCache | None,
        changes: dict[str, list[Any]] | None = None,
    ) -> None:
        assert payload.obj is not None
        ot = self.registry.object_type(payload.obj.object_type)
        if ot.site_column and site_id is None:
            raise SiteNotFoundError(f"{ot.name} objects belong to a site; the task names none")
        row = None if targets is None else targets.translated(payload.obj, resolver.generation)
        if row is None:
            try:
                row = self.translate(ot, payload.obj, data_type, payload, resolver, task_site)
            except TranslationError as exc:
                exc.before_writes = True  # nothing of the task is written yet
                raise
        handler = self._handlers.get(task_type)
        if handler is None:
            raise ContentError(f"task type {task_type.value} does not apply to objects")
        handler(
            conn,
            _ObjectTask(
                task_type,
                data_type,
                ot,
                row,
                site_id,
                payload,
                resolver,
                task_site,
                targets,
                changes,
            ),
        )

    # One per object task type (enums.TASK_TYPES names them).
    def _upsert_object(self, conn: sa.Connection, t: _ObjectTask) -> None:
        oid = self.objects.upsert(conn, t.ot, t.row, t.site_id, t.targets, t.changes)
        t.resolver.learn(t.ot, t.row, t.site_id, oid)
        if t.data_type is TaskDataType.SNAPSHOT:
            self._apply_children(conn, t, oid)

    def _delete_object(self, conn: sa.Connection, t: _ObjectTask) -> None:
        ot, targets = t.ot, t.targets
        if not self.objects.delete(conn, ot, t.row, t.site_id, targets, t.changes):
            return
        gone = self.registry.dependents(ot.name)
        t.resolver.forget(gone)
        if ot.name == _site_type:  # its page tree goes with it
            t.resolver.forget_pages()
            if targets is not None:
                targets.pages.clear()
        if targets is not None:  # the deleted row itself is known absent now
            if not self.registry.cascades_to_itself(ot.name):
                gone = gone - {ot.name}
            targets.forget(gone)

    def _add_to_site(self, conn: sa.Connection, t: _ObjectTask) -> None:
        site_id = self._binding_site(t)
        oid = self.objects.upsert(conn, t.ot, t.row, None, t.targets, t.changes)
        t.resolver.learn(t.ot, t.row, None, oid)
        self.objects.bind_site(conn, t.ot, oid, site_id, t.targets)

    def _remove_from_site(self, conn: sa.Connection, t: _ObjectTask) -> None:
        site_id = self._binding_site(t)
        found = self.objects.find_id(conn, t.ot, t.row, None)
        if found is not None:
            self.objects.unbind_site(conn, t.ot, found, site_id, t.targets)

    @staticmethod
    def _binding_site(t: _ObjectTask) -> int:
        if t.site_id is None:
            raise SiteNotFoundError(f"{t.task_type.value} needs the task's site_name")
        return t.site_id

    def _apply_children(self, conn: sa.Connection, t: _ObjectTask, main_id: int) -> None:
        """A SNAPSHOT task's children, each upserted under the task's object. Through the
        batch's target cache, which the writes keep true: a later task of the batch that
        writes one of them must find it (not the absence prefetched before the batch), and
        the values it replaces (its history's old values) are the ones written here."""
        payload, resolver = t.payload, t.resolver
        assert payload.obj is not None
        for child in payload.obj.children:
            ct = self.registry.object_type(child.object_type)
            row = self.translate(ct, child, TaskDataType.SNAPSHOT, payload, resolver, t.task_site)
            if ct.parent_type == t.ot.name and row.get(str(ct.parent_column)) is None:
                row[str(ct.parent_column)] = main_id
            child_site = t.site_id if ct.site_column else None
            oid = self.objects.upsert(conn, ct, row, child_site, t.targets)
            resolver.learn(ct, row, child_site, oid)

    # -- pages ------------------------------------------------------------------------------
    def _apply_page(
        self,
        conn: sa.Connection,
        task_type: TaskType,
        data_type: TaskDataType,
        site_id: int,
        payload: Payload,
        resolver: Resolver,
        task_site: str | None,
        cache: PageCache | None = None,
        changes: dict[str, list[Any]] | None = None,
    ) -> PageEffect:
        page = payload.page
        assert page is not None

        def get_parent() -> dict[str, Any]:
            try:
                return self._parent_node(
                    conn, page, data_type, site_id, payload, resolver, task_site, cache
                )
            except PageNotFoundError as exc:
                exc.before_writes = True  # a page task asks for its parent before it writes
                raise

        effect = self.pages.apply(conn, task_type, site_id, page, get_parent, cache, changes)
        # Node ids change only when nodes come or go; a failed task resets the resolver.
        if effect.subtree_removed:
            resolver.forget_pages()
        elif effect.removed is not None:
            resolver.forget_page(*effect.removed)
        if effect.created:
            resolver.pages_created()
        return effect

    def _parent_node(
        self,
        conn: sa.Connection,
        page: Page,
        data_type: TaskDataType,
        site_id: int,
        payload: Payload,
        resolver: Resolver,
        task_site: str | None,
        cache: PageCache | None = None,
    ) -> dict[str, Any]:
        if page.parent_id is not None:
            i, node_id = self._parent_ref(payload, data_type, resolver, task_site)
            node = None if node_id is None else self.pages.node_by_id(conn, node_id, cache)
            if data_type is TaskDataType.SIMPLE:
                what = f"node id {page.parent_id!r}"
            else:
                rec = None if i is None else payload.records[i]
                what = (
                    f"external id {page.parent_id!r}"
                    if rec is None
                    else f"node GUID {rec.code_name}, site {rec.site_name or task_site!r}, "
                    f"external id {page.parent_id!r}"
                )
            if node is None or node["node_site_id"] != site_id:
                simple = data_type is TaskDataType.SIMPLE
                advice = (
                    " A Simple task's parent_id is the parent's internal node id as given; to "
                    "have the connector translate the external system's id, log the task as "
                    "SimpleSnapshot."
                    if simple
                    else " Import the parent page first."
                )
                raise PageNotFoundError(
                    f"Cannot translate columns parent_id of page '{page.name}': the parent "
                    f"page ({what}) does not exist on this site.{advice}",
                    () if simple or rec is None else (rec,),
                )
            return node
        if page.parent_path and page.parent_path.strip("/ "):
            node = self.pages.node_by_path(conn, site_id, page.parent_path)
            if node is None:
                raise PageNotFoundError(
                    f"the parent page {page.parent_path!r} of '{page.name}' does not exist"
                )
            return node
        return self.pages.root(conn, site_id)
