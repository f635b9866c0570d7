"""Object types and page types: their declarations, the built-in ones, and their JSON form.

A declaration names its columns (SQLAlchemy types), keys and references; a column's type
gives the check that a connector's value must pass (``check_value``). The tables themselves
are built from these declarations in ``store/schema.py``.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.types import TypeEngine

from syncbus.errors import ConfigurationError, InvalidObjectError
from syncbus.store.db import MAX_ID as INT64_MAX

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
        cache: dict[str, Any] = self.__dict__.setdefault("_derived_cache", {})
        if name not in cache:
            cache[name] = build()
        return cache[name]

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

    def check_columns(self, data: Mapping[str, Any]) -> None:
        known = self.all_columns()
        unknown = [k for k in data if k not in known]
        if unknown:
            raise InvalidObjectError(
                f"object type {self.name!r} has no column(s) {', '.join(map(repr, unknown))}; "
                f"its columns are: {', '.join(known)}"
            )

    def check_values(self, data: Mapping[str, Any], *, external_refs: bool) -> None:
        """Refuse values that do not fit their column, at log time: what the database would
        refuse (or SQLite would silently mangle) when the task is applied.

        Reference columns hold external ids (any scalar) when ``external_refs``, else
        internal ids (positive integers). The checks are built once per type."""
        checks: dict[str, Checker] = self.derived(
            "checks_external" if external_refs else "checks_simple",
            lambda: self._checks(external_refs),
        )
        for col, value in data.items():
            if value is not None:
                problem = checks[col](value)
                if problem is not None:
                    raise InvalidObjectError(f"column {col!r} of {self.name}: {problem}")

    def _checks(self, external_refs: bool) -> dict[str, Checker]:
        types = self.all_columns()
        checks = {col: checker(typ) for col, typ in types.items()}
        for col, target in self.references().items():
            checks[col] = external_id_problem if external_refs else _internal_id_checker(target)
        return checks

    def check_identity(self, data: Mapping[str, Any], *, child: bool = False) -> None:
        """Refuse an object that no task could find or store: a missing or empty code name;
        for a binding type (except as a child, whose reference to its parent may be left out),
        a missing end."""
        col = self.code_name_column
        if col is not None:
            name = data.get(col)
            if name is None or (isinstance(name, str) and not name.strip()):
                raise InvalidObjectError(
                    f"column {col!r} of {self.name}: the code name is required (it identifies "
                    f"the object) and must not be empty, got {name!r}"
                )
        if self.is_binding and not child:
            missing = [c for c in sorted(self.foreign_keys) if data.get(c) is None]
            if missing:
                raise InvalidObjectError(
                    f"{self.name} binds two objects: column(s) {', '.join(map(repr, missing))} "
                    "must be given"
                )


# -- value checks (log time) -------------------------------------------------------------------
# A checker returns what is wrong with a (non-null) value for its column, or None when it fits.
Checker = Callable[[Any], str | None]

_INT_BITS: tuple[tuple[type[TypeEngine[Any]], int], ...] = (
    (sa.BigInteger, 64),
    (sa.SmallInteger, 16),
    (sa.Integer, 32),  # PostgreSQL's integer; SQLite holds more, but a task must fit both
)
_ID_MAX = 2**31 - 1  # id columns are integer (PostgreSQL's int4)


def show(value: Any) -> str:
    """A short, safe rendering of a value for an error message (repr refuses huge ints)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return f"an integer of {value.bit_length()} bits"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def text_problem(value: str, max_length: int | None = None) -> str | None:
    """What keeps the database from storing this text, or None."""
    if "\x00" in value:
        return f"{show(value)} contains a NUL character (\\x00), which a database cannot store"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"{show(value)} is not valid Unicode (a lone surrogate)"
    if max_length is not None and len(value) > max_length:
        return f"the value is {len(value)} characters long; the column holds at most {max_length}"
    return None


def _wrong(kind: str, value: Any) -> str:
    return f"the column holds {kind} values, not {type(value).__name__} {show(value)}"


def _int_checker(lo: int, hi: int) -> Checker:
    def check(value: Any) -> str | None:
        if not isinstance(value, int) or isinstance(value, bool):
            return _wrong("int", value)
        if lo <= value <= hi:
            return None
        return f"{show(value)} is out of range: the column holds integers from {lo} to {hi}"

    return check


