"""Declarations of user-defined object and page types (``kind``, ``name``, JSON), stored so
that a process that never registered a type (a worker, the service) can load it."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from syncbus.store.db import utcnow
from syncbus.store.dialect import dialect_of
from syncbus.store.tables import type_table


def save_type_declarations(
    conn: sa.Connection, declarations: Iterable[tuple[str, str, dict[str, Any]]]
) -> None:
    """Insert or replace each ``(kind, name, declaration)``."""
    dialect = dialect_of(conn)
    for kind, name, declaration in declarations:
        dialect.upsert(
            conn,
            type_table,
            {
                "kind": kind,
                "name": name,
                "declaration": json.dumps(declaration),
                "modified_at": utcnow(),
            },
            ["kind", "name"],
        )
