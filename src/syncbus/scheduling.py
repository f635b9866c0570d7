"""Lane scheduling for ``Ordering.ENTITY`` connectors (CONTRACT §8).

An ENTITY connector's queue is split into lanes, one per entity (``syncbus.content.lanes``
computes a task's lane when it is logged). A run walks each lane in task-id order exactly as a
CONNECTOR run walks the whole queue, so a task that stops (an ``ERROR``, a ``DEFAULT`` that
fails, a task waiting for a missing reference) stops only its own lane.

What one run keeps (``LaneRun``):

- ``halted``: lanes this run will not touch again: stopped at a task, waiting, deferred
  behind a cause in another lane, or held by another runner;
- ``passed``: lanes whose walk passed a task that stays queued (``SKIP_ONCE``, a failed
  ``SKIP_ON_ERROR``): the last task id turned, so the run goes on behind it and never turns a
  task twice;
- ``scan_from``: every queued task below it belongs to a lane the run no longer takes, so the
  next plan starts there instead of at the queue's front.

A plan reads the queue's front (no locks) and picks the next tasks of lanes the run may take,
bounded by count and bytes. The transaction that applies a plan first takes its lanes: on
PostgreSQL by locking each lane's head (its lowest queued task) ``FOR UPDATE SKIP LOCKED``, so
several runs (threads, processes, machines) share one connector and each lane is processed by
one of them at a time; on SQLite the run holds the connector's lease, and with it every lane.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from syncbus.content.lanes import (
    child_lanes,
    describe_reference,
    reference_lane,
    referenced_lanes,
)
from syncbus.content.types import ObjectType
from syncbus.enums import ProcessType, TaskDataType
from syncbus.payload import Payload
from syncbus.store import tasks
from syncbus.store.db import as_utc, utcnow

LaneKey = str | None  # None: tasks logged before the connector became ENTITY (one lane)
TypeLookup = Callable[[str], ObjectType]

_SNAPSHOT = TaskDataType.SNAPSHOT.value
# How many tasks a plan reads from the queue's front at a time, per task of a batch.
_SCAN_FACTOR = 4
# A waiting task is looked at again after a quarter of its wait so far, within these (seconds).
RECHECK_MIN, RECHECK_MAX = 10.0, 300.0


@dataclass
class Plan:
    """The candidates of one batch, in id order: each task's lane and stored size, each
    lane's head (its lowest queued task, when the plan knows it), and how many lanes the
    batch wants. The batch's transaction takes as many of these lanes as it can, skipping
    those another runner holds, and applies their tasks up to the batch's bounds."""

    ids: list[int] = field(default_factory=list)
    lane_of: dict[int, LaneKey] = field(default_factory=dict)
    size_of: dict[int, int] = field(default_factory=dict)
    heads: dict[LaneKey, int | None] = field(default_factory=dict)
    want: int = 0
    suspect: bool = False  # a task a worker died with, alone: applied with nothing else

    def lanes(self) -> set[LaneKey]:
        return set(self.lane_of.values())

    def only(self, task_id: int) -> Plan:
        return Plan([task_id], {task_id: self.lane_of[task_id]}, want=1)

    def add(self, task_id: int, lane: LaneKey, size: int, head: int | None) -> None:
        self.ids.append(task_id)
        self.lane_of[task_id] = lane
        self.size_of[task_id] = size
        self.heads.setdefault(lane, head)

    def batch(self, held: AbstractSet[LaneKey] | None, size: int, max_bytes: int) -> list[int]:
        """The ids to apply: the candidates of the lanes held (all, where ``held`` is None),
        in id order, at most ``size`` and, past the first, no more than ``max_bytes``. A lane
        is cut only at its end: what is taken of it is a prefix."""
        out: list[int] = []
        total = 0
        for task_id in self.ids:
            if held is not None and self.lane_of[task_id] not in held:
                continue
            total += self.size_of.get(task_id, 0)
            if (out and total > max_bytes) or len(out) >= size:
                break
            out.append(task_id)
        return out


@dataclass
class LaneOutcome:
    """What one transaction learnt about lanes; the run takes it in once it commits."""

    halted: set[LaneKey] = field(default_factory=set)
    passed: dict[LaneKey, int] = field(default_factory=dict)
    woken: set[LaneKey] = field(default_factory=set)
    retry_soon: bool = False
    written: set[str] = field(default_factory=set)  # lanes of the tasks applied
    # Tasks that began waiting: (task id, its lane, its payload, the missing record's index,
    # its site), to look again once the batch has committed.
    waited: list[tuple[int, LaneKey, Any, int, str | None]] = field(default_factory=list)


