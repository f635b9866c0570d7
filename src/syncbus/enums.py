"""The three public enumerations; ``.value`` is the wire name (JSON, CLI, database)."""

from __future__ import annotations

from enum import StrEnum
from typing import Self

from syncbus.errors import InvalidObjectError


class InvalidEnumValueError(InvalidObjectError, ValueError):
    """An unknown wire value for an enumeration (a ValueError too, as parsing always raised)."""


class _WireEnum(StrEnum):
    """A StrEnum whose wire values parse case-insensitively; unknown values are an error."""

    @classmethod
    def parse(cls, value: str | Self) -> Self:
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            exact = cls._value2member_map_.get(value)  # the wire value as stored: no scan
            if exact is not None:
                return exact  # type: ignore[return-value]
            folded = value.strip().casefold()
            for member in cls:
                if member.value.casefold() == folded or member.name.casefold() == folded:
                    return member
        allowed = ", ".join(m.value for m in cls)
        field = _FIELDS.get(cls.__name__, cls.__name__)
        raise InvalidEnumValueError(
            f"{field}: unknown {cls.__name__} {value!r:.80}; expected one of: {allowed}"
        )

    @classmethod
    def _missing_(cls, value: object) -> Self | None:
        if isinstance(value, str):
            folded = value.strip().casefold()
            for member in cls:
                if member.value.casefold() == folded or member.name.casefold() == folded:
                    return member
        return None


class TaskType(_WireEnum):
    CREATE_OBJECT = "CreateObject"
    UPDATE_OBJECT = "UpdateObject"
    DELETE_OBJECT = "DeleteObject"
    ADD_TO_SITE = "AddToSite"
    REMOVE_FROM_SITE = "RemoveFromSite"
    CREATE_DOCUMENT = "CreateDocument"
    UPDATE_DOCUMENT = "UpdateDocument"
    DELETE_DOCUMENT = "DeleteDocument"
    DELETE_ALL_CULTURES = "DeleteAllCultures"
    PUBLISH_DOCUMENT = "PublishDocument"
    ARCHIVE_DOCUMENT = "ArchiveDocument"
    MOVE_DOCUMENT = "MoveDocument"

    @property
    def is_document(self) -> bool:
        return self in _DOCUMENT_TASKS


_DOCUMENT_TASKS = frozenset(
    {
        TaskType.CREATE_DOCUMENT,
        TaskType.UPDATE_DOCUMENT,
        TaskType.DELETE_DOCUMENT,
        TaskType.DELETE_ALL_CULTURES,
        TaskType.PUBLISH_DOCUMENT,
        TaskType.ARCHIVE_DOCUMENT,
        TaskType.MOVE_DOCUMENT,
    }
)


class TaskDataType(_WireEnum):
    SIMPLE = "Simple"
    SIMPLE_SNAPSHOT = "SimpleSnapshot"
    SNAPSHOT = "Snapshot"


class ProcessType(_WireEnum):
    DEFAULT = "Default"
    SKIP_ONCE = "SkipOnce"
    SKIP_ON_ERROR = "SkipOnError"
    DELETE_ON_ERROR = "DeleteOnError"
    ERROR = "Error"


# The name of the argument (and JSON field) each enumeration is given as, for error messages.
_FIELDS = {"TaskType": "task_type", "TaskDataType": "data_type", "ProcessType": "process_type"}
