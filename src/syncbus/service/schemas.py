"""Request and response bodies of the HTTP API (pydantic 2)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from syncbus.enums import ProcessType, TaskDataType, TaskType
from syncbus.model import ConnectorInfo, SyncLogEntry, TaskInfo


def _wire(enum: type[TaskType] | type[TaskDataType] | type[ProcessType]) -> BeforeValidator:
    def parse(value: Any) -> Any:
        return enum.parse(value) if isinstance(value, str) else value

    return BeforeValidator(parse)


WireTaskType = Annotated[TaskType, _wire(TaskType)]
WireDataType = Annotated[TaskDataType, _wire(TaskDataType)]
WireProcessType = Annotated[ProcessType, _wire(ProcessType)]


class TaskIn(BaseModel):
    """One task to log. ``object`` is the external object, passed to the connector as JSON."""

    model_config = ConfigDict(extra="forbid")

    task_type: WireTaskType
    object: Any = Field(description="The external object, as the connector expects it.")
    data_type: WireDataType = TaskDataType.SIMPLE
    process_type: WireProcessType = ProcessType.DEFAULT
    site_name: str | None = Field(default=None, max_length=100)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)


class TaskBatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tasks: list[TaskIn] = Field(min_length=1, max_length=10_000)


class TaskCreated(BaseModel):
    task_id: int


class TasksCreated(BaseModel):
    task_ids: list[int | None]


class TaskOut(BaseModel):
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
    idempotency_key: str | None

    @classmethod
    def of(cls, t: TaskInfo) -> TaskOut:
        return cls(
            task_id=t.task_id,
            connector_name=t.connector_name,
            task_type=t.task_type,
            data_type=t.data_type,
            process_type=t.process_type,
            object_type=t.object_type,
            class_name=t.class_name,
            title=t.title,
            site_name=t.site_name,
            created_at=t.created_at,
            error_message=t.error_message,
            last_run_at=t.last_run_at,
            is_running=t.is_running,
            idempotency_key=t.idempotency_key,
        )


class TaskList(BaseModel):
    tasks: list[TaskOut]


class LogEntryOut(BaseModel):
    time: datetime
    error_message: str

    @classmethod
    def of(cls, e: SyncLogEntry) -> LogEntryOut:
        return cls(time=e.time, error_message=e.error_message)


class TaskLog(BaseModel):
    task_id: int
    log: list[LogEntryOut]


class SyncResult(BaseModel):
    task_id: int
    applied: bool
    task: TaskOut | None = Field(description="The task as it is now (None once applied).")


class ConnectorOut(BaseModel):
    name: str
    display_name: str
    class_path: str | None
    enabled: bool
    pending: int
    failed: int

    @classmethod
    def of(cls, c: ConnectorInfo) -> ConnectorOut:
        return cls(
            name=c.name,
            display_name=c.display_name,
            class_path=c.class_path,
            enabled=c.enabled,
            pending=c.pending,
            failed=c.failed,
        )


class ConnectorList(BaseModel):
    connectors: list[ConnectorOut]


class ConnectorPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool


class NotifyOut(BaseModel):
    status: str
    connector: str | None


class Health(BaseModel):
    status: str
    database: str


class ErrorOut(BaseModel):
    detail: Any
