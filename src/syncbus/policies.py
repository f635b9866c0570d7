"""The process-type state machine as a table: one row per process type.

A run reads a task's row when the task's turn comes and when the task fails; an operator's
synchronize reads it when the task fails. docs/design.md shows the same table in prose. A new
policy (waiting, back-off, quarantine) is a new column or row here, not a new branch in the
processor.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from typing import Any

from syncbus.enums import Ordering, ProcessType


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
    backoff: bool = False  # a failure counts an attempt; the next waits (CONTRACT §9)
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
    ProcessType.SKIP_ON_ERROR: Policy(Turn.APPLY, backoff=True),
    ProcessType.DELETE_ON_ERROR: Policy(Turn.APPLY, drop=True, log=ErrorLog.EVENT),
}


def policy(process_type: ProcessType) -> Policy:
    return POLICIES[process_type]


# Up to this much is added to a back-off delay, at random, so that tasks that failed together
# are not all tried again at the same instant.
JITTER = 0.1


@dataclass(frozen=True)
class ConnectorRules:
    """How a connector's tasks run, from its class's attributes (recorded with the connector,
    so every process knows them): ordering (CONTRACT §8) and retries (§9)."""

    ordering: Ordering = Ordering.CONNECTOR
    dependency_timeout: float = 3600.0
    retry_delay: float = 10.0
    retry_max_delay: float = 3600.0
    quarantine_after: int = 3
    coalesce: bool = False

    @classmethod
    def of(cls, row: Any) -> ConnectorRules:
        """The rules a connector's row records (the defaults where it records none)."""
        default = cls()

        def pick(value: Any, fallback: float) -> float:
            return fallback if value is None else float(value)

        return cls(
            Ordering.parse(row.ordering),
            pick(row.dependency_timeout, default.dependency_timeout),
            pick(row.retry_delay, default.retry_delay),
            pick(row.retry_max_delay, default.retry_max_delay),
            default.quarantine_after if row.quarantine_after is None else int(row.quarantine_after),
            bool(getattr(row, "coalesce", False)),
        )

    def backoff(self, attempts: int, rand: float | None = None) -> float:
        """Seconds before the next attempt of a task that has failed ``attempts`` times:
        ``retry_delay`` doubled after each failed attempt, plus up to 10 % jitter, capped at
        ``retry_max_delay``."""
        exponent = min(max(attempts - 1, 0), 64)
        delay = min(self.retry_delay * 2.0**exponent, self.retry_max_delay)
        jitter = random.random() if rand is None else rand
        return min(delay * (1.0 + JITTER * jitter), self.retry_max_delay)
