"""The registry of object types and page types known to one bus, with their tables."""

from __future__ import annotations

import threading

import sqlalchemy as sa

from syncbus.content.types import (
    BUILTIN_OBJECT_TYPES,
    BUILTIN_PAGE_TYPES,
    ObjectType,
    PageType,
)
from syncbus.errors import ConfigurationError, InvalidObjectError, StoreError
from syncbus.store import schema


class TypeRegistry:
    """Object types and page types by name, and the SQLAlchemy table of each."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._metadata = sa.MetaData()
        self.object_types: dict[str, ObjectType] = {t.name: t for t in BUILTIN_OBJECT_TYPES}
        self.page_types: dict[str, PageType] = {t.class_name: t for t in BUILTIN_PAGE_TYPES}
        self._tables: dict[str, sa.Table] = dict(schema.BUILTIN_TABLES)
        self._page_tables: dict[str, sa.Table] = dict(schema.BUILTIN_PAGE_TABLES)
        self._user_tables: list[sa.Table] = []

    # -- registration ------------------------------------------------------------------
    def register_object_type(self, ot: ObjectType) -> None:
        with self._lock:
            existing = self.object_types.get(ot.name)
            if existing is not None:
                if existing == ot:
                    return
                raise ConfigurationError(f"object type {ot.name!r} is already registered")
            for col, target in ot.references().items():
                if target not in self.object_types and target != ot.name:
                    raise ConfigurationError(
                        f"object type {ot.name!r}: column {col!r} references unknown object "
                        f"type {target!r}; register {target!r} first"
                    )
            if ot.site_binding and ot.site_binding not in self.object_types:
                raise ConfigurationError(
                    f"object type {ot.name!r}: site binding type {ot.site_binding!r} is unknown"
                )
            types = {**self.object_types, ot.name: ot}
            for t in self._tables.values():
                if t.name not in self._metadata.tables:
                    t.to_metadata(self._metadata)
            table = schema.object_table(ot, self._metadata, types)
            self.object_types[ot.name] = ot
            self._tables[ot.name] = table
            self._user_tables.append(table)

    def register_page_type(self, pt: PageType) -> None:
        with self._lock:
            existing = self.page_types.get(pt.class_name)
            if existing is not None:
                if existing == pt:
                    return
                raise ConfigurationError(f"page type {pt.class_name!r} is already registered")
            if "cms_document" not in self._metadata.tables:
                schema.document_table.to_metadata(self._metadata)
            table = schema.page_table(pt, self._metadata)
            self.page_types[pt.class_name] = pt
            if table is not None:
                self._page_tables[pt.class_name] = table
                self._user_tables.append(table)

    # -- lookups ------------------------------------------------------------------------
    def object_type(self, name: str) -> ObjectType:
        try:
            return self.object_types[name.lower()]
        except KeyError:
            raise InvalidObjectError(
                f"unknown object type {name!r}; known types: {', '.join(sorted(self.object_types))}"
            ) from None

    def page_type(self, class_name: str) -> PageType:
        try:
            return self.page_types[class_name.lower()]
        except KeyError:
            known = ", ".join(sorted(self.page_types))
            raise InvalidObjectError(
                f"unknown page type {class_name!r}; known page types: {known}"
            ) from None

    def table(self, object_type: str) -> sa.Table:
        return self._tables[object_type.lower()]

    def page_table(self, class_name: str) -> sa.Table | None:
        return self._page_tables.get(class_name.lower())

    def dependents(self, object_type: str) -> set[str]:
        """Types whose rows go when a row of ``object_type`` is deleted (cascades), and itself."""
        out = {object_type}
        changed = True
        while changed:
            changed = False
            for ot in self.object_types.values():
                if ot.name in out:
                    continue
                cascades = {ot.parent_type} if ot.parent else set()
                if ot.is_binding:
                    cascades |= set(ot.foreign_keys.values())
                if ot.site_column:
                    cascades.add("cms.site")
                if cascades & out:
                    out.add(ot.name)
                    changed = True
        return out

    # -- schema -------------------------------------------------------------------------
    def create_user_tables(self, conn: sa.Connection) -> None:
        """Create the tables of user-defined types; check the columns of tables that exist."""
        inspector = sa.inspect(conn)
        for table in self._user_tables:
            if inspector.has_table(table.name):
                present = {c["name"] for c in inspector.get_columns(table.name)}
                missing = [c.name for c in table.columns if c.name not in present]
                if missing:
                    raise StoreError(
                        f"existing table {table.name!r} lacks column(s) {', '.join(missing)} "
                        "declared by its type; add them or fix the declaration"
                    )
            else:
                table.create(conn)
