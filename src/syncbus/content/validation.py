"""Every log-time check of what a connector prepared: is this value acceptable for this
column, this object for its type, this page for the tree, this prepared result for this task
type. The database would refuse (or SQLite would silently mangle) what these refuse, when the
task is applied; refusing it at log time names the column and logs nothing.

A checker (``checker(column type)``) returns what is wrong with a non-null value, or None;
checks are built once per column and called per value.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

import sqlalchemy as sa
from sqlalchemy.types import TypeEngine

from syncbus.content.builtin import ROOT_CLASS
from syncbus.content.paths import culture_problem, join_path, make_alias, normalize_path
from syncbus.content.registry import TypeRegistry
from syncbus.content.tables import document_table, tree_table
from syncbus.content.types import ObjectType, PageType
from syncbus.enums import TaskDataType, TaskType
from syncbus.errors import InvalidObjectError, SiteNotFoundError
from syncbus.model import InternalObject, Page
from syncbus.store.db import MAX_ID as INT64_MAX
from syncbus.store.db import column_length

# -- column values -----------------------------------------------------------------------------
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
    if isinstance(value, bool):  # an int to Python: a connector's dict lookup maps True to 1
        return f"an external id must be a string or a number, not {show(value)}"
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
        text = json.dumps(value, allow_nan=False, default=_json_scalar, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError) as exc:
        return f"the value cannot be stored as JSON: {exc}"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # PostgreSQL's JSON parser refuses it (a task's record too)
            return (
                "the value holds text that is not valid Unicode (a lone surrogate), which "
                "cannot be stored as JSON"
            )
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


def check_text(what: str, value: Any, max_length: int) -> None:
    """Refuse, before any SQL runs, a name the database cannot take (a NUL makes PostgreSQL
    fail the statement; that is bad input, not an unavailable database)."""
    if not isinstance(value, str):
        raise InvalidObjectError(f"{what} must be a string, not {type(value).__name__}")
    problem = text_problem(value, max_length)
    if problem is not None:
        raise InvalidObjectError(f"{what}: {problem}")


# -- translation identities -----------------------------------------------------------------------
def check_external_id(external_id: Any, where: str) -> None:
    problem = external_id_problem(external_id)
    if problem is not None:
        raise InvalidObjectError(f"the external id in {where}: {problem}")


def check_identity_text(connector: str | None, what: str, value: Any, max_length: int) -> None:
    """Text a connector gave as an identity is stored in the task and queried at process
    time: refuse what the database cannot hold."""
    problem = text_problem(value, max_length) if isinstance(value, str) else None
    if problem is not None:
        raise InvalidObjectError(f"connector {connector!r} gave {what}: {problem}")


# -- objects --------------------------------------------------------------------------------------
def check_columns(ot: ObjectType, data: Mapping[str, Any]) -> None:
    """Refuse a column the type does not have."""
    known = ot.all_columns()
    unknown = [k for k in data if k not in known]
    if unknown:
        raise InvalidObjectError(
            f"object type {ot.name!r} has no column(s) {', '.join(map(repr, unknown))}; "
            f"its columns are: {', '.join(known)}"
        )


def check_values(ot: ObjectType, data: Mapping[str, Any], *, external_refs: bool) -> None:
    """Refuse values that do not fit their column.

    Reference columns hold external ids (any scalar) when ``external_refs``, else
    internal ids (positive integers). The checks are built once per type."""
    checks: dict[str, Checker] = ot.derived(
        "checks_external" if external_refs else "checks_simple",
        lambda: _object_checks(ot, external_refs),
    )
    for col, value in data.items():
        if value is not None:
            problem = checks[col](value)
            if problem is not None:
                raise InvalidObjectError(f"column {col!r} of {ot.name}: {problem}")


def _object_checks(ot: ObjectType, external_refs: bool) -> dict[str, Checker]:
    checks = {col: checker(typ) for col, typ in ot.all_columns().items()}
    for col, target in ot.references().items():
        checks[col] = external_id_problem if external_refs else _internal_id_checker(target)
    return checks


def check_identity(ot: ObjectType, data: Mapping[str, Any], *, child: bool = False) -> None:
    """Refuse an object that no task could find or store: a missing or empty code name;
    for a binding type (except as a child, whose reference to its parent may be left out),
    a missing end."""
    col = ot.code_name_column
    if col is not None:
        name = data.get(col)
        if name is None or (isinstance(name, str) and not name.strip()):
            raise InvalidObjectError(
                f"column {col!r} of {ot.name}: the code name is required (it identifies "
                f"the object) and must not be empty, got {name!r}"
            )
    if ot.is_binding and not child:
        missing = [c for c in sorted(ot.foreign_keys) if data.get(c) is None]
        if missing:
            raise InvalidObjectError(
                f"{ot.name} binds two objects: column(s) {', '.join(map(repr, missing))} "
                "must be given"
            )


def check_object(
    registry: TypeRegistry, obj: InternalObject, *, external_refs: bool, child: bool = False
) -> ObjectType:
    """Validate an object tree's type, columns and values."""
    if not isinstance(obj.object_type, str) or text_problem(obj.object_type, 200):
        raise InvalidObjectError(f"object type {show(obj.object_type)} is not a valid type name")
    if not isinstance(obj.data, dict):
        raise InvalidObjectError(f"the data of a {obj.object_type} object must be a dict")
    ot = registry.object_type(obj.object_type)
    check_columns(ot, obj.data)
    check_values(ot, obj.data, external_refs=external_refs)
    check_identity(ot, obj.data, child=child)
    if not isinstance(obj.children, list):
        raise InvalidObjectError(f"the children of a {ot.name} object must be a list")
    for item in obj.children:
        if not isinstance(item, InternalObject):
            raise InvalidObjectError(f"children of {ot.name} must be InternalObject instances")
        check_object(registry, item, external_refs=external_refs, child=True)
    return ot


