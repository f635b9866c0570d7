"""Lineage (CONTRACT §10): the record a task leaves when it leaves the queue, and a task's
record read back, queued or finished.

A run collects its batch's records in a ``Recorder`` as tasks are applied or dropped, and
writes them in the batch's own transaction, just before the tasks leave the queue: the record
and the outcome commit together or not at all. What a record keeps: the external object as
logged and the payload as queued (copied from the queue row by the store), the internal id
each translation record resolved to, ``{column: [old, new]}`` of what the task changed
(computed from the row the batch prefetched: no query of its own) and its error log.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

from syncbus.content.lanes import binding_identity
from syncbus.content.registry import TypeRegistry
from syncbus.enums import ProcessType, TaskDataType, TaskType
from syncbus.errors import CorruptTaskError, SyncBusError
from syncbus.model import SyncLogEntry, TaskRecord
from syncbus.payload import PAGE_RECORD, Payload, TranslationRecord, decode, id_key
from syncbus.store import history
from syncbus.store.db import stamp
from syncbus.translation import Resolver

APPLIED, DELETED, DROPPED, COALESCED = "applied", "deleted", "dropped", "coalesced"
_NAME_CHARS = 450  # syncbus_history.code_name
# What object_history lists: the tasks that wrote the object.
WROTE = (APPLIED, COALESCED)


def code_name_of(
    registry: TypeRegistry, payload: Payload | None, site_name: str | None = None
) -> str | None:
    """The code name (or GUID) of the object a task writes, as object_history finds it; a
    binding's is its two ends (``content.lanes.binding_identity``)."""
    if payload is None or payload.obj is None:
        return None
    obj = payload.obj
    try:
        ot = registry.object_type(obj.object_type)
        key = ot.code_name_column or ot.guid_column  # ot.key_column, without the property
        if key is None:
            value: Any = binding_identity(obj, site_name, payload, registry.object_type)
        else:
            value = obj.data.get(key)
    except (SyncBusError, KeyError, TypeError, ValueError):  # a payload it cannot name
        return None
    if value is None:
        return None
    text = value if type(value) is str else str(value)
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    return text if len(text) <= _NAME_CHARS else text[:_NAME_CHARS]


def _resolved(row: Any, payload: Payload, resolver: Resolver) -> list[int | None] | None:
    """The internal id each of the payload's translation records resolves to (None: none)."""
    records = payload.records
    if not records:
        return None
    site, resolve = row.site_name, resolver.resolve
    return [
        None if (found := resolve(payload, i, site)) is None else int(found)
        for i in range(len(records))
    ]


class Recorder:
    """The records of one transaction's finished tasks, written in it (``write``)."""

    def __init__(self, registry: TypeRegistry, now: dt.datetime) -> None:
        self.registry = registry
        self.now = now
        self.entries: list[dict[str, Any]] = []
        self._logged: set[int] = set()  # tasks with an error log to copy
        self._last_error: dict[int, str] = {}

    def applied(
        self,
        row: Any,
        payload: Payload,
        resolver: Resolver,
        changes: dict[str, list[Any]] | None,
    ) -> None:
        resolved = _resolved(row, payload, resolver)
        self._add(row, payload, APPLIED, resolved=resolved, changes=changes or {})

    def coalesced(
        self, row: Any, payload: Payload | CorruptTaskError, resolver: Resolver, into: int
    ) -> None:
        """A task coalesced ``into`` another (which carried its values): its references
        resolved as they were when the carrier was applied."""
        if not isinstance(payload, Payload):
            self.finished(row, payload, COALESCED, into=into)
            return
        resolved = _resolved(row, payload, resolver)
        self._add(row, payload, COALESCED, resolved=resolved, into=into)

    def finished(
        self,
        row: Any,
        payload: Payload | CorruptTaskError | None,
        state: str,
        error: str | None = None,
        into: int | None = None,
    ) -> None:
        """A task that leaves the queue without being applied itself (dropped, deleted,
        coalesced ``into`` another); ``error``: the failure that dropped it, added to its
        error log."""
        if error is not None:
            self._last_error[int(row.task_id)] = error
        self._add(row, payload if isinstance(payload, Payload) else None, state, into=into)

    def _add(
        self,
        row: Any,
        payload: Payload | None,
        state: str,
        *,
        resolved: list[int | None] | None = None,
        changes: dict[str, list[Any]] | None = None,
        into: int | None = None,
    ) -> None:
        task_id = int(row.task_id)
        if row.error_message is not None or (getattr(row, "attempts", 0) or 0) > 0:
            self._logged.add(task_id)
        self.entries.append(
            {
                "tid": task_id,
                "state": state,
                "code_name": code_name_of(self.registry, payload, row.site_name),
                "resolved": resolved,
                "changes": changes,  # written as JSON with the batch (history.record)
                "errors": None,
                "into": into,
            }
        )

    def write(self, conn: sa.Connection) -> None:
        """Write the records (before their tasks leave the queue, in the same transaction)."""
        if not self.entries:
            return
        logs = history.error_logs(conn, self._logged) if self._logged else {}
        if logs or self._last_error:
            stamp = self.now.isoformat()
            for entry in self.entries:
                task_id = entry["tid"]
                errors = list(logs.get(task_id, ()))
                if task_id in self._last_error and (
                    not errors or errors[-1][1] != self._last_error[task_id]
                ):
                    errors.append([stamp, self._last_error[task_id]])
                entry["errors"] = errors or None
        history.record(conn, self.entries, self.now)
        self.entries = []


