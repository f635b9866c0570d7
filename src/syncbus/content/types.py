"""Object types and page types: their declarations, their column types, and their JSON form.

A declaration names its columns (SQLAlchemy types), keys and references; a column's type
gives the check that a connector's value must pass (``content.validation``). The tables are
built from these declarations in ``content.tables``; the built-in types are declared in
``content.builtin``.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.types import TypeEngine

from syncbus.errors import ConfigurationError

ColumnSpec = type | str | TypeEngine[Any] | type[TypeEngine[Any]]

_NAMED_TYPES: dict[str, TypeEngine[Any]] = {
    "str": sa.String(450),
    "string": sa.String(450),
    "text": sa.Text(),
    "int": sa.Integer(),
    "integer": sa.Integer(),
    "bigint": sa.BigInteger(),
    "float": sa.Float(),
    "bool": sa.Boolean(),
    "boolean": sa.Boolean(),
    "datetime": sa.DateTime(timezone=True),
    "date": sa.Date(),
    "guid": sa.String(36),
    "uuid": sa.String(36),
    "json": sa.JSON(),
}
_PY_TYPES: dict[type, str] = {
    str: "str",
    int: "int",
    float: "float",
    bool: "bool",
    dt.datetime: "datetime",
    dt.date: "date",
    uuid.UUID: "guid",
    dict: "json",
    list: "json",
}


def sql_type(spec: ColumnSpec) -> TypeEngine[Any]:
    """Turn a column declaration (a Python type, a name or a SQLAlchemy type) into a SQL type."""
    if isinstance(spec, TypeEngine):
        return spec
    if isinstance(spec, type) and issubclass(spec, TypeEngine):
        return spec()
    if isinstance(spec, type) and spec in _PY_TYPES:
        return _NAMED_TYPES[_PY_TYPES[spec]]
    if isinstance(spec, str) and spec.lower() in _NAMED_TYPES:
        return _NAMED_TYPES[spec.lower()]
    raise ConfigurationError(
        f"unknown column type {spec!r}; use a Python type (str, int, float, bool, datetime, "
        f"UUID, dict), one of {sorted(_NAMED_TYPES)} or a SQLAlchemy type"
    )


def _derived(declaration: Any, name: str, build: Callable[[], Any]) -> Any:
    try:
        return declaration.__dict__["_derived_cache"][name]
    except KeyError:
        cache: dict[str, Any] = declaration.__dict__.setdefault("_derived_cache", {})
        value = cache[name] = build()
        return value


def _ref(value: Any, what: str, type_name: str) -> tuple[str, str] | None:
    """Accept ``("column", "object.type")`` or ``{"column": "object.type"}``."""
    if value is None:
        return None
    if isinstance(value, Mapping) and len(value) == 1:
        ((col, target),) = value.items()
        return str(col), str(target)
    if isinstance(value, tuple | list) and len(value) == 2:
        return str(value[0]), str(value[1])
    raise ConfigurationError(
        f"object type {type_name!r}: {what} must be a (column, object_type) pair, got {value!r}"
    )


@dataclass(frozen=True)
class ObjectType:
    """The declaration of an object type.

    ``parent`` and ``group`` are ``(column, object_type)`` pairs; ``foreign_keys`` maps further
    columns to the object type they reference. ``columns`` maps every data column to its type
    (key columns left out get a sensible default type). An object is identified by its code name,
    else its GUID, else (binding types) the pair of its foreign keys, always within its
    site/parent/group. ``site_binding`` names the binding type that ties it to sites
    (``cms.usersite`` for users), used by AddToSite / RemoveFromSite.
    """

    name: str
    table: str
    id_column: str
    code_name_column: str | None = None
    guid_column: str | None = None
    site_column: str | None = None
    parent: Any = None
    group: Any = None
    foreign_keys: Mapping[str, str] = field(default_factory=dict)
    columns: Mapping[str, ColumnSpec] = field(default_factory=dict)
    site_binding: str | None = None
    display_name: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", self.name.lower())
        object.__setattr__(self, "parent", _ref(self.parent, "parent", self.name))
        object.__setattr__(self, "group", _ref(self.group, "group", self.name))
        object.__setattr__(self, "foreign_keys", dict(self.foreign_keys))
        object.__setattr__(self, "columns", dict(self.columns))
        if not (self.code_name_column or self.guid_column or self.foreign_keys):
            raise ConfigurationError(
                f"object type {self.name!r} needs a code_name_column, a guid_column or "
                "foreign_keys (binding types) to identify its objects"
            )

    # -- derived -------------------------------------------------------------------------
    @property
    def parent_column(self) -> str | None:
        return self.parent[0] if self.parent else None

    @property
    def parent_type(self) -> str | None:
        return self.parent[1] if self.parent else None

    @property
    def group_column(self) -> str | None:
        return self.group[0] if self.group else None

    @property
    def group_type(self) -> str | None:
        return self.group[1] if self.group else None

    @property
    def is_binding(self) -> bool:
        return not (self.code_name_column or self.guid_column)

    @property
    def key_column(self) -> str | None:
        """The column that names an object: its code name, else its GUID."""
        return self.code_name_column or self.guid_column

    def derived(self, name: str, build: Callable[[], Any]) -> Any:
        """A value derived from the (frozen) declaration, computed once: the hot path asks
        for these per task. Callers must not mutate what they get."""
        return _derived(self, name, build)

    def references(self) -> dict[str, str]:
        """Every column that holds the id of another object: column -> object type."""
        refs: dict[str, str] = self.derived("references", self._references)
        return refs

    def _references(self) -> dict[str, str]:
        refs = dict(self.foreign_keys)
        if self.parent:
            refs[self.parent[0]] = self.parent[1]
        if self.group:
            refs[self.group[0]] = self.group[1]
        return refs

    def identity_columns(self) -> list[str]:
        """The columns whose values identify one object (site column excluded)."""
        cols: list[str] = self.derived("identity_columns", self._identity_columns)
        return cols

    def _identity_columns(self) -> list[str]:
        if self.is_binding:
            return sorted(self.foreign_keys)
        cols = [str(self.key_column)]
        if self.code_name_column:
            cols += [c for c in (self.parent_column, self.group_column) if c]
        return cols

    def all_columns(self) -> dict[str, TypeEngine[Any]]:
        """Every column with its SQL type (declared, else the default for its role)."""
        cols: dict[str, TypeEngine[Any]] = self.derived("all_columns", self._all_columns)
        return cols

    def _all_columns(self) -> dict[str, TypeEngine[Any]]:
        out: dict[str, TypeEngine[Any]] = {self.id_column: sa.Integer()}
        defaults: dict[str, TypeEngine[Any]] = {}
        if self.code_name_column:
            defaults[self.code_name_column] = sa.String(200)
        if self.guid_column:
            defaults[self.guid_column] = sa.String(36)
        if self.site_column:
            defaults[self.site_column] = sa.Integer()
        for col in self.references():
            defaults[col] = sa.Integer()
        for col, spec in self.columns.items():
            out[col] = sql_type(spec)
        for col, typ in defaults.items():
            out.setdefault(col, typ)
        return out


@dataclass(frozen=True)
class PageType:
    """A page type: its class name and the fields its documents carry (in their own table)."""

    class_name: str
    table: str | None = None
    fields: Mapping[str, ColumnSpec] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "class_name", self.class_name.lower())
        object.__setattr__(self, "fields", dict(self.fields))
        if self.fields and not self.table:
            raise ConfigurationError(f"page type {self.class_name!r} has fields but no table")

    def derived(self, name: str, build: Callable[[], Any]) -> Any:
        """A value derived from the (frozen) declaration, computed once (see ObjectType)."""
        return _derived(self, name, build)

    def field_types(self) -> dict[str, TypeEngine[Any]]:
        """The SQL type of each field (built once; callers must not mutate it)."""
        types: dict[str, TypeEngine[Any]] = self.derived(
            "field_types", lambda: {name: sql_type(spec) for name, spec in self.fields.items()}
        )
        return types


# -- declarations stored in the database, so that every process knows every type ----------------
def type_name(typ: TypeEngine[Any]) -> str:
    """A portable name for a column type (what another process needs to coerce values)."""
    for cls, name in (
        (sa.Boolean, "bool"),
        (sa.DateTime, "datetime"),
        (sa.Date, "date"),
        (sa.BigInteger, "bigint"),
        (sa.Integer, "int"),
        (sa.Float, "float"),
        (sa.Numeric, "float"),
        (sa.JSON, "json"),
        (sa.Text, "text"),
        (sa.String, "str"),
    ):
        if isinstance(typ, cls):
            return name
    return "text"


def object_type_to_json(ot: ObjectType) -> dict[str, Any]:
    return {
        "name": ot.name,
        "table": ot.table,
        "id_column": ot.id_column,
        "code_name_column": ot.code_name_column,
        "guid_column": ot.guid_column,
        "site_column": ot.site_column,
        "parent": list(ot.parent) if ot.parent else None,
        "group": list(ot.group) if ot.group else None,
        "foreign_keys": dict(ot.foreign_keys),
        "columns": {c: type_name(sql_type(spec)) for c, spec in ot.columns.items()},
        "site_binding": ot.site_binding,
        "display_name": ot.display_name,
    }


def object_type_from_json(raw: dict[str, Any]) -> ObjectType:
    return ObjectType(
        raw["name"],
        raw["table"],
        raw["id_column"],
        code_name_column=raw.get("code_name_column"),
        guid_column=raw.get("guid_column"),
        site_column=raw.get("site_column"),
        parent=tuple(raw["parent"]) if raw.get("parent") else None,
        group=tuple(raw["group"]) if raw.get("group") else None,
        foreign_keys=raw.get("foreign_keys") or {},
        columns=raw.get("columns") or {},
        site_binding=raw.get("site_binding"),
        display_name=raw.get("display_name"),
    )


def page_type_to_json(pt: PageType) -> dict[str, Any]:
    return {
        "class_name": pt.class_name,
        "table": pt.table,
        "fields": {c: type_name(sql_type(spec)) for c, spec in pt.fields.items()},
    }


def page_type_from_json(raw: dict[str, Any]) -> PageType:
    return PageType(raw["class_name"], raw.get("table"), raw.get("fields") or {})
