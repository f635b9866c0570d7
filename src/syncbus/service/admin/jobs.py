"""Mass actions in the background: synchronize or delete the selected tasks, or all tasks
matching a filter, with progress, per-task lines (as Kentico's log window has them), a cancel
button, and one event log entry naming who did it, from where, and how many."""

from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import sqlalchemy as sa

from syncbus.bus import IntegrationBus
from syncbus.errors import SyncBusError, TaskBusyError, TaskNotFoundError
from syncbus.readmodel import (
    Items,
    TaskFilter,
    count_tasks,
    matching_tasks,
    read_settings,
    tasks_by_id,
)
from syncbus.service.admin.views import describe
from syncbus.store.dialect import POSTGRES, dialect_of
from syncbus.store.logs import write_event
from syncbus.store.tables import connector_table, task_table

Action = Literal["sync", "delete"]
Scope = Literal["selected", "all"]
JobState = Literal["running", "finished", "cancelled", "failed"]
EVENT_SOURCE = "Integration bus"
CODES: dict[tuple[str, str], str] = {
    ("sync", "selected"): "SYNCSELECTEDTASKS",
    ("sync", "all"): "SYNCALLTASKS",
    ("delete", "selected"): "DELETESELECTEDTASKS",
    ("delete", "all"): "DELETEALLTASKS",
}
BATCH = 200
Source = Callable[[], Iterator[Items]]
KEEP_LINES = 300
KEEP_JOBS = 20


@dataclass
class Job:
    """One mass action and its progress (read by the progress fragment while it runs)."""

    action: Action
    scope: Scope
    who: str
    client: str
    description: str
    total: int
    job_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    done: int = 0
    applied: int = 0
    failed: int = 0
    skipped: int = 0
    deleted: int = 0
    state: JobState = "running"
    error: str | None = None
    back: str = "/admin/tasks"
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    lines: deque[tuple[str, str]] = field(default_factory=lambda: deque(maxlen=KEEP_LINES))
    cancel_event: threading.Event = field(default_factory=threading.Event)

    @property
    def code(self) -> str:
        return CODES[(self.action, self.scope)]

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def percent(self) -> int:
        return 100 if not self.total else min(100, round(100 * self.done / self.total))

    def line(self, kind: str, text: str) -> None:
        self.lines.append((kind, text))

    def summary(self, ending: JobState) -> str:
        verb = "Synchronized" if self.action == "sync" else "Deleted"
        parts = [f"{self.done} of {self.total} {self.description} processed"]
        if self.action == "sync":
            parts.append(f"{self.applied} applied, {self.failed} failed, {self.skipped} skipped")
        else:
            parts.append(f"{self.deleted} deleted, {self.skipped} skipped")
        how = {"cancelled": "; cancelled", "failed": f"; stopped: {self.error}"}.get(ending, "")
        return f"{verb} tasks: {'; '.join(parts)}; by {self.who} from {self.client}{how}"


