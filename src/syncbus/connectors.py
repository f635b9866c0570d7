"""Connector registration and lazy loading (the ``syncbus_connector`` table)."""

from __future__ import annotations

import importlib
import threading
from typing import Any, NoReturn

import sqlalchemy as sa

from syncbus.connector import BaseIntegrationConnector
from syncbus.errors import ConnectorLoadError, ConnectorNotFoundError
from syncbus.model import ConnectorInfo
from syncbus.store.db import utcnow
from syncbus.store.dialect import dialect_of
from syncbus.store.leases import ensure_lease_row
from syncbus.store.logs import write_event
from syncbus.store.tables import connector_table as ct
from syncbus.store.tables import task_table

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


class ConnectorRegistry:
    """Connectors known to this process, backed by the connectors table."""

    def __init__(self, db: sa.Engine, reader: sa.Engine | None = None) -> None:
        self.db = db
        self.reader = reader or db
        self._lock = threading.RLock()
        self._loaded: dict[str, BaseIntegrationConnector] = {}
        self._failed: dict[str, str] = {}

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
        display = instance.display_name or name
        with self.db.begin() as conn:
            existing = conn.execute(
                sa.select(ct.c.connector_id).where(ct.c.connector_name == name)
            ).scalar()
            values = {"display_name": display, "class_path": path, "modified_at": utcnow()}
            if existing is None:
                dialect_of(conn).insert_ignore(
                    conn, ct, {"connector_name": name, "enabled": True, **values}
                )
            else:
                conn.execute(ct.update().where(ct.c.connector_id == existing).values(values))
            cid = conn.execute(
                sa.select(ct.c.connector_id).where(ct.c.connector_name == name)
            ).scalar_one()
            ensure_lease_row(conn, int(cid))
        with self._lock:
            self._loaded[name] = instance
            self._failed.pop(name, None)
        return instance

    def row(self, conn: sa.Connection, name: str) -> sa.Row[Any] | None:
        return conn.execute(sa.select(ct).where(ct.c.connector_name == name)).first()

    def exists(self, name: str) -> bool:
        """Whether a connector of that name is registered (one indexed lookup, no counts)."""
        with self.reader.connect() as conn:
            return self.row(conn, name) is not None

    def get(self, name: str) -> BaseIntegrationConnector:
        """The loaded connector; loads it from its class path on first use."""
        with self._lock:
            if name in self._loaded:
                return self._loaded[name]
            with self.reader.connect() as conn:
                row = self.row(conn, name)
            if row is None:
                raise ConnectorNotFoundError(f"no connector named {name!r} is registered")
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
                self._load_failed(
                    name, f"failed to load connector {name!r} ({row.class_path}): {exc}", exc
                )
            if instance.connector_name != name:
                raise ConnectorLoadError(
                    f"connector class {row.class_path} names itself "
                    f"{instance.connector_name!r}, but is registered as {name!r}"
                )
            self._loaded[name] = instance
            return instance

    def _load_failed(self, name: str, message: str, cause: Exception | None = None) -> NoReturn:
        """Record a load failure once (as the API's ``load_error`` and a LOADCONNECTOR event
        in the event log), then raise it."""
        if self._failed.get(name) != message:
            self._failed[name] = message
            with self.db.begin() as conn:
                write_event(conn, "Integration", "LOADCONNECTOR", message, "W")
        raise ConnectorLoadError(message) from cause

    def set_enabled(self, name: str, enabled: bool) -> None:
        with self.db.begin() as conn:
            result = conn.execute(
                ct.update()
                .where(ct.c.connector_name == name)
                .values(enabled=enabled, modified_at=utcnow())
            )
        if result.rowcount == 0:
            raise ConnectorNotFoundError(f"no connector named {name!r} is registered")

    def list(self) -> list[ConnectorInfo]:
        t = task_table
        failed = sa.func.sum(sa.case((t.c.error_message.is_not(None), 1), else_=0))
        counts = (
            sa.select(t.c.connector_id, sa.func.count().label("pending"), failed.label("failed"))
            .group_by(t.c.connector_id)
            .subquery()
        )
        stmt = (
            sa.select(ct, counts.c.pending, counts.c.failed)
            .outerjoin(counts, counts.c.connector_id == ct.c.connector_id)
            .order_by(ct.c.connector_name)
        )
        with self.reader.connect() as conn:
            rows = conn.execute(stmt).all()
        return [
            ConnectorInfo(
                name=r.connector_name,
                display_name=r.display_name,
                class_path=r.class_path,
                enabled=bool(r.enabled),
                pending=int(r.pending or 0),
                failed=int(r.failed or 0),
                load_error=self._failed.get(r.connector_name),
            )
            for r in rows
        ]