@dataclass
class Waits:
    """When a task may wait for a missing reference, and for what."""

    timeout: float
    types: TypeLookup

    def expired(self, row: Any, now: dt.datetime) -> bool:
        return tasks.waits_expired(row.waiting_since, self.timeout, now)

    @staticmethod
    def recheck_at(row: Any) -> dt.datetime | None:
        """When a waiting task is looked at again, though nothing woke it: what it waits for
        may have come another way (a CONNECTOR connector, another ENTITY connector's task
        that named it otherwise, the application itself), which wakes nobody. A quarter of
        how long it had waited when last looked at, ``RECHECK_MIN`` to ``RECHECK_MAX``."""
        since = as_utc(row.waiting_since)
        if since is None:
            return None
        last = as_utc(getattr(row, "last_run_at", None)) or since
        waited = max(0.0, (last - since).total_seconds())
        interval = min(RECHECK_MAX, max(RECHECK_MIN, waited / 4))
        return last + dt.timedelta(seconds=interval)

    def may_run(self, row: Any, now: dt.datetime) -> bool:
        """Whether a task is tried now: it waits for nothing, or its wait ran out, or it is
        time to look again (``recheck_at``)."""
        if row.awaits is None or self.expired(row, now):
            return True
        due = self.recheck_at(row)
        return due is None or due <= now

    def awaited(
        self, conn: sa.Connection, row: Any, missing: tuple[Any, ...]
    ) -> tuple[str, str] | None:
        """(lane key, description) of the first missing entity the task may wait for; None
        when it must fail instead (no waiting, nothing to wait for, or its time is up and no
        queued task may write that entity: one that is queued, say later in this very batch,
        is waited for even past the timeout, and wakes the task when it is applied)."""
        if self.timeout <= 0 or not missing:
            return None
        record = missing[0]
        lane = reference_lane(record, row.site_name, self.types)
        if lane is None:
            return None
        expired = row.waiting_since is not None and self.expired(row, utcnow())
        if expired and not tasks.writer_queued(conn, lane, row.task_id):
            return None
        return lane, describe_reference(record, row.site_name, self.types)


@dataclass
class LaneRun:
    """One run's view of an ENTITY connector's lanes (see the module's docstring)."""

    connector_id: int
    waits: Waits
    locks: bool  # lanes are locked per transaction (PostgreSQL); else the lease holds them
    halted: set[LaneKey] = field(default_factory=set)
    passed: dict[LaneKey, int] = field(default_factory=dict)
    scan_from: int = 0
    retry_soon: bool = False
    heads: dict[LaneKey, int] = field(default_factory=dict)  # as last seen by a plan
    stuck: set[int] = field(default_factory=set)  # Error tasks at the head of their lane
    # The earliest time a waiting head left halted is to be looked at again (Waits.recheck_at).
    recheck: dt.datetime | None = None

    def plan(
        self,
        conn: sa.Connection,
        batch_size: int,
        batch_bytes: int,
        elsewhere: AbstractSet[int] = frozenset(),
    ) -> Plan:
        """The next batch: the next tasks of the lanes this run may take, in id order, at
        most ``batch_size`` and, past the first, no more than ``batch_bytes`` stored. Lanes
        with a task in ``elsewhere`` (another runner's batch in flight) are left alone."""
        plan, total, now = Plan(), 0, utcnow()
        seen: set[LaneKey] = set()
        wanted: set[LaneKey] = set()
        # Candidates beyond one batch: lanes another runner holds are skipped at lock time,
        # and the next ones taken instead, so runs sharing the connector do not wait on each
        # other at the queue's front.
        limit = batch_size * _SCAN_FACTOR
        window = max(limit, 100)
        after = self.scan_from
        while True:
            rows = tasks.scan_front(conn, self.connector_id, after, window)
            for row in rows:
                lane = row.lane
                if lane not in seen:
                    seen.add(lane)
                    if lane not in self.passed:
                        self._see_head(lane, row, now)
                if row.task_id in elsewhere and lane not in self.halted:
                    self.halted.add(lane)
                    self.retry_soon = True
                if lane in self.halted or row.task_id <= self.passed.get(lane, 0):
                    continue
                if row.deaths:
                    return self._suspect(plan, row, len(wanted))
                size = int(row.size or 0)
                total += size
                if len(plan.ids) < batch_size and (not plan.ids or total <= batch_bytes):
                    wanted.add(lane)
                plan.add(row.task_id, lane, size, self.heads.get(lane))
                if len(plan.ids) >= limit:
                    return self._planned(plan, len(wanted))
            if len(rows) < window:
                return self._planned(plan, len(wanted))
            after = rows[-1].task_id

    def _suspect(self, plan: Plan, row: Any, want: int) -> Plan:
        """A suspect (a worker died with it in flight, CONTRACT §9) goes in a batch of its own,
        whichever runner takes it: should it kill this one too, the in-flight record names it
        alone and no innocent task counts a death. The plan ends before it, or is it."""
        if plan.ids:
            return self._planned(plan, want)
        plan.add(row.task_id, row.lane, int(row.size or 0), self.heads.get(row.lane))
        plan.suspect = True
        return self._planned(plan, 1)

    def _planned(self, plan: Plan, want: int) -> Plan:
        plan.want = max(want, 1)
        if plan.ids:  # all before the first planned task is in lanes the run no longer takes
            self.scan_from = max(self.scan_from, plan.ids[0] - 1)
        return plan

    def _see_head(self, lane: LaneKey, row: Any, now: dt.datetime) -> None:
        """The lane's first queued task: its head; a head that stops the lane halts it."""
        self.heads[lane] = row.task_id
        if not self._head_may_run(row, now):
            self.halted.add(lane)
            if row.process_type == ProcessType.ERROR.value:
                self.stuck.add(row.task_id)

    def _head_may_run(self, head: Any, now: dt.datetime) -> bool:
        """A lane may run unless its first task stops it: an ERROR, or a wait not yet over
        and not yet due to be looked at again (the earliest such time is kept)."""
        if head.process_type == ProcessType.ERROR.value:
            return False
        if self.waits.may_run(head, now):
            return True
        due = self.waits.recheck_at(head)
        if due is not None and (self.recheck is None or due < self.recheck):
            self.recheck = due
        return False

    def take_in(self, outcome: LaneOutcome) -> None:
        self.halted |= outcome.halted
        self.passed.update(outcome.passed)
        if outcome.woken & self.halted:
            self.halted -= outcome.woken
            self.scan_from = 0  # woken lanes may have tasks anywhere
        self.retry_soon = self.retry_soon or outcome.retry_soon

    def skips(self, row: Any, outcome: LaneOutcome) -> bool:
        """Whether the walk passes over this task without its turn: its lane stopped (in
        this run or earlier in this batch), or the run turned it already."""
        lane = row.lane
        return (
            lane in outcome.halted or lane in self.halted or row.task_id <= self.passed.get(lane, 0)
        )