# -- reading ----------------------------------------------------------------------------------
def decode_or_none(data: str) -> Payload | None:
    """A task's payload, or None when it is corrupt."""
    return _payload(data)


def _payload(data: str) -> Payload | None:
    try:
        return decode(data)
    except CorruptTaskError:
        return None


def _internal(data: str) -> dict[str, Any]:
    try:
        raw = json.loads(data)
    except ValueError:
        return {}
    if not isinstance(raw, dict):
        return {}
    if "object" in raw:
        return dict(raw["object"])
    if "page" in raw:
        return dict(raw["page"])
    return {}


def _columns(registry: TypeRegistry, payload: Payload) -> dict[int, str]:
    """Which column points at each translation record (by record index)."""
    index = payload.record_index()
    out: dict[int, str] = {}

    def walk(obj: Any, prefix: str) -> None:
        try:
            ot = registry.object_type(obj.object_type)
        except SyncBusError:
            return
        for col, target in ot.references().items():
            value = obj.data.get(col)
            i = None if value is None else index.get(id_key(target, value))
            if i is not None:
                out.setdefault(i, prefix + col)
        for child in obj.children:
            walk(child, f"{child.object_type}.")

    if payload.obj is not None:
        walk(payload.obj, "")
    elif payload.page is not None and payload.page.parent_id is not None:
        i = index.get(id_key(PAGE_RECORD, payload.page.parent_id))
        if i is not None:
            out[i] = "parent_id"
    for j, rec in enumerate(payload.records):  # parents and groups of referenced objects
        for i, how in ((rec.parent, "parent"), (rec.group, "group")):
            if i is not None:
                out.setdefault(i, f"{how} of {out.get(j, rec.object_type)}")
    return out


def _identity(rec: TranslationRecord, records: list[TranslationRecord]) -> dict[str, Any]:
    ident: dict[str, Any] = {
        "object_type": "page" if rec.is_page else rec.object_type,
        "code_name": rec.code_name,
        "site_name": rec.site_name,
    }
    if rec.culture is not None:
        ident["culture"] = rec.culture
    if rec.parent is not None:
        ident["parent"] = _identity(records[rec.parent], records)
    if rec.group is not None:
        ident["group"] = _identity(records[rec.group], records)
    return ident


def translations(
    registry: TypeRegistry, data: str, resolved: list[Any] | None
) -> list[dict[str, Any]]:
    payload = _payload(data)
    if payload is None:
        return []
    columns = _columns(registry, payload)
    return [
        {
            "column": columns.get(i),
            "external_id": rec.external_id,
            "identity": _identity(rec, payload.records),
            "internal_id": resolved[i] if resolved and i < len(resolved) else None,
        }
        for i, rec in enumerate(payload.records)
    ]


def _errors(raw: Any) -> list[SyncLogEntry]:
    out = []
    for time, message in _loads(raw) or ():
        out.append(SyncLogEntry(dt.datetime.fromisoformat(time), str(message)))
    return out


def _loads(raw: str | None) -> Any:
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _common(row: Any) -> dict[str, Any]:
    return {
        "task_id": int(row.task_id),
        "connector_name": row.connector_name,
        "task_type": TaskType.parse(row.task_type),
        "data_type": TaskDataType.parse(row.data_type),
        "process_type": ProcessType.parse(row.process_type),
        "title": row.title,
        "object_type": row.object_type,
        "class_name": row.class_name,
        "site_name": row.site_name,
        "lane": row.lane,
        "external": _loads(row.external),
        "internal": _internal(row.data),
        "idempotency_key": row.idempotency_key,
    }


def finished_record(registry: TypeRegistry, row: Any, carried: tuple[int, ...] = ()) -> TaskRecord:
    """A finished task's record, from its history row (``carried``: the tasks coalesced into
    it, from ``history.carried``)."""
    return TaskRecord(
        **_common(row),
        state=row.state,
        logged_at=stamp(row.logged_at),
        finished_at=stamp(row.finished_at),
        translations=translations(registry, row.data, _loads(row.resolved)),
        changes=_loads(row.changes) if row.state == APPLIED else None,
        errors=_errors(row.errors),
        code_name=row.code_name,
        into_task_id=None if row.into_task_id is None else int(row.into_task_id),
        carried_task_ids=carried,
    )


def queued_record(registry: TypeRegistry, row: Any, log: list[SyncLogEntry]) -> TaskRecord:
    """A queued task's record, from its queue row and its sync log."""
    state = "waiting" if row.awaits is not None else "failed" if row.error_message else "queued"
    return TaskRecord(
        **_common(row),
        state=state,
        logged_at=stamp(row.created_at),
        finished_at=None,
        translations=translations(registry, row.data, None),
        changes=None,
        errors=log,
        code_name=code_name_of(registry, _payload(row.data), row.site_name),
    )


def records(
    registry: TypeRegistry, rows: list[Any], carried: dict[int, tuple[int, ...]]
) -> Iterator[TaskRecord]:
    for row in rows:
        yield finished_record(registry, row, carried.get(int(row.task_id), ()))
