"""syncbus: an integration bus that brings external data into your content repository."""

from __future__ import annotations

from syncbus.bus import IntegrationBus
from syncbus.client import request_tasks_processing
from syncbus.connector import BaseIntegrationConnector
from syncbus.content.types import ObjectType, PageType
from syncbus.enums import InvalidEnumValueError, Ordering, ProcessType, TaskDataType, TaskType
from syncbus.errors import (
    ConfigurationError,
    ConnectorDisabledError,
    ConnectorError,
    ConnectorLoadError,
    ConnectorNotFoundError,
    ContentError,
    CorruptTaskError,
    IntakeError,
    IntegrationDisabledError,
    InvalidFilterError,
    InvalidObjectError,
    PageNotFoundError,
    QueueFullError,
    SchemaMissingError,
    SiteNotFoundError,
    StoreError,
    SyncBusError,
    TaskBusyError,
    TaskNotFoundError,
    TranslationError,
)
from syncbus.intake import LogOutcome, TaskRequest
from syncbus.model import (
    ConnectorInfo,
    DocumentParams,
    EventLogEntry,
    InternalObject,
    ObjectParams,
    Page,
    ProcessResult,
    SyncLogEntry,
    TaskInfo,
    TaskRecord,
    WorkerInfo,
)

__version__ = "0.1.0"

__all__ = [
    "BaseIntegrationConnector",
    "ConfigurationError",
    "ConnectorDisabledError",
    "ConnectorError",
    "ConnectorInfo",
    "ConnectorLoadError",
    "ConnectorNotFoundError",
    "ContentError",
    "CorruptTaskError",
    "DocumentParams",
    "EventLogEntry",
    "IntakeError",
    "IntegrationBus",
    "IntegrationDisabledError",
    "InternalObject",
    "InvalidEnumValueError",
    "InvalidFilterError",
    "InvalidObjectError",
    "LogOutcome",
    "ObjectParams",
    "ObjectType",
    "Ordering",
    "Page",
    "PageNotFoundError",
    "PageType",
    "ProcessResult",
    "ProcessType",
    "QueueFullError",
    "SchemaMissingError",
    "SiteNotFoundError",
    "StoreError",
    "SyncBusError",
    "SyncLogEntry",
    "TaskBusyError",
    "TaskDataType",
    "TaskInfo",
    "TaskNotFoundError",
    "TaskRecord",
    "TaskRequest",
    "TaskType",
    "TranslationError",
    "WorkerInfo",
    "__version__",
    "create_app",
    "request_tasks_processing",
]


def __getattr__(name: str) -> object:
    # The HTTP service pulls in FastAPI; import it only when asked for.
    if name == "create_app":
        from syncbus.service import create_app

        return create_app
    raise AttributeError(f"module 'syncbus' has no attribute {name!r}")
