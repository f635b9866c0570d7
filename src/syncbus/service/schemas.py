"""Request and response bodies of the HTTP API (pydantic 2)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from syncbus.enums import ProcessType, TaskDataType, TaskType
from syncbus.model import ConnectorInfo, SyncLogEntry, TaskInfo, TaskRecord, WorkerInfo


def _wire(enum: type[TaskType] | type[TaskDataType] | type[ProcessType]) -> BeforeValidator:
    def parse(value: Any) -> Any:
        return enum.parse(value) if isinstance(value, str) else value

    return BeforeValidator(parse)


WireTaskType = Annotated[TaskType, _wire(TaskType)]
WireDataType = Annotated[TaskDataType, _wire(TaskDataType)]
WireProcessType = Annotated[ProcessType, _wire(ProcessType)]
NUL = "\x00"
NO_NUL = "must not contain a NUL character (\\u0000): no database can store it"


def _no_nul(value: str) -> str:
    if NUL in value:
        raise ValueError(NO_NUL)
    return value


def _nul_path(value: Any, path: str) -> str | None:
    """Where in a JSON value a NUL character is (``name``, ``tags[2]``), or None."""
    if isinstance(value, str):
        return path if NUL in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if NUL in str(key):
                return where
            found = _nul_path(item, where)
            if found is not None:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _nul_path(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


def _object_without_nul(value: Any) -> Any:
    where = _nul_path(value, "")
    if where is not None:
        raise ValueError(f"{where or 'the object'} {NO_NUL}")
    return value


# Text that goes into the database: checked here so a NUL is a 422 naming the field, not a
# driver error from PostgreSQL.
Text = Annotated[str, AfterValidator(_no_nul)]


class TaskIn(BaseModel):
    """One task to log. ``object`` is the external object, passed to the connector as JSON."""

    model_config = ConfigDict(extra="forbid")

    task_type: WireTaskType
    object: Annotated[Any, AfterValidator(_object_without_nul)] = Field(
        description="The external object, as the connector expects it (no NUL in any text)."
    )
    data_type: WireDataType = TaskDataType.SIMPLE
    process_type: WireProcessType = ProcessType.DEFAULT
    site_name: Text | None = Field(default=None, max_length=100)
    idempotency_key: Text | None = Field(default=None, min_length=1, max_length=200)


class TaskBatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tasks: list[TaskIn] = Field(min_length=1, max_length=10_000)


class TaskCreated(BaseModel):
    task_id: int


class TasksCreated(BaseModel):
    task_ids: list[int | None]


class TaskList(BaseModel):
    """One page of the queue, ascending id; ``next_after`` is the ``after`` of the next page."""

    tasks: list[TaskInfo]
    next_after: int | None = Field(
        description="Pass as ``after`` for the next page; null on the last."
    )


class TaskLog(BaseModel):
    task_id: int
    log: list[SyncLogEntry]


class SyncResult(BaseModel):
    task_id: int
    applied: bool
    task: TaskInfo | None = Field(description="The task as it is now (None once applied).")


class ConnectorList(BaseModel):
    connectors: list[ConnectorInfo]


class WorkerList(BaseModel):
    """The processes that run connectors, newest first; ``alive``: seen within three
    heartbeats (a killed or frozen one stays listed, not alive, for an hour)."""

    workers: list[WorkerInfo]
    alive: int


class ConnectorPatch(BaseModel):
    """What an operator may change on a connector: its switch and its queue limit (null
    removes the limit; a field left out is left as it is)."""

    # Strict: "yes" or 1 for a switch, "5" for a limit, is a mistake to answer, not to guess.
    model_config = ConfigDict(extra="forbid", strict=True)

    enabled: bool | None = None
    queue_limit: int | None = Field(default=None, ge=1, le=2**31 - 1)


class NotifyOut(BaseModel):
    status: str
    connector: str | None


class Health(BaseModel):
    status: str
    database: str


class Ready(BaseModel):
    status: str = Field(description="``ready``, or ``unavailable`` (with status 503).")
    database: str = Field(description="``writable``, or why the database cannot be written.")


class ObjectIn(BaseModel):
    """Edit and replay: the new external object of a queued or failed task."""

    model_config = ConfigDict(extra="forbid")

    object: Annotated[Any, AfterValidator(_object_without_nul)] = Field(
        description="The new external object, as the connector expects it (as when logging)."
    )


class TaskRecordOut(BaseModel):
    """A task's record (CONTRACT §10), queued or finished: what was logged, what it became,
    what its references resolved to, what it changed and what went wrong."""

    task_id: int
    connector_name: str
    task_type: TaskType
    data_type: TaskDataType
    process_type: ProcessType = Field(description="The current process type, or the last one.")
    title: str
    object_type: str | None = Field(description="None for pages.")
    class_name: str | None = Field(description="The page type, for pages.")
    site_name: str | None
    lane: str | None
    state: str = Field(
        description="queued, waiting, failed (still queued, with an error), applied, deleted "
        "(by an operator), dropped (by DeleteOnError) or coalesced."
    )
    logged_at: datetime
    finished_at: datetime | None = Field(description="None while queued.")
    external: Any = Field(description="The external object as logged (None if it was not JSON).")
    internal: dict[str, Any] = Field(description="The internal object or page as queued.")
    translations: list[dict[str, Any]] = Field(
        description="Per translation record: column, external_id, identity (what was looked "
        "for) and internal_id (what it resolved to when applied; None before)."
    )
    changes: dict[str, list[Any]] | None = Field(
        description="{column: [old, new]} for an applied task ({} if it changed nothing; old "
        "is None for a new row); None otherwise."
    )
    errors: list[SyncLogEntry] = Field(description="Its error log, oldest first.")
    code_name: str | None = Field(description="The code name (or GUID) of the object it writes.")
    into_task_id: int | None = Field(
        description="For a coalesced task: the task that carried its values."
    )
    carried_task_ids: list[int] = Field(
        description="For a carrier: the tasks coalesced into it (their values were applied "
        "with its own), ascending; [] otherwise."
    )
    idempotency_key: str | None = Field(
        default=None,
        description="The idempotency key the task was logged with (its record keeps it after "
        "the key's own retention has passed), or None.",
    )

    @classmethod
    def of(cls, record: TaskRecord) -> TaskRecordOut:
        return cls.model_validate(record, from_attributes=True)


class ObjectOut(BaseModel):
    """An object as it is now: its type and every column's value."""

    object_type: str
    object: dict[str, Any]


class PageOut(BaseModel):
    """A page as it is now: its node, its document in one culture, the page type's fields."""

    site_name: str
    alias_path: str
    culture: str
    page: dict[str, Any]


class ObjectHistory(BaseModel):
    """The records of the tasks that wrote one object, newest first."""

    records: list[TaskRecordOut]