class JobManager:
    """Runs jobs on daemon threads; keeps the last few for their progress pages."""

    def __init__(self, bus: IntegrationBus) -> None:
        self.bus = bus  # its synchronizes count in /metrics through the bus's hooks
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def recent(self) -> list[Job]:
        with self._lock:
            return sorted(self._jobs.values(), key=lambda j: j.started_at, reverse=True)

    def start_selected(self, action: Action, ids: list[int], who: str, client: str) -> Job:
        unique = sorted(set(ids))
        job = Job(action, "selected", who, client, "selected tasks", len(unique))
        return self._start(job, lambda: self._selected(unique))

    def start_matching(self, action: Action, flt: TaskFilter, who: str, client: str) -> Job:
        """All tasks matching ``flt`` now (tasks logged later are left alone)."""
        with self.bus.reader.connect() as conn:
            upto = conn.execute(sa.select(sa.func.max(task_table.c.task_id))).scalar() or 0
        total = count_tasks(self.bus, flt)
        job = Job(action, "all", who, client, f"tasks matching {describe(flt)}", total)
        return self._start(job, lambda: self._matching(flt, int(upto)))

    def _start(self, job: Job, source: Source) -> Job:
        with self._lock:
            finished = [j for j in self._jobs.values() if not j.running]
            for old in sorted(finished, key=lambda j: j.started_at)[
                : max(0, len(finished) - KEEP_JOBS)
            ]:
                del self._jobs[old.job_id]
            self._jobs[job.job_id] = job
        thread = threading.Thread(
            target=self._run, args=(job, source), name=f"syncbus-admin-{job.job_id}", daemon=True
        )
        thread.start()
        return job

    # -- sources of tasks, in ascending id --------------------------------------------------
    def _selected(self, ids: list[int]) -> Iterator[Items]:
        for start in range(0, len(ids), BATCH):
            yield tasks_by_id(self.bus, ids[start : start + BATCH])

    def _matching(self, flt: TaskFilter, upto: int) -> Iterator[Items]:
        cursor = 0
        while True:
            items = [i for i in matching_tasks(self.bus, flt, cursor, BATCH) if i[0] <= upto]
            if not items:
                return
            yield items
            cursor = items[-1][0]

    # -- the run ----------------------------------------------------------------------------
    def _run(self, job: Job, source: Source) -> None:
        verb = "Synchronizing" if job.action == "sync" else "Deleting"
        job.line("info", f"{verb} {job.total} {job.description}")
        ending: JobState = "finished"
        try:
            for batch in source():
                if job.cancel_event.is_set():
                    break
                if job.action == "sync":
                    self._sync_batch(job, batch)
                else:
                    self._delete_batch(job, batch)
            if job.cancel_event.is_set():
                ending = "cancelled"
        except Exception as exc:  # the job must end visibly, whatever happened
            ending, job.error = "failed", f"{type(exc).__name__}: {exc}"
            job.line("fail", f"Stopped: {job.error}")
        finally:
            # The event is written before the job shows as ended, so whoever sees the end
            # also finds the event.
            job.finished_at = time.time()
            self._write_event(job, ending)
            job.line("warn" if ending == "cancelled" else "info", ending.capitalize())
            job.state = ending

    def _write_event(self, job: Job, ending: JobState) -> None:
        try:
            with self.bus.engine.begin() as conn:
                message = job.summary(ending)
                write_event(conn, EVENT_SOURCE, job.code, message, event_type="I")
        except Exception as exc:
            job.line("fail", f"Could not write the event log: {type(exc).__name__}: {exc}")

    def _blocked_reasons(self) -> tuple[str | None, dict[str, bool]]:
        settings = read_settings(self.bus)
        blocked = None
        if not settings["integration_enabled"]:
            blocked = "the integration bus is switched off"
        elif not settings["process_external"]:
            blocked = "processing of incoming tasks is switched off"
        c = connector_table
        with self.bus.reader.connect() as conn:
            enabled = {
                str(n): bool(e) for n, e in conn.execute(sa.select(c.c.connector_name, c.c.enabled))
            }
        return blocked, enabled

    def _sync_batch(self, job: Job, batch: Items) -> None:
        blocked, enabled = self._blocked_reasons()
        for task_id, title, connector in batch:
            if job.cancel_event.is_set():
                return
            job.done += 1
            if blocked or not enabled.get(connector, False):
                why = blocked or "associated connector is disabled"
                job.skipped += 1
                job.line("skip", f"Skipping '{title}' task - {why}.")
                continue
            job.line("info", f"Processing '{title}' task")
            try:
                applied = self.bus.synchronize_task(task_id)
            except TaskNotFoundError:
                job.skipped += 1
                job.line("skip", f"Skipping '{title}' task - it is no longer queued.")
                continue
            except TaskBusyError:
                job.skipped += 1
                job.line("skip", f"Skipping '{title}' task - it is being applied right now.")
                continue
            except SyncBusError as exc:
                job.skipped += 1
                job.line("skip", f"Skipping '{title}' task - {exc}.")
                continue
            if applied:
                job.applied += 1
                job.line("ok", f"'{title}' applied")
            else:
                job.failed += 1
                info = self.bus.get_task(task_id)
                error = info.error_message if info else "failed"
                job.line("fail", f"'{title}' failed: {error}")

    def _delete_batch(self, job: Job, batch: Items) -> None:
        """One transaction per batch: deleting 100,000 tasks is a few hundred commits.

        On PostgreSQL, tasks whose rows a running batch has locked are skipped (``SKIP
        LOCKED``) instead of waited for: a stalled worker must not hang the mass action."""
        t = task_table
        ids = [i for i, _, _ in batch]
        busy: set[int] = set()
        with self.bus.engine.begin() as conn:
            if dialect_of(conn) is POSTGRES:
                wanted = t.c.task_id.in_(ids)
                queued = set(conn.execute(sa.select(t.c.task_id).where(wanted)).scalars())
                lock = sa.select(t.c.task_id).where(wanted).with_for_update(skip_locked=True)
                free = set(conn.execute(lock).scalars())
                busy, ids = queued - free, sorted(free)
            gone = conn.execute(t.delete().where(t.c.task_id.in_(ids)))
        job.done += len(batch)
        job.deleted += int(gone.rowcount)
        for task_id, title, _connector in batch:
            if task_id in busy:
                job.skipped += 1
                job.line("skip", f"Skipping '{title}' task - it is being applied right now.")
            else:
                job.line("ok", f"Deleting '{title}' task")
