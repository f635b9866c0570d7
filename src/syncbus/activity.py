"""The dashboard's charts (what operators look at rather than read): per connector, tasks
applied and failed attempts per bucket and the queue depth at each bucket's end, over the last
hour (1-minute buckets) or the last day (20-minute buckets). The counting is the store's
(``syncbus.store.charts``: what each series counts); this module picks the window.

The charts are drawn from the history (CONTRACT §10): with ``history_retention_days`` at 0
finished tasks leave no record, so there is nothing to draw (``Charts.history_on``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

from syncbus.bus import IntegrationBus
from syncbus.store import charts
from syncbus.store.switches import HISTORY_RETENTION, days, read_setting

Span = Literal["hour", "day"]
SPANS: tuple[Span, ...] = ("hour", "day")
# Bucket width in seconds and how many buckets: 60 points an hour, 72 a day.
WINDOWS: dict[Span, tuple[int, int]] = {"hour": (60, 60), "day": (1200, 72)}


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


def activity(bus: IntegrationBus, span: Span = "hour", now: dt.datetime | None = None) -> Charts:
    """Every connector's series over the span ending with the bucket that holds ``now``."""
    width, buckets = WINDOWS[span]
    moment = (now or dt.datetime.now(dt.UTC)).timestamp()
    start = (int(moment) // width - (buckets - 1)) * width
    with bus.reader.connect() as conn:
        retention = days(read_setting(conn, HISTORY_RETENTION), 7)
        counts = charts.activity(conn, start, width, buckets) if retention > 0 else {}
    return Charts(
        span=span,
        start=dt.datetime.fromtimestamp(start, dt.UTC),
        width=width,
        buckets=buckets,
        history_on=retention > 0,
        retention_days=retention,
        series={name: Series(name, a.applied, a.failed, a.depth) for name, a in counts.items()},
    )
