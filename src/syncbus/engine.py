"""Processing: exclusive runs per connector, batches, and the process-type state machine.

A run takes the connector's lease, then repeatedly claims the next batch of tasks in task-id
order and applies it in ONE transaction, each task inside a SAVEPOINT: a failing task rolls
back alone, and a task's effect and its removal from the queue commit together.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from syncbus.applier import Applier
from syncbus.content.registry import TypeRegistry
from syncbus.content.targets import TargetCache
from syncbus.enums import ProcessType
from syncbus.errors import CorruptTaskError, SyncBusError
from syncbus.model import ProcessResult
from syncbus.payload import Payload, decode
from syncbus.store import queue
from syncbus.store.schema import task_table
from syncbus.translation import Resolver

ProgressCallback = Callable[[ProcessResult], None]

_TASK_COLUMNS = (
    task_table.c.task_id,
    task_table.c.task_type,
    task_table.c.data_type,
    task_table.c.process_type,
    task_table.c.object_type,
    task_table.c.site_name,
    task_table.c.title,
    task_table.c.data,
    task_table.c.error_message,
)


class _FastPathFailed(Exception):
    """A task failed in the optimistic pass: roll the batch back and apply it carefully."""


class LeaseLostError(SyncBusError):
    """Another runner took the connector over (this runner stalled past its lease)."""


def error_text(exc: BaseException) -> str:
    """A task error as an operator reads it: the cause, without SQL noise."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None:
        return f"{type(exc.orig).__name__}: {str(exc.orig).strip()}"
    if isinstance(exc, SyncBusError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


@dataclass
class _Outcome:
    stop: bool = False
    last_id: int = 0


class Engine:
    """Runs connectors' queues against the content repository."""

    def __init__(
        self,
        db: sa.Engine,
        registry: TypeRegistry,
        applier: Applier,
        *,
        batch_size: int = 200,
        lease_seconds: float = 30.0,
    ) -> None:
        self.db = db
        self.registry = registry
        self.applier = applier
        self.batch_size = batch_size
        self.lease_seconds = lease_seconds

    # -- one run ------------------------------------------------------------------------
    def run(
        self,
        connector_id: int,
        connector_name: str,
        on_progress: ProgressCallback | None = None,
        stop: threading.Event | None = None,
    ) -> ProcessResult:
        """One run: take the lease, drain the queue in batches, release the lease.

        ``stop`` asks the run to end after the task in hand (graceful shutdown): what is done
        commits, the lease is released, the rest waits for the next run.
        """
        result = ProcessResult(connector_name)
        owner = f"{uuid.uuid4().hex}"
        with self.db.begin() as conn:
            queue.ensure_lease_row(conn, connector_id)
            won = queue.acquire_lease(conn, connector_id, owner, self.lease_seconds)
        # The run's times lie inside the lease: two runs' intervals never overlap.
        result.started_at = time.time()
        if not won:
            result.not_run_reason = (
                f"connector {connector_name!r} is being processed by another runner"
            )
            result.busy = True
            result.finished_at = time.time()
            return result
        heartbeat = _Heartbeat(self, connector_id, owner)
        heartbeat.start()
        try:
            self._drain(connector_id, owner, result, on_progress, stop or threading.Event())
        except Exception as exc:
            result.error = error_text(exc)
            result.stopped = True
            with self.db.begin() as conn:
                queue.write_event(
                    conn,
                    "Integration",
                    "PROCESSEXTERNAL",
                    f"processing of connector {connector_name!r} failed: {result.error}",
                )
        finally:
            heartbeat.stop()
            result.finished_at = time.time()
            with self.db.begin() as conn:
                queue.release_lease(
                    conn,
                    connector_id,
                    owner,
                    last_run_applied=result.applied,
                    last_run_failed=result.failed,
                    last_run_error=result.error,
                )
        return result

    def _drain(
        self,
        connector_id: int,
        owner: str,
        result: ProcessResult,
        on_progress: ProgressCallback | None,
        stop: threading.Event,
    ) -> None:
        cursor = 0
        while not stop.is_set():
            with self.db.begin() as conn:  # claim: visible to readers as "running"
                ids = (
                    conn.execute(
                        sa.select(task_table.c.task_id)
                        .where(
                            task_table.c.connector_id == connector_id, task_table.c.task_id > cursor
                        )
                        .order_by(task_table.c.task_id)
                        .limit(self.batch_size)
                    )
                    .scalars()
                    .all()
                )
                if not ids:
                    return
                if not queue.renew_lease(
                    conn,
                    connector_id,
                    owner,
                    self.lease_seconds,
                    run_first_task_id=ids[0],
                    run_last_task_id=ids[-1],
                ):
                    raise LeaseLostError("the lease was lost before the batch was applied")
            outcome = self._apply_batch_tx(connector_id, owner, cursor, ids[-1], result, stop)
            if on_progress is not None:
                on_progress(result)
            if outcome.stop:
                return
            cursor = max(outcome.last_id, ids[-1])

    # -- one batch ----------------------------------------------------------------------
    def _apply_batch_tx(
        self,
        connector_id: int,
        owner: str,
        after: int,
        upto: int,
        result: ProcessResult,
        stop: threading.Event,
    ) -> _Outcome:
        """Apply a batch in one transaction: first optimistically, without a SAVEPOINT per task
        (two round trips fewer per task); if any task fails, the transaction is rolled back and
        the batch is applied again carefully, each task in its own SAVEPOINT, so the
        process-type rules hold exactly."""
        before = dataclasses.replace(result)
        for careful in (False, True):
            try:
                with self.db.begin() as conn:
                    if not queue.renew_lease(conn, connector_id, owner, self.lease_seconds):
                        raise LeaseLostError("the lease was lost before the batch was applied")
                    return self._apply_batch(conn, connector_id, after, upto, result, stop, careful)
            except _FastPathFailed:
                for f in dataclasses.fields(result):
                    setattr(result, f.name, getattr(before, f.name))
        raise AssertionError("unreachable: the careful pass never raises _FastPathFailed")

    def _load_batch(
        self, conn: sa.Connection, connector_id: int, after: int, upto: int
    ) -> list[sa.Row[Any]]:
        stmt = (
            sa.select(*_TASK_COLUMNS)
            .where(
                task_table.c.connector_id == connector_id,
                task_table.c.task_id > after,
                task_table.c.task_id <= upto,
            )
            .order_by(task_table.c.task_id)
        )
        if conn.dialect.name == "postgresql":
            stmt = stmt.with_for_update()
        return list(conn.execute(stmt))

    def _apply_batch(
        self,
        conn: sa.Connection,
        connector_id: int,
        after: int,
        upto: int,
        result: ProcessResult,
        stop: threading.Event,
        careful: bool = True,
    ) -> _Outcome:
        rows = self._load_batch(conn, connector_id, after, upto)
        # Tasks that failed before will likely fail again: go careful at once.
        careful = careful or any(row.error_message is not None for row in rows)
        sites = self.applier.site_ids(conn)
        payloads: dict[int, Payload | CorruptTaskError] = {}
        for row in rows:
            try:
                payloads[row.task_id] = decode(row.data)
            except CorruptTaskError as exc:
                payloads[row.task_id] = exc
        resolver = Resolver(conn, self.registry, sites)
        resolver.prefetch(
            (p, row.site_name) for row in rows if isinstance(p := payloads[row.task_id], Payload)
        )
        targets = self.applier.prefetch_targets(
            conn,
            [(row, p) for row in rows if isinstance(p := payloads[row.task_id], Payload)],
            resolver,
            sites,
        )
        outcome = _Outcome(last_id=after)
        done: list[int] = []
        for row in rows:
            if stop.is_set():
                outcome.stop = True
                break
            outcome.last_id = row.task_id
            try:
                ptype = ProcessType.parse(row.process_type)
            except ValueError:
                ptype = ProcessType.DEFAULT
            if ptype is ProcessType.ERROR:
                result.stopped = True
                result.error = row.error_message
                outcome.stop = True
                break
            if ptype is ProcessType.SKIP_ONCE:
                conn.execute(
                    task_table.update()
                    .where(task_table.c.task_id == row.task_id)
                    .values(process_type=ProcessType.DEFAULT.value)
                )
                result.skipped += 1
                continue
            if not careful:
                payload = payloads[row.task_id]
                if not isinstance(payload, Payload):
                    raise _FastPathFailed
                try:
                    self.applier.apply(conn, row, payload, resolver, sites, targets)
                except Exception as exc:
                    raise _FastPathFailed from exc
                done.append(row.task_id)
                result.applied += 1
                continue
            error = self._try_apply(conn, row, payloads[row.task_id], resolver, sites, targets)
            if error is None:
                done.append(row.task_id)
                result.applied += 1
                continue
            result.failed += 1
            result.error = error
            if ptype is ProcessType.SKIP_ON_ERROR:
                queue.record_task_error(conn, row.task_id, error, set_error_state=False)
            elif ptype is ProcessType.DELETE_ON_ERROR:
                done.append(row.task_id)
                result.deleted += 1
                queue.write_event(
                    conn,
                    "Integration",
                    "DELETEONERROR",
                    f"task {row.task_id} '{row.title}' was deleted after it failed: {error}",
                )
            else:  # DEFAULT: sticky ERROR that blocks the connector
                queue.record_task_error(conn, row.task_id, error, set_error_state=True)
                result.stopped = True
                outcome.stop = True
                break
        if done:
            conn.execute(task_table.delete().where(task_table.c.task_id.in_(done)))
        return outcome

    def _try_apply(
        self,
        conn: sa.Connection,
        row: Any,
        payload: Payload | CorruptTaskError,
        resolver: Resolver,
        sites: dict[str, int],
        targets: TargetCache | None = None,
    ) -> str | None:
        """Apply one task inside a SAVEPOINT; the error text on failure, else None."""
        if isinstance(payload, CorruptTaskError):
            return f"corrupt task: {payload}"
        savepoint = conn.begin_nested()
        try:
            self.applier.apply(conn, row, payload, resolver, sites, targets)
        except Exception as exc:
            savepoint.rollback()
            resolver.reset()  # what the rolled-back task wrote is gone again
            if targets is not None:
                targets.clear()
            return error_text(exc)
        savepoint.commit()
        return None

    # -- one task, out of order -----------------------------------------------------------
    def synchronize(self, conn: sa.Connection, task_id: int) -> tuple[bool, str | None]:
        """Run one task now as DEFAULT: success removes it; failure sets ERROR and logs."""
        stmt = sa.select(*_TASK_COLUMNS).where(task_table.c.task_id == task_id)
        if conn.dialect.name == "postgresql":
            stmt = stmt.with_for_update()
        row = conn.execute(stmt).first()
        if row is None:
            return False, None
        sites = self.applier.site_ids(conn)
        try:
            payload: Payload | CorruptTaskError = decode(row.data)
        except CorruptTaskError as exc:
            payload = exc
        resolver = Resolver(conn, self.registry, sites)
        error = self._try_apply(conn, row, payload, resolver, sites)
        if error is None:
            conn.execute(task_table.delete().where(task_table.c.task_id == task_id))
            return True, None
        queue.record_task_error(conn, task_id, error, set_error_state=True)
        return False, error


class _Heartbeat:
    """Extends a run's lease every third of its length while the run lasts, so a long batch
    does not let the lease run out under a live runner."""

    def __init__(self, engine: Engine, connector_id: int, owner: str) -> None:
        self.engine = engine
        self.connector_id = connector_id
        self.owner = owner
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="syncbus-heartbeat", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def _beat(self) -> None:
        interval = self.engine.lease_seconds / 3
        while not self._done.wait(interval):
            try:
                with self.engine.db.begin() as conn:
                    queue.renew_lease(
                        conn, self.connector_id, self.owner, self.engine.lease_seconds
                    )
            except sa.exc.SQLAlchemyError:
                continue  # the next beat or batch tries again; fencing catches a real loss
