"""The public enumerations; ``.value`` is the wire name (JSON, CLI, database).

What each task type means to the bus (title verb, page or object, the method applying it) is
one table, ``TASK_TYPES``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Self

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
        """A page task (else an object task)."""
        return self in _DOCUMENT_TASKS

    @property
    def spec(self) -> TaskTypeSpec:
        """This task type's row of ``TASK_TYPES``."""
        return TASK_TYPES[self]


@dataclass(frozen=True)
class TaskTypeSpec:
    """What the bus knows of a task type: the verb of its tasks' titles, whether it applies to
    a page (a document task) or to an object, and the name of the method that applies it (on
    ``Applier`` for object tasks, on ``PageStore`` for page tasks; each resolves its names
    once, when it is built). A new task type is a member of ``TaskType`` and a row here."""

    verb: str
    document: bool
    handler: str


_OBJECT, _PAGE = False, True
TASK_TYPES: dict[TaskType, TaskTypeSpec] = {
    TaskType.CREATE_OBJECT: TaskTypeSpec("Create", _OBJECT, "_upsert_object"),
    TaskType.UPDATE_OBJECT: TaskTypeSpec("Update", _OBJECT, "_upsert_object"),
    TaskType.DELETE_OBJECT: TaskTypeSpec("Delete", _OBJECT, "_delete_object"),
    TaskType.ADD_TO_SITE: TaskTypeSpec("Add to site", _OBJECT, "_add_to_site"),
    TaskType.REMOVE_FROM_SITE: TaskTypeSpec("Remove from site", _OBJECT, "_remove_from_site"),
    TaskType.CREATE_DOCUMENT: TaskTypeSpec("Create page", _PAGE, "_create_or_update"),
    TaskType.UPDATE_DOCUMENT: TaskTypeSpec("Update page", _PAGE, "_create_or_update"),
    TaskType.DELETE_DOCUMENT: TaskTypeSpec("Delete page", _PAGE, "_delete_document"),
    TaskType.DELETE_ALL_CULTURES: TaskTypeSpec(
        "Delete all cultures of page", _PAGE, "_delete_all_cultures"
    ),
    TaskType.PUBLISH_DOCUMENT: TaskTypeSpec("Publish page", _PAGE, "_publish"),
    TaskType.ARCHIVE_DOCUMENT: TaskTypeSpec("Archive page", _PAGE, "_archive"),
    TaskType.MOVE_DOCUMENT: TaskTypeSpec("Move page", _PAGE, "_move"),
}
if set(TASK_TYPES) != set(TaskType):
    raise RuntimeError("every TaskType needs a row in TASK_TYPES")
_DOCUMENT_TASKS = frozenset(t for t, spec in TASK_TYPES.items() if spec.document)


def task_handlers(owner: object, *, document: bool) -> dict[TaskType, Any]:
    """The bound methods of ``owner`` that apply the object (or page) task types."""
    return {t: getattr(owner, s.handler) for t, s in TASK_TYPES.items() if s.document is document}


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


class Ordering(_WireEnum):
    """How a connector's queue is ordered (CONTRACT §8): one FIFO queue per connector
    (Kentico's behaviour, the default), or one lane per entity its tasks write."""

    CONNECTOR = "connector"
    ENTITY = "entity"


# The name of the argument (and JSON field) each enumeration is given as, for error messages.
_FIELDS = {
    "TaskType": "task_type",
    "TaskDataType": "data_type",
    "ProcessType": "process_type",
    "Ordering": "ordering",
}
