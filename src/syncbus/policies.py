"""The process-type state machine as a table: one row per process type.

A run reads a task's row when the task's turn comes and when the task fails; an operator's
synchronize reads it when the task fails. docs/design.md shows the same table in prose. A new
policy (waiting, back-off, quarantine) is a new column or row here, not a new branch in the
processor.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from syncbus.enums import ProcessType


class Turn(enum.Enum):
    """What a run does when the task's turn comes."""

    APPLY = "apply"
    SKIP = "skip"  # not applied; the task becomes ``after_skip`` and the run goes on
    STOP = "stop"  # not applied; the run stops here (the task blocks its queue)


class ErrorLog(enum.Enum):
    """Where a failed task's error is written."""

    TASK = "task"  # the task's sync log; the task keeps the error as its latest
    EVENT = "event"  # the event log (the task is gone)


@dataclass(frozen=True)
class Policy:
    turn: Turn
    # On failure in a run:
    stop: bool = False  # the run stops at the task
    drop: bool = False  # the task leaves the queue
    becomes_error: bool = False  # the task's process type becomes ERROR
    log: ErrorLog = ErrorLog.TASK
    collapse_repeats: bool = False  # the same error within a second is written once
    # When an operator's synchronize fails: the task's process type becomes ERROR.
    sync_failure_becomes_error: bool = False
    after_skip: ProcessType | None = None


POLICIES: dict[ProcessType, Policy] = {
    ProcessType.DEFAULT: Policy(
        Turn.APPLY, stop=True, becomes_error=True, sync_failure_becomes_error=True
    ),
    ProcessType.ERROR: Policy(Turn.STOP, stop=True, becomes_error=True),
    ProcessType.SKIP_ONCE: Policy(
        Turn.SKIP, stop=True, becomes_error=True, after_skip=ProcessType.DEFAULT
    ),
    ProcessType.SKIP_ON_ERROR: Policy(Turn.APPLY, collapse_repeats=True),
    ProcessType.DELETE_ON_ERROR: Policy(Turn.APPLY, drop=True, log=ErrorLog.EVENT),
}


def policy(process_type: ProcessType) -> Policy:
    return POLICIES[process_type]
