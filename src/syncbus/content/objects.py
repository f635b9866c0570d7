"""Object operations: find by identity, upsert, delete, site bindings. No queue knowledge."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from syncbus.content import writes
from syncbus.content.caches import TargetCache, target_key
from syncbus.content.coerce import coerce_row
from syncbus.content.registry import TypeRegistry
from syncbus.content.types import ObjectType
from syncbus.content.validation import check_columns
from syncbus.errors import ContentError

_MISSING = object()
_GIVEN, _NULL, _LEFT_OUT = 0, 1, 2  # how an identity column appears in a lookup
_ID_PARAM = "syncbus_object_id"


def _same(old: Any, new: Any) -> bool:
    """Whether a stored value and a written one are the same (a date read back from SQLite
    may lose its zone, a number its type: compare what a reader would see)."""
    if old == new:
        return True
    if old is None or new is None:
        return False
    if isinstance(old, dt.datetime) and isinstance(new, dt.datetime):
        return _naive_utc(old) == _naive_utc(new)
    return str(old) == str(new)


def _naive_utc(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is None else value.astimezone(dt.UTC).replace(tzinfo=None)


def diff(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, list[Any]]:
    """``{column: [old, new]}`` of the columns ``new`` writes with another value than
    ``old`` holds; for a new row (``old`` None), of every column it sets."""
    if old is None:
        return {c: [None, v] for c, v in new.items() if v is not None}
    return {c: [old.get(c), v] for c, v in new.items() if not _same(old.get(c), v)}


def _keep_row(cache: TargetCache, ot: ObjectType, now: dict[str, Any], site_id: int | None) -> None:
    """Keep what an updated row now holds, by the identity it had (a task may leave out an
    identity column, which then keeps its stored value)."""
    key = target_key(ot, now, site_id)
    if key is not None:
        cache.rows[key] = now


class ObjectStore:
    """Reads and writes objects of every registered type, on a caller's connection."""

    def __init__(self, registry: TypeRegistry) -> None:
        self.registry = registry
        self._updates: dict[str, Any] = {}
        self._inserts: dict[str, Any] = {}
        self._deletes: dict[str, Any] = {}
        # find_id statements by (type, which identity columns are given / NULL / left out)
        self._finds: dict[tuple[str, tuple[int, ...]], Any] = {}

    def _update_stmt(self, ot: ObjectType, table: sa.Table) -> Any:
        stmt = self._updates.get(ot.name)
        if stmt is None or stmt.table is not table:
            stmt = table.update().where(table.c[ot.id_column] == sa.bindparam(_ID_PARAM))
            self._updates[ot.name] = stmt
        return stmt

    def _insert_stmt(self, ot: ObjectType, table: sa.Table) -> Any:
        stmt = self._inserts.get(ot.name)
        if stmt is None or stmt.table is not table:
            stmt = table.insert().returning(table.c[ot.id_column])
            self._inserts[ot.name] = stmt
        return stmt

    def _delete_stmt(self, ot: ObjectType, table: sa.Table) -> Any:
        stmt = self._deletes.get(ot.name)
        if stmt is None or stmt.table is not table:
            stmt = table.delete().where(table.c[ot.id_column] == sa.bindparam(_ID_PARAM))
            self._deletes[ot.name] = stmt
        return stmt

    def identity_filter(
        self, ot: ObjectType, row: Mapping[str, Any], site_id: int | None, bind: bool = False
    ) -> list[sa.ColumnElement[bool]]:
        """The WHERE clause that finds an object by identity; with ``bind``, values are bound
        parameters (``k<i>`` per identity column, ``site``) so the clause can be reused."""
        table = self.registry.table(ot.name)
        conds: list[sa.ColumnElement[bool]] = []
        for i, col in enumerate(ot.identity_columns()):
            value = row.get(col, _MISSING)
            if value is _MISSING:
                if col == ot.key_column or ot.is_binding:
                    raise ContentError(
                        f"{ot.name} object has no value for its identity column {col!r}"
                    )
                continue
            if value is None:
                if col == ot.key_column:
                    raise ContentError(f"{ot.name} object has an empty {col!r}")
                conds.append(table.c[col].is_(None))
            else:
                conds.append(table.c[col] == (sa.bindparam(f"k{i}") if bind else value))
        if ot.site_column and not ot.is_binding:
            site: Any = sa.bindparam("site") if bind else site_id
            conds.append(table.c[ot.site_column] == site)
        return conds

    def find_id(
        self, conn: sa.Connection, ot: ObjectType, row: Mapping[str, Any], site_id: int | None
    ) -> int | None:
        """The id of the object with this identity. An identity column left out (a child
        type's parent, a group) matches any value, but only one object may match: objects of
        the same code name under different parents are told apart by the parent alone, and
        writing "the first of them" would write another parent's object."""
        table = self.registry.table(ot.name)
        params: dict[str, Any] = {}
        shape = []
        for i, col in enumerate(ot.identity_columns()):
            value = row.get(col, _MISSING)
            if value is _MISSING:
                shape.append(_LEFT_OUT)
            elif value is None:
                shape.append(_NULL)
            else:
                shape.append(_GIVEN)
                params[f"k{i}"] = value
        params["site"] = site_id
        key = (ot.name, tuple(shape))
        cached = self._finds.get(key)
        if cached is None or cached[0] is not table:
            id_col = table.c[ot.id_column]
            stmt = (
                sa.select(id_col)
                .where(*self.identity_filter(ot, row, site_id, bind=True))
                .order_by(id_col)
                .limit(2 if _LEFT_OUT in shape else 1)
            )
            cached = self._finds[key] = (table, stmt)
        found = conn.execute(cached[1], params).scalars().all()
        if len(found) > 1:
            left_out = [
                col
                for col, how in zip(ot.identity_columns(), shape, strict=True)
                if how == _LEFT_OUT
            ]
            name = row.get(ot.key_column) if ot.key_column else None
            raise ContentError(
                f"{ot.name} {name!r}: more than one object has this code name (under different "
                f"{' and '.join(repr(c) for c in left_out)}), and the task does not say which: "
                f"give {', '.join(repr(c) for c in left_out)} in the object's data"
            )
        return int(found[0]) if found else None

    def exists(self, conn: sa.Connection, ot: ObjectType, oid: Any) -> bool:
        """Whether an object of type ``ot`` has the id ``oid``."""
        table = self.registry.table(ot.name)
        stmt = sa.select(table.c[ot.id_column]).where(table.c[ot.id_column] == oid).limit(1)
        return conn.execute(stmt).first() is not None

    def _existing(
        self,
        conn: sa.Connection,
        ot: ObjectType,
        values: Mapping[str, Any],
        site_id: int | None,
        cache: TargetCache | None,
    ) -> int | None:
        if cache is not None:
            known, oid = cache.get(target_key(ot, values, site_id))
            if known:
                return oid
        return self.find_id(conn, ot, values, site_id)

    def upsert(
        self,
        conn: sa.Connection,
        ot: ObjectType,
        row: Mapping[str, Any],
        site_id: int | None,
        cache: TargetCache | None = None,
        changes: dict[str, list[Any]] | None = None,
    ) -> int:
        """Update the object with the same identity, or insert it; returns its id. With
        ``changes`` (history on), fills it with ``{column: [old, new]}`` of what changed."""
        table = self.registry.table(ot.name)
        values = coerce_row(ot, row)
        values.pop(ot.id_column, None)
        if ot.site_column:
            values[ot.site_column] = site_id
        new_guid_object = (
            ot.guid_column is not None
            and ot.key_column == ot.guid_column
            and values.get(ot.guid_column) is None
        )
        existing = None if new_guid_object else self._existing(conn, ot, values, site_id, cache)
        if existing is not None:
            if ot.guid_column and values.get(ot.guid_column) is None:
                values.pop(ot.guid_column, None)
            if changes is not None:
                old = self._old_row(conn, ot, values, site_id, existing, cache)
                changes.update(diff(old, values))
                if cache is not None and cache.keep_rows:
                    _keep_row(cache, ot, {**old, **values}, site_id)
            elif cache is not None:
                # Written without a record of its own (a SNAPSHOT's child): what the batch
                # knew of the row is not what it holds now.
                cache.forget_row(target_key(ot, values, site_id))
            if values:
                # SET takes the columns present in the parameters (one compiled form each).
                stmt, params = self._update_stmt(ot, table), {**values, _ID_PARAM: existing}
                held = None if cache is None else cache.writes
                # The identity it was found by is set to the values it has (writes.py).
                fixed = frozenset(ot.identity_columns())
                writes.update(conn, held, stmt, params, (table,), fixed)
            return existing
        if ot.guid_column and values.get(ot.guid_column) is None:
            values[ot.guid_column] = str(uuid.uuid4())
        new_id = self._insert(conn, ot, table, values, cache)
        if cache is not None:
            key = target_key(ot, values, site_id)
            cache.put(key, new_id)
            if cache.keep_rows and key is not None:
                cache.rows[key] = {**values, ot.id_column: new_id}
        if changes is not None:
            changes.update(diff(None, {ot.id_column: new_id, **values}))
        return new_id

    def _insert(
        self,
        conn: sa.Connection,
        ot: ObjectType,
        table: sa.Table,
        values: dict[str, Any],
        cache: TargetCache | None,
    ) -> int:
        """Insert a new object; its id. In a batch's optimistic pass the INSERT is held back
        with an id reserved for it and sent grouped with the batch's others (writes.py)."""
        held = None if cache is None else cache.writes
        reserved = None if held is None else held.allocate(table, ot.id_column)
        if held is None or reserved is None:
            return int(conn.execute(self._insert_stmt(ot, table), values).scalar_one())
        held.insert(table, {**values, ot.id_column: reserved})
        return reserved

    def _old_row(
        self,
        conn: sa.Connection,
        ot: ObjectType,
        values: Mapping[str, Any],
        site_id: int | None,
        oid: int,
        cache: TargetCache | None,
    ) -> dict[str, Any]:
        """The row of object ``oid`` before a task writes it: prefetched with the batch's
        targets where it was (no query), else read now."""
        known = None if cache is None else cache.row(target_key(ot, values, site_id))
        if known is not None and known.get(ot.id_column) == oid:
            return known
        table = self.registry.table(ot.name)
        row = conn.execute(sa.select(table).where(table.c[ot.id_column] == oid)).mappings().first()
        return dict(row) if row is not None else {}

    def delete(
        self,
        conn: sa.Connection,
        ot: ObjectType,
        row: Mapping[str, Any],
        site_id: int | None,
        cache: TargetCache | None = None,
        changes: dict[str, list[Any]] | None = None,
    ) -> int:
        """Delete the object with this identity; a missing object is not an error (it is gone).
        With ``changes``, fills it with ``{column: [old, None]}`` of the row that went.

        The caller drops what ``cache`` knows of the types the delete cascades to."""
        table = self.registry.table(ot.name)
        values = coerce_row(ot, row)
        existing = self._existing(conn, ot, values, site_id, cache)
        if existing is None:
            return 0
        if changes is not None:
            old = self._old_row(conn, ot, values, site_id, existing, cache)
            changes.update({c: [v, None] for c, v in old.items() if v is not None})
        conn.execute(self._delete_stmt(ot, table), {_ID_PARAM: existing})
        if cache is not None:
            cache.put(target_key(ot, values, site_id), None)
        return 1

    def _binding(self, ot: ObjectType) -> tuple[ObjectType, str, str]:
        if not ot.site_binding:
            raise ContentError(
                f"object type {ot.name!r} has no site binding; AddToSite/RemoveFromSite "
                "apply only to types declared with site_binding (e.g. cms.user)"
            )
        bt = self.registry.object_type(ot.site_binding)
        own = next((c for c, t in bt.foreign_keys.items() if t == ot.name), None)
        site = next((c for c, t in bt.foreign_keys.items() if t == "cms.site"), None)
        if own is None or site is None:
            raise ContentError(
                f"binding type {bt.name!r} must reference both {ot.name!r} and 'cms.site'"
            )
        return bt, own, site

    def bind_site(
        self,
        conn: sa.Connection,
        ot: ObjectType,
        object_id: int,
        site_id: int,
        cache: TargetCache | None = None,
    ) -> None:
        """Bind the object to the site. Through the batch's ``cache``: a later task of the
        batch that writes the same binding as an object must find the row made here, not the
        absence prefetched before the batch."""
        bt, own, site = self._binding(ot)
        self.upsert(conn, bt, {own: object_id, site: site_id}, None, cache)

    def unbind_site(
        self,
        conn: sa.Connection,
        ot: ObjectType,
        object_id: int,
        site_id: int,
        cache: TargetCache | None = None,
    ) -> None:
        bt, own, site = self._binding(ot)
        self.delete(conn, bt, {own: object_id, site: site_id}, None, cache)

    # -- reads ----------------------------------------------------------------------------
    def get(
        self, conn: sa.Connection, object_type: str, key: str, site_id: int | None
    ) -> dict[str, Any] | None:
        ot = self.registry.object_type(object_type)
        table = self.registry.table(ot.name)
        if ot.key_column is None:
            raise ContentError(
                f"{ot.name} objects have no code name or GUID; use find_objects() instead"
            )
        stmt = sa.select(table).where(table.c[ot.key_column] == str(key))
        if ot.site_column and site_id is not None:
            stmt = stmt.where(table.c[ot.site_column] == site_id)
        row = conn.execute(stmt.order_by(table.c[ot.id_column]).limit(1)).mappings().first()
        return dict(row) if row else None

    def find(
        self, conn: sa.Connection, object_type: str, equals: Mapping[str, Any]
    ) -> list[dict[str, Any]]:
        ot = self.registry.object_type(object_type)
        check_columns(ot, equals)
        table = self.registry.table(ot.name)
        stmt = sa.select(table).order_by(table.c[ot.id_column])
        for col, value in coerce_row(ot, equals).items():
            stmt = stmt.where(table.c[col].is_(None) if value is None else table.c[col] == value)
        return [dict(r) for r in conn.execute(stmt).mappings()]
