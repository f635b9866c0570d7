"""The fix hint: a task failed with "Cannot translate columns ...", and the task that would
create the missing reference is queued in the SAME connector, so it cannot run while the failed
task blocks the queue. Until per-entity lanes exist, the operator must synchronize that task
first; this module finds it (read side only, on the bus's reader engine).

The missing references are the failed task's translation records that do not resolve now.
A queued task creates one when it upserts (Create/UpdateObject, Create/UpdateDocument) an
object of the same type and code name or GUID, on the same site for site-bound types (a
``SNAPSHOT``'s children count), or a page with the same node GUID on the same site.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import NamedTuple

import sqlalchemy as sa

from syncbus.applier import Applier
from syncbus.content.registry import TypeRegistry
from syncbus.errors import SyncBusError
from syncbus.model import InternalObject
from syncbus.payload import PAGE_RECORD, Payload, decode
from syncbus.store import reads
from syncbus.translation import Resolver

TRIGGER = "Cannot translate columns"
_UPSERTS = ("CreateObject", "UpdateObject", "CreateDocument", "UpdateDocument")
_MAX_CANDIDATES = 200  # queued tasks decoded per missing reference, at most


class Missing(NamedTuple):
    """A reference the failed task cannot resolve: type (pages: ``#page``), code name or node
    GUID, and the site it must be on (None for global types)."""

    object_type: str
    code: str
    site_name: str | None

    def describe(self, page_name: str | None = None) -> str:
        """What is missing, in words; a page by the name its creating task gives it, when
        known (an operator knows a page by its name, not its node GUID)."""
        where = f" on site {self.site_name!r}" if self.site_name else ""
        if self.object_type != PAGE_RECORD:
            return f"{self.object_type} {self.code!r}{where}"
        named = "" if page_name is None else f" {page_name!r}"
        return f"the page{named} (node GUID {self.code!r}){where}"


def fix_hint(engine: sa.Engine, registry: TypeRegistry, task_id: int) -> str | None:
    """What the operator should synchronize first, or None when nothing queued is the fix."""
    with engine.connect() as conn:
        row = reads.failed_task(conn, task_id)
        if row is None or TRIGGER not in (row.error_message or ""):
            return None
        try:
            payload = decode(row.data)
        except SyncBusError:
            return None
        fixes: dict[int, str] = {}  # creating task: what it creates, in words
        for missing in missing_references(conn, registry, payload, row.site_name):
            creator = queued_creator(conn, registry, int(row.connector_id), task_id, missing)
            if creator is not None:
                fixes.setdefault(creator[0], missing.describe(creator[1]))
    return _sentence(task_id, fixes) if fixes else None


def _sentence(task_id: int, fixes: dict[int, str]) -> str:
    ids = sorted(fixes)
    names = " and ".join(str(i) for i in ids)
    noun = "task" if len(ids) == 1 else "tasks"
    where = "behind" if all(i > task_id for i in ids) else "in the same queue as"
    creates = "; ".join(f"task {i} creates {fixes[i]}" for i in ids)
    return (
        f"The fix is {noun} {names}, queued {where} this one: synchronize {noun} {names} "
        f"first, then this one ({creates})."
    )


def missing_references(
    conn: sa.Connection, registry: TypeRegistry, payload: Payload, task_site: str | None
) -> list[Missing]:
    """The task's translation records that do not resolve now and whose own parent, group and
    site do (a record whose parent is missing is reported through that parent's record)."""
    resolver = Resolver(conn, registry, Applier.site_ids(conn))
    out: list[Missing] = []
    for index, rec in enumerate(payload.records):
        try:
            if resolver.identity(payload, index, task_site) is None:
                continue
            if resolver.resolve(payload, index, task_site) is not None:
                continue
            site = rec.site_name or task_site
            if rec.is_page:
                out.append(Missing(PAGE_RECORD, str(rec.code_name).lower(), site))
            else:
                ot = registry.object_type(rec.object_type)
                scope = site if ot.site_column else None
                out.append(Missing(ot.name, str(rec.code_name), scope))
        except SyncBusError:  # a type no longer declared: nothing to suggest for it
            continue
    return out


def queued_creator(
    conn: sa.Connection, registry: TypeRegistry, connector_id: int, task_id: int, missing: Missing
) -> tuple[int, str | None] | None:
    """The first queued task of the connector (other than ``task_id``) that creates ``missing``,
    and the name it gives a missing page (None for an object)."""
    page = missing.object_type == PAGE_RECORD
    candidates = reads.upsert_candidates(
        conn,
        connector_id,
        task_id,
        object_type=None if page else missing.object_type,
        needle=json.dumps(missing.code),
        upserts=_UPSERTS,
        limit=_MAX_CANDIDATES,
    )
    for cand in candidates:
        try:
            payload = decode(cand.data)
            if _creates(registry, payload, cand.site_name, missing):
                name = None if payload.page is None else payload.page.name
                return int(cand.task_id), name
        except SyncBusError:
            continue
    return None


def _creates(
    registry: TypeRegistry, payload: Payload, site_name: str | None, missing: Missing
) -> bool:
    if missing.object_type == PAGE_RECORD:
        page = payload.page
        return (
            page is not None
            and page.node_guid is not None
            and str(page.node_guid).lower() == missing.code
            and site_name == missing.site_name
        )
    if payload.obj is None:
        return False
    for obj in _tree(payload.obj):
        if obj.object_type.lower() != missing.object_type:
            continue
        ot = registry.object_type(obj.object_type)
        # Compared exactly, as the resolver compares them (a GUID in another case would not
        # resolve either).
        key = None if ot.key_column is None else obj.data.get(ot.key_column)
        if key is None or str(key) != missing.code:
            continue
        if ot.site_column is None or site_name == missing.site_name:
            return True
    return False


def _tree(obj: InternalObject) -> Iterator[InternalObject]:
    yield obj
    for child in obj.children:
        yield from _tree(child)