def _internal_id_checker(target: str) -> Checker:
    def check(value: Any) -> str | None:
        if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= _ID_MAX:
            return None
        return (
            f"under Simple, this column holds the internal id of a {target} (a positive "
            f"integer up to {_ID_MAX}), not {show(value)}; log with SimpleSnapshot to pass "
            "the external system's id"
        )

    return check


def external_id_problem(value: Any) -> str | None:
    """An external id must be a scalar the task's JSON and the translation can carry."""
    if isinstance(value, str):
        return text_problem(value)
    if isinstance(value, float) and not math.isfinite(value):
        return f"an external id must be a finite number, not {show(value)}"
    if isinstance(value, int) and not -INT64_MAX <= value <= INT64_MAX:
        return f"an external id must be a string or a number within 64 bits, not {show(value)}"
    if isinstance(value, int | float | uuid.UUID):
        return None
    return f"an external id must be a string or a number, not {type(value).__name__}"


def _bool_problem(value: Any) -> str | None:
    if isinstance(value, bool) or (type(value) is int and value in (0, 1)):
        return None
    return _wrong("bool (true/false, or 0/1)", value)


def _float_problem(value: Any) -> str | None:
    if isinstance(value, float):
        if math.isfinite(value):
            return None
        return f"{show(value)} is not a finite number (NaN and infinities are refused)"
    if isinstance(value, int) and not isinstance(value, bool):
        if -INT64_MAX <= value <= INT64_MAX:
            return None  # bound as a 64-bit integer; larger ones: write them as floats
        return f"{show(value)} is out of range for a 64-bit integer; write it as a float"
    return _wrong("float", value)


def _date_problem(value: Any) -> str | None:
    if isinstance(value, dt.datetime):
        return f"{show(value)} is a date and time; the column holds dates: give only the date"
    if isinstance(value, dt.date):
        return None
    if not isinstance(value, str):
        return _wrong("date", value)
    try:
        dt.date.fromisoformat(value)  # what the bus parses it with when the task is applied
        return None
    except ValueError:
        pass
    try:
        dt.datetime.fromisoformat(value)
    except ValueError:
        return f"{show(value)} is not an ISO date (YYYY-MM-DD)"
    return f"{show(value)} is a date and time; the column holds dates: give only YYYY-MM-DD"


def _datetime_problem(value: Any) -> str | None:
    if isinstance(value, dt.datetime):
        parsed = value
    elif isinstance(value, dt.date):
        return None
    elif not isinstance(value, str):
        return _wrong("datetime", value)
    else:
        try:  # what the bus parses it with when the task is applied
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            return f"{show(value)} is not an ISO date and time (YYYY-MM-DDTHH:MM:SS[+HH:MM])"
    if parsed.tzinfo is not None and parsed.year in (1, 9999):
        try:  # stored in UTC: its year must stay within 1..9999 to be read back
            parsed.astimezone(dt.UTC)
        except OverflowError:
            return f"{show(value)} is out of range once converted to UTC"
    return None


def _string_checker(max_length: int | None) -> Checker:
    def check(value: Any) -> str | None:
        if isinstance(value, str):
            return text_problem(value, max_length)
        if isinstance(value, uuid.UUID):
            return None if max_length is None or max_length >= 36 else _wrong("str", value)
        return _wrong("str", value)

    return check


def _json_problem(value: Any) -> str | None:
    try:
        json.dumps(value, allow_nan=False, default=_json_scalar)
    except (TypeError, ValueError, RecursionError) as exc:
        return f"the value cannot be stored as JSON: {exc}"
    return None


