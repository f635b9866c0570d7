"""One list of subscribers to what the bus does (in the spirit of dramatiq's middleware).

Intake and the processor emit; metrics, the dispatcher's wake-ups and whatever a user adds
subscribe. A subscriber is any object with some of these methods:

- ``task_logged(connector_name, task_id)``: a task was logged (its transaction committed);
- ``task_applied(connector_name, task_id, manual)``: a task was applied and left the queue;
- ``task_failed(connector_name, task_id, error, manual)``: an attempt failed (the task follows
  its process type);
- ``run_finished(result)``: a run of a connector ended (also one that did not get to run);
- ``tasks_rejected(connector_name, count)``: logging refused tasks, the queue being full;
- ``task_quarantined(connector_name, task_id)``: workers died with the task too often: it
  became ERROR (also reported as ``task_failed``).

``manual`` is True for ``synchronize_task`` (the API, the CLI, the admin's row and mass
actions). Events are emitted after the transaction that made them has committed, so a
subscriber never hears of work that was rolled back. A subscriber that raises is logged and
does not disturb the bus or the other subscribers.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from syncbus.model import ProcessResult

log = logging.getLogger("syncbus.hooks")

EVENTS = (
    "task_logged",
    "task_applied",
    "task_failed",
    "run_finished",
    "tasks_rejected",
    "task_quarantined",
    "tasks_deleted",
    "task_replaced",
)


class Hooks:
    """The subscribers of one bus, called in the order they subscribed."""

    def __init__(self) -> None:
        self._subscribers: list[Any] = []
        self._lock = threading.Lock()

    def subscribe(self, subscriber: Any) -> None:
        if not any(callable(getattr(subscriber, name, None)) for name in EVENTS):
            raise TypeError(f"{subscriber!r} has none of the hook methods {', '.join(EVENTS)}")
        with self._lock:
            self._subscribers = [*self._subscribers, subscriber]

    def unsubscribe(self, subscriber: Any) -> None:
        with self._lock:
            self._subscribers = [s for s in self._subscribers if s is not subscriber]

    def _emit(self, event: str, *args: Any) -> None:
        for subscriber in self._subscribers:  # a snapshot: subscribing replaces the list
            method = getattr(subscriber, event, None)
            if method is None:
                continue
            try:
                method(*args)
            except Exception:
                log.exception("hook %s of %r failed", event, subscriber)

    def task_logged(self, connector_name: str, task_id: int) -> None:
        self._emit("task_logged", connector_name, task_id)

    def task_applied(self, connector_name: str, task_id: int, manual: bool = False) -> None:
        self._emit("task_applied", connector_name, task_id, manual)

    def task_failed(
        self, connector_name: str, task_id: int, error: str, manual: bool = False
    ) -> None:
        self._emit("task_failed", connector_name, task_id, error, manual)

    def run_finished(self, result: ProcessResult) -> None:
        self._emit("run_finished", result)

    def task_quarantined(self, connector_name: str, task_id: int) -> None:
        self._emit("task_quarantined", connector_name, task_id)

    def tasks_rejected(self, connector_name: str, count: int) -> None:
        """Logging refused ``count`` tasks: the connector's queue is full (CONTRACT §9)."""
        self._emit("tasks_rejected", connector_name, count)

    def tasks_deleted(self, connector_name: str, task_ids: list[int]) -> None:
        """An operator deleted these queued tasks of the connector."""
        self._emit("tasks_deleted", connector_name, task_ids)

    def task_replaced(self, connector_name: str, task_id: int) -> None:
        """An operator gave a queued task a new object (edit and replay)."""
        self._emit("task_replaced", connector_name, task_id)


class TaskLogged:
    """Adapts a plain ``listener(connector_name, task_id)`` to a subscriber."""

    def __init__(self, listener: Any) -> None:
        self.listener = listener

    def task_logged(self, connector_name: str, task_id: int) -> None:
        self.listener(connector_name, task_id)
