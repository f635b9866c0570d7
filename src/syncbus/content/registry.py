"""The registry of object types and page types known to one bus, with their tables."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from syncbus.content import tables as schema
from syncbus.content.builtin import BUILTIN_OBJECT_TYPES, BUILTIN_PAGE_TYPES
from syncbus.content.types import (
    ObjectType,
    PageType,
    object_type_from_json,
    object_type_to_json,
    page_type_from_json,
    page_type_to_json,
)
from syncbus.content.writes import TableGraph
from syncbus.errors import ConfigurationError, InvalidObjectError, StoreError
from syncbus.store.db import metadata

# The page tree's own tables: no declared type may take them.
_OWN_TABLES = frozenset({schema.tree_table.name, schema.document_table.name})

# loader(kind, name) -> the stored declaration, or None
DeclarationLoader = Callable[[str, str], dict[str, Any] | None]
# lister(kind) -> the names of the stored declarations of that kind
DeclarationLister = Callable[[str], set[str]]


class TypeRegistry:
    """Object types and page types by name, and the SQLAlchemy table of each.

    User-defined types registered in code are stored by ``create_schema``; a type this process
    has not registered is loaded from its stored declaration on first use.
    """

    def __init__(
        self, loader: DeclarationLoader | None = None, lister: DeclarationLister | None = None
    ) -> None:
        self._lock = threading.RLock()
        self._loader = loader
        self._lister = lister
        self._from_db: set[tuple[str, str]] = set()
        self._user: dict[tuple[str, str], ObjectType | PageType] = {}
        self._metadata = sa.MetaData()
        self.object_types: dict[str, ObjectType] = {t.name: t for t in BUILTIN_OBJECT_TYPES}
        self.page_types: dict[str, PageType] = {t.class_name: t for t in BUILTIN_PAGE_TYPES}
        self._tables: dict[str, sa.Table] = dict(schema.BUILTIN_TABLES)
        self._page_tables: dict[str, sa.Table] = dict(schema.BUILTIN_PAGE_TABLES)
        self._user_tables: list[sa.Table] = []
        self._dependents: dict[str, frozenset[str]] = {}  # cleared on registration
        self._graph: TableGraph | None = None  # cleared on registration

    # -- registration ------------------------------------------------------------------
    def register_object_type(self, ot: ObjectType) -> None:
        with self._lock:
            existing = self.object_types.get(ot.name)
            if existing is not None and ("object", ot.name) not in self._from_db:
                if existing == ot:
                    return
                raise ConfigurationError(f"object type {ot.name!r} is already registered")
            for col, target in ot.references().items():
                if target != ot.name and not self._known_object_type(target):
                    raise ConfigurationError(
                        f"object type {ot.name!r}: column {col!r} references unknown object "
                        f"type {target!r}; register {target!r} first"
                    )
            if ot.site_binding and not self._known_object_type(ot.site_binding):
                raise ConfigurationError(
                    f"object type {ot.name!r}: site binding type {ot.site_binding!r} is unknown"
                )
            self._check_table(ot.table, f"object type {ot.name!r}", ("object", ot.name))
            types = {**self.object_types, ot.name: ot}
            for t in self._tables.values():
                if t.name not in self._metadata.tables:
                    t.to_metadata(self._metadata)
            if ot.table in self._metadata.tables:
                self._metadata.remove(self._metadata.tables[ot.table])
            table = schema.object_table(ot, self._metadata, types)
            self._from_db.discard(("object", ot.name))
            self._user[("object", ot.name)] = ot
            self._user_tables = [t for t in self._user_tables if t.name != ot.table]
            self.object_types[ot.name] = ot
            self._dependents.clear()
            self._graph = None
            self._tables[ot.name] = table
            self._user_tables.append(table)

    def register_page_type(self, pt: PageType) -> None:
        with self._lock:
            existing = self.page_types.get(pt.class_name)
            if existing is not None and ("page", pt.class_name) not in self._from_db:
                if existing == pt:
                    return
                raise ConfigurationError(f"page type {pt.class_name!r} is already registered")
            if pt.table:
                self._check_table(pt.table, f"page type {pt.class_name!r}", ("page", pt.class_name))
            if "cms_document" not in self._metadata.tables:
                schema.document_table.to_metadata(self._metadata)
            if pt.table and pt.table in self._metadata.tables:
                self._metadata.remove(self._metadata.tables[pt.table])
            table = schema.page_table(pt, self._metadata)
            self._from_db.discard(("page", pt.class_name))
            self._user[("page", pt.class_name)] = pt
            self._user_tables = [t for t in self._user_tables if t.name != pt.table]
            self.page_types[pt.class_name] = pt
            if table is not None:
                self._page_tables[pt.class_name] = table
                self._user_tables.append(table)
            self._graph = None

    def _check_table(self, table: str, what: str, me: tuple[str, str]) -> None:
        """Refuse a table that another type, the page tree or the bus itself owns: the
        declaration would replace that table's definition (and `create_schema` then asks to
        add this type's columns to it)."""
        owners: dict[str, tuple[str, str]] = {
            t.name: ("object", name) for name, t in self._tables.items()
        }
        owners.update({t.name: ("page", name) for name, t in self._page_tables.items()})
        owner = owners.get(table.lower())
        if owner is not None and owner != me:
            raise ConfigurationError(
                f"{what}: table {table!r} belongs to {owner[0]} type {owner[1]!r}; give the "
                "type a table of its own"
            )
        if table.lower() in _OWN_TABLES or table.lower().startswith("syncbus_"):
            raise ConfigurationError(
                f"{what}: table {table!r} is one of the bus's own; give the type a table of its own"
            )

    # -- stored declarations --------------------------------------------------------------
    def _known_object_type(self, name: str) -> bool:
        return name in self.object_types or self._load("object", name)

    def _known(self, kind: str, registered: dict[str, Any]) -> list[str]:
        """The types of a kind this process knows and those stored but not loaded yet (an
        error listing only the first would suggest a user's types were never stored)."""
        names = set(registered)
        if self._lister is not None:
            with contextlib.suppress(StoreError):
                names.update(self._lister(kind))
        return sorted(names)

    def _load(self, kind: str, name: str) -> bool:
        """Register a type from its stored declaration; False when none is stored."""
        if self._loader is None:
            return False
        raw = self._loader(kind, name)
        if raw is None:
            return False
        with self._lock:
            if kind == "object":
                self.register_object_type(object_type_from_json(raw))
            else:
                self.register_page_type(page_type_from_json(raw))
            self._from_db.add((kind, name))
        return True

    def declarations(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(kind, name, declaration) of each user-defined type registered in this process."""
        out: list[tuple[str, str, dict[str, Any]]] = []
        for (kind, name), t in self._user.items():
            if (kind, name) in self._from_db:
                continue
            if isinstance(t, ObjectType):
                out.append((kind, name, object_type_to_json(t)))
            else:
                out.append((kind, name, page_type_to_json(t)))
        return out

    # -- lookups ------------------------------------------------------------------------
    def object_type(self, name: str) -> ObjectType:
        key = name.lower()
        if key not in self.object_types:
            self._load("object", key)
        try:
            return self.object_types[key]
        except KeyError:
            known = ", ".join(self._known("object", self.object_types))
            raise InvalidObjectError(
                f"unknown object type {name!r}; known types: {known}"
            ) from None

    def page_type(self, class_name: str) -> PageType:
        key = class_name.lower()
        if key not in self.page_types:
            self._load("page", key)
        try:
            return self.page_types[key]
        except KeyError:
            known = ", ".join(self._known("page", self.page_types))
            raise InvalidObjectError(
                f"unknown page type {class_name!r}; known page types: {known}"
            ) from None

    def table(self, object_type: str) -> sa.Table:
        return self._tables[self.object_type(object_type).name]

    def page_table(self, class_name: str) -> sa.Table | None:
        return self._page_tables.get(self.page_type(class_name).class_name)

    def table_graph(self) -> TableGraph:
        """The foreign keys among every content table, the built-in ones and those of the
        types registered here (held in a MetaData of their own): what a DELETE can reach
        (``syncbus.content.writes``)."""
        with self._lock:
            if self._graph is None:
                self._graph = TableGraph(
                    [*metadata.tables.values(), *self._metadata.tables.values()]
                )
            return self._graph

    def dependents(self, object_type: str) -> frozenset[str]:
        """Types whose rows go when a row of ``object_type`` is deleted (cascades), and itself.

        Computed once per type while the set of registered types stays the same."""
        found = self._dependents.get(object_type)
        if found is None:
            found = self._dependents[object_type] = frozenset(self._cascade(object_type))
        return found

    def cascades_to_itself(self, object_type: str) -> bool:
        """Whether deleting a row of this type can delete other rows of the same type (a
        parent column pointing at its own type)."""
        return self.object_type(object_type).parent_type == object_type

    def _cascade(self, object_type: str) -> set[str]:
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
    def has_user_tables(self) -> bool:
        """Whether user-defined types registered in this process have tables to create."""
        return bool(self._user_tables)

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
