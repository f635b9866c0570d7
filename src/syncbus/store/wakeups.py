"""Waking workers when tasks are logged, across processes and machines.

PostgreSQL: every logged task NOTIFYs ``NOTIFY_CHANNEL`` with its connector's name (see
``store.enqueue``); ``listen`` holds a LISTEN connection and reports each note. SQLite has no
channel: workers poll ``store.tasks.log_sequence`` instead.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import sqlalchemy as sa

from syncbus.store.dialect import NOTIFY_CHANNEL

log = logging.getLogger("syncbus.dispatcher")


def listen(
    engine: sa.Engine,
    stop: threading.Event,
    on_note: Callable[[str | None], None],
    tick: float = 0.25,
) -> None:
    """Until ``stop`` is set: LISTEN for logged tasks and call ``on_note(connector_name)``
    for each; ``on_note(None)`` after each (re)connect, for what was logged meanwhile.
    Looks up every ``tick`` seconds to see whether it should stop; reconnects with back-off."""
    import psycopg

    url = engine.url.set(drivername="postgresql")
    conninfo = url.render_as_string(hide_password=False)
    backoff = 0.5
    while not stop.is_set():
        try:
            with psycopg.connect(conninfo, autocommit=True) as conn:
                conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                on_note(None)
                backoff = 0.5
                while not stop.is_set():
                    for note in conn.notifies(timeout=tick):
                        on_note(note.payload or None)
        except psycopg.Error:
            log.warning("LISTEN connection lost; reconnecting in %.1fs", backoff)
            stop.wait(backoff)
            backoff = min(backoff * 2, 10.0)