@dataclass
class Causes:
    """Cause before effect across lanes: a task whose translation records name an entity
    with an earlier task still queued in that entity's lane runs after that task; so does a
    SNAPSHOT task whose children have an earlier task queued in their own lanes (it writes
    them: it must not overtake, say, an older update of a child halted in its lane). And the
    other way: a task of a lane that an earlier queued SNAPSHOT writes through a child (or
    that names such an entity) runs after that snapshot, which would otherwise overwrite it
    with older values."""

    refs: dict[int, set[str]]
    earlier: dict[str, list[tuple[int, bool]]]
    # Queued SNAPSHOT tasks that write an entity of a lane as a child, by lane: a task of
    # that lane logged after one runs after it.
    writers: dict[str, list[tuple[int, bool]]]

    @classmethod
    def of(
        cls,
        conn: sa.Connection,
        connector_id: int,
        rows: list[Any],
        payloads: dict[int, Any],
        types: TypeLookup,
    ) -> Causes:
        refs: dict[int, set[str]] = {}
        for row in rows:
            payload = payloads[row.task_id]
            if not isinstance(payload, Payload):
                continue
            lanes = referenced_lanes(payload, row.lane, row.site_name, types)
            if row.data_type == _SNAPSHOT and payload.obj is not None and payload.obj.children:
                lanes |= child_lanes(payload, row.site_name, types) - {row.lane}
            if lanes:
                refs[row.task_id] = lanes
        earlier: dict[str, list[tuple[int, bool]]] = {}
        wanted = set().union(*refs.values()) if refs else set()
        if wanted:
            below = max(refs)
            for lane, task_id, stuck in tasks.queued_in_lanes(conn, connector_id, wanted, below):
                earlier.setdefault(lane, []).append((int(task_id), bool(stuck)))
        writers: dict[str, list[tuple[int, bool]]] = {}
        own = {row.lane for row in rows if row.lane is not None}
        if own or wanted:
            below = max(int(row.task_id) for row in rows)
            for lane, task_id, stuck in tasks.lane_writers(conn, connector_id, own | wanted, below):
                entry = (int(task_id), bool(stuck))
                writers.setdefault(lane, []).append(entry)
                if lane in wanted:  # it writes an entity a task refers to: a cause too
                    earlier.setdefault(lane, []).append(entry)
        return cls(refs, earlier, writers)

    def blocker(self, row: Any, done: Iterable[int] | set[int]) -> tuple[int, bool] | None:
        """The earlier task (id, stuck) this task must wait behind, or None."""
        for lane in self.refs.get(row.task_id, ()):
            for task_id, stuck in self.earlier.get(lane, ()):
                if task_id < row.task_id and task_id not in done:
                    return task_id, stuck
        for task_id, stuck in self.writers.get(row.lane, ()):  # a snapshot writes its entity
            if task_id < row.task_id and task_id not in done:
                return task_id, stuck
        return None
