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

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from syncbus.content.registry import TypeRegistry
from syncbus.enums import ProcessType, TaskType
from syncbus.errors import SyncBusError
from syncbus.model import InternalObject
from syncbus.payload import Payload, TranslationRecord, id_key

_UPSERTS = {TaskType.CREATE_OBJECT.value, TaskType.UPDATE_OBJECT.value}
_DELETE = TaskType.DELETE_OBJECT.value
_DEFAULT = ProcessType.DEFAULT.value

Entity = tuple[str, str | None, tuple[Any, ...]]  # type, site, identity
_UNSET = object()
_MARKS = ("attempts", "next_attempt_at", "awaits")  # a failed attempt, a retry time, a wait


@dataclass
class Merged:
    """A batch's merges: the carriers' merged payloads and what each absorbed."""

    payloads: dict[int, Payload] = field(default_factory=dict)
    into: dict[int, int] = field(default_factory=dict)  # absorbed task id -> carrier id
    absorbed: dict[int, list[int]] = field(default_factory=dict)  # carrier -> absorbed ids

    def __bool__(self) -> bool:
        return bool(self.into)


@dataclass(frozen=True, slots=True)
class _Kind:
    """What coalescing reads of one object type (looked up once per batch)."""

    name: str
    refs: dict[str, str]  # reference column -> the type it points at
    identity: tuple[str, ...]
    points_at: frozenset[str]  # the types its references point at
    sited: bool  # its objects are stored under the task's site


class _Types:
    """The registry as one batch's coalescing asks it: every answer computed once per batch
    (a batch asks the same few questions of thousands of tasks)."""

    def __init__(self, registry: TypeRegistry) -> None:
        self.registry = registry
        self._kinds: dict[str, _Kind | None] = {}
        self._dependents: dict[str, frozenset[str]] = {}
        self._reach: dict[tuple[str, bool], frozenset[str] | None] = {}

    def kind(self, name: str) -> _Kind | None:
        """The type's facts, None when the registry does not know it."""
        found = self._kinds.get(name, _UNSET)
        if found is _UNSET:
            try:
                ot = self.registry.object_type(name)
            except SyncBusError:
                found = None
            else:
                refs = ot.references()
                sited = bool(ot.site_column and not ot.is_binding)
                found = _Kind(
                    ot.name, refs, tuple(ot.identity_columns()), frozenset(refs.values()), sited
                )
            self._kinds[name] = found
        return found  # type: ignore[return-value]

    def refs(self, name: str) -> dict[str, str]:
        """A known type's reference columns (raises for an unknown type, like the registry)."""
        k = self.kind(name)
        if k is None:
            return self.registry.object_type(name).references()
        return k.refs

    def dependents(self, name: str) -> frozenset[str]:
        """What a delete of an object of this type changes: the types its cascade reaches and
        the types that refer to any of those (their references are set to NULL)."""
        found = self._dependents.get(name)
        if found is None:
            gone = self.registry.dependents(name)
            nulled = {
                ot.name
                for ot in self.registry.object_types.values()
                if gone & set(ot.references().values())
            }
            found = self._dependents[name] = gone | nulled
        return found

    def reach(self, row: Any, payload: Any) -> frozenset[str] | set[str] | None:
        """The object types a task could look up or delete (None: any, it cannot be read)."""
        if not isinstance(payload, Payload):
            return None
        obj = payload.obj
        if obj is None:
            return frozenset()
        removes = row.task_type in _REMOVES
        if obj.children:
            return self._reach_tree(obj, removes)
        key = (obj.object_type, removes)
        found = self._reach.get(key, _UNSET)
        if found is _UNSET:
            found = self._reach[key] = self._reach_tree(obj, removes)
        return found  # type: ignore[return-value]

    def _reach_tree(self, top: InternalObject, removes: bool) -> frozenset[str] | None:
        reach: set[str] = set()
        stack = [top]
        while stack:
            o = stack.pop()
            stack.extend(o.children)
            k = self.kind(o.object_type)
            if k is None:
                return None
            reach |= k.points_at
        if removes:
            reach |= self.dependents(top.object_type)
        return frozenset(reach)


_REMOVES = frozenset({_DELETE, TaskType.REMOVE_FROM_SITE.value})


def _entity(
    row: Any, payload: Any, types: _Types, marks: tuple[str, ...]
) -> tuple[Entity, _Kind] | None:
    """The object a mergeable task writes, or None when the task cannot be merged. ``marks``:
    those of ``_MARKS`` the batch's rows have (a run reads no wait for a CONNECTOR batch)."""
    if not isinstance(payload, Payload) or payload.obj is None or payload.obj.children:
        return None
    if row.task_type not in _UPSERTS and row.task_type != _DELETE:
        return None
    if row.process_type != _DEFAULT or row.error_message is not None:
        return None
    for name in marks:  # a failed attempt, a retry time, a wait
        value = getattr(row, name)
        if value if name == "attempts" else value is not None:
            return None
    kind = types.kind(payload.obj.object_type)
    if kind is None:
        return None
    data = payload.obj.data
    refs = kind.refs
    translated = row.data_type != "Simple"
    ident: list[Any] = []
    for col in kind.identity:
        value = data.get(col)
        if value is None or isinstance(value, dict | list):
            return None
        if translated and col in refs:
            # An external id names its object through the record the connector gave for it:
            # two ids of one object must be one identity here.
            i = payload.record_index().get(id_key(refs[col], value))
            if i is None:
                return None
            rec = payload.records[i]
            value = (rec.object_type, rec.code_name, rec.site_name, rec.parent, rec.group)
        ident.append(value)
    site = row.site_name if kind.sited else None
    return (kind.name, site, tuple(ident)), kind


