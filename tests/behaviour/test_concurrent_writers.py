"""Several connectors writing one object at the same moment (trial 6): the object is created
once, every write lands on it, and each task's history says what it found. On both databases
(SQLite's single writer makes it trivially true there; PostgreSQL is where runs overlap)."""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import pytest
import sqlalchemy as sa

from syncbus import IntegrationBus, ObjectType, ProcessResult, TaskDataType, TaskType
from syncbus.applier import Applier
from syncbus.content import caches
from tests.helpers import DictConnector, ext, log, user

MEET = 2.0  # seconds the first run waits at the meeting point for the other


def _meet_after_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hold each run, once it has looked up its batch's targets, until the other run has too
    (or ``MEET`` seconds passed: a run that cannot get there waits for the first to commit)."""
    both = threading.Barrier(2, timeout=MEET)
    looked_up = Applier.prefetch_targets

    def meet(self: Applier, *args: Any, **kw: Any) -> Any:
        targets = looked_up(self, *args, **kw)
        with contextlib.suppress(threading.BrokenBarrierError):
            both.wait()
        return targets

    monkeypatch.setattr(Applier, "prefetch_targets", meet)


def _run_at_once(bus: IntegrationBus, names: list[str]) -> dict[str, ProcessResult]:
    results: dict[str, ProcessResult] = {}
    errors: list[BaseException] = []

    def process(name: str) -> None:
        try:
            results[name] = bus.process_tasks(name)[name]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=process, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)
    return results


def _rows(bus: IntegrationBus, name: str) -> list[tuple[int, str]]:
    with bus.engine.connect() as c:
        stmt = sa.text("SELECT user_id, email FROM cms_user WHERE user_name = :n ORDER BY user_id")
        return [(int(i), str(e)) for i, e in c.execute(stmt, {"n": name})]


@pytest.mark.parametrize("many", [False, True], ids=["by-object", "by-type"])
def test_two_connectors_creating_one_object_at_once_create_it_once(
    bus: IntegrationBus, monkeypatch: pytest.MonkeyPatch, many: bool
) -> None:
    """Both runs found no such user and both inserted one: two rows of one code name, a
    later update wrote one of them, a delete left the other. (``by-type``: a batch of more
    objects than it locks one by one locks their types instead.)"""
    if many:
        monkeypatch.setattr(caches, "MAX_OBJECT_LOCKS", 0)
    for name in ("A", "B"):
        bus.register_connector(DictConnector(name))
    ids = {
        "A": log(bus, user("twin", email="a@x.org"), connector="A"),
        "B": log(bus, user("twin", email="b@x.org"), connector="B"),
    }
    _meet_after_lookup(monkeypatch)
    results = _run_at_once(bus, ["A", "B"])
    assert all(r.applied == 1 and r.failed == 0 for r in results.values()), results
    rows = _rows(bus, "twin")
    assert len(rows) == 1, rows
    # The one applied second updated the first one's user: its history says so.
    records = {n: bus.task_history(i) for n, i in ids.items()}
    assert all(r is not None and r.changes for r in records.values())
    created = [n for n, r in records.items() if r and r.changes and "user_id" in r.changes]
    assert len(created) == 1, records
    later = "B" if created == ["A"] else "A"
    mine = {"A": "a@x.org", "B": "b@x.org"}
    record = records[later]
    assert record is not None and record.changes == {"email": [mine[created[0]], mine[later]]}
    assert rows[0][1] == mine[later]
    log(bus, user("twin"), TaskType.DELETE_OBJECT, connector="A")
    monkeypatch.undo()
    assert bus.process_tasks("A")["A"].applied == 1
    assert _rows(bus, "twin") == []


def test_two_connectors_updating_one_object_at_once_record_what_each_found(
    bus: IntegrationBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both runs read the user's old e-mail before either wrote: both records said they
    changed it from that value, and the value the first wrote was nobody's old value."""
    for name in ("A", "B"):
        bus.register_connector(DictConnector(name))
    log(bus, user("pat", email="0@x.org"), connector="A")
    assert bus.process_tasks("A")["A"].applied == 1
    ids = {
        "A": log(bus, user("pat", email="a@x.org"), TaskType.UPDATE_OBJECT, connector="A"),
        "B": log(bus, user("pat", email="b@x.org"), TaskType.UPDATE_OBJECT, connector="B"),
    }
    _meet_after_lookup(monkeypatch)
    results = _run_at_once(bus, ["A", "B"])
    assert all(r.applied == 1 for r in results.values()), results
    changes = {n: bus.task_history(i).changes for n, i in ids.items()}  # type: ignore[union-attr]
    olds = sorted(c["email"][0] for c in changes.values() if c)  # type: ignore[index]
    news = {c["email"][1] for c in changes.values() if c}  # type: ignore[index]
    assert news == {"a@x.org", "b@x.org"}
    # One found the starting value, the other the first one's: a chain, not a fork.
    assert olds[0] == "0@x.org" and olds[1] in news, changes
    final = _rows(bus, "pat")[0][1]
    assert final != olds[1] and final in news


BOX = ObjectType("race.box", "race_box", "box_id", code_name_column="box_name")
ITEM = ObjectType(
    "race.item",
    "race_item",
    "item_id",
    code_name_column="item_name",
    parent=("box_id", "race.box"),
    columns={"label": str},
)


def test_a_snapshot_s_child_and_another_connector_s_task_of_it_take_turns(
    bus: IntegrationBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A box's SNAPSHOT creating its child item while another connector created that item
    on its own: both found no such item and both inserted it (its identity, name and box,
    has no unique index). A snapshot's children are locked with the batch's targets, by
    type and code name (the parent left out: a child's parent may not exist yet)."""
    bus.register_object_type(BOX)
    bus.register_object_type(ITEM)
    bus.create_schema()
    for name in ("A", "B"):
        bus.register_connector(DictConnector(name))
    log(bus, ext("race.box", box_name="b1"), connector="A")
    assert bus.process_tasks("A")["A"].applied == 1
    box = bus.get_object("race.box", "b1")
    assert box is not None
    snapshot = {
        "type": "race.box",
        "data": {"box_name": "b1"},
        "children": [{"type": "race.item", "data": {"item_name": "i1", "label": "from A"}}],
    }
    log(bus, snapshot, TaskType.UPDATE_OBJECT, connector="A", data_type=TaskDataType.SNAPSHOT)
    item = ext("race.item", item_name="i1", label="from B", box_id=box["box_id"])
    log(bus, item, connector="B")
    _meet_after_lookup(monkeypatch)
    results = _run_at_once(bus, ["A", "B"])
    assert all(r.applied == 1 and r.failed == 0 for r in results.values()), results
    with bus.engine.connect() as c:
        stmt = sa.text("SELECT count(*) FROM race_item WHERE item_name = 'i1'")
        assert c.execute(stmt).scalar_one() == 1
