"""Request and response bodies of the HTTP API (pydantic 2)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from syncbus.enums import ProcessType, TaskDataType, TaskType
from syncbus.model import ConnectorInfo, SyncLogEntry, TaskInfo


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


class ConnectorPatch(BaseModel):
    """What an operator may change on a connector: its switch and its queue limit (null
    removes the limit; a field left out is left as it is)."""

    model_config = ConfigDict(extra="forbid")

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
