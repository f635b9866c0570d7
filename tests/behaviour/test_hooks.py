"""One hook list (issue 11): intake and the processor emit, subscribers hear only what
committed, and a failing subscriber disturbs nothing."""

from __future__ import annotations

from typing import Any

import pytest

from syncbus import IntegrationBus, ProcessResult, ProcessType, TaskDataType
from tests.helpers import add_connector, log, membership, user


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def task_logged(self, connector: str, task_id: int) -> None:
        self.events.append(("logged", connector, task_id))

    def task_applied(self, connector: str, task_id: int, manual: bool) -> None:
        self.events.append(("applied", connector, task_id, manual))

    def task_failed(self, connector: str, task_id: int, error: str, manual: bool) -> None:
        self.events.append(("failed", connector, task_id, manual, "Cannot translate" in error))

    def run_finished(self, result: ProcessResult) -> None:
        self.events.append(("run", result.connector_name, result.applied, result.failed))


class Broken:
    def task_logged(self, connector: str, task_id: int) -> None:
        raise RuntimeError("a subscriber's bug")


def test_the_bus_tells_its_subscribers_what_happened(bus: IntegrationBus) -> None:
    conn = add_connector(bus)
    recorder = Recorder()
    bus.hooks.subscribe(Broken())  # first in line: its error must not stop the others
    bus.hooks.subscribe(recorder)
    conn.knows("cms.user", 1, "nobody")
    conn.knows("cms.role", 2, "nothing", site="main")
    a = log(bus, user("a"))
    bad = log(
        bus,
        membership(1, 2),
        data_type=TaskDataType.SIMPLE_SNAPSHOT,
        process_type=ProcessType.SKIP_ON_ERROR,
    )
    b = log(bus, user("b"))
    bus.process_tasks("TestConnector")
    assert bus.synchronize_task(bad) is False

    c = "TestConnector"
    assert recorder.events == [
        ("logged", c, a),
        ("logged", c, bad),
        ("logged", c, b),
        ("applied", c, a, False),
        ("applied", c, b, False),
        ("failed", c, bad, False, True),
        ("run", c, 2, 1),
        ("failed", c, bad, True, True),
    ]


def test_subscribers_never_hear_of_rolled_back_work(
    bus: IntegrationBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_connector(bus)
    recorder = Recorder()
    bus.hooks.subscribe(recorder)
    log(bus, user("a"))

    def lose_lease(*_a: Any, **_k: Any) -> None:
        from syncbus.engine import LeaseLostError

        raise LeaseLostError("the lease was lost before the batch was applied")

    monkeypatch.setattr(bus.runner, "_fence", lose_lease)
    bus.process_tasks("TestConnector")
    assert [e[0] for e in recorder.events] == ["logged", "run"]


def test_a_subscriber_without_hook_methods_is_refused(bus: IntegrationBus) -> None:
    with pytest.raises(TypeError, match="none of the hook methods"):
        bus.hooks.subscribe(object())
