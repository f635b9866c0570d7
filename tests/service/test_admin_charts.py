"""The dashboard's charts, on SQLite and PostgreSQL: the bucket counts of the store
(``syncbus.store.charts`` through ``syncbus.activity``) against a history made by real
processing whose times are then set by hand (SQL on the tables: a test's privilege), and the
charts in the dashboard (SVG, hover titles, the span switch, an empty history, history off).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import httpx
import pytest

from syncbus import IntegrationBus, ProcessType, create_app
from syncbus.activity import Charts, activity
from syncbus.intake import TaskRequest
from syncbus.service.admin.charts import chart_svg
from tests.admin import TOKEN, RecordingDispatcher, log_items, sign_in
from tests.admin import admin_bus as admin_bus  # a fixture
from tests.charts_scene import log_one, move_queued, move_record
from tests.helpers import DictConnector, log, run, user
from tests.http_server import asgi_client

NOW = dt.datetime(2026, 3, 2, 12, 0, 30, tzinfo=dt.UTC)  # hour window: 11:01 to 12:01
FOREVER = 10**6


def at(hhmmss: str) -> dt.datetime:
    h, m, s = (int(x) for x in hhmmss.split(":"))
    return NOW.replace(hour=h, minute=m, second=s)


def minute(hhmmss: str) -> int:
    """The hour window's bucket of a time of NOW's day (-1: before the window)."""
    return max(-1, int((at(hhmmss) - at("11:01:00")).total_seconds()) // 60)


# -- a history made by processing, its times set by hand ------------------------------------
def set_record(
    bus: IntegrationBus, task_id: int, logged: str, finished: str, errors: Sequence[str] = ()
) -> None:
    move_record(bus, task_id, at(logged), at(finished), [at(t) for t in errors])


def set_queued(bus: IntegrationBus, task_id: int, created: str, errors: Sequence[str] = ()) -> None:
    move_queued(bus, task_id, at(created), [at(t) for t in errors])


def ref(bus: IntegrationBus, number: int) -> int:
    """Log ref ``number`` on the Refs connector (a connector of its own) and apply it."""
    [outcome] = bus.log_tasks("Refs", [TaskRequest({"kind": "ref", "name": f"ref{number}"})])
    assert bus.process_tasks("Refs")["Refs"].applied == 1
    assert outcome.task_id is not None
    return outcome.task_id


@dataclass
class Story:
    """What the Shop queue went through (bucket numbers of the hour window), and Refs's one
    applied task at the very times of Shop's task ``a``."""

    applied: dict[int, int]
    failed: dict[int, int]
    spans: list[tuple[int, int]]  # (logged, finished) buckets of every Shop task
    refs_applied: dict[int, int]
    refs_spans: list[tuple[int, int]]


