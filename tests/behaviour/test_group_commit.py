"""Group commit for logging: concurrent single-task calls share one transaction and one commit,
each answered with its own id or its own error; one bad task never fails its neighbours; the
per-connector id order and idempotency keys hold as for calls one by one. Both databases."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa

from syncbus import IntegrationBus
from syncbus.intake import Intake
from tests.helpers import add_connector, pending, run, user, wait_for


def held_first_group(intake: Intake, waiting: int) -> threading.Event:
    """Make the first group's insert wait until ``waiting`` more callers have queued behind
    it (so the second group holds all of them, whatever the machine's speed); returns the
    event set when the first insert has begun."""
    group = intake.group
    assert group is not None
    original = intake._insert
    began = threading.Event()
    calls = [0]

    def insert(*args: Any) -> Any:
        calls[0] += 1
        if calls[0] == 1:
            began.set()
            wait_for(lambda: len(group._queue) >= waiting, timeout=30)
        return original(*args)

    intake._insert = insert  # type: ignore[method-assign]
    return began


def commits(bus: IntegrationBus) -> list[int]:
    counted = [0]
    sa.event.listen(bus.engine, "commit", lambda _conn: counted.__setitem__(0, counted[0] + 1))
    return counted


def in_threads(calls: list[Callable[[], Any]]) -> list[Any]:
    out: list[Any] = [None] * len(calls)

    def go(i: int) -> None:
        try:
            out[i] = calls[i]()
        except Exception as exc:
            out[i] = exc

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return out


def test_concurrent_calls_share_one_commit_and_each_gets_its_own_id(bus: IntegrationBus) -> None:
    add_connector(bus)
    first_began = held_first_group(bus.intake, waiting=10)
    counted = commits(bus)
    first = threading.Thread(target=lambda: bus.process_external_task("TestConnector", user("u0")))
    first.start()
    assert first_began.wait(30)
    ids = in_threads(
        [
            lambda i=i: bus.process_external_task("TestConnector", user(f"u{i}"), site_name="main")  # type: ignore[misc]
            for i in range(1, 11)
        ]
    )
    first.join(30)
    assert all(isinstance(i, int) for i in ids), ids
    assert len(set(ids)) == 10
    assert counted[0] == 2  # the first call's commit, then one for the ten behind it
    assert len(pending(bus)) == 11
    run(bus)
    assert pending(bus) == []
    assert all(bus.get_object("cms.user", f"u{i}") is not None for i in range(11))


def test_one_bad_task_in_a_group_fails_alone(bus: IntegrationBus) -> None:
    """A task the database refuses at insert time fails its own call; the group falls back
    to one transaction per task, so every neighbour is logged."""
    add_connector(bus)
    intake = bus.intake
    assert intake.group is not None
    original_prepare = intake._prepare

    def prepare(*args: Any) -> Any:
        row = original_prepare(*args)
        if isinstance(row, dict) and row["title"].endswith("'bad'"):
            row = {**row, "task_type": None}  # NOT NULL: refused by the database
        return row

    intake._prepare = prepare  # type: ignore[method-assign]
    first_began = held_first_group(intake, waiting=6)
    first = threading.Thread(target=lambda: bus.process_external_task("TestConnector", user("g0")))
    first.start()
    assert first_began.wait(30)
    names = ["g1", "g2", "bad", "g3", "g4", "g5"]
    out = in_threads(
        [lambda n=n: bus.process_external_task("TestConnector", user(n)) for n in names]  # type: ignore[misc]
    )
    first.join(30)
    bad = out[names.index("bad")]
    assert isinstance(bad, sa.exc.IntegrityError), out
    good = [o for n, o in zip(names, out, strict=True) if n != "bad"]
    assert all(isinstance(o, int) for o in good), out
    assert len(pending(bus)) == 6


def test_ids_follow_the_order_calls_were_answered_in(bus: IntegrationBus) -> None:
    """Sequential callers (each waits for its answer) get ascending ids, and processing
    applies them in that order (the last update wins)."""
    add_connector(bus)
    ids = [
        bus.process_external_task("TestConnector", user("same", email=f"{i}@x")) for i in range(20)
    ]
    assert ids == sorted(ids)
    run(bus)
    row = bus.get_object("cms.user", "same")
    assert row is not None and row["email"] == "19@x"


def test_a_repeated_idempotency_key_in_one_group_logs_one_task(bus: IntegrationBus) -> None:
    add_connector(bus)
    first_began = held_first_group(bus.intake, waiting=8)
    first = threading.Thread(target=lambda: bus.process_external_task("TestConnector", user("k0")))
    first.start()
    assert first_began.wait(30)
    out = in_threads(
        [
            lambda: bus.process_external_task(
                "TestConnector", user("k1"), idempotency_key="order-9"
            )
            for _ in range(8)
        ]
    )
    first.join(30)
    assert len(set(out)) == 1 and isinstance(out[0], int), out
    assert len(pending(bus)) == 2


@pytest.mark.parametrize("threads", [32])
def test_many_threads_many_connectors_nothing_lost(bus: IntegrationBus, threads: int) -> None:
    for c in ("A", "B", "C"):
        add_connector(bus, c)
    per = 15

    def work(t: int) -> list[int]:
        name = "ABC"[t % 3]
        return [
            int(bus.process_external_task(name, user(f"t{t}-{i}")) or 0)  # type: ignore[arg-type]
            for i in range(per)
        ]

    out = in_threads([lambda t=t: work(t) for t in range(threads)])  # type: ignore[misc]
    assert all(isinstance(o, list) for o in out), out
    ids = [i for o in out for i in o]
    assert len(set(ids)) == threads * per and 0 not in ids
    for o in out:  # each caller's own calls ascend
        assert o == sorted(o)
    assert len(pending(bus)) == threads * per
