"""The task payload: what a queued task row stores in its ``data`` column, as JSON.

``{"v": 1, "object": {...}}`` or ``{"v": 1, "page": {...}}``, plus ``"tr"``: the translation
records captured at log time (external id -> portable identity: code name / GUID, site,
parent and group records by index; pages by node GUID + culture + site).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from syncbus.errors import CorruptTaskError
from syncbus.model import InternalObject, Page

PAYLOAD_VERSION = 1
PAGE_RECORD = "#page"


class TranslationRecord(NamedTuple):
    """The identity of one referenced object or page, captured at log time. (A named tuple:
    every task of a batch decodes its records, and tuples are the cheapest to build.)"""

    object_type: str
    external_id: Any
    code_name: str | None = None
    site_name: str | None = None
    parent: int | None = None
    group: int | None = None
    culture: str | None = None

    @property
    def is_page(self) -> bool:
        return self.object_type == PAGE_RECORD

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"t": self.object_type, "id": self.external_id, "c": self.code_name}
        for key, value in (
            ("s", self.site_name),
            ("p", self.parent),
            ("g", self.group),
            ("l", self.culture),
        ):
            if value is not None:
                out[key] = value
        return out

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> TranslationRecord:
        get = raw.get
        return cls(raw["t"], raw["id"], get("c"), get("s"), get("p"), get("g"), get("l"))


def id_key(object_type: str, external_id: Any) -> tuple[str, str]:
    """A hashable key for an external id of a type (ids may be ints, strings, ...).

    Keys of different values never collide: ints and strings (the common ids) take a fast,
    injective form that equals their JSON text for ints and, for strings, is a JSON-string
    look-alike that JSON never produces for another value; the rest is canonical JSON."""
    if isinstance(external_id, str):  # subclasses (StrEnum) key as their plain text
        return object_type, f'"{str.__str__(external_id)}"'
    if isinstance(external_id, int) and not isinstance(external_id, bool):
        return object_type, int.__repr__(external_id)
    return object_type, json.dumps(external_id, sort_keys=True, default=str)


@dataclass
class Payload:
    obj: InternalObject | None = None
    page: Page | None = None
    records: list[TranslationRecord] = field(default_factory=list)
    _index: dict[tuple[str, str], int] | None = field(default=None, repr=False, compare=False)

    def record_index(self) -> dict[tuple[str, str], int]:
        """Record positions by (type, external id); computed once per payload."""
        if self._index is None or len(self._index) != len(self.records):
            self._index = {
                id_key(r.object_type, r.external_id): i for i, r in enumerate(self.records)
            }
        return self._index


def _json_default(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"value {value!r} of type {type(value).__name__} cannot be stored as JSON")


def _obj_to_json(obj: InternalObject) -> dict[str, Any]:
    out: dict[str, Any] = {"type": obj.object_type, "data": obj.data}
    if obj.children:
        out["children"] = [_obj_to_json(c) for c in obj.children]
    return out


def _obj_from_json(raw: dict[str, Any]) -> InternalObject:
    return InternalObject(
        object_type=raw["type"],
        data=dict(raw["data"]),
        children=[_obj_from_json(c) for c in raw.get("children", ())],
    )


def encode(payload: Payload) -> str:
    body: dict[str, Any] = {"v": PAYLOAD_VERSION}
    if payload.obj is not None:
        body["object"] = _obj_to_json(payload.obj)
    if payload.page is not None:
        p = payload.page
        body["page"] = {
            "class_name": p.class_name,
            "name": p.name,
            "culture": p.culture,
            "node_guid": None if p.node_guid is None else str(p.node_guid),
            "alias": p.alias,
            "parent_id": p.parent_id,
            "parent_path": p.parent_path,
            "fields": p.fields,
        }
    if payload.records:
        body["tr"] = [r.to_json() for r in payload.records]
    return json.dumps(body, default=_json_default, separators=(",", ":"))


def decode(text: str | None) -> Payload:
    """Decode a stored payload; anything malformed is a CorruptTaskError saying what."""
    if not text:
        raise CorruptTaskError("the task's data is empty")
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise CorruptTaskError(f"the task's data is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise CorruptTaskError("the task's data is not a JSON object")
    version = body.get("v")
    if version != PAYLOAD_VERSION:
        raise CorruptTaskError(f"the task's data has unknown format version {version!r}")
    try:
        payload = Payload(records=[TranslationRecord.from_json(r) for r in body.get("tr", ())])
        if "object" in body:
            payload.obj = _obj_from_json(body["object"])
        elif "page" in body:
            raw = body["page"]
            payload.page = Page(
                class_name=raw["class_name"],
                name=raw["name"],
                culture=raw.get("culture") or "en-US",
                node_guid=raw.get("node_guid"),
                alias=raw.get("alias"),
                parent_id=raw.get("parent_id"),
                parent_path=raw.get("parent_path"),
                fields=dict(raw.get("fields") or {}),
            )
        else:
            raise CorruptTaskError("the task's data holds neither an object nor a page")
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise CorruptTaskError(f"the task's data is malformed: {exc!r}") from exc
    return payload