# -- pages ----------------------------------------------------------------------------------------
def check_fields(pt: PageType, fields: Mapping[str, Any]) -> None:
    """Refuse a field the page type does not have, or a value that does not fit its field."""
    unknown = [k for k in fields if k not in pt.fields]
    if unknown:
        raise InvalidObjectError(
            f"page type {pt.class_name!r} has no field(s) {', '.join(map(repr, unknown))}; "
            f"its fields are: {', '.join(pt.fields) or '(none)'}"
        )
    checks: dict[str, Checker] = pt.derived(
        "checks", lambda: {name: checker(typ) for name, typ in pt.field_types().items()}
    )
    for name, value in fields.items():
        if value is not None:
            problem = checks[name](value)
            if problem is not None:
                raise InvalidObjectError(f"field {name!r} of page type {pt.class_name}: {problem}")


# Lengths of the cms_tree / cms_document columns a page's text goes to.
_ALIAS_MAX = column_length(tree_table.c.node_alias)
_PATH_MAX = column_length(tree_table.c.node_alias_path)
_GUID_MAX = column_length(tree_table.c.node_guid)
_CLASS_MAX = column_length(tree_table.c.node_class_name)
_NAME_MAX = column_length(document_table.c.document_name)
_CULTURE_MAX = column_length(document_table.c.document_culture)
_NODE_ID_MAX = 2**31 - 1


def check_page(page: Page, *, simple: bool) -> None:
    """Refuse a page that no task could store: text the database cannot hold, an alias that
    is not one path segment, a parent path that is not absolute. Under Simple, ``parent_id``
    is an internal node id (a positive integer); else an external id."""
    _text("class_name", page.class_name, _CLASS_MAX)
    _text("name", page.name, _NAME_MAX)
    _text("culture", page.culture, _CULTURE_MAX, required=True)
    if (problem := culture_problem(page.culture)) is not None:
        _bad("culture", page.culture, problem)
    if page.node_guid is not None and not isinstance(page.node_guid, uuid.UUID):
        _text("node_guid", page.node_guid, _GUID_MAX, required=True)
    alias = page.alias
    if alias is not None:
        _text("alias", alias, _ALIAS_MAX, required=True)
        if "/" in alias:
            _bad("alias", alias, "an alias is one path segment: it must not contain '/'")
        if _CONTROL.search(alias):
            _bad("alias", alias, _no_control("an alias"))
        if alias.strip() in (".", ".."):
            _bad("alias", alias, "'.' and '..' name a page's own path and its parent's")
    elif len(make_alias(page.name)) > _ALIAS_MAX:
        _bad("name", page.name, f"its alias would be longer than {_ALIAS_MAX}; give an alias")
    if page.parent_path is not None:
        _parent_path(page.parent_path, alias, page.name)
    if page.parent_id is not None:
        _parent_id(page, simple)
    if not isinstance(page.fields, dict):
        _bad("fields", page.fields, "the page's fields must be a dict")


