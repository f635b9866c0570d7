"""Processing: exclusive runs per connector, batches, and the process-type state machine.

A run takes the connector's lease, then repeatedly claims the next batch of tasks in task-id
order (bounded by count and by bytes) and applies it in ONE transaction: first optimistically,
then, if a task failed, again with a SAVEPOINT per task so that it fails alone. A task's effect
and its removal from the queue commit together, and only while the run still owns the lease
(checked as the transaction's last statement: no lock is held on the lease across a batch).
If even the careful pass fails in a step the whole batch shares, the batch is applied one task
per transaction, so no accepted task can stop a queue without failing visibly itself.
Transient database errors (lock timeouts, deadlocks, lost connections) are never a task's
failure: the run ends, nothing it did commits, and the dispatcher tries again.

What a task's process type means (run it, skip it, stop at it; what its failure does) is the
table in ``syncbus.policies``; every statement on the queue and the leases is in
``syncbus.store`` (``tasks``, ``leases``, ``logs``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import itertools
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import sqlalchemy as sa

from syncbus import tracing
from syncbus.applier import Applier
from syncbus.coalescing import Merged, coalesce
from syncbus.content.caches import TargetCache
from syncbus.content.planner import GrowthWatch
from syncbus.content.registry import TypeRegistry
from syncbus.content.writes import IdPool, WriteBehind
from syncbus.enums import Ordering, ProcessType
from syncbus.errors import (
    CorruptTaskError,
    LeaseLostError,
    PageNotFoundError,
    SyncBusError,
    TranslationError,
)
from syncbus.hooks import Hooks
from syncbus.lineage import DROPPED, Recorder
from syncbus.model import ProcessResult
from syncbus.payload import Payload, decode
from syncbus.policies import ConnectorRules, ErrorLog, Policy, Turn, policy
from syncbus.scheduling import Causes, LaneOutcome, LaneRun, Plan, Waits
from syncbus.store import connectors, inflight, leases, logs, switches, tasks
from syncbus.store.db import as_utc, utcnow
from syncbus.store.dialect import dialect_of, is_lock_wait, is_statement_timeout, is_transient
from syncbus.translation import Resolver

# LeaseLostError (errors.py) and is_transient / is_lock_wait (store.dialect) stay importable
# from here, where they used to live.
__all__ = ["LeaseLostError", "Processor", "error_text", "is_lock_wait", "is_transient"]
log = logging.getLogger("syncbus.engine")

ProgressCallback = Callable[[ProcessResult], None]


_T = TypeVar("_T")


class TransientGiveUp(Exception):
    """Transient database errors outlasted a run's retries (the run ends; nothing is lost)."""

    def __init__(self, tries: int, cause: Exception) -> None:
        super().__init__(f"{tries} transient errors in a row: {cause}")
        self.tries = tries
        self.cause = cause


class _FastPathFailed(Exception):
    """A task failed in the optimistic pass: roll the batch back and apply it carefully."""


MAX_ERROR_CHARS = 2000
_UNPRINTABLE = {c: f"\\x{c:02x}" for c in range(32) if chr(c) not in "\n\t"}