def tell(bus: IntegrationBus) -> Story:
    """Process Shop's tasks through their fates, then set their times."""
    a, b, old = log_items(bus, "Shop", ["a", "b", "old"])
    assert bus.process_tasks("Shop")["Shop"].applied == 3
    gone = log_one(bus, "Shop", "gone")
    bus.delete_task(gone)  # deleted by an operator: in the queue's depth, never applied
    dropped = log_one(bus, "Shop", "dropped", ref=1, process_type=ProcessType.DELETE_ON_ERROR)
    result = bus.process_tasks("Shop")["Shop"]
    assert (result.failed, bus.queue_size("Shop")) == (1, 0), result
    retried = log_one(bus, "Shop", "retried", ref=2)  # fails twice, then is applied
    assert bus.process_tasks("Shop")["Shop"].failed == 1
    assert bus.synchronize_task(retried) is False
    ref2 = ref(bus, 2)
    assert bus.synchronize_task(retried) is True
    failing = log_one(bus, "Shop", "failing", ref=3)  # fails once and stays queued (ERROR) ...
    behind = log_one(bus, "Shop", "behind")  # ... with this one behind it
    assert bus.process_tasks("Shop")["Shop"].failed == 1
    assert bus.queue_size("Shop") == 2

    set_record(bus, a, "11:50:10", "11:52:00")  # on a boundary: the bucket it opens
    set_record(bus, b, "10:00:00", "11:30:59")  # logged before the window
    set_record(bus, old, "09:00:00", "10:59:00")  # finished before the window: nowhere
    set_record(bus, gone, "11:10:00", "11:12:00")
    set_record(bus, dropped, "11:39:00", "11:40:00", errors=["11:40:00"])
    set_record(bus, retried, "11:20:00", "11:55:20", errors=["11:21:30", "11:22:00"])
    set_queued(bus, failing, "11:45:00", errors=["11:45:30"])
    set_queued(bus, behind, "10:30:00")
    set_record(bus, ref2, "11:50:10", "11:52:00")
    return Story(
        applied={minute("11:52:00"): 1, minute("11:30:59"): 1, minute("11:55:20"): 1},
        failed={minute(t): 1 for t in ("11:40:00", "11:21:30", "11:22:00", "11:45:30")},
        spans=[
            (minute("11:50:10"), minute("11:52:00")),
            (minute("10:00:00"), minute("11:30:59")),
            (minute("11:10:00"), minute("11:12:00")),
            (minute("11:39:00"), minute("11:40:00")),
            (minute("11:20:00"), minute("11:55:20")),
            (minute("11:45:00"), FOREVER),
            (minute("10:30:00"), FOREVER),
        ],
        refs_applied={minute("11:52:00"): 1},
        refs_spans=[(minute("11:50:10"), minute("11:52:00"))],
    )


def dense(counts: dict[int, int], n: int = 60) -> list[int]:
    return [counts.get(i, 0) for i in range(n)]


def depths(spans: list[tuple[int, int]], n: int = 60) -> list[int]:
    """Tasks queued at each bucket's end: logged in it or before, finished after it."""
    return [sum(1 for lo, hi in spans if lo <= k < hi) for k in range(n)]


def test_hour_buckets_count_applied_failed_and_depth_per_connector(
    admin_bus: IntegrationBus,
) -> None:
    story = tell(admin_bus)
    charts = activity(admin_bus, "hour", now=NOW)
    assert (charts.start, charts.width, charts.buckets) == (at("11:01:00"), 60, 60)
    shop = charts.of("Shop")
    assert shop.applied == dense(story.applied)
    assert shop.failed == dense(story.failed)
    assert shop.depth == depths(story.spans)
    assert shop.depth[-1] == 2 == admin_bus.queue_size("Shop")  # the last point is now
    refs = charts.of("Refs")  # Shop's tasks are not Refs's, and the other way round
    assert refs.applied == dense(story.refs_applied)
    assert refs.failed == [0] * 60
    assert refs.depth == depths(story.refs_spans)


def test_day_buckets_are_20_minutes_aligned(admin_bus: IntegrationBus) -> None:
    tell(admin_bus)
    charts = activity(admin_bus, "day", now=NOW)
    # Buckets up to 11:40 are counted by 20 minutes and kept; the last two (11:40 to 12:20)
    # by the minute and added up: the same numbers as counting every bucket by 20 minutes.
    assert charts == activity(admin_bus, "day", now=NOW, keep=False)
    # 72 buckets of 20 min; the last holds NOW (12:00 to 12:20), the first starts 23 h 40 min
    # before it.
    assert (charts.width, charts.buckets) == (1200, 72)
    assert charts.start == at("12:00:00") - dt.timedelta(hours=23, minutes=40)
    shop = charts.of("Shop")
    # Bucket 67 is 10:40-11:00, 68 11:00-11:20, 69 11:20-11:40, 70 11:40-12:00, 71 12:00-.
    # Applied: old at 10:59; b at 11:30:59; a and retried at 11:52 and 11:55:20 (gone was
    # deleted: never applied). Failed: retried's two attempts; dropped's and failing's.
    assert shop.applied[66:] == [0, 1, 0, 1, 2, 0]
    assert shop.failed[66:] == [0, 0, 0, 2, 2, 0]
    assert sum(shop.applied) == 4 and sum(shop.failed) == 4
    # Queued at each end (logged before it, not finished before it; 61 ends at 9:00): old
    # (9:00 to 10:59), b (10:00 to 11:30:59), behind (since 10:30), retried (11:20 to
    # 11:55:20), dropped (11:39 to 11:40:00: still queued at 11:40:00), failing (since 11:45).
    assert shop.depth[61:] == [0, 1, 1, 1, 2, 3, 2, 2, 3, 2, 2]
    assert shop.depth[:61] == [0] * 61
    assert charts.of("Refs").applied[70] == 1 and sum(charts.of("Refs").applied) == 1


