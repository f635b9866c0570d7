"""A history for the dashboard's charts: tasks processed for real on the admin test bus (Shop
and Refs, ``tests.admin``), then moved in time by SQL on the tables (a test's privilege), so the
last hour and the last day have something to show."""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Sequence

import sqlalchemy as sa

from syncbus import IntegrationBus, ProcessType
from syncbus.intake import TaskRequest
from syncbus.store.tables import history_table, sync_log_table, task_table
from tests.admin import item


def move_record(
    bus: IntegrationBus,
    task_id: int,
    logged: dt.datetime,
    finished: dt.datetime,
    errors: Sequence[dt.datetime] = (),
) -> None:
    """Move a record in time; its error log keeps its entries (as many as processing left:
    checked) and gets the times ``errors``."""
    h = history_table
    with bus.engine.begin() as conn:
        found = conn.execute(sa.select(h.c.errors).where(h.c.task_id == task_id)).scalar()
        entries = json.loads(found) if found else []
        assert len(entries) == len(errors), (task_id, entries)
        moved = [[t.isoformat(), msg] for t, (_, msg) in zip(errors, entries, strict=True)]
        values = {
            "logged_at": logged,
            "finished_at": finished,
            "errors": json.dumps(moved) if moved else None,
        }
        conn.execute(h.update().where(h.c.task_id == task_id).values(values))


def move_queued(
    bus: IntegrationBus, task_id: int, created: dt.datetime, errors: Sequence[dt.datetime] = ()
) -> None:
    """Move a queued task's logging and its sync log's entries (as many as it has) in time."""
    s, t = sync_log_table, task_table
    with bus.engine.begin() as conn:
        conn.execute(t.update().where(t.c.task_id == task_id).values(created_at=created))
        stmt = sa.select(s.c.log_id).where(s.c.task_id == task_id).order_by(s.c.log_id)
        ids = list(conn.execute(stmt).scalars())
        assert len(ids) == len(errors), (task_id, ids)
        for log_id, time in zip(ids, errors, strict=True):
            conn.execute(s.update().where(s.c.log_id == log_id).values(time=time))


def log_one(
    bus: IntegrationBus,
    connector: str,
    name: str,
    ref: int | None = None,
    process_type: ProcessType = ProcessType.DEFAULT,
) -> int:
    request = item(name, ref=ref)
    request = TaskRequest(
        request.external_obj, process_type=process_type, data_type=request.data_type
    )
    [outcome] = bus.log_tasks(connector, [request])
    assert outcome.task_id is not None
    return outcome.task_id


def make_charts_scene(bus: IntegrationBus, now: dt.datetime, tasks: int = 480) -> None:
    """``tasks`` Shop tasks and half as many Refs tasks applied over the last day, busier in
    the last hour and in two bursts, with a backlog (each waited a while) and every 15th
    Shop task dropped on error; then a failing Shop task with two behind it, still queued."""
    rng = random.Random(7)
    for connector, count, drop_every in (("Shop", tasks, 15), ("Refs", tasks // 2, 0)):
        requests = []
        for i in range(count):
            failing = drop_every and i % drop_every == drop_every - 1
            obj = item(f"{connector.lower()} {i}", ref=999 if failing else None).external_obj
            process_type = ProcessType.DELETE_ON_ERROR if failing else ProcessType.DEFAULT
            requests.append(TaskRequest(obj, process_type=process_type))
        ids = [o.task_id for o in bus.log_tasks(connector, requests) if o.task_id is not None]
        bus.process_tasks(connector)
        for i, task_id in enumerate(ids):
            minutes = _when(rng, i)
            finished = now - dt.timedelta(minutes=minutes)
            logged = finished - dt.timedelta(minutes=rng.uniform(0.2, 4 if minutes > 60 else 9))
            failing = bool(drop_every) and i % drop_every == drop_every - 1
            move_record(bus, task_id, logged, finished, [finished] if failing else [])
    stuck = log_one(bus, "Shop", "needs ref 998", ref=998)
    behind = [log_one(bus, "Shop", f"behind {i}") for i in range(2)]
    bus.process_tasks("Shop")
    move_queued(bus, stuck, now - dt.timedelta(minutes=14), [now - dt.timedelta(minutes=13)])
    for i, task_id in enumerate(behind):
        move_queued(bus, task_id, now - dt.timedelta(minutes=10 - 4 * i))


def _when(rng: random.Random, i: int) -> float:
    """Minutes before now a task finished: half in the last hour (a burst 40 minutes ago),
    the rest over the day (a burst around 9 hours ago)."""
    if i % 2 == 0:
        return min(59.9, max(0.1, rng.choice([rng.uniform(0, 60), rng.gauss(40, 4)])))
    return min(1439.0, max(61.0, rng.choice([rng.uniform(60, 1440), rng.gauss(540, 60)])))
