"""The event log and each task's sync log."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from syncbus.enums import ProcessType
from syncbus.store.db import as_utc, utcnow
from syncbus.store.tables import event_log_table, sync_log_table, task_table


def write_event(
    conn: sa.Connection, source: str, code: str, message: str, event_type: str = "E"
) -> None:
    conn.execute(
        event_log_table.insert().values(
            time=utcnow(), source=source, code=code, message=message, event_type=event_type
        )
    )


def record_task_error(
    conn: sa.Connection,
    task_id: int,
    message: str,
    *,
    set_error_state: bool,
    collapse_repeats: bool = False,
    retry_at: dt.datetime | None = None,
    attempt: bool = True,
) -> None:
    """Append to the task's sync log and copy the error onto the task (ERROR if it was DEFAULT);
    count a failed attempt (``attempt``: not for a quarantine, which is no attempt) and, with
    ``retry_at``, set when the next may start.

    With ``collapse_repeats`` (automatic retries) the same error of the same task within a
    second is written once: a task retried on every trigger must not flood its log with
    identical entries. An operator's attempt is always written."""
    now = utcnow()
    t = sync_log_table
    last = (
        None
        if not collapse_repeats
        else conn.execute(
            sa.select(t.c.time, t.c.error_message)
            .where(t.c.task_id == task_id)
            .order_by(t.c.log_id.desc())
            .limit(1)
        ).first()
    )
    last_time = as_utc(last.time) if last is not None else None
    repeated = (
        collapse_repeats
        and last is not None
        and last.error_message == message
        and last_time is not None
        and (now - last_time).total_seconds() < 1.0
    )
    if not repeated:
        conn.execute(t.insert().values(task_id=task_id, time=now, error_message=message))
    # A failure ends a wait (CONTRACT §8): the task now shows its error, not what it awaited.
    values: dict[str, Any] = {
        "error_message": message,
        "last_run_at": now,
        "waiting_for": None,
        "awaits": None,
    }
    if set_error_state:
        values["process_type"] = ProcessType.ERROR.value
    if attempt:  # one more failed attempt (CONTRACT §9)
        values["attempts"] = task_table.c.attempts + 1
    if retry_at is not None:  # ... and the next waits
        values["next_attempt_at"] = retry_at
    conn.execute(task_table.update().where(task_table.c.task_id == task_id).values(values))
