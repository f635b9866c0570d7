"""The syncbus exception hierarchy: one root, one subclass per family.

Every message names the thing that went wrong and, where there is one, the fix.
"""

from __future__ import annotations

from typing import Any


class SyncBusError(Exception):
    """Root of every error syncbus raises on purpose."""


class ConfigurationError(SyncBusError):
    """A setting, URL or argument that cannot work."""


class ConnectorError(SyncBusError):
    """Family: connectors (registration, loading, lookup)."""


class ConnectorNotFoundError(ConnectorError):
    """The connector is not registered, or it is disabled."""


class ConnectorDisabledError(ConnectorNotFoundError):
    """The connector is registered but disabled."""


class ConnectorLoadError(ConnectorError):
    """The connector's class could not be imported, instantiated or initialised."""


class IntakeError(SyncBusError):
    """Family: logging an incoming task."""


class IntegrationDisabledError(IntakeError):
    """The master switch or the logging of external tasks is off."""


class SiteNotFoundError(IntakeError):
    """The task names a site that does not exist."""


class InvalidObjectError(IntakeError):
    """The object type, page type or a column of the prepared object is not known."""


class TranslationError(SyncBusError):
    """A foreign key could not be captured (at log time) or resolved (at process time).

    ``missing`` holds the translation records of the references that could not be resolved
    when every one of them has a record (so the task may wait for them, CONTRACT §8); it is
    empty when some reference can never be resolved."""

    def __init__(self, message: str, missing: tuple[Any, ...] = ()) -> None:
        super().__init__(message)
        self.missing = missing
        # Set by the applier when the task had written nothing yet (its object's references
        # are translated before any write): the batch need not be rolled back for it.
        self.before_writes = False


class ContentError(SyncBusError):
    """Family: applying a task to the content repository."""


class PageNotFoundError(ContentError):
    """A page (or a page's parent) that the task needs does not exist. ``missing``: as for
    ``TranslationError``, the record of a parent page the task may wait for."""

    def __init__(self, message: str, missing: tuple[Any, ...] = ()) -> None:
        super().__init__(message)
        self.missing = missing
        # Set by the applier for a parent that is not there: every page task asks for its
        # parent before it writes anything, so the batch need not be rolled back for it.
        self.before_writes = False


class TaskNotFoundError(SyncBusError):
    """No task with that id is queued."""


class ObjectNotFoundError(SyncBusError):
    """No object of that type has that code name (on that site)."""


class TaskBusyError(SyncBusError):
    """The task is in a batch that a runner is applying right now (HTTP 409): try again when
    the batch has ended. Raised instead of waiting on the batch's locks."""


class InvalidFilterError(SyncBusError, ValueError):
    """A filter of the task list that no task could match as given (e.g. a lane key with a
    control character); the message says what a valid one looks like (HTTP 422)."""


class StoreError(SyncBusError):
    """Family: the database (connection, schema, migrations)."""


class SchemaMissingError(StoreError):
    """A table a task needs does not exist in the database (``create_schema`` not run)."""


class CorruptTaskError(SyncBusError):
    """A stored task row cannot be decoded."""


class LeaseLostError(SyncBusError):
    """Another runner took the connector over (this runner stalled past its lease)."""


class QueueFullError(SyncBusError):
    """The connector's queue holds its limit of tasks (CONTRACT §9): nothing was logged.
    ``retry_after``: seconds after which logging is likely to be accepted again, estimated
    from how fast the connector's last run drained its queue."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after