# A control character (a line break, a tab, ...) has no place in a URL path.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _no_control(what: str) -> str:
    return (
        f"{what} is part of the page's URL: it must not contain control characters such as a "
        "line break or a tab"
    )


def _parent_path(path: Any, alias: str | None, name: str) -> None:
    _text("parent_path", path, _PATH_MAX, required=True)
    if _CONTROL.search(path):
        _bad("parent_path", path, _no_control("a path"))
    inner = path.strip().strip("/")
    if not path.strip().startswith("/") or "//" in path or (inner and not inner.strip()):
        _bad("parent_path", path, "give an absolute alias path such as '/news'")
    if any(part.strip() in (".", "..") for part in inner.split("/")):
        _bad("parent_path", path, "'.' and '..' are no page's alias: give the path itself")
    full = join_path(normalize_path(path), alias or make_alias(name))
    if len(full) > _PATH_MAX:
        _bad("alias", alias, f"the page's path {full[:60]!r}... is longer than {_PATH_MAX}")


def _parent_id(page: Page, simple: bool) -> None:
    value = page.parent_id
    if not simple:
        problem = external_id_problem(value)
        if problem is not None:
            _bad("parent_id", value, problem)
    elif not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= _NODE_ID_MAX:
        _bad(
            "parent_id",
            value,
            f"under Simple, parent_id is the parent's internal node id (a positive integer up "
            f"to {_NODE_ID_MAX}); use SimpleSnapshot to pass an external id, or parent_path",
        )


def _text(what: str, value: Any, max_length: int, *, required: bool = False) -> None:
    if not isinstance(value, str):
        _bad(what, value, f"{what} must be a string, not {type(value).__name__}")
    problem = text_problem(value, max_length)
    if problem is not None:
        _bad(what, value, problem)
    if required and not value.strip():
        _bad(what, value, f"{what} must not be empty")


def _bad(what: str, value: Any, problem: str) -> NoReturn:
    raise InvalidObjectError(f"page {what} {show(value)}: {problem}")


# -- what a connector prepared, for a task type -------------------------------------------------
def check_prepared(
    registry: TypeRegistry,
    connector_name: str,
    prepared: Any,
    ttype: TaskType,
    dtype: TaskDataType,
    site_name: str | None,
) -> ObjectType | PageType:
    """Refuse what ``prepare_internal_object`` returned when no task of this type could
    apply it; returns the object's or page's type."""
    if isinstance(prepared, InternalObject):
        return _check_prepared_object(registry, connector_name, prepared, ttype, dtype, site_name)
    if isinstance(prepared, Page):
        return _check_prepared_page(registry, connector_name, prepared, ttype, dtype, site_name)
    raise InvalidObjectError(
        f"connector {connector_name!r}: prepare_internal_object must return an "
        f"InternalObject, a Page or None, not {type(prepared).__name__}"
    )


def _check_prepared_object(
    registry: TypeRegistry,
    connector_name: str,
    prepared: InternalObject,
    ttype: TaskType,
    dtype: TaskDataType,
    site_name: str | None,
) -> ObjectType:
    if ttype.is_document:
        raise InvalidObjectError(
            f"task type {ttype.value} needs a Page, but connector {connector_name!r} "
            f"returned an object of type {prepared.object_type!r}"
        )
    ot = check_object(registry, prepared, external_refs=dtype is not TaskDataType.SIMPLE)
    if ot.site_column and not site_name:
        raise SiteNotFoundError(
            f"{ot.name} objects belong to a site: pass site_name when logging them"
        )
    return ot


def _check_prepared_page(
    registry: TypeRegistry,
    connector_name: str,
    prepared: Page,
    ttype: TaskType,
    dtype: TaskDataType,
    site_name: str | None,
) -> PageType:
    if not ttype.is_document:
        raise InvalidObjectError(
            f"task type {ttype.value} needs an object, but connector "
            f"{connector_name!r} returned a page"
        )
    check_page(prepared, simple=dtype is TaskDataType.SIMPLE)
    pt = registry.page_type(prepared.class_name)
    if pt.class_name == ROOT_CLASS:
        _bad(
            "class_name",
            prepared.class_name,
            "the root of a site's tree comes with the site: no task creates, updates or deletes "
            "it; give the page a type of its own (cms.folder, say)",
        )
    check_fields(pt, prepared.fields)
    if not site_name:
        raise SiteNotFoundError("pages belong to a site: pass site_name when logging them")
    return pt
