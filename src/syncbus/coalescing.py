"""Coalescing (opt-in per connector: ``coalesce = True``): consecutive upserts of one object in a
batch are applied as one, and upserts followed by a delete become the delete.

Which tasks may be merged is decided here, from the batch's rows and payloads alone (no SQL):

- only ``CreateObject`` / ``UpdateObject`` / ``DeleteObject`` tasks of objects that name their
  whole identity (code name, or GUID, with parent and group where the type has them; both ends
  of a binding), with process type ``Default``, no error, no attempt, not waiting: a task that
  fails or stops must meet the queue exactly where it is, so it is never moved;
- of the same object: type, identity as logged, site, and data type;
- never across a task between them that could see or change the object otherwise: a task of
  another object whose type refers to the object's type (it may look it up), a delete whose
  cascade reaches the object's type or whose ``SET NULL`` reaches one of its columns, or a
  task of the same object that cannot be merged (it ends the run);
- columns are merged in task order, the later value winning; a run of upserts followed by a
  delete is the delete.

The carrier is the run's last task: it is applied in its own place, with the merged object, and
the tasks it absorbed leave the queue with it, recorded as ``coalesced`` into it. Should the
carrier not be applied (it waits, or its lane stops), the absorbed tasks stay queued. Merging is
done on the optimistic pass only: a batch in which anything fails is applied again without it,
task by task, so failures behave exactly as without coalescing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from syncbus.content.registry import TypeRegistry
from syncbus.content.types import ObjectType
from syncbus.enums import ProcessType, TaskType
from syncbus.errors import SyncBusError
from syncbus.model import InternalObject
from syncbus.payload import Payload, TranslationRecord, id_key

_UPSERTS = {TaskType.CREATE_OBJECT.value, TaskType.UPDATE_OBJECT.value}
_DELETE = TaskType.DELETE_OBJECT.value
_DEFAULT = ProcessType.DEFAULT.value

TypeLookup = Callable[[str], ObjectType]
Entity = tuple[str, str | None, tuple[Any, ...]]  # type, site, identity


@dataclass
class Merged:
    """A batch's merges: the carriers' merged payloads and what each absorbed."""

    payloads: dict[int, Payload] = field(default_factory=dict)
    into: dict[int, int] = field(default_factory=dict)  # absorbed task id -> carrier id
    absorbed: dict[int, list[int]] = field(default_factory=dict)  # carrier -> absorbed ids

    def __bool__(self) -> bool:
        return bool(self.into)


def _entity(row: Any, payload: Any, types: TypeLookup) -> tuple[Entity, ObjectType] | None:
    """The object a mergeable task writes, or None when the task cannot be merged."""
    if not isinstance(payload, Payload) or payload.obj is None or payload.obj.children:
        return None
    if row.task_type not in _UPSERTS and row.task_type != _DELETE:
        return None
    if row.process_type != _DEFAULT or row.error_message is not None:
        return None
    if (getattr(row, "attempts", 0) or 0) or getattr(row, "next_attempt_at", None) is not None:
        return None
    if getattr(row, "awaits", None) is not None:
        return None
    try:
        ot = types(payload.obj.object_type)
    except SyncBusError:
        return None
    data = payload.obj.data
    refs = ot.references()
    translated = row.data_type != "Simple"
    index = payload.record_index() if translated else {}
    ident: list[Any] = []
    for col in ot.identity_columns():
        value = data.get(col)
        if value is None or isinstance(value, dict | list):
            return None
        if translated and col in refs:
            # An external id names its object through the record the connector gave for it:
            # two ids of one object must be one identity here.
            i = index.get(id_key(refs[col], value))
            if i is None:
                return None
            rec = payload.records[i]
            value = (rec.object_type, rec.code_name, rec.site_name, rec.parent, rec.group)
        ident.append(value)
    site = row.site_name if ot.site_column and not ot.is_binding else None
    return (ot.name, site, tuple(ident)), ot


def _breaks(
    run: list[int], run_type: str, row: Any, payloads: dict[int, Any], types: TypeLookup
) -> bool:
    """Whether this task of the object must start a new run: another data type, or a
    reference it sets hides one an earlier task of the run set."""
    later = payloads[int(row.task_id)]
    return bool(run_type != row.data_type or _hides_reference(run, payloads, later, types))


def _sets_reference(payload: Payload, types: TypeLookup) -> bool:
    assert payload.obj is not None
    refs = types(payload.obj.object_type).references()
    return any(payload.obj.data.get(c) is not None for c in refs)


def _hides_reference(
    run: list[int], payloads: dict[int, Any], later: Payload, types: TypeLookup
) -> bool:
    """Whether ``later`` sets a reference column that a task of the run set too: merged, the
    earlier reference would never be looked up, and a task that would have failed (its
    reference missing) would pass unseen."""
    assert later.obj is not None
    refs = types(later.obj.object_type).references()
    given = {c for c in later.obj.data if c in refs}
    if not given:
        return False
    for task_id in run:
        earlier = payloads[task_id].obj
        if any(earlier.data.get(c) is not None for c in given):
            return True
    return False


def _merge(payloads: list[Payload]) -> Payload:
    """Upserts merged in order, the later value of a column winning; their translation
    records concatenated (re-indexed), so every external id in the merged data resolves."""
    data: dict[str, Any] = {}
    records: list[TranslationRecord] = []
    for p in payloads:
        assert p.obj is not None
        data.update(p.obj.data)
        offset = len(records)
        for r in p.records:
            records.append(
                r._replace(
                    parent=None if r.parent is None else r.parent + offset,
                    group=None if r.group is None else r.group + offset,
                )
            )
    last = payloads[-1].obj
    assert last is not None
    return Payload(obj=InternalObject(last.object_type, data), records=records)


def coalesce(rows: Iterable[Any], payloads: dict[int, Any], registry: TypeRegistry) -> Merged:
    """The merges of one batch (``rows`` in task-id order)."""
    types = registry.object_type

    def dependents(name: str) -> frozenset[str]:
        """What a delete of an object of this type changes: the types its cascade reaches and
        the types that refer to any of those (their references are set to NULL)."""
        gone = registry.dependents(name)
        nulled = {
            ot.name for ot in registry.object_types.values() if gone & set(ot.references().values())
        }
        return gone | nulled

    merged = Merged()
    runs: dict[Entity, list[int]] = {}  # open runs: entity -> its upserts so far
    data_type: dict[Entity, str] = {}  # a run's data type: another one starts a new run

    def close(entity: Entity, carrier: int | None = None) -> None:
        run = runs.pop(entity, [])
        if carrier is None:  # a run of upserts ends: its last task carries it
            if len(run) < 2:
                return
            carrier, run = run[-1], run[:-1]
            merged.payloads[carrier] = _merge([payloads[i] for i in [*run, carrier]])
        if run:
            merged.absorbed[carrier] = run
            for task_id in run:
                merged.into[task_id] = carrier

    for row in rows:
        task_id = int(row.task_id)
        found = _entity(row, payloads.get(task_id), types)
        if found is None:
            _barrier(row, payloads.get(task_id), None, runs, types, dependents, close)
            continue
        entity = found[0]
        _barrier(row, payloads[task_id], entity, runs, types, dependents, close)
        if entity in runs and _breaks(runs[entity], data_type[entity], row, payloads, types):
            close(entity)
        data_type[entity] = row.data_type
        if row.task_type == _DELETE:
            # The upserts before it are absorbed into the delete, unless one looks something
            # up (it must not vanish unseen): then they stay apart.
            refs = any(_sets_reference(payloads[i], types) for i in runs.get(entity, ()))
            close(entity, None if refs else task_id)
        else:
            runs.setdefault(entity, []).append(task_id)
    for entity in list(runs):
        close(entity)
    return merged


def _reach(
    row: Any, payload: Any, types: TypeLookup, dependents: Callable[[str], frozenset[str]]
) -> set[str] | None:
    """The object types a task could look up or delete (None: any, it cannot be read)."""
    if not isinstance(payload, Payload):
        return None
    reach: set[str] = set()
    if payload.obj is not None:
        stack = [payload.obj]
        while stack:
            o = stack.pop()
            stack.extend(o.children)
            try:
                reach |= set(types(o.object_type).references().values())
            except SyncBusError:
                return None
        if row.task_type in (_DELETE, TaskType.REMOVE_FROM_SITE.value):
            reach |= dependents(payload.obj.object_type)
    return reach


def _barrier(
    row: Any,
    payload: Any,
    own: Entity | None,
    runs: dict[Entity, list[int]],
    types: TypeLookup,
    dependents: Callable[[str], frozenset[str]],
    close: Callable[[Entity], None],
) -> None:
    """Close every open run (of another object) that this task could see or change."""
    if not runs:
        return
    reach = _reach(row, payload, types, dependents)
    same_type = None
    if own is None and isinstance(payload, Payload) and payload.obj is not None:
        same_type = payload.obj.object_type  # unmergeable: it may be the same object
    for entity in list(runs):
        if entity == own:
            continue
        if reach is None or entity[0] in reach or entity[0] == same_type:
            close(entity)