def test_empty_history_gives_zeros(admin_bus: IntegrationBus) -> None:
    charts = activity(admin_bus, "hour", now=NOW)
    assert charts.history_on and charts.series == {}
    assert charts.of("Shop").applied == charts.of("Shop").depth == [0] * 60
    svg = chart_svg(charts, charts.of("Shop"), "Web shop", "k")
    assert svg.count("<title>") == 60  # one hover title a bucket, even with nothing in it
    assert "0 applied and 0 failed in the last hour; 0 queued now" in svg


def test_hover_titles_give_exact_values(admin_bus: IntegrationBus) -> None:
    story = tell(admin_bus)
    charts = activity(admin_bus, "hour", now=NOW)
    svg = str(chart_svg(charts, charts.of("Shop"), "Web shop", "k"))
    titles = re.findall(r"<title>([^<]*)</title>", svg)
    assert len(titles) == 60
    k = minute("11:52:00")
    queued = depths(story.spans)[k]
    assert titles[k] == f"11:52\u201311:53 UTC: 1 applied, 0 failed; {queued} queued at 11:53"
    assert titles[minute("11:21:30")].startswith("11:21\u201311:22 UTC: 0 applied, 1 failed;")
    assert '<title id="k-t">Web shop</title>' in svg


# -- the dashboard -------------------------------------------------------------------------
@pytest.fixture
def admin(admin_bus: IntegrationBus) -> Iterator[httpx.Client]:
    app = create_app(
        admin_bus,
        api_token=TOKEN,
        dispatcher=RecordingDispatcher(admin_bus),
        run_dispatcher=False,
    )
    with asgi_client(app) as client:
        assert sign_in(client).status_code == 303
        yield client


def test_dashboard_draws_a_chart_per_connector_and_switches_span(
    admin_bus: IntegrationBus, admin: httpx.Client
) -> None:
    log_items(admin_bus, "Shop", ["a", "b"])
    assert admin_bus.process_tasks("Shop")["Shop"].applied == 2
    log_items(admin_bus, "Shop", ["c"])
    html = admin.get("/admin/").text
    assert html.count('<svg class="chart"') == 2
    assert 'data-testid="chart-Shop"' in html and 'data-testid="chart-Refs"' in html
    totals = re.search(r'data-testid="totals-Shop">([^<]*)<', html)
    assert totals and totals.group(1) == "2 applied, 0 failed, 1 queued"
    assert re.search(r"<title>[^<]*: 2 applied, 0 failed; 1 queued at", html)
    assert "Activity, last hour" in html and 'hx-get="/admin/stats?span=hour"' in html
    day = admin.get("/admin/?span=day").text
    assert "Activity, last day" in day and 'hx-get="/admin/stats?span=day"' in day
    assert "applied per 20 min" in day
    fragment = admin.get("/admin/stats?span=day", headers={"HX-Request": "true"}).text
    assert fragment.startswith('<section id="stats" hx-get="/admin/stats?span=day"')
    assert fragment.count('<svg class="chart"') == 2
    assert "Activity, last hour" in admin.get("/admin/stats?span=week").text


def test_connectors_sharing_a_display_name_have_charts_told_apart(
    admin_bus: IntegrationBus, admin: httpx.Client
) -> None:
    """Trial 6: a connector subclassing another kept its display name, and the two charts
    were both headed "HR system"."""
    for name in ("HrA", "HrB"):
        connector = DictConnector(name)
        connector.display_name = "HR system"
        admin_bus.register_connector(connector)
    html = admin.get("/admin/").text
    for name in ("HrA", "HrB"):
        card = html[html.index(f'data-testid="chart-{name}"') :]
        assert card.split("</h4>")[0].endswith(f'HR system <code class="hint">{name}</code>')
        assert f"HR system ({name}): activity in the last hour" in html
    # A display name of its own is shown as it is.
    shop = html[html.index('data-testid="chart-Shop"') :].split("</figure>")[0]
    assert "<code" not in shop and ": activity in the last hour" in shop


