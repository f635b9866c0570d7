"""Transient database errors while a batch is applied (CONTRACT §9): retried by the bus, never
a task's failure, never an attempt, nothing lost; a run gives up after a bound and says why.
On both databases (a lost connection is transient on each)."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from syncbus import IntegrationBus, ProcessType
from tests.helpers import add_connector, log, pending, run, user


def lost_connection() -> sa.exc.OperationalError:
    return sa.exc.OperationalError(
        "UPDATE ...",
        {},
        ConnectionError("server closed the connection"),
        connection_invalidated=True,
    )


def flaky_apply(bus: IntegrationBus, monkeypatch: pytest.MonkeyPatch, failures: int) -> list[int]:
    """The first ``failures`` applies raise a lost connection; returns the call counter."""
    calls = [0]
    original = bus.runner.applier.apply

    def apply(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] <= failures:
            raise lost_connection()
        return original(*args, **kwargs)

    monkeypatch.setattr(bus.runner.applier, "apply", apply)
    return calls


def test_a_transient_error_is_retried_and_nothing_fails(
    bus: IntegrationBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_connector(bus)
    ids = [log(bus, user(f"u{n}")) for n in range(5)]
    flaky_apply(bus, monkeypatch, failures=2)
    result = run(bus)
    assert (result.applied, result.failed, result.error, result.busy) == (5, 0, None, False)
    assert pending(bus) == []
    assert all(bus.task_log(i) == [] for i in ids)
    assert not [e for e in bus.event_log() if e.code == "PROCESSEXTERNAL"]


def test_a_run_gives_up_after_a_bound_and_says_why(
    bus: IntegrationBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_connector(bus)
    ids = [log(bus, user(f"u{n}")) for n in range(3)]
    bus.runner.transient_retries = 2
    calls = flaky_apply(bus, monkeypatch, failures=10**6)
    result = run(bus)
    assert result.busy and result.applied == 0 and result.failed == 0
    assert result.error and "gave up after 3 transient database errors in a row" in result.error
    assert calls[0] == 3  # one try and two retries, no more
    assert pending(bus) == ids
    for task_id in ids:  # untouched: no error, no attempt, no process type change
        info = bus.get_task(task_id)
        assert info is not None
        assert (info.process_type, info.error_message, info.attempts) == (
            ProcessType.DEFAULT,
            None,
            0,
        )
        assert bus.task_log(task_id) == []
    events = [e.message for e in bus.event_log() if e.code == "PROCESSEXTERNAL"]
    assert len(events) == 1 and "gave up after 3 transient database errors" in events[0]
    monkeypatch.undo()
    assert run(bus).applied == 3  # the next run finds everything as it was
