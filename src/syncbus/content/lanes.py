"""Lane keys (CONTRACT §8): the entity a task writes, as one readable, stable string.

Under ``Ordering.ENTITY`` a connector's queue is split into lanes, one per entity; intake
computes a task's key at log time, from what was logged, and stores it with the task
(``syncbus_task.lane``). The key is pure: the same task always gives the same key, in any
process, without a query.

The format, by example:

- ``cms.user/alice``: an object type and its code name (or its GUID, for a type without one);
- ``cms.role/admin@main``: a site-bound type's objects add the task's site;
- ``cms.userrole/(cms.role/admin@main,cms.user/alice)``: a binding type names its ends, in
  the order of their column names, by the identities the connector gave for them (under
  Simple, by the internal ids as given: ``cms.user#12``);
- ``forums.forumpost/?``: an object logged without any identity (its GUID is drawn when it
  is applied);
- ``page@main/0b1e...``: a page: its site and its node GUID (lower case);
- ``page@main:/news/hello``: a page without a node GUID: its alias path; under a parent given
  by id, the parent's node GUID (Simple: its internal node id) and the alias:
  ``page@main:{0b1e...}/hello``, ``page@main:{#12}/hello``.

Escaping: in every name (object type, code name, GUID, site, id) the characters that
structure a key (``% / @ ( ) , : # ?``) and control characters are written ``%XX`` (their
code point in hex, as in URLs); other text, Unicode included, stays as it is. A page's alias
path is written as it is, but for ``%`` and control characters. So every character that
structures a key is unambiguous, a key can be read back into its parts, and two different
identities never share a key.

Keys longer than ``LANE_MAX`` characters (long code names, bindings of long names) keep
their first characters and end in ``%%`` and the SHA-256 of the whole key: an exact key never
contains ``%%`` (every ``%`` in it starts an escape), so a shortened key never equals an exact
one, and two shortened keys are equal only if SHA-256 collides.

Lanes are at least as coarse as identities: two tasks that write the same object always share
a lane (an object's parent and group are left out of its key: objects that differ only there
share one, which costs parallelism, never order). Two exceptions, where the same entity is
named in two ways: a page logged once with and once without its node GUID, and a binding
logged once under Simple (ends by internal id) and once with translation (ends by identity),
get two lanes. Under ``Ordering.ENTITY``, give pages their GUIDs and log a connector's
bindings with one data type.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

from syncbus.content.paths import join_path, make_alias, normalize_path
from syncbus.content.types import ObjectType
from syncbus.errors import InvalidObjectError
from syncbus.model import InternalObject, Page
from syncbus.payload import PAGE_RECORD, Payload, TranslationRecord, id_key
from syncbus.store.enqueue import LANE_MAX  # the length of the task table's ``lane`` column

_DIGEST = 64  # hex characters of a SHA-256
_KEPT = LANE_MAX - _DIGEST - 2  # the readable start of a shortened key

_CONTROLS = [chr(c) for c in range(0x20)] + ["\x7f"]
_NAME = str.maketrans({c: f"%{ord(c):02X}" for c in [*"%/@(),:#?", *_CONTROLS]})
_PATH = str.maketrans({c: f"%{ord(c):02X}" for c in ["%", *_CONTROLS]})

TypeLookup = Callable[[str], ObjectType]


def _name(text: str) -> str:
    return text.translate(_NAME)


def _bounded(key: str) -> str:
    if len(key) <= LANE_MAX:
        return key
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{key[:_KEPT]}%%{digest}"


def lane_of(payload: Payload, site_name: str | None, types: TypeLookup) -> str:
    """The lane key of a task about to be logged: its payload (with its translation records)
    and its site. ``types`` gives the declaration of an object type by name."""
    if payload.obj is not None:
        return object_lane(payload.obj, site_name, payload, types)
    if payload.page is not None:
        return page_lane(payload.page, site_name, payload)
    raise ValueError("a payload holds an object or a page")


def object_lane(
    obj: InternalObject, site_name: str | None, payload: Payload, types: TypeLookup
) -> str:
    ot = types(obj.object_type)
    if ot.is_binding:
        ends = ",".join(_end(ot, col, obj.data, site_name, payload, types) for col in ends_of(ot))
        return _bounded(_entity(ot, f"({ends})", site_name))
    key = obj.data.get(str(ot.key_column))
    return _bounded(_entity(ot, "?" if key is None else _name(str(key)), site_name))


def binding_identity(
    obj: InternalObject, site_name: str | None, payload: Payload, types: TypeLookup
) -> str:
    """A binding object's name, as its lane key writes it without the type: its ends in
    column order, each as the identity its translation record gives (``cms.user/dan``, with
    ``@site`` where its type is site-bound), else (Simple) as the id given (``cms.user#7``):
    ``(cms.role/ops@main,cms.user/dan)``."""
    ot = types(obj.object_type)
    ends = ",".join(_end(ot, col, obj.data, site_name, payload, types) for col in ends_of(ot))
    return f"({ends})"


def binding_example(ot: ObjectType, types: TypeLookup) -> str:
    """What a binding's name looks like (``binding_identity``), with placeholders."""
    parts = []
    for col in ends_of(ot):
        end = types(ot.foreign_keys[col])
        parts.append(f"{end.name}/<code>" + ("@<site>" if end.site_column else ""))
    return f"({','.join(parts)})"


def ends_of(ot: ObjectType) -> list[str]:
    """A binding type's end columns, in the order its keys name them."""
    ends: list[str] = ot.derived("lane_ends", lambda: sorted(ot.foreign_keys))
    return ends


def _entity(ot: ObjectType, identity: str, site_name: str | None) -> str:
    if ot.site_column:
        return f"{_name(ot.name)}/{identity}@{_name(site_name or '')}"
    return f"{_name(ot.name)}/{identity}"


def _end(
    ot: ObjectType,
    column: str,
    data: Mapping[str, Any],
    site_name: str | None,
    payload: Payload,
    types: TypeLookup,
) -> str:
    """One end of a binding: the identity the connector gave for it (its translation record),
    else (Simple) the internal id as given."""
    target, value = ot.foreign_keys[column], data.get(column)
    end = types(target)
    record = _record(payload, target, value)  # records name the type as its column does
    if record is None:
        return f"{_name(end.name)}#{'' if value is None else _name(str(value))}"
    return _entity(end, _name(str(record.code_name)), record.site_name or site_name)


def _record(payload: Payload, kind: str, value: Any) -> TranslationRecord | None:
    if value is None or not payload.records:
        return None
    index = payload.record_index().get(id_key(kind, value))
    return None if index is None else payload.records[index]


def page_lane(page: Page, site_name: str | None, payload: Payload) -> str:
    site = _name(site_name or "")
    if page.node_guid is not None:
        return _bounded(f"page@{site}/{_name(str(page.node_guid).lower())}")
    alias = page.alias or make_alias(page.name)
    if page.parent_id is None:
        path = join_path(normalize_path(page.parent_path or "/"), alias)
        return _bounded(f"page@{site}:{path.translate(_PATH)}")
    record = _record(payload, PAGE_RECORD, page.parent_id)
    parent = f"#{_name(str(page.parent_id))}" if record is None else _name(str(record.code_name))
    return _bounded(f"page@{site}:{{{parent}}}/{alias.translate(_PATH)}")


def reference_lane(
    record: TranslationRecord, task_site: str | None, types: TypeLookup
) -> str | None:
    """The lane of the entity a translation record names (the lane a task creating it has),
    or None when it cannot be told (an unknown type)."""
    site = record.site_name or task_site
    if record.is_page:
        return _bounded(f"page@{_name(site or '')}/{_name(str(record.code_name).lower())}")
    try:
        ot = types(record.object_type)
    except InvalidObjectError:  # a type this process does not know has no lane
        return None
    return _bounded(_entity(ot, _name(str(record.code_name)), site))


def describe_reference(record: TranslationRecord, task_site: str | None, types: TypeLookup) -> str:
    """A referenced entity as ``TaskInfo.waiting_for`` shows it: ``cms.user 'alice'``, with
    `` on site 'main'`` for a page or an object of a site-bound type."""
    site = record.site_name or task_site
    if record.is_page:
        bound, what = True, "page"
    else:
        what = record.object_type
        try:
            bound = bool(types(record.object_type).site_column)
        except InvalidObjectError:
            bound = record.site_name is not None
    where = f" on site {site!r}" if bound and site else ""
    return f"{what} {record.code_name!r}{where}"


def child_lanes(payload: Payload, site_name: str | None, types: TypeLookup) -> set[str]:
    """The lanes of the objects a SNAPSHOT task writes as its object's children (each child
    is an entity of its own lane); children that cannot be told a lane are left out."""
    out: set[str] = set()
    if payload.obj is None:
        return out
    for child in payload.obj.children:
        try:
            out.add(object_lane(child, site_name, payload, types))
        except (InvalidObjectError, KeyError, TypeError, ValueError):
            continue
    return out


def referenced_lanes(
    payload: Payload, own: str | None, task_site: str | None, types: TypeLookup
) -> set[str]:
    """The lanes of every entity a task's translation records name, but its own."""
    out: set[str] = set()
    for record in payload.records or ():
        lane = reference_lane(record, task_site, types)
        if lane is not None and lane != own:
            out.add(lane)
    return out
