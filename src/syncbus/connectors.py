"""Connector registration and lazy loading (their rows: ``syncbus.store.connectors``)."""

from __future__ import annotations

import importlib
import math
import threading
from typing import Any, NoReturn

import sqlalchemy as sa

from syncbus.connector import BaseIntegrationConnector
from syncbus.enums import InvalidEnumValueError, Ordering
from syncbus.errors import ConfigurationError, ConnectorLoadError, ConnectorNotFoundError
from syncbus.model import ConnectorInfo
from syncbus.store.connectors import (
    connector_by_name,
    connector_exists,
    connectors_with_counts,
    not_registered,
    register_connector,
    set_connector_enabled,
    set_connector_queue_limit,
    set_connector_rules,
)
from syncbus.store.logs import write_event

ConnectorTarget = type[BaseIntegrationConnector] | BaseIntegrationConnector | str


def class_path_of(cls: type) -> str | None:
    """``module:Qualname`` when another process could import it, else None."""
    if "<locals>" in cls.__qualname__ or cls.__module__ == "__main__":
        return None
    return f"{cls.__module__}:{cls.__qualname__}"


def _import_fix(module_name: str, exc: Exception) -> str:
    """The likely fix for an import failure: the connector's own module not being found is a
    sys.path problem (the usual one with `syncbus serve`), a missing dependency is not."""
    if not isinstance(exc, ModuleNotFoundError) or not exc.name:
        return ""
    if module_name == exc.name or module_name.startswith(exc.name + "."):
        return f"; put the folder that holds {exc.name!r} on PYTHONPATH"
    return f"; install the package that provides {exc.name!r}"


def import_connector_class(path: str) -> type[BaseIntegrationConnector]:
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ConnectorLoadError(
            f"connector path {path!r} is not of the form 'package.module:ClassName'"
        )
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except Exception as exc:
        raise ConnectorLoadError(
            f"cannot import connector {path!r}: {type(exc).__name__}: {exc}"
            f"{_import_fix(module_name, exc)}"
        ) from exc
    if not (isinstance(obj, type) and issubclass(obj, BaseIntegrationConnector)):
        raise ConnectorLoadError(f"{path!r} is not a BaseIntegrationConnector subclass")
    return obj


def _instantiate(cls: type[BaseIntegrationConnector], where: str) -> BaseIntegrationConnector:
    try:
        instance = cls()
        instance.init()
    except Exception as exc:
        raise ConnectorLoadError(
            f"connector {where} failed to start: {type(exc).__name__}: {exc}"
        ) from exc
    return instance


