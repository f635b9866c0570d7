"""Triggers to runs: the scheduler, notify calls, wake-ups on new tasks, and the worker pool.

Every trigger marks a connector (or all connectors) as wanted. A wanted connector that is not
running in this process starts a run on the worker pool; one that is running gets one more pass
when its run ends, so a trigger is never lost and never starts a second run here. Across
processes the connector's lease keeps runs exclusive; a run refused because another process
holds the lease is retried shortly, which is also how a crashed worker's connector is taken
over once its lease has run out.

An ``Ordering.ENTITY`` connector on PostgreSQL takes no lease: its runs lock lanes instead, so
a trigger starts as many runs of it as there are idle worker threads (all of them may work on
one connector, lane by lane). Those extra runs give their thread back, after the batch in
hand, as soon as another connector's run waits for one.

Wake-ups: on PostgreSQL every worker LISTENs on the channel each logged task NOTIFYs (across
processes and machines); on SQLite the bus's in-process listener, plus a poll of the task-id
counter every ``poll_interval`` for tasks other processes log.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import sqlalchemy as sa

from syncbus.bus import IntegrationBus
from syncbus.enums import Ordering
from syncbus.model import ProcessResult
from syncbus.store import connectors, tasks, wakeups, workers
from syncbus.store.dialect import dialect_of

log = logging.getLogger("syncbus.dispatcher")

# How often the LISTEN loop looks up from its socket to see whether it should stop: a
# stopping service waits for it, and a quarter of a second keeps a SIGTERM's exit under 1 s.
_LISTEN_TICK = 0.25
# Seconds between a dispatcher's reports that it is alive (``IntegrationBus.list_workers``).
HEARTBEAT = 10.0


class Dispatcher:
    """Runs connectors on a pool of worker threads when something asks for it."""

    def __init__(
        self,
        bus: IntegrationBus,
        *,
        workers: int = 4,
        scheduler_interval: float | None = 60.0,
        scheduler_connector: str | None = None,
        busy_retry: float = 1.0,
        poll_interval: float = 1.0,
        listen: bool = True,
        initial_pass: bool = True,
        prune_interval: float | None = 600.0,
        elsewhere: bool = False,
        kind: str = "app",
        heartbeat: float = HEARTBEAT,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        if heartbeat <= 0:
            raise ValueError("heartbeat must be more than 0 seconds")
        self.bus = bus
        self.workers = workers
        self.scheduler_interval = scheduler_interval
        self.scheduler_connector = scheduler_connector
        self.busy_retry = busy_retry
        self.poll_interval = poll_interval
        self.listen = listen
        self.initial_pass = initial_pass
        # How often the retentions are applied (CONTRACT §10); None: never, here.
        self.prune_interval = prune_interval
        # Nothing runs in this process (``syncbus serve --workers 0``): a trigger wakes the
        # workers of other processes instead (``IntegrationBus.wake_workers``).
        self.elsewhere = elsewhere
        # Listed by ``IntegrationBus.list_workers`` while it runs: what it is, seen again every
        # ``heartbeat`` seconds.
        self.kind = kind
        self.heartbeat = heartbeat
        self.worker_id = uuid.uuid4().hex
        self._cond = threading.Condition()
        self._wanted: set[str] = set()
        self._want_all = False
        self._running: dict[str, int] = {}  # runs in flight (or queued on the pool) by name
        self._extras: list[threading.Event] = []  # yield requests of extra runs in flight
        self._parallel: dict[str, bool] = {}  # may several runs of it go at once here?
        self._parallel_at = 0.0
        self._again: set[str] = set()
        self._retry_at: dict[str, float] = {}
        self._stop = threading.Event()
        self._pruned = False
        self._pool: ThreadPoolExecutor | None = None
        self._threads: list[threading.Thread] = []
        # PostgreSQL notifies workers of logged tasks; SQLite is polled.
        self._notified = dialect_of(bus.engine).notifies

    # -- public ---------------------------------------------------------------------------
    def trigger(self, connector_name: str | None = None) -> None:
        """Ask for a run of one connector (or of every connector with tasks). Never blocks,
        but for a dispatcher whose work is done ``elsewhere``: that one writes the wake-up (a
        NOTIFY on PostgreSQL; on SQLite the counter, behind any other writer)."""
        if self.elsewhere:
            self.bus.wake_workers(connector_name)
            return
        with self._cond:
            if connector_name is None:
                self._want_all = True
            else:
                self._wanted.add(connector_name)
            self._cond.notify()

    def start(self) -> None:
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="syncbus-worker")
        self.bus.add_task_listener(lambda name, _task_id: self.trigger(name))
        self.bus.hooks.subscribe(_OnRejected(self))
        self._spawn(self._loop, "syncbus-dispatcher")
        if self._notified and self.listen:
            self._spawn(self._listen, "syncbus-listener")
        if self.prune_interval:
            self._spawn(self._prune, "syncbus-retention")
        self._spawn(self._beat, "syncbus-heartbeat")  # registers first, off the caller's way
        if self.initial_pass:
            self.trigger()  # whatever is queued already

    def stop(self, timeout: float = 30.0) -> bool:
        """Graceful: runs finish the task in hand, commit, release their leases; then return.

        Waits at most ``timeout`` seconds; False if runs were still in flight then (their
        transactions roll back when the process exits; nothing they did is half-written)."""
        self._stop.set()
        with self._cond:
            for extra in self._extras:
                extra.set()
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        with self._cond:
            while self._running and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)
            clean = not self._running
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if self._pool is not None:
            self._leave(deadline)
        return clean

    def idle(self) -> bool:
        with self._cond:
            return not (self._running or self._wanted or self._want_all or self._again)

    # -- the loop -------------------------------------------------------------------------
    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _loop(self) -> None:
        now = time.monotonic()
        next_schedule = now + self.scheduler_interval if self.scheduler_interval else None
        next_poll = now + self.poll_interval
        last_seq = self._task_sequence()
        while not self._stop.is_set():
            now = time.monotonic()
            if next_schedule is not None and now >= next_schedule:
                self.trigger(self.scheduler_connector)
                next_schedule = now + float(self.scheduler_interval or 0)
            if not self._notified and now >= next_poll:
                seq = self._task_sequence()
                if seq != last_seq:
                    last_seq = seq
                    self.trigger()
                next_poll = now + self.poll_interval
            self._dispatch()
            deadlines = [next_poll if not self._notified else now + 1.0]
            if next_schedule is not None:
                deadlines.append(next_schedule)
            with self._cond:
                deadlines += list(self._retry_at.values())
                if not (self._wanted or self._want_all) and not self._stop.is_set():
                    self._cond.wait(max(0.0, min(deadlines) - time.monotonic()))

    def _prune(self) -> None:
        """Apply the retentions now and then (bounded deletes; every worker process does it,
        which is harmless: what one deleted the others find gone)."""
        interval = float(self.prune_interval or 0)
        while not self._stop.wait(min(interval, 30.0) if not self._pruned else interval):
            self._pruned = True
            try:
                records, keys = self.bus.prune(stop=self._stop)
            except sa.exc.SQLAlchemyError:
                log.warning("cannot apply the retentions now; trying again later", exc_info=True)
                continue
            if records or keys:
                log.info(
                    "retention: %d task records and %d idempotency keys removed", records, keys
                )

    def _dispatch(self) -> None:
        with self._cond:
            want_all, self._want_all = self._want_all, False
        names = self._connectors_with_tasks() if want_all else set()
        with self._cond:
            now = time.monotonic()
            due = {n for n, t in self._retry_at.items() if t <= now}
            for name in due:
                del self._retry_at[name]
            names |= self._wanted | due
            self._wanted.clear()
        self._learn_parallel(names)
        with self._cond:
            for name in names:
                self._start_runs(name)

    def _start_runs(self, name: str) -> None:
        """Start what a trigger asks for (holding the lock): one run, or, for a connector whose
        runs share it lane by lane, a run per idle thread; else one more pass later."""
        if self._pool is None or self._stop.is_set():
            return
        have = self._running.get(name, 0)
        limit = self.workers if self._parallel.get(name) else 1
        idle = self.workers - sum(self._running.values())
        count = min(limit - have, max(idle, 0 if have else 1))
        if count <= 0:
            self._again.add(name)  # one more pass when a current run ends
            return
        self._retry_at.pop(name, None)
        for n in range(count):
            extra = None if have + n == 0 else threading.Event()
            self._submit(name, extra)
        if sum(self._running.values()) > self.workers and self._extras:
            self._extras.pop(0).set()  # a run waits for a thread: an extra run yields one

    def _submit(self, name: str, extra: threading.Event | None) -> None:
        assert self._pool is not None
        self._running[name] = self._running.get(name, 0) + 1
        if extra is not None:
            self._extras.append(extra)
        future = self._pool.submit(self._run, name, extra)
        future.add_done_callback(functools.partial(self._never_ran, name, extra))

    def _run(self, name: str, extra: threading.Event | None) -> None:
        result: ProcessResult | None = None
        try:
            result = self.bus.process_tasks(name, stop=extra or self._stop).get(name)
        except Exception:
            log.exception("processing connector %r failed", name)
        finally:
            with self._cond:
                self._ended(name, extra)
                if result is not None and result.busy and not self._stop.is_set():
                    self._retry_at[name] = time.monotonic() + self.busy_retry
                if result is not None and result.next_attempt_at is not None:
                    self._wake_at(name, result.next_attempt_at)
                if name in self._again:
                    self._again.discard(name)
                    self._wanted.add(name)
                self._cond.notify_all()  # the loop and a waiting stop() both care

    def _wake_at(self, name: str, epoch: float) -> None:
        """A run of ``name`` when its earliest task backing off is due (CONTRACT §9)."""
        at = time.monotonic() + max(0.0, epoch - time.time())
        self._retry_at[name] = min(self._retry_at.get(name, at), at)

    def _ended(self, name: str, extra: threading.Event | None) -> None:
        left = self._running.get(name, 0) - 1
        if left > 0:
            self._running[name] = left
        else:
            self._running.pop(name, None)
        if extra is not None and extra in self._extras:
            self._extras.remove(extra)

    def _never_ran(self, name: str, extra: threading.Event | None, future: Future[None]) -> None:
        """A run queued behind busy workers and cancelled by stop() is no longer running."""
        if future.cancelled():
            with self._cond:
                self._ended(name, extra)
                self._again.discard(name)
                self._cond.notify_all()

    def _learn_parallel(self, names: set[str]) -> None:
        """Which of these connectors may run several times at once here (ENTITY on a database
        with row locks); looked up again every half minute, for classes that changed."""
        now = time.monotonic()
        if not names or (names <= self._parallel.keys() and now - self._parallel_at < 30.0):
            return
        if not dialect_of(self.bus.engine).row_locks:
            self._parallel.update(dict.fromkeys(names, False))
            return
        try:
            with self.bus.reader.connect() as conn:
                orderings = connectors.orderings(conn)
        except sa.exc.SQLAlchemyError:
            log.warning("cannot read the connectors' orderings", exc_info=True)
            return
        self._parallel = {name: o == Ordering.ENTITY.value for name, o in orderings.items()}
        self._parallel_at = now

    # -- wake-ups -------------------------------------------------------------------------
    def _connectors_with_tasks(self) -> set[str]:
        try:
            with self.bus.reader.connect() as conn:
                rows = connectors.connectors_with_tasks(conn, enabled_only=True)
            return {str(row.connector_name) for row in rows}
        except sa.exc.SQLAlchemyError:
            log.exception("cannot list connectors with tasks")
            return set()

    def _task_sequence(self) -> int | None:
        """A number that moves whenever anyone logs a task (SQLite; None on PostgreSQL)."""
        if self._notified:
            return None
        try:
            with self.bus.reader.connect() as conn:
                return tasks.log_sequence(conn)
        except sa.exc.SQLAlchemyError:
            return None

    def _register(self) -> bool:
        try:
            with self.bus.engine.begin() as conn:
                workers.register(
                    conn,
                    self.worker_id,
                    self.kind,
                    socket.gethostname(),
                    os.getpid(),
                    self.workers,
                    self.heartbeat,
                )
            return True
        except sa.exc.SQLAlchemyError:
            log.warning("cannot register this worker (it runs, unlisted)", exc_info=True)
            return False

    def _beat(self) -> None:
        """Register, then be seen again every heartbeat; registered again if forgotten
        meanwhile (frozen for long) or never registered (the database was down, or its write
        lock held, when it started). In a thread of its own: a start never waits for a lock."""
        self._register()
        while not self._stop.wait(self.heartbeat):
            try:
                with self.bus.engine.begin() as conn:
                    known = workers.seen(conn, self.worker_id)
            except sa.exc.SQLAlchemyError:
                log.warning("worker heartbeat failed; trying again", exc_info=True)
                continue
            if not known and not self._stop.is_set():
                self._register()

    def _leave(self, deadline: float) -> None:
        """Leave the registry, within what is left of ``stop``'s time (a write can wait for
        a lock: on SQLite behind a batch that does not end). Not left in time, the worker is
        listed as having stopped reporting after three heartbeats, and forgotten in an hour."""

        def leave() -> None:
            try:
                with self.bus.engine.begin() as conn:
                    workers.leave(conn, self.worker_id)
            except sa.exc.SQLAlchemyError:
                log.warning("cannot take this worker off the list of workers", exc_info=True)

        thread = threading.Thread(target=leave, name="syncbus-leave", daemon=True)
        thread.start()
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            log.warning("no time left to take this worker off the list of workers")

    def _listen(self) -> None:
        wakeups.listen(self.bus.engine, self._stop, self.trigger, tick=_LISTEN_TICK)


class _OnRejected:
    """A full queue refused tasks: make sure it is being drained (a run may not have been
    asked for since processing was switched back on, say). A task applied by hand
    (``synchronize_task``), deleted or given a new object may have been what stopped its
    queue: the queue goes on now, not at the next scheduled run."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher

    def tasks_rejected(self, connector_name: str, _count: int) -> None:
        self.dispatcher.trigger(connector_name)

    def task_applied(self, connector_name: str, _task_id: int, manual: bool = False) -> None:
        if manual:
            self.dispatcher.trigger(connector_name)

    def tasks_deleted(self, connector_name: str, _task_ids: list[int]) -> None:
        self.dispatcher.trigger(connector_name)

    def task_replaced(self, connector_name: str, _task_id: int) -> None:
        self.dispatcher.trigger(connector_name)
