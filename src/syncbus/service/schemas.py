"""Request and response bodies of the HTTP API (pydantic 2)."""

from __future__ import annotations

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


class TaskList(BaseModel):
    tasks: list[TaskInfo]


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
