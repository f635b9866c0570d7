"""Presentation helpers: a filter in words, translation records as table rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from syncbus.payload import PAGE_RECORD
from syncbus.readmodel import TaskFilter

STATE_WORDS = {"pending": "pending", "failed": "failed", "blocked": "blocked (Error)"}


def describe(flt: TaskFilter) -> str:
    """``connector Shop, failed, title containing 'x', lane cms.user/alice``; ``no filter``
    when empty."""
    parts = [
        f"connector {flt.connector}" if flt.connector else "",
        STATE_WORDS.get(flt.state, ""),
        f"type {flt.type}" if flt.type else "",
        f"title containing {flt.text!r}" if flt.text else "",
        f"lane {flt.lane}" if flt.lane else "",
        "waiting for a missing reference" if flt.waiting else "",
    ]
    return ", ".join(p for p in parts if p) or "no filter"


@dataclass(frozen=True)
class RecordView:
    """A translation record: an external id and the identity it stands for."""

    index: int
    object_type: str
    external_id: Any
    code_name: str | None
    site_name: str | None
    parent: str | None
    group: str | None
    culture: str | None


def record_views(records: list[dict[str, Any]]) -> list[RecordView]:
    """Stored records (``{"t", "id", "c", "s", "p", "g", "l"}``; parent and group point to
    other records by index) as rows that name what they point to."""

    def ref(index: Any) -> str | None:
        if index is None:
            return None
        if isinstance(index, int) and 0 <= index < len(records):
            target = records[index]
            return f"#{index}: {target.get('t')} {target.get('c')} (external id {target.get('id')})"
        return f"#{index}"

    return [
        RecordView(
            index=i,
            object_type="page" if r.get("t") == PAGE_RECORD else str(r.get("t")),
            external_id=r.get("id"),
            code_name=r.get("c"),
            site_name=r.get("s"),
            parent=ref(r.get("p")),
            group=ref(r.get("g")),
            culture=r.get("l"),
        )
        for i, r in enumerate(records)
    ]