def readable(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """Text any database can store and an operator can read: control characters (a NUL
    quoted from bad input, say) are escaped, and the length is capped."""
    text = text.translate(_UNPRINTABLE)
    if len(text) > limit:
        text = text[:limit] + f"... ({len(text) - limit} more characters)"
    return text


def error_text(exc: BaseException) -> str:
    """A task error as an operator reads it: the cause, without SQL noise."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None:
        return readable(f"{type(exc.orig).__name__}: {str(exc.orig).strip()}")
    if isinstance(exc, SyncBusError):
        return readable(str(exc))
    return readable(f"{type(exc).__name__}: {exc}")


def run_owner() -> str:
    """A run's owner, as its lease and in-flight record name it: the host and process id it
    runs in (so an operator can tell which worker holds a connector) and a random part."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


class Solo:
    """The batches a process has in flight: any number at once (``shared``), or one alone
    (``alone``: a suspect of poison quarantine, CONTRACT §9, so that if it kills the process
    no other batch is in flight to count a death with it). Waiting to be alone stops new
    shared batches from starting, and a CONNECTOR run then claims no batch ahead."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._shared = 0
        self._alone = False
        self._waiting = 0

    @property
    def awaited(self) -> bool:
        """Whether a batch waits to go alone."""
        return self._waiting > 0

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not (self._alone or self._waiting))
            self._shared += 1
        try:
            yield
        finally:
            with self._cond:
                self._shared -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def alone(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
            try:
                self._cond.wait_for(lambda: not (self._alone or self._shared))
            finally:
                self._waiting -= 1
            self._alone = True
        try:
            yield
        finally:
            with self._cond:
                self._alone = False
                self._cond.notify_all()


# With coalescing, a batch claims at most this many times the batch size (``_read_ahead``).
READ_AHEAD = 10


@dataclass
class _Claim:
    tasks: int = 0  # how many tasks a run's next batch claims; 0: the batch size


@dataclass(frozen=True)
class _Run:
    """One run in hand: whose lease it holds, what it has done, and when to stop. Under
    ``Ordering.ENTITY``, ``lanes`` is its view of the lanes; ``fenced`` is False where it
    holds no lease (its lanes are locked in each transaction instead)."""

    connector_id: int
    owner: str
    result: ProcessResult
    stop: threading.Event
    rules: ConnectorRules = field(default_factory=ConnectorRules)
    lanes: LaneRun | None = None
    fenced: bool = True
    history: bool = False  # write each finished task's record (CONTRACT §10)
    first_ids: list[int] | None = None  # the first batch, claimed with the lease (CONNECTOR)
    # ENTITY: the tasks this run made wait that it has not applied or failed since (what
    # ``ProcessResult.waiting`` counts while the run goes; at its end, every waiting task).
    waits: set[int] = field(default_factory=set)
    # CONNECTOR with coalescing: how many tasks the next batch claims (``_read_ahead``).
    claim: _Claim = field(default_factory=_Claim)


@dataclass(frozen=True)
class _Range:
    """A CONNECTOR batch: the connector's tasks with ids in (after, upto]."""

    after: int
    upto: int
    looked: bool = False  # the switches were looked at since its claim: no need to again


_Scope = _Range | Plan


@dataclass
class _Outcome:
    stop: bool = False
    last_id: int = 0
    lanes: LaneOutcome = field(default_factory=LaneOutcome)
    # The next batch's task ids, claimed in this batch's transaction (CONNECTOR runs:
    # ``Processor._claim_next``); None: not claimed, the run claims them itself.
    next_ids: list[int] | None = None


@dataclass
class _Tally(ProcessResult):
    """One transaction's work: counted, and told to the hooks, only once it commits."""

    applied_ids: list[int] = field(default_factory=list)
    failures: list[tuple[int, str]] = field(default_factory=list)
    waited_ids: list[int] = field(default_factory=list)
    trace: tracing.BatchTrace | None = None  # its spans, when tracing records (syncbus.tracing)


@dataclass(frozen=True)
class _Failure:
    """Why a task was not applied, and the missing references it may wait for."""

    text: str
    missing: tuple[Any, ...] = ()


def _tally(result: ProcessResult) -> _Tally:
    return _Tally(result.connector_name)


def _merge(run: _Run, tally: _Tally) -> None:
    result = run.result
    result.applied += tally.applied
    result.coalesced += tally.coalesced
    result.failed += tally.failed
    result.skipped += tally.skipped
    result.deleted += tally.deleted
    run.waits.update(tally.waited_ids)
    run.waits.difference_update(tally.applied_ids)
    run.waits.difference_update(i for i, _ in tally.failures)
    result.waiting = len(run.waits)
    result.stopped = result.stopped or tally.stopped
    if tally.error is not None:
        result.error = tally.error


def _last_run(result: ProcessResult) -> dict[str, Any] | None:
    """What the lease row keeps of a finished run (the dashboard's "last run"), or None for
    a run that did nothing: a worker's idle runs must not hide the last one that did, nor
    must the runs that only found the queue (or every lane) stopped at a task that failed
    before (trial 6: "0 applied, 0 failed" beside the error, as long as the task stayed)."""
    did = result.applied or result.failed or result.skipped or result.deleted
    if not did and (result.error is None or result.stopped):
        return None
    started = (
        None if result.started_at is None else dt.datetime.fromtimestamp(result.started_at, dt.UTC)
    )
    return {
        "last_run_started_at": started,
        "last_run_applied": result.applied,
        "last_run_failed": result.failed,
        "last_run_error": result.error,
    }


def _in_flight(ids: list[int], stopped: bool) -> dict[str, int | None]:
    """What a claim records on the lease as in flight: the batch's range, or nothing when the
    batch is an ``Error`` task that stops the queue (it is not applied, and a runner dying
    meanwhile must not count a death for it, nor for the tasks waiting behind it)."""
    if not ids or stopped:
        return {"run_first_task_id": None, "run_last_task_id": None}
    return {"run_first_task_id": ids[0], "run_last_task_id": ids[-1]}


class Processor:
    """Runs connectors' queues against the content repository."""

    def __init__(
        self,
        db: sa.Engine,
        registry: TypeRegistry,
        applier: Applier,
        *,
        batch_size: int = 200,
        batch_bytes: int = 16 * 1024 * 1024,
        lease_seconds: float = 30.0,
        apply_timeout: float = 300.0,
        hooks: Hooks | None = None,
    ) -> None:
        self.db = db
        # A statement of a batch that runs longer is cancelled (PostgreSQL), and the task
        # applying it fails: a trigger that never returns must not hold its queue for good.
        self.apply_timeout = apply_timeout
        self.hooks = hooks or Hooks()
        self.registry = registry
        self.applier = applier
        self.batch_size = batch_size
        self.batch_bytes = batch_bytes
        self.lease_seconds = lease_seconds
        # Transient database errors a run tries again, in a row, before it gives up.
        self.transient_retries = 5
        # The clock of back-offs (tests set their own, to move time without sleeping).
        self.clock: Callable[[], dt.datetime] = utcnow
        # This process's batches in flight: many at once, or a suspect's alone.
        self.solo = Solo()
        # Ids reserved for held INSERTs and not used yet, kept across batches (writes.py).
        self._id_pool = IdPool()
        # The rows batches insert, to keep the planner's statistics of a table a load fills
        # fresh (content/planner.py; PostgreSQL).
        self._growth = GrowthWatch() if dialect_of(db).planner_statistics else None

    # -- one run ------------------------------------------------------------------------
    def run(
        self,
        connector_id: int,
        connector_name: str,
        on_progress: ProgressCallback | None = None,
        stop: threading.Event | None = None,
        *,
        rules: ConnectorRules | None = None,
    ) -> ProcessResult:
        """One run: take the lease, drain the queue in batches, release the lease.

        ``stop`` asks the run to end after the task in hand (graceful shutdown): what is done
        commits, the lease is released, the rest waits for the next run. Under
        ``Ordering.ENTITY`` the run goes lane by lane (``syncbus.scheduling``); where the
        database locks rows (PostgreSQL) it takes no lease, and runs share the connector.
        """
        result = ProcessResult(connector_name)
        owner = run_owner()
        rules = rules or ConnectorRules()
        lanes = None
        if rules.ordering == Ordering.ENTITY:
            lanes = LaneRun(
                connector_id,
                Waits(rules.dependency_timeout, self.registry.object_type),
                locks=dialect_of(self.db).row_locks,
            )
        stop = stop or threading.Event()
        if lanes is not None and lanes.locks:
            result.started_at = time.time()
            free = _Run(
                connector_id, owner, result, stop, rules, lanes, False, self.keeps_history()
            )
            return self._drive(free, on_progress)
        run = _Run(connector_id, owner, result, stop, rules, lanes, True)
        try:
            # The lease, history's setting and the first batch in one transaction; should the
            # two reads fail, the lease is taken alone as before and the drain claims.
            won, dead, run = self._take_lease(run, early=True)
        except sa.exc.SQLAlchemyError:
            log.info("taking the lease with its first batch failed; taking it alone")
            won, dead = False, None
            try:
                won, dead, run = self._take_lease(run, early=False)
            except sa.exc.DBAPIError as exc:
                if not is_transient(exc):
                    raise
                # the lease row is locked for a moment: as good as taken
        # The run's times lie inside the lease: two runs' intervals never overlap.
        result.started_at = time.time()
        if not won:
            result.not_run_reason = (
                f"connector {connector_name!r} is being processed by another runner"
                + self._held_by(connector_id)
            )
            result.busy = True
            result.finished_at = time.time()
            self.hooks.run_finished(result)
            return result
        return self._drive(run, on_progress, dead)

    def _held_by(self, connector_id: int) -> str:
        """Whose the lease another run holds, and until when: a runner that died (SIGKILL)
        keeps it until it runs out, and an operator should know it will be taken over."""
        try:
            with self.db.connect() as conn:
                held = leases.holder(conn, connector_id)
        except sa.exc.SQLAlchemyError:
            return ""
        if held is None:
            return ""
        owner, left = held
        return (
            f" ({owner}; its lease runs out in {left:.0f} s unless renewed: if that runner "
            "died, the first run after that takes over)"
        )

    def keeps_history(self, conn: sa.Connection | None = None) -> bool:
        """Whether finished tasks leave a record (``history_retention_days`` above 0)."""
        if conn is not None:
            return switches.keeps_history(conn)
        try:
            with self.db.connect() as own:
                return switches.keeps_history(own)
        except sa.exc.SQLAlchemyError:
            log.warning("cannot read history_retention_days; keeping history", exc_info=True)
            return True

    def _drive(
        self,
        run: _Run,
        on_progress: ProgressCallback | None,
        dead: tuple[int, int] | None = None,
    ) -> ProcessResult:
        """The run itself, once it may go: a heartbeat keeps its lease (or, lease-free, its
        in-flight record) alive; a dead runner's batch is dealt with first; the queue is
        drained; the lease is released (or the in-flight record cleared) however it ends."""
        result = run.result
        heartbeat = _Heartbeat(self, run.connector_id, run.owner, inflight=not run.fenced)
        heartbeat.start()
        try:
            if dead is not None:  # its last runner died applying these: find the poison
                self._after_death(run, *dead)
            self._drain(run, on_progress)
        except Exception as exc:
            self._run_failed(result.connector_name, result, exc)
        finally:
            heartbeat.stop()
            result.finished_at = time.time()
            released = run.fenced and self._release(run.connector_id, run.owner, result)
            if not run.fenced:
                self._forget_in_flight(run)
                self._record_run(run.connector_id, result)
        if not released:  # the release read it otherwise
            self._next_attempt(run.connector_id, result)
        if run.lanes is not None and run.lanes.recheck is not None:
            # A waiting task is due to be looked at again: the dispatcher wakes the run then.
            due = run.lanes.recheck.timestamp()
            if result.next_attempt_at is None or due < result.next_attempt_at:
                result.next_attempt_at = due
        self.hooks.run_finished(result)
        return result

    def _next_attempt(self, connector_id: int, result: ProcessResult) -> None:
        """Tell the dispatcher when the earliest task backing off may be tried again."""
        try:
            with self.db.connect() as conn:
                self._read_next_attempt(conn, connector_id, result)
        except sa.exc.SQLAlchemyError:
            log.warning("cannot read the connector's next attempt", exc_info=True)

    def _read_next_attempt(
        self, conn: sa.Connection, connector_id: int, result: ProcessResult
    ) -> None:
        due = tasks.next_attempt(conn, connector_id, self.clock())
        result.next_attempt_at = None if due is None else due.timestamp()

    def _run_failed(self, connector_name: str, result: ProcessResult, exc: Exception) -> None:
        """A run that could not go on: transient trouble is tried again soon (``busy``), and
        written to the event log once the run's own retries are spent; anything else is
        written to the event log."""
        result.error = error_text(exc)
        result.stopped = True
        if isinstance(exc, TransientGiveUp):
            result.busy = True
            result.error = (
                f"gave up after {exc.tries} transient database errors in a row "
                f"(tried again shortly; no task was failed): {error_text(exc.cause)}"
            )
        elif is_transient(exc):
            result.busy = True
            log.warning("run of connector %r interrupted, will retry: %s", connector_name, exc)
            return
        try:
            with self.db.begin() as conn:
                logs.write_event(
                    conn,
                    "Integration",
                    "PROCESSEXTERNAL",
                    f"processing of connector {connector_name!r} failed: {result.error}",
                )
        except sa.exc.SQLAlchemyError:
            log.exception("cannot write the event of a failed run of %r", connector_name)

    def _release(self, connector_id: int, owner: str, result: ProcessResult) -> bool:
        """Give the lease up, reading in the same transaction when the earliest task backing
        off may be tried again (``_next_attempt``); False if that transaction failed."""
        try:
            with self.db.begin() as conn:
                self._read_next_attempt(conn, connector_id, result)
                leases.release_lease(conn, connector_id, owner, _last_run(result))
            return True
        except sa.exc.SQLAlchemyError:
            log.info("releasing the lease with the next attempt's read failed; releasing alone")
        try:
            with self.db.begin() as conn:
                leases.release_lease(conn, connector_id, owner, _last_run(result))
        except sa.exc.SQLAlchemyError:  # the lease expires by itself
            log.warning("cannot release the lease of connector %d", connector_id, exc_info=True)
        return False

    def _record_run(self, connector_id: int, result: ProcessResult) -> None:
        """A lease-free run says how it went where a run that held the lease does."""
        last_run = _last_run(result)
        if last_run is None:
            return
        try:
            with self.db.begin() as conn:
                leases.record_run(conn, connector_id, last_run)
        except sa.exc.SQLAlchemyError:  # only the dashboard's "last run" misses it
            log.warning("cannot record the run of connector %d", connector_id, exc_info=True)

    def _take_lease(self, run: _Run, early: bool) -> tuple[bool, tuple[int, int] | None, _Run]:
        """Take the connector's lease: (won, the batch a dead holder left, the run). With
        ``early``, in the same transaction: history's setting and, under CONNECTOR ordering
        after a holder that did not die, the first batch (``_first_claim``), claimed as
        ``_claim_next`` claims (counted as a shared batch in flight; not while a suspect waits
        to go alone). Without, history's setting is read on its own (True if it cannot be)."""
        if not early:
            with self.db.begin() as conn:
                won, dead = leases.take_lease(conn, run.connector_id, run.owner, self.lease_seconds)
            history = self.keeps_history() if won else True
            return won, dead, dataclasses.replace(run, history=history)
        with self.solo.shared(), self.db.begin() as conn:
            won, dead = leases.take_lease(conn, run.connector_id, run.owner, self.lease_seconds)
            if won:
                run = dataclasses.replace(run, history=self.keeps_history(conn))
                if dead is None and run.lanes is None and not run.stop.is_set():
                    run = dataclasses.replace(run, first_ids=self._first_claim(conn, run))
            return won, dead, run

    def _first_claim(self, conn: sa.Connection, run: _Run) -> list[int] | None:
        """``_claim`` of the run's first batch in the transaction that took the lease (one
        transaction fewer per run); None when a switch says the run must not start (the
        drain then says why, as before any batch), or when a batch waits to go alone."""
        if self.solo.awaited or switches.why_run_ends(conn, run.connector_id) is not None:
            return None
        ids, stopped = tasks.next_ids(conn, run.connector_id, 0, self.batch_size, self.batch_bytes)
        if ids:  # on the lease this transaction took: nobody can have taken it since
            leases.renew_lease(
                conn, run.connector_id, run.owner, self.lease_seconds, **_in_flight(ids, stopped)
            )
        return ids

    def _claim(self, run: _Run, cursor: int) -> list[int]:
        """The next batch's task ids, in order: at most ``batch_size`` tasks and, past the
        first, no more than ``batch_bytes`` of stored payload (a run's memory stays bounded
        whatever the size of the tasks). Recorded on the lease, so readers see them running."""
        with self.db.begin() as conn:
            ids, stopped = tasks.next_ids(
                conn, run.connector_id, cursor, run.claim.tasks or self.batch_size, self.batch_bytes
            )
            if ids:
                self._fence(conn, run, **_in_flight(ids, stopped))
        return ids

    def _claim_next(self, conn: sa.Connection, run: _Run, scope: _Range, outcome: _Outcome) -> None:
        """Claim the next batch in this batch's transaction (what ``_claim`` does in one of
        its own): its ids replace this batch's on the lease in the same commit, so a runner
        that dies applying it is known to have died there, as with ``_claim``; one
        transaction and one commit fewer per batch."""
        cursor = max(outcome.last_id, scope.upto)
        ids, stopped = tasks.next_ids(
            conn, run.connector_id, cursor, run.claim.tasks or self.batch_size, self.batch_bytes
        )
        self._fence(conn, run, **_in_flight(ids, stopped))
        outcome.next_ids = ids

    def _drain(self, run: _Run, on_progress: ProgressCallback | None) -> None:
        if run.lanes is not None:
            self._drain_lanes(run, run.lanes, on_progress)
            return
        # The switches are looked at before each batch in its own transaction
        # (``_apply_once``), and before the first claim in the lease's (``_first_claim``).
        cursor, ids = 0, run.first_ids
        looked = ids is not None
        while not run.stop.is_set():
            if ids is not None and not ids:
                return  # the last claim found nothing: the queue is drained
            if ids is None:  # not claimed by a batch's transaction (a switch was off, ...)
                if self._switched_off(run):
                    return
                looked = True
            with self.solo.shared():  # from the claim to the commit, the batch is in flight
                if ids is None:
                    ids = self._retrying(run, functools.partial(self._claim, run, cursor))
                if not ids:
                    return
                scope = _Range(cursor, ids[-1], looked)
                looked = False
                outcome = self._retrying(run, functools.partial(self._apply_batch_tx, run, scope))
            if on_progress is not None:
                on_progress(run.result)
            if outcome.stop:
                return
            cursor = max(outcome.last_id, ids[-1])
            ids = outcome.next_ids

    def _drain_lanes(self, run: _Run, lanes: LaneRun, on_progress: ProgressCallback | None) -> None:
        """ENTITY: plan a batch of lanes' next tasks, apply it, until no lane can move."""
        while not run.stop.is_set():
            if self._switched_off(run):
                break
            if not run.fenced:
                self._retrying(run, functools.partial(self._bury, run))
            plan = self._retrying(run, functools.partial(self._plan, run, lanes))
            if not plan.ids:
                break
            with self.solo.alone() if plan.suspect else self.solo.shared():
                outcome = self._retrying(run, functools.partial(self._apply_batch_tx, run, plan))
            if on_progress is not None:
                on_progress(run.result)
            if outcome.stop:
                break
        if lanes.retry_soon and not run.stop.is_set():
            run.result.busy = True  # a lane waits on another runner: look again shortly
        if lanes.stuck and not run.result.stopped:
            self._still_stopped(run, min(lanes.stuck))
        self._still_waiting(run)

    def _still_waiting(self, run: _Run) -> None:
        """How many of the connector's tasks wait when the run ends, those that waited before
        it and were left alone included: like ``stopped``, every run says so while it holds
        (a loop "until nothing waits" ends when nothing does)."""
        try:
            with self.db.connect() as conn:
                run.result.waiting = tasks.count_waiting(conn, run.connector_id)
        except sa.exc.SQLAlchemyError:  # the run's own count stands
            log.warning("cannot count the connector's waiting tasks", exc_info=True)

    def _switched_off(self, run: _Run, conn: sa.Connection | None = None) -> bool:
        """Whether an operator switched processing off or disabled the connector since the
        run began: checked before each batch (in its transaction, ``conn``, where there is
        one), so the run ends after the batch in hand (what it did commits; the rest waits)
        instead of draining the whole queue."""
        if conn is not None:
            why = switches.why_run_ends(conn, run.connector_id)
        else:
            try:
                with self.db.connect() as own:
                    why = switches.why_run_ends(own, run.connector_id)
            except sa.exc.SQLAlchemyError:  # the batch's statements meet the trouble, if real
                return False
        if why is None:
            return False
        log.info(
            "run of connector %r ends before its next batch: %s", run.result.connector_name, why
        )
        return True

    def _still_stopped(self, run: _Run, task_id: int) -> None:
        """A lane is halted at an Error task a run met (and did not fail itself): the run
        says so as one that failed the task would, so ``stopped`` does not depend on which
        run saw the failure."""
        with self.db.connect() as conn:
            row = tasks.row(conn, task_id)
        if row is not None and row.process_type == ProcessType.ERROR.value:
            run.result.stopped = True
            run.result.error = row.error_message

    def _bury(self, run: _Run) -> None:
        """A lease-free run first takes the in-flight records of the connector's runners that
        died, one at a time, and deals with their batches (``_after_death``)."""
        while True:
            tally = _tally(run.result)
            with self.db.begin() as conn:
                dead = [ids for ids in inflight.take_dead(conn, run.connector_id) if ids]
                # The deaths are counted in the transaction that takes the record: from the
                # moment it is gone, its tasks are suspects, which every runner applies alone
                # (``LaneRun.plan``); none can slip into another runner's batch meanwhile.
                counted = [
                    self._count_deaths(conn, run, min(ids), max(ids), ids, tally) for ids in dead
                ]
            if not dead:
                return
            self._committed(run, tally)
            for ids, (rest, doomed) in zip(dead, counted, strict=True):
                self._after_count(run, min(ids), max(ids), rest, doomed)

    def _forget_in_flight(self, run: _Run) -> None:
        try:
            with self.db.begin() as conn:
                inflight.clear(conn, run.owner)
        except sa.exc.SQLAlchemyError:  # it expires; a later run finds nothing left in it
            log.warning("cannot clear the in-flight record of a run", exc_info=True)

    def _plan(self, run: _Run, lanes: LaneRun) -> Plan:
        with self.db.connect() as conn:
            elsewhere = (
                frozenset()
                if run.fenced
                else inflight.held_by_others(conn, run.connector_id, run.owner)
            )
            return lanes.plan(conn, self.batch_size, self.batch_bytes, elsewhere)

    def _retrying(self, run: _Run, step: Callable[[], _T]) -> _T:
        """Do a step of the run; a transient database error (a deadlock, a lock timeout, a lost
        connection: CONTRACT §9) is tried again, with back-off, up to ``transient_retries``
        times in a row, then the run gives up (``TransientGiveUp``). Nothing of a failed try
        was committed, and no task's process type or attempts change. A lost lease is not
        retried: the run is over."""
        delay = 0.05
        for tries in itertools.count(1):
            try:
                return step()
            except Exception as exc:
                if isinstance(exc, LeaseLostError) or not is_transient(exc):
                    raise
                if tries > self.transient_retries or run.stop.is_set():
                    raise TransientGiveUp(tries, exc) from exc
                log.info("transient database error, trying again in %.2fs: %s", delay, exc)
                run.stop.wait(delay)
                delay = min(delay * 2, 2.0)
        raise AssertionError("unreachable")

    # -- one batch ----------------------------------------------------------------------
    def _apply_batch_tx(self, run: _Run, scope: _Scope) -> _Outcome:
        """Apply a batch in one transaction: first optimistically, without a SAVEPOINT per task
        (two round trips fewer per task); if anything fails, the transaction is rolled back and
        the batch is applied again carefully, each task in its own SAVEPOINT, so the
        process-type rules hold exactly. Should the careful pass fail too, in a step the
        batch shares, the batch goes one task per transaction."""
        for careful in (False, True):
            try:
                return self._apply_once(run, scope, careful, claim_next=True)
            except _FastPathFailed:
                continue
            except Exception as exc:
                if _not_the_tasks(exc):
                    raise
                cause = exc
        log.warning("batch %s failed in a shared step: %s", scope, cause)
        return self._apply_isolated(run, scope)

    def _apply_once(
        self, run: _Run, scope: _Scope, careful: bool, claim_next: bool = False
    ) -> _Outcome:
        """One transaction over the batch; counted only once committed. Its commit also
        clears the batch from the lease: no longer in flight; with ``claim_next`` (a
        CONNECTOR batch), it records the next batch there instead (``_claim_next``)."""
        tally = _tally(run.result)
        with (
            tracing.batch(tally, careful, _FastPathFailed) as tally.trace,
            self.db.begin() as conn,
        ):
            if (
                isinstance(scope, _Range)
                and not (careful or scope.looked)
                and self._switched_off(run, conn)
            ):
                self._fence(conn, run, run_first_task_id=None, run_last_task_id=None)
                return _Outcome(stop=True, last_id=scope.after)  # nothing done: ends the run
            if self.apply_timeout > 0:
                dialect_of(conn).bound_statement_time(conn, int(self.apply_timeout * 1000))
            # The optimistic pass holds its UPDATEs back and sends them grouped (writes.py;
            # how, Dialect.pipelined_executemany decides).
            held = (
                None if careful else WriteBehind(conn, self._id_pool, self.registry.table_graph())
            )
            with held or contextlib.nullcontext():
                outcome = self._apply_batch(conn, run, scope, tally, careful, held)
            if (
                claim_next
                and isinstance(scope, _Range)
                and not outcome.stop
                and not self.solo.awaited
            ):
                self._claim_next(conn, run, scope, outcome)
            else:
                self._fence(conn, run, run_first_task_id=None, run_last_task_id=None)
        self._committed(run, tally)
        if self._growth is not None and held is not None and held.inserted:
            self._growth.inserted(self.db, held.inserted)
        if run.lanes is not None:
            run.lanes.take_in(outcome.lanes)
            if run.lanes.locks:
                self._after_commit(run, run.lanes, outcome.lanes)
        return outcome

    def _after_commit(self, run: _Run, lanes: LaneRun, out: LaneOutcome) -> None:
        """Close the race between a runner that marks a task waiting and another that applies
        the awaited entity at the same time (PostgreSQL, where runs overlap): neither sees
        the other's uncommitted write. So, once a batch has committed, the lanes it wrote wake
        their waiters again (a wait committed meanwhile is seen now), and the tasks it made
        wait look once more for what they wait for (an entity committed meanwhile is seen
        now). Whichever commit came last, one of the two finds the other's."""
        if not (out.written or out.waited):
            return
        woken: set[Any] = set()
        try:
            with self.db.begin() as conn:
                woken |= _wake_waiters(conn, out.written, run.connector_id)
                if out.waited:
                    resolver = Resolver(conn, self.registry, self.applier.site_ids(conn))
                    for task_id, lane, payload, index, site in out.waited:
                        if resolver.resolve(payload, index, site) is not None:
                            tasks.unwait(conn, task_id)
                            woken.add(lane)
        except sa.exc.SQLAlchemyError:  # the wait's timeout still ends it; nothing is lost
            log.warning("cannot look again at waiting tasks after a batch", exc_info=True)
            return
        lanes.take_in(LaneOutcome(woken=woken))

    def _committed(self, run: _Run, tally: _Tally) -> None:
        _merge(run, tally)
        for task_id in tally.applied_ids:
            self.hooks.task_applied(tally.connector_name, task_id)
        for task_id, error in tally.failures:
            self.hooks.task_failed(tally.connector_name, task_id, error)

    def _fence(self, conn: sa.Connection, run: _Run, **values: Any) -> None:
        """Renew the lease (recording ``values`` on it), or raise if the run lost it. As a
        batch's last statement, it commits the batch only while this run owns the lease; the
        lease row is locked from there to the commit, never across the batch."""
        if not run.fenced:
            return  # its lanes are locked by this transaction instead
        if not leases.renew_lease(conn, run.connector_id, run.owner, self.lease_seconds, **values):
            raise LeaseLostError("the lease was lost before the batch was applied")

    def _apply_isolated(self, run: _Run, scope: _Scope) -> _Outcome:
        """The last resort: one transaction per task; a task whose own transaction still
        fails is failed alone, by its process type, in a transaction of its own."""
        if isinstance(scope, _Range):
            with self.db.connect() as conn:
                ids = tasks.ids_in_range(conn, run.connector_id, scope.after, scope.upto)
            outcome = _Outcome(last_id=scope.after)
        else:
            ids, outcome = scope.ids, _Outcome()
        previous = outcome.last_id
        for task_id in ids:
            if run.stop.is_set():
                outcome.stop = True
                break
            one: _Scope = (
                _Range(previous, task_id) if isinstance(scope, _Range) else scope.only(task_id)
            )
            self._in_flight(run, task_id)  # should the worker die now, it was this task
            try:
                step = self._apply_once(run, one, careful=True)
            except Exception as exc:
                if _not_the_tasks(exc):
                    raise
                step = self._fail_alone(run, task_id, error_text(exc))
            outcome.last_id = task_id
            previous = task_id
            if step.stop:
                outcome.stop = True
                break
        return outcome

    def _in_flight(self, run: _Run, task_id: int) -> None:
        """Record one task alone as the batch in flight (poison quarantine narrows down)."""
        if run.fenced:
            with self.db.begin() as conn:
                self._fence(conn, run, run_first_task_id=task_id, run_last_task_id=task_id)

    def _after_death(self, run: _Run, first: int, last: int) -> None:
        """A runner died with the tasks [first, last] in flight (CONTRACT §9): count a death
        for each still queued; a task at ``quarantine_after`` deaths becomes ERROR
        ("quarantined"); the rest are applied again one task per transaction, so a task that
        kills its worker again is the only one in flight when it does."""
        tally = _tally(run.result)
        with self.db.begin() as conn:
            rest, doomed = self._count_deaths(conn, run, first, last, None, tally)
        self._committed(run, tally)
        self._after_count(run, first, last, rest, doomed)

    def _count_deaths(
        self,
        conn: sa.Connection,
        run: _Run,
        first: int,
        last: int,
        ids: list[int] | None,
        tally: _Tally,
    ) -> tuple[list[int], list[int]]:
        """Count a death for each task still queued in [first, last] (of ``ids`` only, when
        given) and quarantine those at ``quarantine_after``: (the others, the quarantined),
        in id order."""
        counted = tasks.count_deaths(conn, run.connector_id, first, last, ids)
        if counted:  # operators see it where they look, not only in the taker's output
            logs.write_event(
                conn,
                "Integration",
                "WORKERDIED",
                f"connector {run.result.connector_name!r}: a runner died (or froze past its "
                f"lease) with tasks {first} to {last} in flight; each of the {len(counted)} "
                "still queued counts a death and is applied again alone",
                "W",
            )
        doomed = [(i, d) for i, d in counted if d >= run.rules.quarantine_after]
        for task_id, deaths in doomed:
            self._quarantine(conn, task_id, deaths, tally)
        self._fence(conn, run)
        quarantined = {i for i, _ in doomed}
        return [i for i, _ in counted if i not in quarantined], sorted(quarantined)

    def _after_count(
        self, run: _Run, first: int, last: int, rest: list[int], doomed: list[int]
    ) -> None:
        """After a death was counted: the quarantined tasks reported, the rest applied again
        one task per transaction."""
        for task_id in doomed:
            self.hooks.task_quarantined(run.result.connector_name, task_id)
        if not rest:
            return
        log.warning(
            "connector %r: a worker died applying tasks %d to %d; applying them one by one",
            run.result.connector_name,
            first,
            last,
        )
        scope: _Scope = _Range(first - 1, last)
        if run.lanes is not None:
            run.lanes.scan_from = 0  # what was replayed may free lanes anywhere
            with self.db.connect() as conn:
                rows = [r for r in (tasks.row(conn, i) for i in rest) if r is not None]
            scope = Plan([r.task_id for r in rows], {r.task_id: r.lane for r in rows})
        # Nothing else of this process is in flight meanwhile: should the culprit kill it
        # again, no other runner's batch counts a death with it.
        with self.solo.alone():
            self._apply_isolated(run, scope)

    @staticmethod
    def _quarantine(conn: sa.Connection, task_id: int, deaths: int, tally: _Tally) -> None:
        error = f"quarantined: the worker applying it died {deaths} times"
        logs.record_task_error(conn, task_id, error, set_error_state=True, attempt=False)
        logs.write_event(conn, "Integration", "QUARANTINE", f"task {task_id} {error}")
        tally.failed += 1
        tally.error = error
        tally.failures.append((task_id, error))

    def _fail_alone(self, run: _Run, task_id: int, error: str) -> _Outcome:
        tally = _tally(run.result)
        outcome = _Outcome(last_id=task_id)
        with self.db.begin() as conn:
            row = tasks.row(conn, task_id)
            if row is None:
                return outcome
            rule = policy(_process_type(row))
            stop, drop = self._failed(conn, row, rule, error, tally, run.rules)
            if drop:
                if run.history:
                    self._record_dropped(conn, row, error)
                tasks.remove(conn, [task_id])
            self._fence(conn, run)
        self._committed(run, tally)
        if run.lanes is None:
            outcome.stop = stop
        elif stop:  # under ENTITY a stop halts the task's lane only
            outcome.lanes.halted.add(row.lane)
            run.lanes.take_in(outcome.lanes)
        return outcome

    def _record_dropped(self, conn: sa.Connection, row: Any, error: str) -> None:
        recorder = Recorder(self.registry, utcnow())
        recorder.finished(row, _decode(row.data), DROPPED, error)
        recorder.write(conn)

    def _prefetch(
        self,
        conn: sa.Connection,
        rows: list[sa.Row[Any]],
        payloads: dict[int, Payload | CorruptTaskError],
        sites: dict[str, int],
        careful: bool,
        history: bool = False,
    ) -> tuple[Resolver, TargetCache | None]:
        """Resolve the batch's translations and find its targets set-wise. In the careful
        pass a failure here (a value the database refuses in a lookup) only costs speed:
        each task then looks up what it needs inside its own SAVEPOINT."""
        resolver = Resolver(conn, self.registry, sites)
        ready = [(row, p) for row in rows if isinstance(p := payloads[row.task_id], Payload)]
        savepoint = conn.begin_nested() if careful else None
        try:
            resolver.prefetch((p, row.site_name) for row, p in ready)
            targets = self.applier.prefetch_targets(conn, ready, resolver, sites, rows=history)
        except Exception as exc:
            if savepoint is None or is_transient(exc):
                raise
            savepoint.rollback()
            resolver.reset()
            return resolver, None
        if savepoint is not None:
            savepoint.commit()
        return resolver, targets

    def _apply_batch(
        self,
        conn: sa.Connection,
        run: _Run,
        scope: _Scope,
        result: _Tally,
        careful: bool,
        held: WriteBehind | None = None,
    ) -> _Outcome:
        if isinstance(scope, _Range):
            rows = tasks.load_batch(conn, run.connector_id, scope.after, scope.upto)
            outcome = _Outcome(last_id=scope.after)
        else:
            rows, outcome = self._take_lanes(conn, run, scope), _Outcome()
        careful = careful or self._needs_care(rows)
        sites = self.applier.site_ids(conn)
        payloads = {row.task_id: _decode(row.data) for row in rows}
        merged = self._coalesce(run, scope, rows, payloads, careful)
        if merged is not None:
            payloads, originals = {**payloads, **merged.payloads}, payloads
        # Tasks a later task carries are not applied themselves: nothing to look up for them.
        live = rows if merged is None else [r for r in rows if r.task_id not in merged.into]
        resolver, targets = self._prefetch(conn, live, payloads, sites, careful, run.history)
        if targets is not None:
            # Task by task (each in its SAVEPOINT), nothing is held back: a task rolled back
            # must take its updates with it.
            targets.hold_writes(None if careful else held)
        batch = _Batch(conn, resolver, sites, targets, careful, run.rules, self.clock(), run.lanes)
        if merged is not None:
            batch.merged, batch.originals = merged, originals
            batch.rows = {row.task_id: row for row in rows}
        if run.history:
            batch.recorder = Recorder(self.registry, utcnow())
        if run.lanes is not None:
            done = self._walk_lanes(batch, run.lanes, rows, payloads, result, outcome, run.stop)
            outcome.lanes.waited = batch.waited
            self._wake(conn, run, [i for i in result.applied_ids if i in done], rows, outcome)
            if held is not None:
                held.flush()
            if batch.recorder is not None:
                batch.recorder.write(conn)
            tasks.remove(conn, done)
            if not run.fenced:
                inflight.clear(conn, run.owner)  # committed with the batch: no longer in flight
            return outcome
        done_ids = self._walk_queue(batch, rows, payloads, result, outcome, run.stop)
        if held is not None:
            held.flush()
        if batch.recorder is not None:
            batch.recorder.write(conn)
        tasks.remove(conn, done_ids)
        return outcome

    def _needs_care(self, rows: list[Any]) -> bool:
        """Tasks that failed before will likely fail again: go careful at once, unless each
        of them is backing off (passed over, not tried: it cannot fail the batch)."""
        now = self.clock()
        return any(row.error_message is not None and not _backing_off(row, now) for row in rows)

    def _walk_queue(
        self,
        batch: _Batch,
        rows: list[Any],
        payloads: dict[int, Payload | CorruptTaskError],
        result: _Tally,
        outcome: _Outcome,
        stop: threading.Event,
    ) -> list[int]:
        """CONNECTOR: the batch's tasks in task-id order until one stops the queue. The
        tasks taken out."""
        done_ids: list[int] = []
        for row in rows:
            if stop.is_set():
                outcome.stop = True
                break
            outcome.last_id = row.task_id
            if batch.merged and row.task_id in batch.merged.into:
                continue  # its values go with a later task of its object (coalescing)
            stop_here, remove = self._turn(batch, row, payloads[row.task_id], result)
            if remove:
                done_ids.append(row.task_id)
                done_ids += self._absorbed(batch, row.task_id, result)
            if stop_here:
                outcome.stop = True
                break
        return done_ids

    def _take_lanes(self, conn: sa.Connection, run: _Run, plan: Plan) -> list[Any]:
        """The plan's rows in the lanes this transaction holds; lanes another runner holds
        are left to it (and looked at again by a later run)."""
        assert run.lanes is not None
        held = self._lock_lanes(conn, run, plan) if run.lanes.locks else None
        if held is not None and not held and plan.ids:
            # Every lane it could take is another runner's: leave them to it, look again soon.
            run.lanes.halted |= plan.lanes()
            run.lanes.retry_soon = True
        ids = plan.batch(held, self.batch_size, self.batch_bytes)
        if ids and not run.fenced:  # committed now, so that it outlives this runner's death
            with self.db.begin() as other:
                inflight.record(other, run.owner, run.connector_id, ids, self.lease_seconds)
        return tasks.load_ids(conn, ids) if ids else []

    @staticmethod
    def _lock_lanes(conn: sa.Connection, run: _Run, plan: Plan) -> set[Any]:
        """Take up to ``plan.want`` of the plan's lanes, oldest heads first, skipping those
        another runner holds. Heads the plan knows are locked by primary key (no scan of the
        queue); lanes whose head it does not know (a replay) are looked up."""
        known = sorted(h for h in plan.heads.values() if h is not None)
        held = tasks.lock_heads(conn, known, plan.want) or set()
        unknown = [lane for lane, head in plan.heads.items() if head is None]
        unknown += [lane for lane in plan.lanes() if lane not in plan.heads]
        if len(held) < plan.want:  # every known head was tried: some were not taken
            missed = {
                h: lane for lane, h in plan.heads.items() if h is not None and lane not in held
            }
            # A head that left the queue since the run saw it (the lane's first task, applied
            # in an earlier batch of this run, before a task the run passed over) is no other
            # runner's: its lane is looked up by name, which finds the head it has now.
            gone = set(missed) - tasks.queued_ids(conn, list(missed)) if missed else set()
            unknown += [missed[h] for h in sorted(gone)]
        if unknown:
            held |= tasks.lock_lanes(conn, run.connector_id, unknown) or set()
        return held

    def _walk_lanes(
        self,
        batch: _Batch,
        lanes: LaneRun,
        rows: list[Any],
        payloads: dict[int, Payload | CorruptTaskError],
        result: _Tally,
        outcome: _Outcome,
        stop: threading.Event,
    ) -> dict[int, Any]:
        """Each lane in task-id order, exactly as a CONNECTOR run walks its queue, but a task
        that stops stops its lane only. The tasks taken out (id: lane)."""
        causes = Causes.of(batch.conn, lanes.connector_id, rows, payloads, lanes.waits.types)
        now = batch.now
        done: dict[int, Any] = {}
        seen = outcome.lanes
        for row in rows:
            if stop.is_set():
                outcome.stop = True
                break
            if lanes.skips(row, seen):
                continue
            outcome.last_id = row.task_id
            if batch.merged and row.task_id in batch.merged.into:
                continue  # its values go with a later task of its lane (coalescing)
            if not lanes.waits.may_run(row, now):
                seen.halted.add(row.lane)  # it waits; its lane waits behind it
                continue
            blocker = causes.blocker(row, done)
            if blocker is not None:  # a cause is queued in another lane: effect after it
                seen.halted.add(row.lane)
                seen.retry_soon = seen.retry_soon or not blocker[1]
                continue
            stop_here, remove = self._turn(batch, row, payloads[row.task_id], result)
            if remove:
                done[row.task_id] = row.lane
                for absorbed in self._absorbed(batch, row.task_id, result):
                    done[absorbed] = row.lane
            if stop_here:
                seen.halted.add(row.lane)
            elif not remove:
                seen.passed[row.lane] = row.task_id
        return done

    def _coalesce(
        self,
        run: _Run,
        scope: _Scope,
        rows: list[Any],
        payloads: dict[int, Payload | CorruptTaskError],
        careful: bool,
    ) -> Merged | None:
        """Coalescing (a connector's ``coalesce``), on the optimistic pass only: which tasks
        of the batch a later task of their object carries; None when none."""
        if not run.rules.coalesce:
            return None
        merged = None if careful or len(rows) < 2 else coalesce(rows, payloads, self.registry)
        if isinstance(scope, _Range):
            self._read_ahead(run, len(rows), len(merged.into) if merged else 0)
        return merged if merged else None

    def _read_ahead(self, run: _Run, claimed: int, absorbed: int) -> None:
        """With coalescing, a batch is as large as the writes it makes, not the tasks it
        claims: where its tasks merged, the next batch claims as many more (up to
        ``READ_AHEAD`` times the batch size), so a burst of updates of a few objects costs a
        few transactions, not one per ``batch_size`` logged tasks. A batch that merged
        nothing (or went careful, where nothing merges) brings the claim back down."""
        writes = max(claimed - absorbed, 1)
        wanted = self.batch_size * claimed // writes
        run.claim.tasks = max(self.batch_size, min(wanted, self.batch_size * READ_AHEAD))

    @staticmethod
    def _absorbed(batch: _Batch, carrier: int, result: _Tally) -> list[int]:
        """The tasks a carrier applied just now absorbed (coalescing): they leave the queue
        with it, count as applied, and are recorded as coalesced into it."""
        if not batch.merged or carrier not in batch.merged.absorbed:
            return []
        if carrier not in result.applied_ids[-1:]:
            return []  # it was dropped, not applied: what it absorbed stays queued
        absorbed = batch.merged.absorbed[carrier]
        result.applied += len(absorbed)
        result.coalesced += len(absorbed)
        result.applied_ids.extend(absorbed)
        if batch.recorder is not None:
            for task_id in absorbed:  # with what its references resolved to, as it was carried
                batch.recorder.coalesced(
                    batch.rows[task_id], batch.originals[task_id], batch.resolver, carrier
                )
        return absorbed

    def _wake(
        self, conn: sa.Connection, run: _Run, applied: list[int], rows: list[Any], out: _Outcome
    ) -> None:
        """Tasks waiting for an entity a task of this batch wrote may run again."""
        if not applied:
            return
        lane_of = {row.task_id: row.lane for row in rows}
        written = {lane_of[i] for i in applied if lane_of.get(i) is not None}
        out.lanes.woken |= _wake_waiters(conn, written, run.connector_id)
        out.lanes.written |= written

    def _turn(
        self, batch: _Batch, row: Any, payload: Payload | CorruptTaskError, result: _Tally
    ) -> tuple[bool, bool]:
        """One task's turn, in its span when tracing records (``syncbus.tracing``)."""
        if result.trace is None:
            return self._take_turn(batch, row, payload, result)
        return result.trace.task(row, lambda: self._take_turn(batch, row, payload, result))

    def _take_turn(
        self, batch: _Batch, row: Any, payload: Payload | CorruptTaskError, result: _Tally
    ) -> tuple[bool, bool]:
        """One task's turn, by its process type's policy: (stop the run?, take it out?)."""
        rule = policy(_process_type(row))
        if rule.turn is Turn.STOP:
            result.stopped = True
            result.error = row.error_message
            return True, False
        if rule.backoff and _backing_off(row, batch.now):
            return False, False  # its next attempt has not come: passed, as if skipped
        if rule.turn is Turn.SKIP:
            tasks.set_process_type(batch.conn, row.task_id, rule.after_skip or ProcessType.DEFAULT)
            result.skipped += 1
            return False, False
        changes: dict[str, list[Any]] | None = None if batch.recorder is None else {}
        if batch.careful:
            failure = self._try_apply(
                batch.conn, row, payload, batch.resolver, batch.sites, batch.targets, changes
            )
        else:
            failure = self._apply_fast(batch, row, payload, changes)
        if failure is None:
            result.applied += 1
            result.applied_ids.append(row.task_id)
            if batch.recorder is not None and isinstance(payload, Payload):
                # A carrier's record is of its own payload as queued (its record keeps that
                # text): the ids its own translation records resolved to, not the merged ones.
                own = batch.originals.get(row.task_id) if batch.merged else None
                queued = own if isinstance(own, Payload) else payload
                batch.recorder.applied(row, queued, batch.resolver, changes)
            return False, True
        awaited = (
            None
            if batch.lanes is None
            else batch.lanes.waits.awaited(batch.conn, row, failure.missing)
        )
        if awaited is not None:  # ENTITY: a missing reference is waited for, not failed
            tasks.mark_waiting(batch.conn, row.task_id, awaited[1], awaited[0])
            if isinstance(payload, Payload) and failure.missing[0] in payload.records:
                index = payload.records.index(failure.missing[0])
                batch.waited.append((row.task_id, row.lane, payload, index, row.site_name))
            result.waiting += 1
            result.waited_ids.append(row.task_id)
            return True, False
        stop, drop = self._failed(
            batch.conn, row, rule, failure.text, result, batch.rules, batch.now
        )
        if drop and batch.recorder is not None:
            batch.recorder.finished(row, payload, DROPPED, failure.text)
        return stop, drop

    def _apply_fast(
        self,
        batch: _Batch,
        row: Any,
        payload: Payload | CorruptTaskError,
        changes: dict[str, list[Any]] | None = None,
    ) -> _Failure | None:
        """The optimistic pass: no SAVEPOINT; any failure of the task's own sends the whole
        batch down the careful way (``_FastPathFailed``), so this never returns an error."""
        if not isinstance(payload, Payload):
            raise _FastPathFailed
        try:
            self.applier.apply(
                batch.conn, row, payload, batch.resolver, batch.sites, batch.targets, changes
            )
        except Exception as exc:
            if _not_the_tasks(exc):
                raise
            if isinstance(exc, TranslationError | PageNotFoundError) and self._waits_in_place(
                batch, row, exc
            ):
                return _Failure(error_text(exc), exc.missing)
            raise _FastPathFailed from exc
        return None

    @staticmethod
    def _waits_in_place(batch: _Batch, row: Any, exc: TranslationError | PageNotFoundError) -> bool:
        """ENTITY: a task whose object names a reference that does not exist yet (or a page
        whose parent does not), found before it wrote anything, waits on the optimistic pass
        like on the careful one: the batch is not rolled back and replayed task by task for
        it, and keeps its merges (coalescing). Not a carrier of merged tasks: its failure may
        be an absorbed task's reference, and the careful pass applies those tasks one by one."""
        return (
            batch.lanes is not None
            and exc.before_writes
            and not (batch.merged and row.task_id in batch.merged.absorbed)
            and batch.lanes.waits.awaited(batch.conn, row, exc.missing) is not None
        )

    def _failed(
        self,
        conn: sa.Connection,
        row: Any,
        rule: Policy,
        error: str,
        result: _Tally,
        rules: ConnectorRules,
        now: dt.datetime | None = None,
    ) -> tuple[bool, bool]:
        """A task failed in a run: act by its process type's policy. (stop the run?, drop
        the task?)"""
        result.failed += 1
        result.error = error
        result.failures.append((row.task_id, error))
        if rule.log is ErrorLog.EVENT:
            logs.write_event(
                conn,
                "Integration",
                "DELETEONERROR",
                f"task {row.task_id} '{row.title}' was deleted after it failed: {error}",
            )
        else:
            logs.record_task_error(
                conn,
                row.task_id,
                error,
                set_error_state=rule.becomes_error,
                retry_at=self._retry_at(row, rule, rules, now),
            )
        if rule.drop:
            result.deleted += 1
        if rule.stop:
            result.stopped = True
        return rule.stop, rule.drop

    def _retry_at(
        self, row: Any, rule: Policy, rules: ConnectorRules, now: dt.datetime | None
    ) -> dt.datetime | None:
        """When a task that just failed may be tried again (CONTRACT §9), or None where its
        process type does not back off."""
        if not rule.backoff:
            return None
        attempts = int(getattr(row, "attempts", 0) or 0) + 1
        return (now or self.clock()) + dt.timedelta(seconds=rules.backoff(attempts))

    def _try_apply(
        self,
        conn: sa.Connection,
        row: Any,
        payload: Payload | CorruptTaskError,
        resolver: Resolver,
        sites: dict[str, int],
        targets: TargetCache | None = None,
        changes: dict[str, list[Any]] | None = None,
    ) -> _Failure | None:
        """Apply one task inside a SAVEPOINT; why it failed, else None. Transient database
        errors are not the task's: they end the transaction. ``changes`` (history) is filled
        with what the task changed."""
        if isinstance(payload, CorruptTaskError):
            return _Failure(f"corrupt task: {payload}")
        savepoint = conn.begin_nested()
        try:
            self.applier.apply(conn, row, payload, resolver, sites, targets, changes)
        except Exception as exc:
            if _not_the_tasks(exc):
                raise
            if changes is not None:
                changes.clear()
            savepoint.rollback()
            resolver.reset()  # what the rolled-back task wrote is gone again
            if targets is not None:
                targets.clear()
            text = error_text(exc)
            if is_statement_timeout(exc):
                text = (
                    f"applying the task took longer than apply_timeout ({self.apply_timeout:g} "
                    f"s), and the database cancelled its statement: {text}"
                )
            if isinstance(exc, sa.exc.IntegrityError) and "foreign key" in text.lower():
                why = self.applier.unknown_references(conn, row, payload)
                if why:
                    text = f"{text.rstrip('. ')}. {why}"
            return _Failure(text, getattr(exc, "missing", ()))
        savepoint.commit()
        return None

    # -- one task, out of order -----------------------------------------------------------
    def synchronize(self, conn: sa.Connection, row: Any) -> tuple[bool, str | None]:
        """Run one (locked) task now: success removes it; failure logs the error and keeps
        the task's process type, except that DEFAULT becomes ERROR."""
        sites = self.applier.site_ids(conn)
        resolver = Resolver(conn, self.registry, sites)
        changes: dict[str, list[Any]] | None = {} if self.keeps_history(conn) else None
        payload = _decode(row.data)
        failure = self._try_apply(conn, row, payload, resolver, sites, None, changes)
        if failure is None:
            if changes is not None and isinstance(payload, Payload):
                recorder = Recorder(self.registry, utcnow())
                recorder.applied(row, payload, resolver, changes)
                recorder.write(conn)
            tasks.remove(conn, [row.task_id])
            if row.lane is not None:  # what waits for its entity may run now (CONTRACT §8)
                _wake_waiters(conn, {row.lane}, None)
            return True, None
        rule = policy(_process_type(row))
        rules = ConnectorRules.of(connectors.connector_by_id(conn, row.connector_id))
        logs.record_task_error(
            conn,
            row.task_id,
            failure.text,
            set_error_state=rule.sync_failure_becomes_error,
            retry_at=self._retry_at(row, rule, rules, None),
        )
        return False, failure.text

    def lock_task(self, conn: sa.Connection, task_id: int) -> Any:
        """The task's row, locked for an admin action without waiting (PostgreSQL: NOWAIT;
        the caller turns the lock error into ``TaskBusyError``). None when it is not queued."""
        return tasks.lock_row(conn, task_id)


@dataclass
class _Batch:
    """What every task of a batch shares: the transaction, the resolved translations, the
    sites, the prefetched targets, and whether each task gets a SAVEPOINT (careful)."""

    conn: sa.Connection
    resolver: Resolver
    sites: dict[str, int]
    targets: TargetCache | None
    careful: bool
    rules: ConnectorRules
    now: dt.datetime  # the batch's clock: whose back-off has run out
    lanes: LaneRun | None = None  # ENTITY: the run's lanes (and when a task may wait)
    waited: list[Any] = field(default_factory=list)  # tasks that began waiting in it
    recorder: Recorder | None = None  # history on: the records of its finished tasks
    merged: Merged | None = None  # coalescing: which tasks another one carries
    originals: dict[int, Any] = field(default_factory=dict)  # payloads as queued
    rows: dict[int, Any] = field(default_factory=dict)  # the batch's rows by id


def _wake_waiters(conn: sa.Connection, written: set[str], own: int | None) -> set[Any]:
    """Tasks (of any connector) waiting for an entity in one of the lanes ``written`` may run
    again. The lanes woken among connector ``own``'s tasks (its run takes them up itself);
    every other connector with tasks woken is notified, so its workers look again
    (PostgreSQL; SQLite polls)."""
    if not written:
        return set()
    woken: set[Any] = set()
    others: set[int] = set()
    for connector_id, lane in tasks.wake(conn, written):
        if connector_id == own:
            woken.add(lane)
        else:
            others.add(int(connector_id))
    for connector_id in others:
        name = connectors.connector_by_id(conn, connector_id).connector_name
        dialect_of(conn).notify(conn, str(name))
    return woken


def _not_the_tasks(exc: BaseException) -> bool:
    """An error applying a batch that is not a task's failure (``is_transient``), except a
    statement that ran past ``apply_timeout``: that one is the task's (it never returns)."""
    return is_transient(exc) and not is_statement_timeout(exc)


def _decode(data: str) -> Payload | CorruptTaskError:
    try:
        return decode(data)
    except CorruptTaskError as exc:
        return exc


def _backing_off(row: Any, now: dt.datetime) -> bool:
    """Whether the task's next attempt (CONTRACT §9) has not come yet."""
    due = as_utc(getattr(row, "next_attempt_at", None))
    return due is not None and due > now


def _process_type(row: Any) -> ProcessType:
    try:
        return ProcessType.parse(row.process_type)
    except ValueError:
        return ProcessType.DEFAULT


class _Heartbeat:
    """Extends a run's lease every third of its length while the run lasts, so a long batch
    does not let the lease run out under a live runner."""

    def __init__(
        self, processor: Processor, connector_id: int, owner: str, inflight: bool = False
    ) -> None:
        self.processor = processor
        self.connector_id = connector_id
        self.owner = owner
        self.inflight = inflight  # a lease-free run: renew its in-flight record instead
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="syncbus-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def _beat(self) -> None:
        interval = self.processor.lease_seconds / 3
        while not self._done.wait(interval):
            try:
                with self.processor.db.begin() as conn:
                    if self.inflight:
                        inflight.renew(conn, self.owner, self.processor.lease_seconds)
                    else:
                        leases.renew_lease(
                            conn, self.connector_id, self.owner, self.processor.lease_seconds
                        )
            except sa.exc.SQLAlchemyError:
                continue  # the next beat or batch tries again; fencing catches a real loss


# The old name: "Engine" also names SQLAlchemy's engine, so the class is now Processor.
Engine = Processor
