"""One bad task never stops the tasks behind it (issue 10, item 1, process time).

The values below are written straight into the stored task, past the log-time checks, so
these tests hold the processor's safety net on its own: whatever breaks a step the whole batch
shares (the set-wise prefetch, translation, writing the error) fails the offending task ALONE,
by its process type, with a readable error; the rest of the batch applies; and a run never
reports ``applied`` for work it rolled back.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from syncbus import IntegrationBus, InternalObject, Page, ProcessType, TaskType
from syncbus.payload import Payload, encode
from tests.helpers import add_connector, log, pending, run, user


def _store(bus: IntegrationBus, task_id: int, payload: Payload) -> None:
    with bus.engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE syncbus_task SET data = :data WHERE task_id = :task_id"),
            {"data": encode(payload), "task_id": task_id},
        )


def _huge_fk() -> Payload:
    return Payload(obj=InternalObject("cms.userrole", {"user_id": 10**30, "role_id": 1}))


def _nul_guid_page() -> Payload:
    return Payload(page=Page("cms.folder", "Bad", node_guid="ab\x00cd"))


def _nul_title_article() -> Payload:
    return Payload(page=Page("cms.article", "Bad", fields={"article_title": "evil\x00title"}))


def _nul_user_name() -> Payload:
    return Payload(obj=InternalObject("cms.user", {"user_name": "nul\x00user"}))


BAD = {
    "huge-foreign-key": (_huge_fk, TaskType.CREATE_OBJECT),
    "nul-in-node-guid": (_nul_guid_page, TaskType.CREATE_DOCUMENT),
    "nul-in-article-title": (_nul_title_article, TaskType.CREATE_DOCUMENT),
    "nul-in-code-name": (_nul_user_name, TaskType.CREATE_OBJECT),
}


def _refused(bus: IntegrationBus, case: str) -> bool:
    """Whether processing refuses the value: neither database takes an integer past 64 bits;
    page fields are checked again when applied; SQLite stores a NUL in other text, PostgreSQL
    does not. (Log time refuses all of them on both.)"""
    return case in ("huge-foreign-key", "nul-in-article-title") or (
        bus.engine.dialect.name == "postgresql"
    )


def _log_bad(bus: IntegrationBus, case: str, process_type: ProcessType) -> int:
    make, task_type = BAD[case]
    placeholder: Any = (
        Page("cms.folder", "placeholder")
        if task_type is TaskType.CREATE_DOCUMENT
        else user("placeholder")
    )
    task_id = log(bus, placeholder, task_type, process_type=process_type)
    _store(bus, task_id, make())
    return task_id


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_task_fails_alone_and_the_tasks_behind_it_apply(bus: IntegrationBus, case: str) -> None:
    add_connector(bus)
    first = log(bus, user("before"))
    bad = _log_bad(bus, case, ProcessType.SKIP_ON_ERROR)
    last = log(bus, user("after"))

    result = run(bus)

    assert bus.get_object("cms.user", "before") is not None
    assert bus.get_object("cms.user", "after") is not None, (result, bus.task_log(bad))
    assert first not in pending(bus) and last not in pending(bus)
    if not _refused(bus, case):  # stored as given: the task simply applies
        assert pending(bus) == [] and (result.applied, result.failed) == (3, 0), result
        return
    assert pending(bus) == [bad]
    assert (result.applied, result.failed, result.stopped) == (2, 1, False), result
    entries = bus.task_log(bad)
    assert len(entries) == 1
    assert entries[0].error_message
    assert "\x00" not in entries[0].error_message


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_default_task_becomes_error_visibly_and_stops_only_there(
    bus: IntegrationBus, case: str
) -> None:
    add_connector(bus)
    log(bus, user("before"))
    bad = _log_bad(bus, case, ProcessType.DEFAULT)
    behind = log(bus, user("behind"))

    result = run(bus)

    assert bus.get_object("cms.user", "before") is not None
    if not _refused(bus, case):
        assert pending(bus) == [] and (result.applied, result.failed) == (3, 0), result
        return
    assert (result.applied, result.failed, result.stopped) == (1, 1, True), result
    assert result.error and "\x00" not in result.error
    info = bus.get_task(bad)
    assert info is not None and info.process_type is ProcessType.ERROR
    assert info.error_message and "\x00" not in info.error_message
    assert pending(bus) == [bad, behind]


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_delete_on_error_task_is_dropped_to_the_event_log(
    bus: IntegrationBus, case: str
) -> None:
    add_connector(bus)
    bad = _log_bad(bus, case, ProcessType.DELETE_ON_ERROR)
    log(bus, user("after"))

    result = run(bus)

    assert pending(bus) == []
    assert bus.get_object("cms.user", "after") is not None
    if not _refused(bus, case):
        assert (result.applied, result.failed) == (2, 0), result
        return
    assert (result.applied, result.failed, result.deleted) == (1, 1, 1), result
    assert any(f"task {bad} " in e.message for e in bus.event_log())


@pytest.mark.parametrize("case", sorted(BAD))
def test_synchronize_of_a_bad_task_records_a_readable_error(bus: IntegrationBus, case: str) -> None:
    add_connector(bus)
    bad = _log_bad(bus, case, ProcessType.SKIP_ON_ERROR)
    if not _refused(bus, case):
        assert bus.synchronize_task(bad) is True
        return

    assert bus.synchronize_task(bad) is False

    info = bus.get_task(bad)
    assert info is not None and info.error_message and "\x00" not in info.error_message
    assert info.process_type is ProcessType.SKIP_ON_ERROR


def test_a_batch_that_fails_to_commit_reports_nothing_applied(
    bus: IntegrationBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run never reports ``applied`` for work it rolled back."""
    add_connector(bus)
    for i in range(3):
        log(bus, user(f"u{i}"))
    engine = bus.runner

    def lose_lease(*_a: Any, **_k: Any) -> None:
        from syncbus.engine import LeaseLostError

        raise LeaseLostError("the lease was lost before the batch was applied")

    monkeypatch.setattr(engine, "_fence", lose_lease)

    result = run(bus)

    assert result.applied == 0, result
    assert result.error and "lease" in result.error
    assert len(pending(bus)) == 3