def _json_scalar(value: Any) -> Any:
    if isinstance(value, dt.date | uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def _any_problem(value: Any) -> str | None:
    """Columns of other SQLAlchemy types: only what no database stores."""
    return text_problem(value) if isinstance(value, str) else None


def checker(typ: TypeEngine[Any]) -> Checker:
    """The check of a column of type ``typ`` (build once per column, call per value)."""
    if isinstance(typ, sa.Boolean):
        return _bool_problem
    if isinstance(typ, sa.Integer):
        bits = next(b for cls, b in _INT_BITS if isinstance(typ, cls))
        return _int_checker(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    if isinstance(typ, sa.Float | sa.Numeric):
        return _float_problem
    if isinstance(typ, sa.DateTime):
        return _datetime_problem
    if isinstance(typ, sa.Date):
        return _date_problem
    if isinstance(typ, sa.JSON):
        return _json_problem
    if isinstance(typ, sa.String):
        return _string_checker(typ.length)
    return _any_problem


def check_value(owner: str, col: str, typ: TypeEngine[Any], value: Any) -> None:
    """Raise InvalidObjectError when ``value`` cannot be stored in a column of type ``typ``."""
    problem = checker(typ)(value)
    if problem is not None:
        raise InvalidObjectError(f"column {col!r} of {owner}: {problem}")


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

    def check_fields(self, fields: Mapping[str, Any]) -> None:
        unknown = [k for k in fields if k not in self.fields]
        if unknown:
            raise InvalidObjectError(
                f"page type {self.class_name!r} has no field(s) {', '.join(map(repr, unknown))}; "
                f"its fields are: {', '.join(self.fields) or '(none)'}"
            )
        checks: dict[str, Checker] | None = self.__dict__.get("_checks")
        if checks is None:
            checks = {name: checker(typ) for name, typ in self.field_types().items()}
            self.__dict__["_checks"] = checks
        for name, value in fields.items():
            if value is not None:
                problem = checks[name](value)
                if problem is not None:
                    raise InvalidObjectError(
                        f"field {name!r} of page type {self.class_name}: {problem}"
                    )

    def field_types(self) -> dict[str, TypeEngine[Any]]:
        """The SQL type of each field (built once; callers must not mutate it)."""
        types: dict[str, TypeEngine[Any]] | None = self.__dict__.get("_field_types")
        if types is None:
            types = {name: sql_type(spec) for name, spec in self.fields.items()}
            self.__dict__["_field_types"] = types
        return types


SITE = ObjectType(
    "cms.site",
    "cms_site",
    "site_id",
    code_name_column="site_name",
    guid_column="site_guid",
    columns={
        "site_guid": "guid",
        "site_name": sa.String(100),
        "site_display_name": sa.String(200),
        "site_domain": sa.String(400),
    },
)
USER = ObjectType(
    "cms.user",
    "cms_user",
    "user_id",
    code_name_column="user_name",
    guid_column="user_guid",
    site_binding="cms.usersite",
    columns={
        "user_guid": "guid",
        "user_name": sa.String(200),
        "email": sa.String(254),
        "first_name": sa.String(100),
        "last_name": sa.String(100),
        "enabled": bool,
    },
)
USER_SITE = ObjectType(
    "cms.usersite",
    "cms_usersite",
    "user_site_id",
    foreign_keys={"user_id": "cms.user", "site_id": "cms.site"},
)
ROLE = ObjectType(
    "cms.role",
    "cms_role",
    "role_id",
    code_name_column="role_name",
    guid_column="role_guid",
    site_column="site_id",
    columns={"role_guid": "guid", "role_name": sa.String(100), "role_display_name": sa.String(200)},
)
USER_ROLE = ObjectType(
    "cms.userrole",
    "cms_userrole",
    "user_role_id",
    foreign_keys={"user_id": "cms.user", "role_id": "cms.role"},
)
GROUP = ObjectType(
    "community.group",
    "community_group",
    "group_id",
    code_name_column="group_name",
    guid_column="group_guid",
    site_column="site_id",
    columns={
        "group_guid": "guid",
        "group_name": sa.String(100),
        "group_display_name": sa.String(200),
    },
)
FORUM = ObjectType(
    "forums.forum",
    "forums_forum",
    "forum_id",
    code_name_column="forum_name",
    guid_column="forum_guid",
    site_column="site_id",
    group=("forum_group_id", "community.group"),
    columns={
        "forum_guid": "guid",
        "forum_name": sa.String(100),
        "forum_display_name": sa.String(200),
    },
)
FORUM_POST = ObjectType(
    "forums.forumpost",
    "forums_forumpost",
    "post_id",
    guid_column="post_guid",
    parent=("forum_id", "forums.forum"),
    foreign_keys={"post_parent_id": "forums.forumpost", "post_user_id": "cms.user"},
    columns={"post_guid": "guid", "post_subject": sa.String(450), "post_text": "text"},
)

BUILTIN_OBJECT_TYPES: tuple[ObjectType, ...] = (
    SITE,
    USER,
    USER_SITE,
    ROLE,
    USER_ROLE,
    GROUP,
    FORUM,
    FORUM_POST,
)

ROOT_CLASS = "cms.root"
FOLDER = PageType("cms.folder")
ARTICLE = PageType(
    "cms.article",
    "content_article",
    {"article_title": sa.String(450), "article_summary": "text", "article_text": "text"},
)
BUILTIN_PAGE_TYPES: tuple[PageType, ...] = (PageType(ROOT_CLASS), FOLDER, ARTICLE)


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
