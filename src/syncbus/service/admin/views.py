"""Presentation helpers: a filter in words."""

from __future__ import annotations

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