def test_an_action_on_the_dashboard_keeps_its_span(admin: httpx.Client) -> None:
    page = admin.get("/admin/?span=day").text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert csrf
    headers = {"HX-Request": "true", "HX-Current-URL": "http://testserver/admin/?span=day"}
    r = admin.post(
        "/admin/settings",
        data={"csrf_token": csrf.group(1), "key": "log_external", "value": "off"},
        headers=headers,
    )
    assert r.status_code == 200 and "Activity, last day" in r.text


def test_history_off_shows_a_note_instead_of_charts(
    admin_bus: IntegrationBus, admin: httpx.Client
) -> None:
    admin_bus.settings.history_retention_days = 0
    html = admin.get("/admin/").text
    assert 'data-testid="history-off"' in html and "History is off" in html
    assert '<svg class="chart"' not in html
    charts: Charts = activity(admin_bus, "hour")
    assert not charts.history_on


def test_a_task_finished_after_the_window_was_queued_at_its_end(
    admin_bus: IntegrationBus,
) -> None:
    tell(admin_bus)
    charts = activity(admin_bus, "hour", now=at("11:53:30"))  # 10:54 to 11:54
    shop = charts.of("Shop")
    # old (10:59), b (11:30:59), a (11:52) applied; retried finished at 11:55:20, after the
    # window: not applied in it, but queued at its end with behind and failing.
    assert sum(shop.applied) == 3 and sum(shop.failed) == 4
    assert shop.depth[-1] == 3


def test_settled_buckets_are_kept_and_fresh_ones_counted(admin_bus: IntegrationBus) -> None:
    story = tell(admin_bus)
    activity(admin_bus, "hour", now=NOW)  # keeps 11:01 to 11:58 (ended 2 min ago or more)
    late = ref(admin_bus, 5)  # Refs: logged at 11:59:10, applied at 12:02:40
    set_record(admin_bus, late, "11:59:10", "12:02:40")
    later = activity(admin_bus, "hour", now=at("12:03:30"))  # 11:04 to 12:04
    assert later == activity(admin_bus, "hour", now=at("12:03:30"), keep=False)
    day = activity(admin_bus, "day", now=at("12:03:30"))  # minutes kept by the hour's call
    assert day == activity(admin_bus, "day", now=at("12:03:30"), keep=False)
    assert day.of("Refs").applied[-1] == 1  # 12:00 to 12:20: late, at 12:02:40
    refs = later.of("Refs")
    assert refs.applied[-2:] == [1, 0] and refs.depth[-6:] == [0, 1, 1, 1, 0, 0]
    shop = later.of("Shop")
    assert shop.applied[: 60 - 3] == dense(story.applied)[3:]
    # Kept means not counted again: a record moved into a kept bucket (records never move;
    # this one does to show it) changes the full count only.
    set_record(admin_bus, late, "11:59:10", "11:30:10")
    again = activity(admin_bus, "hour", now=at("12:03:30"))
    assert again.of("Refs").applied[26] == 0
    assert activity(admin_bus, "hour", now=at("12:03:30"), keep=False).of("Refs").applied[26] == 1


class Coalescing(DictConnector):
    coalesce = True


def test_coalesced_tasks_count_as_applied(admin_bus: IntegrationBus) -> None:
    admin_bus.register_connector(Coalescing("Merged"))
    for i in range(5):
        log(admin_bus, user("ann", email=f"ann{i}@x"), connector="Merged")
    result = run(admin_bus, "Merged")
    assert (result.applied, result.coalesced) == (5, 4)
    merged = activity(admin_bus, "hour").of("Merged")
    assert sum(merged.applied) == 5 and merged.depth[-1] == 0
