"""The connector base class that integrators subclass."""

from __future__ import annotations

from typing import Any

from syncbus.enums import Ordering, TaskDataType, TaskType
from syncbus.model import DocumentParams, InternalObject, ObjectParams, Page


class BaseIntegrationConnector:
    """Subclass this for each external system.

    Set ``connector_name`` (a code name) on the class or in :meth:`init`. The bus calls
    :meth:`prepare_internal_object` when a task is LOGGED, and, for SIMPLE_SNAPSHOT and
    SNAPSHOT, the two ``get_internal_*_params`` methods once per distinct external id.

    ``ordering`` (CONTRACT §8): ``Ordering.CONNECTOR`` (the default) keeps one queue per
    connector, in task-id order, where a failure stops everything behind it; under
    ``Ordering.ENTITY`` the queue is split into one lane per entity: a failure halts only its
    lane, and on PostgreSQL several workers share the connector lane by lane.
    ``dependency_timeout``: under ``Ordering.ENTITY``, the seconds a task waits for a missing
    reference before it fails (0: it fails at once). Both are checked when the connector is
    registered or loaded; ``ordering`` may be given as its wire value (``"entity"``).

    ``retry_delay`` and ``retry_max_delay`` (CONTRACT §9): a ``SKIP_ON_ERROR`` task that failed
    is tried again after ``retry_delay`` seconds, doubled after each failed attempt, capped at
    ``retry_max_delay``. ``quarantine_after``: a task with which the worker applying it died
    this many times becomes ``ERROR`` ("quarantined") instead of killing the next one.

    ``coalesce``: consecutive upserts of one object in a batch are applied as one (columns
    merged, the later value winning), and upserts followed by a delete become the delete; the
    final content is the same, with fewer writes (``syncbus.coalescing`` says exactly when).
    """

    connector_name: str | None = None
    display_name: str | None = None
    ordering: Ordering = Ordering.CONNECTOR
    dependency_timeout: float = 3600.0
    retry_delay: float = 10.0
    retry_max_delay: float = 3600.0
    quarantine_after: int = 3
    coalesce: bool = False

    def init(self) -> None:
        """Called once when the connector is loaded."""

    def prepare_internal_object(
        self,
        obj: Any,
        task_type: TaskType,
        data_type: TaskDataType,
        site_name: str | None,
    ) -> InternalObject | Page | None:
        """Turn the external object into an internal one; None means "nothing to do"."""
        raise self._not_implemented("prepare_internal_object")

    def get_internal_object_params(self, id: Any, object_type: str) -> ObjectParams | None:
        """Name the internal identity of the object the external ``id`` refers to."""
        raise self._not_implemented("get_internal_object_params")

    def get_internal_document_params(self, id: Any, class_name: str) -> DocumentParams | None:
        """Name the internal identity of the page the external ``id`` refers to."""
        raise self._not_implemented("get_internal_document_params")

    def _not_implemented(self, method: str) -> NotImplementedError:
        return NotImplementedError(
            f"[{type(self).__name__}.{method}]: connector {self.connector_name!r} must implement "
            f"{method}() to support external tasks"
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.connector_name!r}>"
