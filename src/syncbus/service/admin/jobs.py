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

from syncbus.bus import IntegrationBus
from syncbus.errors import SyncBusError, TaskBusyError, TaskNotFoundError
from syncbus.readmodel import Items, TaskFilter, count_tasks, matching_tasks, tasks_by_id
from syncbus.service.admin.views import describe
from syncbus.store.admin import last_task_id
from syncbus.store.connectors import enabled_by_name
from syncbus.store.logs import write_event
from syncbus.store.switches import why_not_processing

Action = Literal["sync", "delete"]
Scope = Literal["selected", "all"]
MassActionState = Literal["running", "finished", "cancelled", "failed"]
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
KEEP_ACTIONS = 20


@dataclass
class MassAction:
    """One mass action and its progress (read by the progress fragment while it runs)."""

    action: Action
    scope: Scope
    who: str
    client: str
    description: str
    total: int
    # The id in the admin's URLs (/admin/jobs/<id>), which keep their old name.
    job_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    done: int = 0
    applied: int = 0
    failed: int = 0
    skipped: int = 0
    deleted: int = 0
    state: MassActionState = "running"
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

    def summary(self, ending: MassActionState) -> str:
        verb = "Synchronized" if self.action == "sync" else "Deleted"
        parts = [f"{self.done} of {self.total} {self.description} processed"]
        if self.action == "sync":
            parts.append(f"{self.applied} applied, {self.failed} failed, {self.skipped} skipped")
        else:
            parts.append(f"{self.deleted} deleted, {self.skipped} skipped")
        how = {"cancelled": "; cancelled", "failed": f"; stopped: {self.error}"}.get(ending, "")
        return f"{verb} tasks: {'; '.join(parts)}; by {self.who} from {self.client}{how}"


class MassActions:
    """Runs mass actions on daemon threads; keeps the last few for their progress pages."""

    def __init__(self, bus: IntegrationBus) -> None:
        self.bus = bus  # its synchronizes count in /metrics through the bus's hooks
        self._actions: dict[str, MassAction] = {}
        self._lock = threading.Lock()

    def get(self, job_id: str) -> MassAction | None:
        with self._lock:
            return self._actions.get(job_id)

    def recent(self) -> list[MassAction]:
        with self._lock:
            return sorted(self._actions.values(), key=lambda a: a.started_at, reverse=True)

    def start_selected(self, action: Action, ids: list[int], who: str, client: str) -> MassAction:
        unique = sorted(set(ids))
        mass_action = MassAction(action, "selected", who, client, "selected tasks", len(unique))
        return self._start(mass_action, lambda: self._selected(unique))

    def start_matching(self, action: Action, flt: TaskFilter, who: str, client: str) -> MassAction:
        """All tasks matching ``flt`` now (tasks logged later are left alone)."""
        with self.bus.reader.connect() as conn:
            upto = last_task_id(conn)
        total = count_tasks(self.bus, flt)
        mass_action = MassAction(
            action, "all", who, client, f"tasks matching {describe(flt)}", total
        )
        return self._start(mass_action, lambda: self._matching(flt, upto))

    def _start(self, mass_action: MassAction, source: Source) -> MassAction:
        with self._lock:
            finished = [a for a in self._actions.values() if not a.running]
            for old in sorted(finished, key=lambda a: a.started_at)[
                : max(0, len(finished) - KEEP_ACTIONS)
            ]:
                del self._actions[old.job_id]
            self._actions[mass_action.job_id] = mass_action
        thread = threading.Thread(
            target=self._run,
            args=(mass_action, source),
            name=f"syncbus-admin-{mass_action.job_id}",
            daemon=True,
        )
        thread.start()
        return mass_action

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
    def _run(self, mass_action: MassAction, source: Source) -> None:
        verb = "Synchronizing" if mass_action.action == "sync" else "Deleting"
        mass_action.line("info", f"{verb} {mass_action.total} {mass_action.description}")
        ending: MassActionState = "finished"
        try:
            for batch in source():
                if mass_action.cancel_event.is_set():
                    break
                if mass_action.action == "sync":
                    self._sync_batch(mass_action, batch)
                else:
                    self._delete_batch(mass_action, batch)
            if mass_action.cancel_event.is_set():
                ending = "cancelled"
        except Exception as exc:  # the mass action must end visibly, whatever happened
            ending, mass_action.error = "failed", f"{type(exc).__name__}: {exc}"
            mass_action.line("fail", f"Stopped: {mass_action.error}")
        finally:
            # The event is written before the mass action shows as ended, so whoever sees the end
            # also finds the event.
            mass_action.finished_at = time.time()
            self._write_event(mass_action, ending)
            mass_action.line("warn" if ending == "cancelled" else "info", ending.capitalize())
            mass_action.state = ending

    def _write_event(self, mass_action: MassAction, ending: MassActionState) -> None:
        try:
            with self.bus.engine.begin() as conn:
                message = mass_action.summary(ending)
                write_event(conn, EVENT_SOURCE, mass_action.code, message, event_type="I")
        except Exception as exc:
            mass_action.line("fail", f"Could not write the event log: {type(exc).__name__}: {exc}")

    def _blocked_reasons(self) -> tuple[str | None, dict[str, bool]]:
        """Why no task may be processed now (a switch is off), and which connectors are on."""
        with self.bus.reader.connect() as conn:
            return why_not_processing(conn), enabled_by_name(conn)

    def _sync_batch(self, mass_action: MassAction, batch: Items) -> None:
        blocked, enabled = self._blocked_reasons()
        for task_id, title, connector in batch:
            if mass_action.cancel_event.is_set():
                return
            mass_action.done += 1
            if blocked or not enabled.get(connector, False):
                why = blocked or "associated connector is disabled"
                mass_action.skipped += 1
                mass_action.line("skip", f"Skipping '{title}' task - {why}.")
                continue
            mass_action.line("info", f"Processing '{title}' task")
            try:
                applied = self.bus.synchronize_task(task_id)
            except TaskNotFoundError:
                mass_action.skipped += 1
                mass_action.line("skip", f"Skipping '{title}' task - it is no longer queued.")
                continue
            except TaskBusyError:
                mass_action.skipped += 1
                mass_action.line(
                    "skip", f"Skipping '{title}' task - it is being applied right now."
                )
                continue
            except SyncBusError as exc:
                mass_action.skipped += 1
                mass_action.line("skip", f"Skipping '{title}' task - {exc}.")
                continue
            if applied:
                mass_action.applied += 1
                mass_action.line("ok", f"'{title}' applied")
            else:
                mass_action.failed += 1
                info = self.bus.get_task(task_id)
                error = info.error_message if info else "failed"
                mass_action.line("fail", f"'{title}' failed: {error}")

    def _delete_batch(self, mass_action: MassAction, batch: Items) -> None:
        """One transaction per batch: deleting 100,000 tasks is a few hundred commits. Tasks
        that a running batch holds are skipped, not waited for (``store.admin.delete_tasks``)."""
        deleted, busy = self.bus.delete_tasks([i for i, _, _ in batch])
        mass_action.done += len(batch)
        mass_action.deleted += deleted
        for task_id, title, _connector in batch:
            if task_id in busy:
                mass_action.skipped += 1
                mass_action.line(
                    "skip", f"Skipping '{title}' task - it is being applied right now."
                )
            else:
                mass_action.line("ok", f"Deleting '{title}' task")
