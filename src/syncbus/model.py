"""Value types: what connectors return, and what the bus reports back."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from syncbus.enums import Ordering, ProcessType, TaskDataType, TaskType


@dataclass
class InternalObject:
    """An object of an object type, as ``prepare_internal_object`` returns it.

    Under SIMPLE_SNAPSHOT and SNAPSHOT, foreign-key, parent and group columns hold the EXTERNAL
    system's ids; the bus translates them. ``children`` are used only under SNAPSHOT.
    """

    object_type: str
    data: dict[str, Any]
    children: list[InternalObject] = field(default_factory=list)


@dataclass
class Page:
    """A page (a node of the site's tree plus one culture's document)."""

    class_name: str
    name: str
    culture: str = "en-US"
    node_guid: UUID | str | None = None
    alias: str | None = None
    parent_id: Any = None
    parent_path: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ObjectParams:
    """Identity of a referenced object; ``parent_id`` and ``group_id`` are EXTERNAL ids."""

    code_name: str
    site_name: str | None = None
    parent_id: Any = None
    group_id: Any = None


@dataclass(frozen=True)
class DocumentParams:
    """Identity of a referenced page."""

    node_guid: UUID | str
    culture_code: str
    site_name: str


@dataclass(frozen=True)
class TaskInfo:
    """A queued incoming task, as the bus reports it."""

    task_id: int
    connector_name: str
    task_type: TaskType
    data_type: TaskDataType
    process_type: ProcessType
    object_type: str | None
    class_name: str | None
    title: str
    site_name: str | None
    created_at: datetime
    error_message: str | None
    last_run_at: datetime | None
    is_running: bool
    idempotency_key: str | None = None
    # What to do first when the fix of this failed task is queued behind it in the same
    # connector (see syncbus.fixhint); filled in by the read side, None otherwise.
    hint: str | None = None
    # The task's lane under Ordering.ENTITY (syncbus.content.lanes), None under CONNECTOR.
    lane: str | None = None
    # What the task waits for (CONTRACT §8): a missing reference, e.g. ``cms.user 'alice'``.
    waiting_for: str | None = None
    # Since when it waits (its first wait: the clock of dependency_timeout); None unless waiting.
    waiting_since: datetime | None = None
    # Back-off (CONTRACT §9): failed attempts so far, and when the next may start.
    attempts: int = 0
    next_attempt_at: datetime | None = None
    # Poison quarantine (CONTRACT §9): how many times a worker died with the task in flight
    # (not attempts: the attempt never returned); at the connector's quarantine_after it is
    # quarantined.
    deaths: int = 0

    @property
    def is_failed(self) -> bool:
        return self.error_message is not None


@dataclass(frozen=True)
class SyncLogEntry:
    """One failed attempt of a task."""

    time: datetime
    error_message: str


@dataclass(frozen=True)
class TaskRecord:
    """A task's whole story (CONTRACT §10): what was logged, what it became, what its
    references resolved to, what it changed and what went wrong; queued or finished.

    ``state`` is one of ``queued``, ``waiting``, ``failed`` (still queued, with an error),
    ``applied``, ``deleted`` (by an operator), ``dropped`` (by DELETE_ON_ERROR) and
    ``coalesced``. ``changes`` is ``{column: [old, new]}`` for an applied task, else None."""

    task_id: int
    connector_name: str
    task_type: TaskType
    data_type: TaskDataType
    process_type: ProcessType
    title: str
    object_type: str | None
    class_name: str | None
    site_name: str | None
    lane: str | None
    state: str
    logged_at: datetime
    finished_at: datetime | None
    external: Any
    internal: dict[str, Any]
    translations: list[dict[str, Any]]
    changes: dict[str, list[Any]] | None
    errors: list[SyncLogEntry]
    # The object's code name (or GUID) as the task names it; None for pages.
    code_name: str | None = None
    # For a coalesced task: the task that carried its values.
    into_task_id: int | None = None
    # For a carrier: the tasks coalesced into it (their values came with its own), ascending.
    carried_task_ids: tuple[int, ...] = ()
    # The idempotency key it was logged with (what its producer knows it by), or None.
    idempotency_key: str | None = None

    @property
    def finished(self) -> bool:
        return self.finished_at is not None

    @property
    def changes_recorded(self) -> bool:
        """Whether ``changes`` says what the task changed: for a page task, only a create or
        an update lists its document's name and fields (a delete, move, publish or archive
        records ``{}``, which then does not mean "nothing changed")."""
        return self.class_name is None or self.task_type in (
            TaskType.CREATE_DOCUMENT,
            TaskType.UPDATE_DOCUMENT,
        )


@dataclass(frozen=True)
class EventLogEntry:
    """An event worth an operator's attention (DELETE_ON_ERROR errors, load failures...)."""

    time: datetime
    source: str
    code: str
    message: str
    event_type: str = "E"
    event_id: int = 0


@dataclass
class ProcessResult:
    """What one processing run of one connector did."""

    connector_name: str
    applied: int = 0
    failed: int = 0
    skipped: int = 0
    deleted: int = 0
    # The connector's tasks waiting for a missing reference when the run ended
    # (Ordering.ENTITY), those that already waited before it included; one that waited and
    # was applied later in the same run is not counted. While the run goes (progress), the
    # tasks it made wait so far and has not applied or failed since.
    waiting: int = 0
    # Of ``applied``: tasks whose values another task of their object carried (coalescing).
    coalesced: int = 0
    # A task stopped the run (CONNECTOR) or its lane (ENTITY): an ERROR, or a DEFAULT failed.
    stopped: bool = False
    # The last failure of the run: the one that stopped it when ``stopped``, else that of
    # the last task that failed without stopping it (skipped or dropped on error), or the
    # reason a run gave up on transient errors. None when nothing failed.
    error: str | None = None
    not_run_reason: str | None = None
    # Run again shortly: another runner held the lease or a lane this run needed.
    busy: bool = False
    # When the connector's earliest task backing off may be tried again (epoch seconds).
    next_attempt_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def ran(self) -> bool:
        return self.not_run_reason is None


@dataclass(frozen=True)
class WorkerInfo:
    """A process that runs connectors (``syncbus serve``, ``syncbus worker``, or an app's own
    dispatcher), as it last reported itself (``IntegrationBus.list_workers``)."""

    worker_id: str
    kind: str  # "serve", "worker", or "app" (a dispatcher of an application's own)
    host: str
    pid: int
    threads: int  # connector runs at once
    started_at: datetime
    seen_seconds_ago: float  # on the database's clock
    alive: bool  # seen within three heartbeats


@dataclass(frozen=True)
class ConnectorInfo:
    """A registered connector and its queue."""

    name: str
    display_name: str
    class_path: str | None
    enabled: bool
    pending: int = 0
    failed: int = 0
    load_error: str | None = None
    # Backpressure (CONTRACT §9): logging is refused at this many queued tasks; None: no limit.
    queue_limit: int | None = None
    ordering: Ordering = Ordering.CONNECTOR
