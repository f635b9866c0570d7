"""Backpressure (CONTRACT §9): a connector's queue limit, stored in the database so it binds
every process that logs; logging past it raises QueueFullError (with retry_after) and logs
nothing; a batch is refused whole. On both databases."""

from __future__ import annotations

import pytest

from syncbus import IntegrationBus, ProcessType
from syncbus.errors import ConfigurationError, ConnectorNotFoundError, QueueFullError
from syncbus.intake import TaskRequest
from tests.helpers import CONNECTOR, add_connector, log, run, user


def test_logging_stops_at_the_limit_and_logs_nothing(bus: IntegrationBus) -> None:
    add_connector(bus)
    bus.set_queue_limit(CONNECTOR, 3)
    for n in range(3):
        log(bus, user(f"u{n}"))
    with pytest.raises(QueueFullError) as refused:
        log(bus, user("one too many"))
    assert "has reached its limit of 3 queued tasks" in str(refused.value)
    assert refused.value.retry_after >= 1.0
    # Trial 5: with no run to estimate from, the 2 s said nothing of being a guess.
    assert str(refused.value).endswith(
        "try again in 2 s (a guess: no run of it has drained tasks yet)"
    ), refused.value
    assert bus.queue_size(CONNECTOR) == 3
    assert run(bus).applied == 3  # the queue drains: logging is accepted again
    log(bus, user("now it fits"))
    assert bus.queue_size(CONNECTOR) == 1


def test_a_batch_is_refused_whole_when_it_would_pass_the_limit(bus: IntegrationBus) -> None:
    add_connector(bus)
    bus.set_queue_limit(CONNECTOR, 5)
    log(bus, user("a"))
    log(bus, user("b"))
    log(bus, user("c"))
    too_many = [TaskRequest(user(f"x{n}"), site_name="main") for n in range(3)]
    with pytest.raises(QueueFullError, match="3 more tasks would pass its limit of 5"):
        bus.log_tasks(CONNECTOR, too_many)
    assert bus.queue_size(CONNECTOR) == 3
    bus.log_tasks(CONNECTOR, too_many[:2])  # exactly up to the limit
    assert bus.queue_size(CONNECTOR) == 5


def test_the_limit_binds_every_process_and_can_be_removed(db_url: str) -> None:
    first = IntegrationBus(db_url)
    first.create_schema()
    add_connector(first)
    first.set_queue_limit(CONNECTOR, 1)
    other = IntegrationBus(db_url)
    try:
        [info] = other.list_connectors()
        assert info.queue_limit == 1
        add_connector(other)
        log(other, user("a"))
        with pytest.raises(QueueFullError):
            log(other, user("b"))
        first.set_queue_limit(CONNECTOR, None)
        log(other, user("b"))
        assert other.list_connectors()[0].queue_limit is None
    finally:
        other.close()
        first.close()


def test_retry_after_follows_the_drain_rate(bus: IntegrationBus) -> None:
    add_connector(bus)
    for n in range(40):
        log(bus, user(f"u{n}"))
    assert run(bus).applied == 40  # the last run's rate: 40 tasks in well under a second
    bus.set_queue_limit(CONNECTOR, 2)
    log(bus, user("a"))
    log(bus, user("b"))
    with pytest.raises(QueueFullError) as refused:
        log(bus, user("c"))
    assert refused.value.retry_after == 1.0  # one task over, at a fast rate: the floor
    assert str(refused.value).endswith("try again in 1 s"), refused.value


def test_a_full_queue_stopped_at_its_head_says_so(bus: IntegrationBus) -> None:
    """From a new user's trial: a queue stopped by an Error task will not drain by itself, so
    the refusal says why and asks for a minute, not 2 s for ever."""
    add_connector(bus)
    bus.set_queue_limit(CONNECTOR, 2)
    stopped = log(bus, user("stuck"), process_type=ProcessType.ERROR)
    log(bus, user("behind"))
    with pytest.raises(QueueFullError) as refused:
        log(bus, user("c"))
    assert f"its queue is stopped at task {stopped} (Error)" in str(refused.value)
    assert refused.value.retry_after == 60.0
    bus.delete_task(stopped)
    assert run(bus).applied == 1
    for n in range(2):
        log(bus, user(f"d{n}"))
    with pytest.raises(QueueFullError) as refused:
        log(bus, user("e"))
    assert "stopped" not in str(refused.value) and refused.value.retry_after < 60.0
    bus.settings.process_external = False  # nothing drains it now either (a second trial)
    with pytest.raises(QueueFullError) as refused:
        log(bus, user("e"))
    assert "processing of incoming tasks is switched off" in str(refused.value)
    assert refused.value.retry_after == 60.0


@pytest.mark.parametrize("limit", [0, -1, 1.5, True, "10", 2**31])
def test_a_bad_limit_is_refused_by_name(bus: IntegrationBus, limit: object) -> None:
    add_connector(bus)
    with pytest.raises(ConfigurationError, match="queue limit"):
        bus.set_queue_limit(CONNECTOR, limit)  # type: ignore[arg-type]
    assert bus.list_connectors()[0].queue_limit is None


def test_the_limit_of_an_unknown_connector_is_an_error(bus: IntegrationBus) -> None:
    with pytest.raises(ConnectorNotFoundError):
        bus.set_queue_limit("Nobody", 10)


def test_a_batch_larger_than_the_limit_is_refused_for_good(bus: IntegrationBus) -> None:
    add_connector(bus)
    bus.set_queue_limit(CONNECTOR, 2)
    batch = [TaskRequest(user(f"x{n}"), site_name="main") for n in range(3)]
    with pytest.raises(ConfigurationError, match=r"can never fit .* queue limit of 2"):
        bus.log_tasks(CONNECTOR, batch)
    assert bus.queue_size(CONNECTOR) == 0


def test_queue_full_error_is_importable_from_the_package() -> None:
    import syncbus

    assert syncbus.QueueFullError is QueueFullError
