"""A statement that never returns (a trigger that sleeps) fails its own task after
``apply_timeout``, instead of holding its queue, or its batch's lanes, for good (trial 5: a
worker stuck in such a trigger kept renewing its lease, and nothing moved until someone killed
it). PostgreSQL: SQLite has no statement that can wait on anything but its write lock."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from syncbus import IntegrationBus, ProcessType
from tests.seq import SeqLanesConnector, make_bus

pytestmark = pytest.mark.postgres

POISON = "poison"


@pytest.fixture
def tbus(pg_url: str) -> Iterator[IntegrationBus]:
    bus = make_bus(pg_url, apply_timeout=0.5)
    bus.register_connector(SeqLanesConnector)
    with bus.engine.begin() as conn:
        conn.exec_driver_sql(
            f"""CREATE FUNCTION seq_hang() RETURNS trigger AS $$
            BEGIN
              IF NEW.counter_name = '{POISON}' THEN PERFORM pg_sleep(600); END IF;
              RETURN NEW;
            END $$ LANGUAGE plpgsql"""
        )
        conn.exec_driver_sql(
            "CREATE TRIGGER seq_hang BEFORE INSERT OR UPDATE ON seq_counter "
            "FOR EACH ROW EXECUTE FUNCTION seq_hang()"
        )
    yield bus
    bus.close()


def counters(bus: IntegrationBus) -> dict[str, int]:
    with bus.engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT counter_name, n FROM seq_counter"))
        return {str(name): int(n) for name, n in rows}


@pytest.mark.parametrize("connector", ["Seq", "SeqLanes"])
def test_a_statement_that_never_returns_fails_its_task_after_apply_timeout(
    tbus: IntegrationBus, connector: str
) -> None:
    ids = [
        tbus.process_external_task(connector, {"key": key, "n": n})
        for n, key in enumerate(["a", POISON, "b", POISON, "c"], start=1)
    ]
    result = tbus.process_tasks(connector)[connector]
    poison = ids[1]
    info = tbus.get_task(poison)
    assert info is not None and info.process_type is ProcessType.ERROR
    assert info.error_message is not None
    assert info.error_message.startswith(
        "applying the task took longer than apply_timeout (0.5 s), and the database "
        "cancelled its statement"
    ), info.error_message
    assert result.failed == 1 and result.stopped
    if connector == "Seq":  # strict order: the queue stops, visibly, at the task
        assert counters(tbus) == {"a": 1}
        assert [t.task_id for t in tbus.list_tasks(connector)] == ids[1:]
    else:  # ENTITY: only the poison's lane waits behind it
        assert counters(tbus) == {"a": 1, "b": 3, "c": 5}
        assert [t.task_id for t in tbus.list_tasks(connector)] == [ids[1], ids[3]]


def test_a_slow_statement_within_apply_timeout_is_applied(pg_url: str) -> None:
    bus = make_bus(pg_url, apply_timeout=5.0)
    try:
        with bus.engine.begin() as conn:
            conn.exec_driver_sql(
                """CREATE FUNCTION seq_slow() RETURNS trigger AS $$
                BEGIN PERFORM pg_sleep(0.3); RETURN NEW; END $$ LANGUAGE plpgsql"""
            )
            conn.exec_driver_sql(
                "CREATE TRIGGER seq_slow BEFORE INSERT ON seq_counter "
                "FOR EACH ROW EXECUTE FUNCTION seq_slow()"
            )
        bus.process_external_task("Seq", {"key": "a", "n": 1})
        result = bus.process_tasks("Seq")["Seq"]
        assert (result.applied, result.failed) == (1, 0)
        assert counters(bus) == {"a": 1}
    finally:
        bus.close()


@pytest.mark.parametrize("value", [-1, float("inf"), float("nan"), True, "5"])
def test_apply_timeout_must_be_a_finite_number_of_seconds(value: object) -> None:
    with pytest.raises(ValueError, match="apply_timeout must be a finite number"):
        IntegrationBus("sqlite://", apply_timeout=value)  # type: ignore[arg-type]
