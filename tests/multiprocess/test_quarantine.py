"""Poison quarantine (CONTRACT §9), with real deaths: a task whose apply never returns (a
trigger that sleeps) is in flight when its `syncbus worker` is SIGKILLed, three times; the
third death is the last: the task becomes ERROR ("quarantined"), no fourth worker runs it,
and the tasks before it are applied exactly once."""

from __future__ import annotations

import signal
from collections import defaultdict

import pytest
import sqlalchemy as sa

from syncbus import IntegrationBus, ProcessType
from tests.helpers import wait_for
from tests.seq import SeqLanesConnector
from tests.workers import Workers, assert_exactly_once_in_order, audit_rows
from tests.workers import wbus as wbus
from tests.workers import workers as workers

pytestmark = [pytest.mark.postgres, pytest.mark.multiprocess, pytest.mark.slow]

POISON = "poison"


def install_poison(engine: sa.Engine) -> None:
    """Audit every write to seq_counter; writing the counter named 'poison' sleeps for good
    (the worker applying it hangs, and is killed)."""
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE seq_audit (id bigserial PRIMARY KEY, name text NOT NULL, n int NOT NULL)"
        )
        conn.exec_driver_sql(
            f"""CREATE FUNCTION seq_audit() RETURNS trigger AS $$
            BEGIN
              IF NEW.counter_name = '{POISON}' THEN PERFORM pg_sleep(600); END IF;
              INSERT INTO seq_audit (name, n) VALUES (NEW.counter_name, NEW.n);
              RETURN NEW;
            END $$ LANGUAGE plpgsql"""
        )
        conn.exec_driver_sql(
            "CREATE TRIGGER seq_audit BEFORE INSERT OR UPDATE ON seq_counter "
            "FOR EACH ROW EXECUTE FUNCTION seq_audit()"
        )


def sleeping(engine: sa.Engine) -> list[int]:
    """The backends asleep in the poison's trigger."""
    with engine.connect() as conn:
        return list(
            conn.execute(
                sa.text(
                    "SELECT pid FROM pg_stat_activity WHERE wait_event = 'PgSleep' "
                    "AND datname = current_database()"
                )
            ).scalars()
        )


def kill_the_one_asleep(engine: sa.Engine, workers: Workers) -> None:
    """SIGKILL the worker whose backend sleeps in the poison, and end that backend (it would
    otherwise sleep on, holding its locks, until it next talks to its dead client)."""
    wait_for(lambda: sleeping(engine), timeout=60)
    proc = workers.procs[-1]
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    with engine.connect() as conn:
        for pid in sleeping(engine):
            conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    # Termination is asynchronous: wait until it is gone, or the next kill would take this
    # backend for the next worker's.
    wait_for(lambda: not sleeping(engine), timeout=30)


def start(workers: Workers) -> None:
    workers.start("--workers", "1", "--scheduler-interval", "0", "--lease-seconds", "2")


