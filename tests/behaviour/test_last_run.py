"""What the dashboard says of a connector's runs (``readmodel.connector_stats``), on both
databases: the last run that did something, under both orderings, and whether a run is going
on now. Found by a new operator's trial: on PostgreSQL an ENTITY connector always read "last
run: never" and never "running" (its runs take no lease), and an idle worker's empty runs
replaced a CONNECTOR connector's last run with "0 applied" within a second."""

from __future__ import annotations

from syncbus import IntegrationBus, Ordering, ProcessType
from syncbus.readmodel import ConnectorStats, connector_stats
from syncbus.store import inflight, leases
from tests.helpers import DictConnector, add_connector, connector_id, log, run, user

ENTITY = "Lanes"


class EntityConnector(DictConnector):
    ordering = Ordering.ENTITY


def stats(bus: IntegrationBus, name: str) -> ConnectorStats:
    (found,) = [s for s in connector_stats(bus) if s.name == name]
    return found


def test_the_last_run_is_the_last_one_that_did_something(bus: IntegrationBus) -> None:
    add_connector(bus)
    assert stats(bus, "TestConnector").last_run_finished_at is None  # never ran
    for name in ("ada", "bob", "cy"):
        log(bus, user(name))
    assert run(bus).applied == 3
    first = stats(bus, "TestConnector")
    assert (first.last_run_applied, first.last_run_failed, first.last_run_error) == (3, 0, None)
    assert first.last_run_started_at is not None and first.last_run_finished_at is not None
    assert first.last_run_started_at <= first.last_run_finished_at
    assert not first.running
    # An idle worker's runs find nothing to do: the run the operator wants to see stays.
    for _ in range(3):
        assert run(bus).applied == 0
    again = stats(bus, "TestConnector")
    assert again.last_run_applied == 3
    assert again.last_run_finished_at == first.last_run_finished_at
    log(bus, user("dee"))
    assert run(bus).applied == 1
    latest = stats(bus, "TestConnector")
    assert latest.last_run_applied == 1
    assert first.last_run_finished_at is not None and latest.last_run_finished_at is not None
    assert latest.last_run_finished_at >= first.last_run_finished_at


def test_an_entity_connector_shows_its_last_run(bus: IntegrationBus) -> None:
    """On PostgreSQL its runs share the connector lane by lane and take no lease; each still
    says how it went, where the dashboard reads it."""
    bus.register_connector(EntityConnector(ENTITY))
    for name in ("ada", "bob"):
        log(bus, user(name), connector=ENTITY)
    assert run(bus, ENTITY).applied == 2
    shown = stats(bus, ENTITY)
    assert (shown.last_run_applied, shown.last_run_failed) == (2, 0)
    assert shown.last_run_finished_at is not None and not shown.running
    assert run(bus, ENTITY).applied == 0
    assert stats(bus, ENTITY).last_run_applied == 2


def test_running_means_a_live_lease_or_a_live_batch_in_flight(bus: IntegrationBus) -> None:
    add_connector(bus)
    cid = connector_id(bus, "TestConnector")
    with bus.engine.begin() as conn:
        leases.ensure_lease_row(conn, cid)
        assert leases.acquire_lease(conn, cid, "live-runner", 60)
    assert stats(bus, "TestConnector").running
    with bus.engine.begin() as conn:  # its runner died: the lease ran out a minute ago
        leases.release_lease(conn, cid, "live-runner")
        assert leases.acquire_lease(conn, cid, "dead-runner", -60)
    assert not stats(bus, "TestConnector").running
    with bus.engine.begin() as conn:  # a lease-free run's batch in flight
        inflight.record(conn, "lane-runner", cid, [1, 2], 60)
    assert stats(bus, "TestConnector").running
    with bus.engine.begin() as conn:  # ... and a dead one's, past its time
        inflight.clear(conn, "lane-runner")
        inflight.record(conn, "dead-lane-runner", cid, [1, 2], -60)
    assert not stats(bus, "TestConnector").running


def test_a_run_kept_out_by_a_lease_says_whose_and_for_how_long(bus: IntegrationBus) -> None:
    """A new operator's trial: with a SIGKILLed runner's lease still held, `syncbus process`
    said only "being processed by another runner", for 30 s, and not that it would pass."""
    add_connector(bus)
    log(bus, user("ada"))
    cid = connector_id(bus, "TestConnector")
    with bus.engine.begin() as conn:
        leases.ensure_lease_row(conn, cid)
        assert leases.acquire_lease(conn, cid, "worker-7:4242:0123456789ab", 45)
    result = run(bus)
    assert result.applied == 0 and result.busy
    reason = result.not_run_reason or ""
    assert reason.startswith("connector 'TestConnector' is being processed by another runner")
    assert "(worker-7:4242:0123456789ab; its lease runs out in 4" in reason  # 44 or 45 s
    assert "if that runner died, the first run after that takes over" in reason


def test_a_run_that_only_found_its_queue_stopped_does_not_replace_the_last_one(
    bus: IntegrationBus,
) -> None:
    """Trial 6: every run that found the queue stopped at an Error task, and so did nothing,
    replaced the run before it: "0 applied, 0 failed" beside the error, for as long as the
    task stayed."""
    add_connector(bus)
    log(bus, user("ada"))
    log(bus, user("bob"), process_type=ProcessType.ERROR)
    first = run(bus)
    assert first.applied == 1 and first.stopped and first.error
    done = stats(bus, "TestConnector")
    assert (done.last_run_applied, done.last_run_failed) == (1, 0)
    assert done.last_run_error == first.error
    for _ in range(3):
        again = run(bus)
        assert (again.applied, again.failed, again.stopped) == (0, 0, True)
    after = stats(bus, "TestConnector")
    assert after.last_run_applied == 1
    assert after.last_run_finished_at == done.last_run_finished_at
