"""Bus settings persisted in the database (``syncbus_setting``), read fresh on every access."""

from __future__ import annotations

import sqlalchemy as sa

from syncbus.store.enqueue import notify_workers
from syncbus.store.switches import (
    HISTORY_RETENTION,
    IDEMPOTENCY_RETENTION,
    MAX_DAYS,
    days,
    flag,
    read_setting,
    write_setting,
)


class _Flag:
    def __init__(self, key: str, doc: str) -> None:
        self.key = key
        self.__doc__ = doc

    def __get__(self, obj: Settings | None, owner: type[Settings]) -> bool:
        if obj is None:
            return True
        with obj.reader.connect() as conn:
            value = read_setting(conn, self.key)
        return flag(value)

    def __set__(self, obj: Settings, value: bool) -> None:
        if not isinstance(value, bool):
            raise TypeError(f"settings.{self.key} takes True or False, not {value!r}")
        with obj.db.begin() as conn:
            write_setting(conn, self.key, "true" if value else "false")
            if value:  # switched on: every worker of every process looks at every queue now
                notify_workers(conn, "")


class _Days:
    """A retention in whole days, persisted like the switches; 0 keeps nothing."""

    def __init__(self, key: str, default: int, doc: str) -> None:
        self.key = key
        self.default = default
        self.__doc__ = doc

    def __get__(self, obj: Settings | None, owner: type[Settings]) -> int:
        if obj is None:
            return self.default
        with obj.reader.connect() as conn:
            return days(read_setting(conn, self.key), self.default)

    def __set__(self, obj: Settings, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_DAYS:
            raise ValueError(
                f"settings.{self.key} takes a whole number of days from 0 to {MAX_DAYS}, "
                f"not {value!r:.40}"
            )
        with obj.db.begin() as conn:
            write_setting(conn, self.key, str(value))


class Settings:
    """The master switch and the switches for logging and processing incoming tasks.

    Each is effective only while the master switch is on. Defaults: all on.
    """

    integration_enabled = _Flag("integration_enabled", "Master switch of the integration bus.")
    log_external = _Flag("log_external", "Logging of incoming tasks.")
    process_external = _Flag("process_external", "Processing of incoming tasks.")

    history_retention_days = _Days(
        HISTORY_RETENTION,
        7,
        "Days a finished task's record is kept (CONTRACT §10); 0 keeps no history.",
    )
    idempotency_retention_days = _Days(
        IDEMPOTENCY_RETENTION,
        7,
        "Days an idempotency key is remembered after its task left the queue; a retry after "
        "that logs a new task.",
    )

    def __init__(self, db: sa.Engine, reader: sa.Engine | None = None) -> None:
        self.db = db
        self.reader = reader or db

    def as_dict(self) -> dict[str, bool | int]:
        return {
            "integration_enabled": self.integration_enabled,
            "log_external": self.log_external,
            "process_external": self.process_external,
            "history_retention_days": self.history_retention_days,
            "idempotency_retention_days": self.idempotency_retention_days,
        }

    def __repr__(self) -> str:
        return f"Settings({self.as_dict()})"
