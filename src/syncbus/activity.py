"""The dashboard's charts (what operators look at rather than read): per connector, tasks
applied and failed attempts per bucket and the queue depth at each bucket's end, over the last
hour (1-minute buckets) or the last day (20-minute buckets). The counting is the store's
(``syncbus.store.charts``: what each series counts); this module picks the window.

The charts are drawn from the history (CONTRACT §10): with ``history_retention_days`` at 0
finished tasks leave no record, so there is nothing to draw (``Charts.history_on``).

A bucket that ended ``SETTLE_S`` ago or more no longer changes (what finished in it is
recorded; who was queued at its end too), so its numbers are kept, per bus, and each refresh
counts only the buckets since, by the minute (a day chart's open 20-minute bucket is the sum
of its minutes, themselves kept once settled): a refresh of either chart of a busy bus reads
a few minutes of history, not the hour or the day. The first bucket counted fresh starts
with the exact queue depth at its start (the store counts what was queued before it), so no
error carries over.
"""

from __future__ import annotations

import datetime as dt
import threading
import weakref
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Connection

from syncbus.bus import IntegrationBus
from syncbus.store import charts
from syncbus.store.switches import HISTORY_RETENTION, days, read_setting

Span = Literal["hour", "day"]
SPANS: tuple[Span, ...] = ("hour", "day")
# Bucket width in seconds and how many buckets: 60 points an hour, 72 a day.
WINDOWS: dict[Span, tuple[int, int]] = {"hour": (60, 60), "day": (1200, 72)}
# A bucket is settled (kept, never counted again) once it ended this many seconds ago: the
# records of a batch carry the batch's start as their finishing time and commit after it.
SETTLE_S = 120
KEEP_S = 86400  # how long a kept bucket is kept beyond the start of a window that needs it
MINUTE = 60


@dataclass(frozen=True)
class Series:
    """One connector's numbers, one per bucket, oldest first."""

    connector: str
    applied: list[int]
    failed: list[int]
    depth: list[int]  # tasks queued at the bucket's end (the last: now)


@dataclass(frozen=True)
class Charts:
    span: Span
    start: dt.datetime  # the first bucket's start (UTC); buckets are aligned to their width
    width: int  # seconds a bucket
    buckets: int
    history_on: bool
    retention_days: int
    series: dict[str, Series]

    def bucket_start(self, i: int) -> dt.datetime:
        return self.start + dt.timedelta(seconds=self.width * i)

    def of(self, connector: str) -> Series:
        """The connector's series (zeros for one with nothing in the window)."""
        found = self.series.get(connector)
        if found is not None:
            return found
        zeros = [0] * self.buckets
        return Series(connector, zeros, zeros, zeros)


def span_of(value: str | None) -> Span:
    """The span a query asks for; anything unknown means the last hour."""
    return "day" if value == "day" else "hour"


# (connector -> (applied, failed, depth)) of settled buckets, by (width, bucket start), by bus
Bucket = dict[str, tuple[int, int, int]]


class _Settled:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.buckets: dict[tuple[int, int], Bucket] = {}


_NONE = (0, 0, 0)
_SETTLED: weakref.WeakKeyDictionary[IntegrationBus, _Settled] = weakref.WeakKeyDictionary()
_SETTLED_LOCK = threading.Lock()


def activity(
    bus: IntegrationBus, span: Span = "hour", now: dt.datetime | None = None, keep: bool = True
) -> Charts:
    """Every connector's series over the span ending with the bucket that holds ``now``.
    ``keep``: reuse (and keep) the numbers of settled buckets; False counts every bucket."""
    width, buckets = WINDOWS[span]
    moment = int((now or dt.datetime.now(dt.UTC)).timestamp())
    start = (moment // width - (buckets - 1)) * width
    with bus.reader.connect() as conn:
        retention = days(read_setting(conn, HISTORY_RETENTION), 7)
        if retention == 0:
            columns: list[Bucket] = [{} for _ in range(buckets)]
        elif not keep:
            columns = _columns(charts.activity(conn, start, width, buckets), buckets)
        else:
            columns = _counted(bus, conn, start, width, buckets, moment)
    names = sorted({name for column in columns for name in column})
    return Charts(
        span=span,
        start=dt.datetime.fromtimestamp(start, dt.UTC),
        width=width,
        buckets=buckets,
        history_on=retention > 0,
        retention_days=retention,
        series={name: _series(name, columns) for name in names},
    )


def _counted(
    bus: IntegrationBus, conn: Connection, start: int, width: int, count: int, moment: int
) -> list[Bucket]:
    """``count`` buckets from ``start``: the settled ones kept (or counted once and kept), the
    others counted by the minute (settled minutes kept too) and added up, so a refresh reads
    the records of the last few minutes only, whatever the width."""
    settled = max(0, min(count, (moment - SETTLE_S - start) // width))
    columns = _settled(bus, conn, start, width, settled)
    fresh, rest = start + settled * width, count - settled
    if width == MINUTE:
        return columns + _columns(charts.activity(conn, fresh, MINUTE, rest), rest)
    per = width // MINUTE
    return columns + _fold(_counted(bus, conn, fresh, MINUTE, rest * per, moment), per)


def _fold(minutes: list[Bucket], per: int) -> list[Bucket]:
    """Buckets of ``per`` minutes each: applied and failed added up, the depth at the end."""
    out = []
    for first in range(0, len(minutes), per):
        part = minutes[first : first + per]
        names = {name for column in part for name in column}
        out.append(
            {
                name: (
                    sum(column.get(name, _NONE)[0] for column in part),
                    sum(column.get(name, _NONE)[1] for column in part),
                    part[-1].get(name, _NONE)[2],
                )
                for name in names
            }
        )
    return out


def _settled(
    bus: IntegrationBus, conn: Connection, start: int, width: int, count: int
) -> list[Bucket]:
    """The ``count`` buckets from ``start``, all settled: kept ones, the others counted once
    (from the first missing one on) and kept; buckets older than ``KEEP_S`` are forgotten."""
    if count == 0:
        return []
    with _SETTLED_LOCK:
        kept = _SETTLED.setdefault(bus, _Settled())
    with kept.lock:
        found = [kept.buckets.get((width, start + i * width)) for i in range(count)]
    missing = next((i for i, column in enumerate(found) if column is None), count)
    if missing < count:
        first = start + missing * width
        size = count - missing
        counted = _columns(charts.activity(conn, first, width, size), size)
        found[missing:] = counted
        with kept.lock:
            for i, column in enumerate(counted):
                kept.buckets[(width, first + i * width)] = column
            for key in [k for k in kept.buckets if k[1] < start - KEEP_S]:
                del kept.buckets[key]
    return [column or {} for column in found]


def _columns(counts: dict[str, charts.Activity], size: int) -> list[Bucket]:
    """The store's per-connector lists (``size`` numbers each) as one mapping a bucket."""
    columns: list[Bucket] = [{} for _ in range(size)]
    for name, a in counts.items():
        for i in range(size):
            columns[i][name] = (a.applied[i], a.failed[i], a.depth[i])
    return columns


def _series(name: str, columns: list[Bucket]) -> Series:
    values = [column.get(name, _NONE) for column in columns]
    return Series(name, [v[0] for v in values], [v[1] for v in values], [v[2] for v in values])