def test_the_third_death_quarantines_the_task_and_nothing_is_doubled(
    wbus: IntegrationBus, workers: Workers
) -> None:
    install_poison(wbus.engine)
    expected: dict[str, list[int]] = defaultdict(list)
    ids = []
    for n in range(1, 31):
        key = POISON if n == 15 else f"k{n % 4}"
        ids.append(wbus.process_external_task("Seq0", {"key": key, "n": n}))
        if n < 15:
            expected[key].append(n)
    poison = ids[14]
    for death in range(3):
        start(workers)
        if not death:  # the lease names the process that holds it (host and pid)
            wait_for(lambda: sleeping(wbus.engine), timeout=60)
            with wbus.engine.connect() as conn:
                owner = conn.execute(
                    sa.text("SELECT owner FROM syncbus_lease WHERE run_first_task_id IS NOT NULL")
                ).scalar_one()
            assert f":{workers.procs[-1].pid}:" in owner
        kill_the_one_asleep(wbus.engine, workers)
    start(workers)  # takes over after the third death: quarantines instead of running it
    wait_for(lambda: wbus.get_task(poison).process_type is ProcessType.ERROR, timeout=60)  # type: ignore[union-attr]
    info = wbus.get_task(poison)
    assert info is not None and info.error_message is not None
    assert info.error_message == "quarantined: the worker applying it died 3 times"
    # Trial 5: TaskInfo said `attempts: 0` and nothing else; the deaths are its own count.
    assert (info.deaths, info.attempts) == (3, 0)
    assert not sleeping(wbus.engine), "a fourth worker ran the poison"
    # the tasks before it, applied exactly once and in order; the ones after it wait
    # behind the ERROR task (CONNECTOR ordering: visibly stopped, not crash-looping)
    assert_exactly_once_in_order(audit_rows(wbus.engine), dict(expected))
    assert [t.task_id for t in wbus.list_tasks("Seq0")] == ids[14:]
    events = [e.message for e in wbus.event_log() if e.code == "QUARANTINE"]
    assert events == [f"task {poison} quarantined: the worker applying it died 3 times"]
    died = [e.message for e in wbus.event_log() if e.code == "WORKERDIED"]
    assert len(died) == 3 and all("a runner died" in m for m in died)  # one per death
    assert sum(f"tasks {poison} to {poison} in flight" in m for m in died) == 2  # narrowed
    outputs = workers.stop_all()
    assert workers.procs[-1].returncode == 0, workers.report(outputs)


def test_a_killed_workers_session_ends_by_itself_and_its_batch_is_taken_over(
    wbus: IntegrationBus, workers: Workers
) -> None:
    """Trial 5: SIGKILLed while its statement slept in a trigger, a worker left its session
    running on the server, holding the row locks of its whole batch: the next worker's
    takeover waited on them, no death was counted and 20 other lanes stood still until an
    operator ended the session by hand. The bus's sessions now check every second that their
    client lives (PostgreSQL 14+), so the server ends such a session by itself."""
    install_poison(wbus.engine)
    wbus.register_connector(SeqLanesConnector)
    for n in range(1, 23):
        wbus.process_external_task("SeqLanes", {"key": POISON if n <= 2 else f"k{n}", "n": n})
    start(workers)
    wait_for(lambda: sleeping(wbus.engine), timeout=60)
    (session,) = sleeping(wbus.engine)
    proc = workers.procs[-1]
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    wait_for(lambda: session not in sleeping(wbus.engine), timeout=10)  # no pg_terminate_backend
    start(workers)
    wait_for(lambda: any(e.code == "WORKERDIED" for e in wbus.event_log()), timeout=60)
    with wbus.engine.connect() as conn:
        deaths = conn.execute(sa.text("SELECT max(deaths) FROM syncbus_task")).scalar_one()
    assert deaths == 1
    kill_the_one_asleep(wbus.engine, workers)  # the suspect, applied alone, sleeps again


def test_under_entity_ordering_the_other_lanes_go_on(
    wbus: IntegrationBus, workers: Workers
) -> None:
    """The same three deaths on an ENTITY connector (PostgreSQL: lease-free runs, batches
    recorded in syncbus_inflight): the poison is quarantined, and every other lane, before
    and after it, is applied exactly once and in order."""
    install_poison(wbus.engine)
    wbus.register_connector(SeqLanesConnector)
    expected: dict[str, list[int]] = defaultdict(list)
    poison = None
    for n in range(1, 31):
        key = POISON if n == 15 else f"k{n % 4}"
        task_id = wbus.process_external_task("SeqLanes", {"key": key, "n": n})
        if n == 15:
            poison = task_id
        else:
            expected[key].append(n)
    assert poison is not None
    for _death in range(3):
        start(workers)
        kill_the_one_asleep(wbus.engine, workers)
    start(workers)
    wait_for(lambda: wbus.get_task(poison).process_type is ProcessType.ERROR, timeout=60)  # type: ignore[union-attr]
    wait_for(lambda: [t.task_id for t in wbus.list_tasks("SeqLanes")] == [poison], timeout=60)
    info = wbus.get_task(poison)
    assert info is not None and info.process_type is ProcessType.ERROR
    assert info.error_message == "quarantined: the worker applying it died 3 times"
    assert not sleeping(wbus.engine), "a fourth worker ran the poison"
    assert_exactly_once_in_order(audit_rows(wbus.engine), dict(expected))
    outputs = workers.stop_all()
    assert workers.procs[-1].returncode == 0, workers.report(outputs)