def _breaks(
    run: list[int], run_type: str, row: Any, payloads: dict[int, Any], types: _Types
) -> bool:
    """Whether this task of the object must start a new run: another data type, or a
    reference it sets hides one an earlier task of the run set."""
    later = payloads[int(row.task_id)]
    return bool(run_type != row.data_type or _hides_reference(run, payloads, later, types))


def _sets_reference(payload: Payload, types: _Types) -> bool:
    assert payload.obj is not None
    data = payload.obj.data
    return any(data.get(c) is not None for c in types.refs(payload.obj.object_type))


def _hides_reference(
    run: list[int], payloads: dict[int, Any], later: Payload, types: _Types
) -> bool:
    """Whether ``later`` sets a reference column that a task of the run set too: merged, the
    earlier reference would never be looked up, and a task that would have failed (its
    reference missing) would pass unseen. Not the identity's own columns (a binding's ends):
    the tasks of a run name the same object, so those look up the same identity."""
    assert later.obj is not None
    kind = types.kind(later.obj.object_type)
    refs = types.refs(later.obj.object_type)
    own = () if kind is None else kind.identity
    given = [c for c in later.obj.data if c in refs and c not in own]
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
        if not offset:
            records.extend(p.records)  # the first payload's records keep their positions
            continue
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


class _Runs:
    """A batch's open runs of upserts, one per object, and the merges closed so far."""

    def __init__(self, payloads: dict[int, Any]) -> None:
        self.payloads = payloads
        self.merged = Merged()
        self.tasks: dict[Entity, list[int]] = {}  # entity -> its upserts so far
        self.data_type: dict[Entity, str] = {}  # a run's data type: another starts a new run
        # The open runs by object type, so a barrier finds those of the types it reaches
        # without looking at every open run (a large batch has hundreds).
        self.of_type: dict[str, dict[Entity, None]] = {}

    def add(self, entity: Entity, task_id: int) -> None:
        if entity not in self.tasks:
            self.of_type.setdefault(entity[0], {})[entity] = None
        self.tasks.setdefault(entity, []).append(task_id)

    def close(self, entity: Entity, carrier: int | None = None) -> None:
        """End the run of ``entity``: its last task carries it, or ``carrier`` (a delete)
        absorbs it whole."""
        if entity in self.tasks:
            self.of_type[entity[0]].pop(entity, None)
        run = self.tasks.pop(entity, [])
        merged = self.merged
        if carrier is None:  # a run of upserts ends: its last task carries it
            if len(run) < 2:
                return
            carrier, run = run[-1], run[:-1]
            merged.payloads[carrier] = _merge([self.payloads[i] for i in [*run, carrier]])
        if run:
            merged.absorbed[carrier] = run
            for task_id in run:
                merged.into[task_id] = carrier

    def barrier(self, row: Any, payload: Any, own: Entity | None, types: _Types) -> None:
        """Close every open run (of another object) that this task could see or change:
        those of the types it reaches (all, when that cannot be told), and, for a task that
        cannot be merged, those of its own type (it may be the same object)."""
        tasks = self.tasks
        if not tasks or (own is not None and len(tasks) == 1 and own in tasks):
            return
        reach = types.reach(row, payload)
        same_type = None
        if own is None and isinstance(payload, Payload) and payload.obj is not None:
            same_type = payload.obj.object_type
        if reach is None:
            closing = list(tasks)
        else:
            kinds = [*reach, same_type] if same_type is not None else reach
            of_type = self.of_type
            closing = [e for kind in kinds if kind in of_type for e in of_type[kind]]
        for entity in closing:
            if entity != own:
                self.close(entity)


def coalesce(rows: Iterable[Any], payloads: dict[int, Any], registry: TypeRegistry) -> Merged:
    """The merges of one batch (``rows`` in task-id order)."""
    types = _Types(registry)
    runs = _Runs(payloads)
    marks: tuple[str, ...] | None = None
    for row in rows:
        if marks is None:  # the rows of one batch share their columns: asked once
            marks = tuple(name for name in _MARKS if hasattr(row, name))
        task_id = int(row.task_id)
        payload = payloads.get(task_id)
        found = _entity(row, payload, types, marks)
        if found is None:
            runs.barrier(row, payload, None, types)
            continue
        entity = found[0]
        runs.barrier(row, payload, entity, types)
        open_run = runs.tasks.get(entity)
        if open_run and _breaks(open_run, runs.data_type[entity], row, payloads, types):
            runs.close(entity)
        runs.data_type[entity] = row.data_type
        if row.task_type == _DELETE:
            # The upserts before it are absorbed into the delete, unless one looks something
            # up (it must not vanish unseen): then they stay apart.
            refs = any(_sets_reference(payloads[i], types) for i in runs.tasks.get(entity, ()))
            runs.close(entity, None if refs else task_id)
        else:
            runs.add(entity, task_id)
    for entity in list(runs.tasks):
        runs.close(entity)
    return runs.merged