def _seconds(who: str, name: str, value: object, meaning: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ConnectorLoadError(
            f"{who}: {name} must be a finite number of seconds >= 0{meaning}, not {value!r:.80}"
        )
    return float(value)


def check_rules(instance: BaseIntegrationConnector) -> dict[str, Any]:
    """Refuse a connector whose ``ordering``, ``dependency_timeout``, ``retry_delay`` or
    ``retry_max_delay`` cannot work, naming the connector and the attribute; store them on the
    instance normalised (an ``Ordering``, floats), so logging compares them cheaply. Returns
    them as the connector's row records them."""
    who = f"connector {instance.connector_name!r} ({type(instance).__name__})"
    ordering: object = instance.ordering
    if not isinstance(ordering, str):
        raise ConnectorLoadError(
            f"{who}: ordering must be an Ordering (Ordering.CONNECTOR or Ordering.ENTITY), "
            f"not {ordering!r:.80}"
        )
    try:
        instance.ordering = Ordering.parse(ordering)
    except InvalidEnumValueError as exc:
        raise ConnectorLoadError(f"{who}: {exc}") from None
    instance.dependency_timeout = _seconds(
        who,
        "dependency_timeout",
        instance.dependency_timeout,
        " (0: a task never waits for a missing reference)",
    )
    instance.retry_delay = _seconds(who, "retry_delay", instance.retry_delay, "")
    instance.retry_max_delay = _seconds(who, "retry_max_delay", instance.retry_max_delay, "")
    bound: object = instance.quarantine_after
    if isinstance(bound, bool) or not isinstance(bound, int) or not 1 <= bound <= 1000:
        raise ConnectorLoadError(
            f"{who}: quarantine_after must be a whole number of deaths from 1 to 1000, "
            f"not {bound!r:.80}"
        )
    if not isinstance(instance.coalesce, bool):
        raise ConnectorLoadError(
            f"{who}: coalesce must be True or False, not {instance.coalesce!r:.80}"
        )
    if instance.retry_delay > instance.retry_max_delay:
        raise ConnectorLoadError(
            f"{who}: retry_delay ({instance.retry_delay:g} s) is longer than retry_max_delay "
            f"({instance.retry_max_delay:g} s)"
        )
    return {
        "ordering": instance.ordering.value,
        "dependency_timeout": instance.dependency_timeout,
        "retry_delay": instance.retry_delay,
        "retry_max_delay": instance.retry_max_delay,
        "quarantine_after": instance.quarantine_after,
        "coalesce": instance.coalesce,
    }


# The largest queue limit (a 32-bit column; far more than any queue should hold).
MAX_QUEUE_LIMIT = 2**31 - 1


class ConnectorRegistry:
    """Connectors known to this process, backed by the connectors table."""

    def __init__(self, db: sa.Engine, reader: sa.Engine | None = None) -> None:
        self.db = db
        self.reader = reader or db
        self._lock = threading.RLock()
        self._loaded: dict[str, BaseIntegrationConnector] = {}
        self._failed: dict[str, str] = {}
        # Whether a load failure goes to the event log too (the processes that run connectors:
        # services, workers, runs); a one-off command says it only to its caller, so a shell
        # without the connector's PYTHONPATH leaves no lasting warning on the dashboard.
        self.log_failures = True

    def register(self, target: ConnectorTarget) -> BaseIntegrationConnector:
        path: str | None
        if isinstance(target, str):
            cls = import_connector_class(target)
            instance, path = _instantiate(cls, repr(target)), target
        elif isinstance(target, type) and issubclass(target, BaseIntegrationConnector):
            instance, path = _instantiate(target, target.__name__), class_path_of(target)
        elif isinstance(target, BaseIntegrationConnector):
            instance, path = target, class_path_of(type(target))
            if not getattr(target, "_syncbus_initialised", False):
                target.init()
        else:
            raise TypeError(
                "register_connector() takes a BaseIntegrationConnector subclass, an instance, "
                f"or a 'module:Class' path, not {target!r}"
            )
        instance._syncbus_initialised = True  # type: ignore[attr-defined]
        name = instance.connector_name
        if not name:
            raise ConnectorLoadError(
                f"connector {type(instance).__name__} has no connector_name: set it on the "
                "class or in init()"
            )
        rules = check_rules(instance)
        display = instance.display_name or name
        with self.db.begin() as conn:
            register_connector(conn, name, display, path, rules)
        with self._lock:
            self._loaded[name] = instance
            self._failed.pop(name, None)
        return instance

    def not_found(self, name: str) -> ConnectorNotFoundError:
        """The error for a name no connector has (suggesting one that differs in case)."""
        with self.reader.connect() as conn:
            return ConnectorNotFoundError(not_registered(conn, name))

    def exists(self, name: str) -> bool:
        """Whether a connector of that name is registered (one indexed lookup, no counts)."""
        with self.reader.connect() as conn:
            return connector_exists(conn, name)

    def get(self, name: str) -> BaseIntegrationConnector:
        """The loaded connector; loads it from its class path on first use."""
        with self._lock:
            if name in self._loaded:
                return self._loaded[name]
            with self.reader.connect() as conn:
                row = connector_by_name(conn, name)
            if row is None:
                raise self.not_found(name)
            if not row.class_path:
                self._load_failed(
                    name,
                    f"connector {name!r} was registered from a class this process cannot "
                    "import (defined in __main__ or inside a function): move the class into an "
                    "importable module and register it as 'module:Class' (e.g. `syncbus "
                    "connectors add mymodule:MyConnector`); set PYTHONPATH so the service can "
                    "import it",
                )
            try:
                instance = _instantiate(import_connector_class(row.class_path), repr(name))
            except ConnectorLoadError as exc:
                why = str(exc).removeprefix(f"cannot import connector {row.class_path!r}: ")
                self._load_failed(
                    name, f"failed to load connector {name!r} ({row.class_path}): {why}", exc
                )
            if instance.connector_name != name:
                raise ConnectorLoadError(
                    f"connector class {row.class_path} names itself "
                    f"{instance.connector_name!r}, but is registered as {name!r}"
                )
            try:
                rules = check_rules(instance)
            except ConnectorLoadError as exc:
                self._load_failed(name, str(exc), exc)
            if any(getattr(row, key) != value for key, value in rules.items()):
                with self.db.begin() as conn:  # the class changed since registration
                    set_connector_rules(conn, name, rules)
            self._loaded[name] = instance
            return instance

    def _load_failed(self, name: str, message: str, cause: Exception | None = None) -> NoReturn:
        """Record a load failure once (as the API's ``load_error`` and a LOADCONNECTOR event
        in the event log), then raise it."""
        if self._failed.get(name) != message:
            self._failed[name] = message
            if self.log_failures:
                with self.db.begin() as conn:
                    write_event(conn, "Integration", "LOADCONNECTOR", message, "W")
        raise ConnectorLoadError(message) from cause

    def set_queue_limit(self, name: str, limit: int | None) -> None:
        whole = isinstance(limit, int) and not isinstance(limit, bool)
        if limit is not None and (not whole or limit < 1):
            raise ConfigurationError(
                "a queue limit is a whole number of tasks >= 1 (or None: no limit), "
                f"not {limit!r:.40}"
            )
        if limit is not None and limit > MAX_QUEUE_LIMIT:
            raise ConfigurationError(f"a queue limit is at most {MAX_QUEUE_LIMIT}, not {limit}")
        with self.db.begin() as conn:
            found = set_connector_queue_limit(conn, name, limit)
        if not found:
            raise self.not_found(name)

    def set_enabled(self, name: str, enabled: bool) -> None:
        with self.db.begin() as conn:
            found = set_connector_enabled(conn, name, enabled)
        if not found:
            raise self.not_found(name)

    def list(self) -> list[ConnectorInfo]:
        with self.reader.connect() as conn:
            rows = connectors_with_counts(conn)
        return [
            ConnectorInfo(
                name=r.connector_name,
                display_name=r.display_name,
                class_path=r.class_path,
                enabled=bool(r.enabled),
                pending=int(r.pending or 0),
                failed=int(r.failed or 0),
                load_error=self._failed.get(r.connector_name),
                ordering=self._ordering(r.connector_name, r.ordering),
                queue_limit=r.queue_limit,
            )
            for r in rows
        ]

    def _ordering(self, name: str, stored: str) -> Ordering:
        """The ordering this process logs with (the loaded class's), else the stored one."""
        loaded = self._loaded.get(name)
        return Ordering.parse(stored) if loaded is None else loaded.ordering