def test_under_entity_ordering_only_the_culprit_is_quarantined_with_runners_sharing(
    wbus: IntegrationBus, workers: Workers
) -> None:
    """From a new user's trial: the poison is the first task, in a batch with tasks of other
    lanes, and each worker runs several runners that share the connector. A task of the dead
    batch must not slip into another runner's batch (and die there with the poison): only the
    poison counts three deaths; every other task is applied exactly once."""
    install_poison(wbus.engine)
    wbus.register_connector(SeqLanesConnector)
    expected: dict[str, list[int]] = defaultdict(list)
    poison = wbus.process_external_task("SeqLanes", {"key": POISON, "n": 1})
    for n in range(2, 13):
        wbus.process_external_task("SeqLanes", {"key": f"k{n % 5}", "n": n})
        expected[f"k{n % 5}"].append(n)
    for _death in range(3):
        workers.start("--workers", "4", "--scheduler-interval", "0", "--lease-seconds", "2")
        kill_the_one_asleep(wbus.engine, workers)
    workers.start("--workers", "4", "--scheduler-interval", "0", "--lease-seconds", "2")
    wait_for(lambda: wbus.get_task(poison).process_type is ProcessType.ERROR, timeout=60)  # type: ignore[union-attr]
    wait_for(lambda: [t.task_id for t in wbus.list_tasks("SeqLanes")] == [poison], timeout=60)
    info = wbus.get_task(poison)
    assert info is not None and info.process_type is ProcessType.ERROR
    assert info.error_message == "quarantined: the worker applying it died 3 times"
    events = [e.message for e in wbus.event_log() if e.code == "QUARANTINE"]
    assert events == [f"task {poison} quarantined: the worker applying it died 3 times"]
    assert_exactly_once_in_order(audit_rows(wbus.engine), dict(expected))
    outputs = workers.stop_all()
    assert workers.procs[-1].returncode == 0, workers.report(outputs)


def test_only_the_culprit_is_quarantined_with_other_connectors_running_beside_it(
    wbus: IntegrationBus, workers: Workers
) -> None:
    """CONNECTOR ordering, four connectors in one worker process: a death counts for every
    batch in flight in it, the other connectors' too; after the first, the dead batches are
    applied one task at a time with nothing else of the process in flight, so the later deaths
    name the poison alone and no other connector's task is quarantined."""
    install_poison(wbus.engine)
    expected: dict[str, list[int]] = defaultdict(list)
    poison = 0
    for n in range(1, 121):
        for c in range(4):
            if c == 0 and n > 10:
                continue  # Seq0: ten tasks, the sixth the poison
            key = POISON if (c, n) == (0, 6) else f"c{c}k{n % 3}"
            task_id = wbus.process_external_task(f"Seq{c}", {"key": key, "n": n})
            if key == POISON:
                poison = task_id
            elif c or n < 6:
                expected[key].append(n)
    for _death in range(3):
        workers.start("--workers", "4", "--scheduler-interval", "0", "--lease-seconds", "2")
        kill_the_one_asleep(wbus.engine, workers)
    workers.start("--workers", "4", "--scheduler-interval", "0", "--lease-seconds", "2")
    wait_for(lambda: wbus.get_task(poison).process_type is ProcessType.ERROR, timeout=60)  # type: ignore[union-attr]
    wait_for(lambda: all(not wbus.list_tasks(f"Seq{c}") for c in (1, 2, 3)), timeout=60)
    events = [e.message for e in wbus.event_log() if e.code == "QUARANTINE"]
    assert events == [f"task {poison} quarantined: the worker applying it died 3 times"]
    assert_exactly_once_in_order(audit_rows(wbus.engine), dict(expected))
    assert wbus.list_tasks("Seq0")[0].task_id == poison  # the rest waits behind it
    outputs = workers.stop_all()
    assert workers.procs[-1].returncode == 0, workers.report(outputs)
