"""Bringing JSON-decoded values to their column types when a task is applied: ISO dates and
times, UUIDs, 0/1 booleans. A task's JSON holds them as text or numbers; SQLite's Date and
DateTime take only Python objects."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy as sa

from syncbus.content.types import ObjectType
from syncbus.errors import ContentError


def _to_datetime(value: Any) -> Any:
    """An instant in UTC (aware): a value with an offset is converted, one without is UTC
    already (as documented). SQLite stores a datetime's clock fields and drops its zone, so
    ``09:00+01:00`` must reach it as ``08:00`` UTC, not as ``09:00``."""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
    return value


def _to_naive_datetime(value: Any) -> Any:
    """For a column without a time zone: the UTC clock time."""
    value = _to_datetime(value)
    return value.replace(tzinfo=None) if isinstance(value, dt.datetime) else value


def _to_date(value: Any) -> Any:
    return dt.date.fromisoformat(value) if isinstance(value, str) else value


def _to_bool(value: Any) -> Any:
    return bool(value) if value in (0, 1) and not isinstance(value, bool) else value


def _to_str(value: Any) -> Any:
    return str(value) if isinstance(value, uuid.UUID) else value


Coercers = dict[str, tuple[Callable[[Any], Any], Any]]


def column_coercers(types: Mapping[str, Any]) -> Coercers:
    """Per column that may need it: the conversion and the column type (build once)."""
    out: Coercers = {}
    for col, typ in types.items():
        if isinstance(typ, sa.DateTime):
            out[col] = (_to_datetime if typ.timezone else _to_naive_datetime, typ)
        elif isinstance(typ, sa.Date):
            out[col] = (_to_date, typ)
        elif isinstance(typ, sa.Boolean):
            out[col] = (_to_bool, typ)
        elif isinstance(typ, sa.String):
            out[col] = (_to_str, typ)
    return out


def _coercers(ot: ObjectType) -> Coercers:
    coercers: Coercers = ot.derived("coercers", lambda: column_coercers(ot.all_columns()))
    return coercers


def coerce_values(owner: str, coercers: Coercers, row: Mapping[str, Any]) -> dict[str, Any]:
    """Bring JSON-decoded values to the column types (ISO dates, UUIDs, 0/1 booleans)."""
    out: dict[str, Any] = {}
    for col, value in row.items():
        conv = coercers.get(col)
        if conv is not None and value is not None:
            try:
                value = conv[0](value)
            except ValueError as exc:
                raise ContentError(
                    f"column {col!r} of {owner}: {value!r:.80} is not a valid {conv[1]}: {exc}"
                ) from exc
        out[col] = value
    return out


def coerce_row(ot: ObjectType, row: Mapping[str, Any]) -> dict[str, Any]:
    return coerce_values(ot.name, _coercers(ot), row)
