"""The dashboard's charts as server-rendered SVG (no script, no CDN): per connector, tasks
applied and failed per bucket (lines) above the queue depth (an area), on one time axis. Every
bucket has a hover title with its exact numbers; the colours are the Okabe-Ito palette (told
apart with colour blindness) and failed is dashed as well, so colour is never the only cue.

Styling goes through classes in admin.css and SVG presentation attributes: the admin's CSP
forbids inline ``style``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from markupsafe import Markup, escape

from syncbus.activity import Charts, Series

WIDTH, HEIGHT = 640, 210
LEFT, RIGHT = 44, 10
RATE_TOP, RATE_BOTTOM = 14, 104  # the applied/failed plot
DEPTH_TOP, DEPTH_BOTTOM = 128, 180  # the queue depth plot
AXIS_Y = 196
# Where the time axis gets a label: every 10 minutes (hour), every 3 hours (day).
LABEL_EVERY = {60: 600, 1200: 10800}


def nice_max(value: int) -> int:
    """The smallest of 1, 2, 5 x 10^k at least ``value`` (1 for 0): the top of a y axis."""
    step = 1
    while True:
        for m in (1, 2, 5):
            if m * step >= value:
                return m * step
        step *= 10


def per_bucket(charts: Charts) -> str:
    return "per minute" if charts.width == 60 else f"per {charts.width // 60} min"


def _fmt(value: dt.datetime) -> str:
    return value.strftime("%H:%M")


def _x(charts: Charts, i: float) -> float:
    return LEFT + (WIDTH - LEFT - RIGHT) * i / charts.buckets


def _y(value: int, top_value: int, top: int, bottom: int) -> float:
    return bottom - (bottom - top) * value / top_value


def _points(charts: Charts, values: Sequence[int], top_value: int, top: int, bottom: int) -> str:
    return " ".join(
        f"{_x(charts, i + 0.5):.1f},{_y(v, top_value, top, bottom):.1f}"
        for i, v in enumerate(values)
    )


def _y_axis(top_value: int, top: int, bottom: int, label: str) -> list[str]:
    out = [f'<text class="axis-title" x="{LEFT}" y="{top - 4}">{escape(label)}</text>']
    for value in (0, top_value // 2, top_value) if top_value > 1 else (0, top_value):
        y = _y(value, top_value, top, bottom)
        out.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
        )
        out.append(
            f'<text class="tick" x="{LEFT - 4}" y="{y + 3:.1f}" text-anchor="end">{value}</text>'
        )
    return out


def _time_axis(charts: Charts) -> list[str]:
    every = LABEL_EVERY.get(charts.width, charts.width * 10)
    out = []
    for i in range(charts.buckets):  # not the window's end: it lies ahead, past the edge
        at = charts.bucket_start(i)
        if int(at.timestamp()) % every:
            continue
        x = _x(charts, i)
        out.append(
            f'<line class="tick-mark" x1="{x:.1f}" x2="{x:.1f}" '
            f'y1="{DEPTH_BOTTOM}" y2="{DEPTH_BOTTOM + 4}"/>'
        )
        out.append(
            f'<text class="tick" x="{x:.1f}" y="{AXIS_Y}" text-anchor="middle">{_fmt(at)}</text>'
        )
    out.append(
        f'<text class="tick" x="{WIDTH - RIGHT}" y="{AXIS_Y + 12}" text-anchor="end">UTC</text>'
    )
    return out


def _hover(charts: Charts, s: Series) -> list[str]:
    """One transparent column per bucket whose title gives its exact numbers."""
    out = []
    for i in range(charts.buckets):
        begins, ends = charts.bucket_start(i), charts.bucket_start(i + 1)
        text = (
            f"{_fmt(begins)}\u2013{_fmt(ends)} UTC: {s.applied[i]} applied, "
            f"{s.failed[i]} failed; {s.depth[i]} queued at {_fmt(ends)}"
        )
        x, w = _x(charts, i), _x(charts, i + 1) - _x(charts, i)
        out.append(
            f'<rect class="hover" x="{x:.1f}" y="{RATE_TOP}" width="{w:.2f}" '
            f'height="{DEPTH_BOTTOM - RATE_TOP}"><title>{escape(text)}</title></rect>'
        )
    return out


def chart_svg(charts: Charts, s: Series, title: str, key: str) -> Markup:
    """One connector's chart. ``title`` names it for screen readers (the page shows it as a
    heading); a description gives the totals. ``key``: unique in the page (element ids)."""
    rate_top = nice_max(max([*s.applied, *s.failed, 0]))
    depth_top = nice_max(max([*s.depth, 0]))
    desc = (
        f"{sum(s.applied)} applied and {sum(s.failed)} failed in the last {charts.span}; "
        f"{s.depth[-1] if s.depth else 0} queued now, at most {max(s.depth, default=0)}."
    )
    base = _points(charts, [0] * charts.buckets, depth_top, DEPTH_TOP, DEPTH_BOTTOM).split()
    depth_line = _points(charts, s.depth, depth_top, DEPTH_TOP, DEPTH_BOTTOM)
    area = " ".join([depth_line, *reversed(base)])
    applied = _points(charts, s.applied, rate_top, RATE_TOP, RATE_BOTTOM)
    failed = _points(charts, s.failed, rate_top, RATE_TOP, RATE_BOTTOM)
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="{key}-t {key}-d" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{key}-t">{escape(title)}</title>',
        f'<desc id="{key}-d">{escape(desc)}</desc>',
        *_y_axis(rate_top, RATE_TOP, RATE_BOTTOM, f"tasks {per_bucket(charts)}"),
        *_y_axis(depth_top, DEPTH_TOP, DEPTH_BOTTOM, "queued"),
        *_time_axis(charts),
        f'<polygon class="series-depth-area" points="{area}"/>',
        f'<polyline class="series-depth" points="{depth_line}"/>',
        f'<polyline class="series-applied" points="{applied}"/>',
        f'<polyline class="series-failed" points="{failed}"/>',
        *_hover(charts, s),
        "</svg>",
    ]
    return Markup("\n".join(parts))
