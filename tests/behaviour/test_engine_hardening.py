"""Processing outcomes reported as they happened (issue 10, items 6, 11, 15, 18, 19)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import sqlalchemy as sa

from syncbus import (
    IntegrationBus,
    ObjectType,
    Ordering,
    ProcessResult,
    ProcessType,
    TaskDataType,
    TaskType,
)
from syncbus.errors import ConnectorDisabledError, TaskNotFoundError
from tests.helpers import (
    CONNECTOR,
    ROOT,
    DictConnector,
    add_connector,
    ext,
    log,
    membership,
    pending,
    run,
    user,
)

BLOB_TYPE = ObjectType(
    "blob.doc",
    "blob_doc",
    "doc_id",
    code_name_column="doc_name",
    columns={"doc_name": str, "body": "text"},
)


def _failing_membership(bus: IntegrationBus, process_type: ProcessType) -> int:
    conn = add_connector(bus)
    conn.knows("cms.user", 1, "nobody")
    conn.knows("cms.role", 2, "nothing", site="main")
    return log(
        bus, membership(1, 2), data_type=TaskDataType.SIMPLE_SNAPSHOT, process_type=process_type
    )


def test_a_skip_on_error_task_is_not_retried_on_every_run(bus: IntegrationBus) -> None:
    """Item 18, now by back-off (CONTRACT §9): eight runs in a row attempt a failing
    SKIP_ON_ERROR task once and write one entry, not eight."""
    task_id = _failing_membership(bus, ProcessType.SKIP_ON_ERROR)
    results = [run(bus) for _ in range(8)]
    assert [r.failed for r in results] == [1] + [0] * 7
    assert len(bus.task_log(task_id)) == 1
    info = bus.get_task(task_id)
    assert info is not None and info.attempts == 1 and info.next_attempt_at is not None


def test_manual_synchronize_writes_an_entry_for_every_attempt(bus: IntegrationBus) -> None:
    task_id = _failing_membership(bus, ProcessType.SKIP_ON_ERROR)
    for _ in range(3):
        assert bus.synchronize_task(task_id) is False
    assert len(bus.task_log(task_id)) == 3


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (ProcessType.SKIP_ON_ERROR, ProcessType.SKIP_ON_ERROR),
        (ProcessType.DELETE_ON_ERROR, ProcessType.DELETE_ON_ERROR),
        (ProcessType.SKIP_ONCE, ProcessType.SKIP_ONCE),
        (ProcessType.DEFAULT, ProcessType.ERROR),
    ],
)
def test_failed_synchronize_keeps_the_process_type_except_default(
    bus: IntegrationBus, before: ProcessType, after: ProcessType
) -> None:
    """Item 15: a manual retry never turns a harmless task into a blocker."""
    task_id = _failing_membership(bus, before)
    assert bus.synchronize_task(task_id) is False
    info = bus.get_task(task_id)
    assert info is not None and info.process_type is after
    assert info.error_message and "Cannot translate columns" in info.error_message


def test_synchronize_on_a_disabled_connector_is_a_conflict(bus: IntegrationBus) -> None:
    """Item 19: disabled means 409 (ConnectorDisabledError) everywhere, also here."""
    add_connector(bus)
    task_id = log(bus, user("waiting"))
    bus.set_connector_enabled("TestConnector", False)
    with pytest.raises(ConnectorDisabledError, match="disabled"):
        bus.synchronize_task(task_id)
    assert pending(bus) == [task_id]


def test_synchronize_of_a_task_that_just_left_the_queue_says_so(bus: IntegrationBus) -> None:
    """Item 11: the task was applied by a run between the caller's look and its action: not
    found (no longer queued), never a "failed" synchronize."""
    add_connector(bus)
    task_id = log(bus, user("raced"))
    assert bus.get_task(task_id) is not None
    assert run(bus).applied == 1  # the worker wins the race
    with pytest.raises(TaskNotFoundError, match=f"no queued task with id {task_id}"):
        bus.synchronize_task(task_id)
    assert bus.get_object("cms.user", "raced") is not None


def test_batches_are_bounded_by_bytes_as_well_as_by_count(db_url: str) -> None:
    """Item 6: a batch stops growing at ``batch_bytes`` (but always takes one task)."""
    bus = IntegrationBus(db_url, batch_size=200)
    bus.register_object_type(BLOB_TYPE)
    bus.create_schema()
    bus.runner.batch_bytes = 3_000_000
    try:
        add_connector(bus)
        for i in range(10):
            log(bus, ext("blob.doc", doc_name=f"d{i}", body="x" * 1_000_000))
        batches: list[int] = []

        def progress(result: ProcessResult) -> None:
            batches.append(result.applied)

        result = bus.process_tasks("TestConnector", on_progress=progress)["TestConnector"]
        assert result.applied == 10
        sizes = [b - a for a, b in zip([0, *batches], batches, strict=False)]
        assert max(sizes) <= 3 and len(sizes) >= 4, sizes
    finally:
        bus.close()


@pytest.mark.slow
def test_memory_of_a_run_stays_bounded_with_5mb_tasks(db_url: str) -> None:
    """Item 6: 60 tasks of 5 MB (300 MB of payload) are applied by a process whose peak
    resident memory stays under 300 MB (one batch of them all took it past 600 MB)."""
    bus = IntegrationBus(db_url)
    bus.register_object_type(BLOB_TYPE)
    bus.create_schema()
    add_connector(bus)
    body = "y" * (5 * 1024 * 1024)
    for i in range(60):
        log(bus, ext("blob.doc", doc_name=f"d{i}", body=body))
    bus.close()
    script = textwrap.dedent(
        f"""
        from syncbus import IntegrationBus
        bus = IntegrationBus({db_url!r})
        result = bus.process_tasks("TestConnector")["TestConnector"]
        assert result.applied == 60, result
        status = open("/proc/self/status").read().split("\\n")
        print(next(line for line in status if line.startswith("VmHWM")).split()[1])
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    peak_mb = int(out.stdout.strip()) / 1024
    print(f"\npeak RSS applying 60 x 5 MB tasks: {peak_mb:.0f} MB")
    assert peak_mb < 300
    check = IntegrationBus(db_url)
    try:
        with check.engine.connect() as conn:
            count = conn.execute(sa.text("SELECT count(*) FROM blob_doc")).scalar_one()
        assert count == 60
    finally:
        check.close()


def test_each_batch_commits_with_the_next_batch_claimed_on_the_lease(db_url: str) -> None:
    """A CONNECTOR run claims its next batch in the transaction of the batch before (one
    transaction and one commit fewer per batch): once a batch has committed, the lease already
    names the next batch's tasks as in flight (so a runner that dies applying it is known to
    have died there), and after the last batch it names none. A STOP task ends the run with
    nothing claimed."""
    bus = IntegrationBus(db_url, batch_size=2)
    lease = sa.Table("syncbus_lease", sa.MetaData(), autoload_with=bus.engine)
    seen: list[tuple[int, int | None, int | None]] = []

    class LeaseWatcher:
        def task_applied(self, connector_name: str, task_id: int, manual: bool) -> None:
            with bus.engine.connect() as c:  # what is committed: hooks run after the commit
                first, last = c.execute(
                    sa.select(lease.c.run_first_task_id, lease.c.run_last_task_id)
                ).one()
            seen.append((task_id, first, last))

    try:
        connector = add_connector(bus)
        ids = [log(bus, user(f"u{i}")) for i in range(5)]
        bus.hooks.subscribe(LeaseWatcher())
        assert run(bus).applied == 5
        a, b, c, d, e = ids
        assert seen == [
            (a, c, d),
            (b, c, d),
            (c, e, e),
            (d, e, e),
            (e, None, None),
        ]
        # A failing DEFAULT task stops the queue: its batch claims nothing after it.
        connector.knows("cms.user", 1, "nobody")
        connector.knows("cms.role", 2, "nothing", site="main")
        stuck = log(bus, membership(1, 2), data_type=TaskDataType.SIMPLE_SNAPSHOT)
        behind = log(bus, user("behind"))
        seen.clear()
        result = run(bus)
        assert result.stopped and result.applied == 0
        with bus.engine.connect() as conn:
            first, last = conn.execute(
                sa.select(lease.c.run_first_task_id, lease.c.run_last_task_id)
            ).one()
        assert (first, last) == (None, None)
        assert pending(bus) == [stuck, behind]
    finally:
        bus.close()


def test_a_queue_stopped_at_an_error_task_puts_nothing_in_flight(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new user's trial: every wake-up of a queue stopped at an ``Error`` task claimed the
    tasks behind it as in flight, so workers killed meanwhile counted deaths for tasks that
    could not run, until they were quarantined without ever being tried. A batch that starts
    at an ``Error`` task is now that task alone, and nothing is in flight while it stops the
    run; a batch with work in it is in flight as before."""
    from syncbus.engine import Processor

    bus = IntegrationBus(db_url, batch_size=10)
    lease = sa.Table("syncbus_lease", sa.MetaData(), autoload_with=bus.engine)
    seen: list[tuple[int | None, int | None]] = []
    original = Processor._apply_batch_tx

    def watching(self: Processor, run_: object, scope: object) -> object:
        with bus.engine.connect() as c:  # the claim committed before the batch began
            first, last = c.execute(
                sa.select(lease.c.run_first_task_id, lease.c.run_last_task_id)
            ).one()
        seen.append((first, last))
        return original(self, run_, scope)  # type: ignore[arg-type]

    monkeypatch.setattr(Processor, "_apply_batch_tx", watching)
    try:
        add_connector(bus)
        done = log(bus, user("a"))
        stop = log(bus, user("e"), process_type=ProcessType.ERROR)
        behind = [log(bus, user(f"b{i}")) for i in range(3)]
        first = run(bus)
        assert first.applied == 1 and first.stopped
        assert seen == [(done, behind[-1])]
        seen.clear()
        for _ in range(3):  # each wake-up of the stopped queue (a 429 wakes the workers)
            again = run(bus)
            assert again.stopped and again.applied == 0
            assert again.error is not None and "process type Error" in again.error
        assert seen == [(None, None)] * 3
        assert pending(bus) == [stop, *behind]
        assert bus.synchronize_task(stop) is True  # the operator's fix: the rest runs
        assert run(bus).applied == 3 and pending(bus) == []
    finally:
        bus.close()


POST_GUID = "0b6f7d3e-52a1-4c55-9b0e-2f3f6a1c9d42"


def _post(subject: str) -> dict[str, object]:
    return {"type": "forums.forumpost", "data": {"post_guid": POST_GUID, "post_subject": subject}}


def _forum(*children: dict[str, object]) -> dict[str, object]:
    return {"type": "forums.forum", "data": {"forum_name": "news"}, "children": list(children)}


@pytest.mark.parametrize("ordering", [Ordering.CONNECTOR, Ordering.ENTITY])
def test_a_snapshot_s_children_are_known_to_the_later_tasks_of_its_batch(
    bus: IntegrationBus, ordering: Ordering
) -> None:
    """A forum's SNAPSHOT created its child post, and a later task of the same batch that
    updated the post on its own failed on the post's unique GUID: the batch's targets,
    looked up before it, still said "no such post" (in two batches it passed). And a task
    that updated the post after a snapshot of its batch had changed it recorded the old
    value looked up before the batch, not the one the snapshot wrote."""

    class Ordered(DictConnector):
        pass

    Ordered.ordering = ordering
    bus.register_connector(Ordered(CONNECTOR))
    snap, update = TaskDataType.SNAPSHOT, TaskType.UPDATE_OBJECT
    log(bus, _forum(_post("a")), data_type=snap)
    edit = log(bus, _post("b"), update)
    log(bus, _forum(_post("c")), data_type=snap)
    result = run(bus)
    assert (result.applied, result.failed) == (3, 0), result.error
    post = bus.get_object("forums.forumpost", POST_GUID)
    assert post is not None and post["post_subject"] == "c"
    record = bus.task_history(edit)
    assert record is not None and record.changes == {"post_subject": ["a", "b"]}
    log(bus, _forum(_post("d")), update, data_type=snap)
    after = log(bus, _post("e"), update)
    assert run(bus).applied == 2
    record = bus.task_history(after)
    assert record is not None and record.changes == {"post_subject": ["d", "e"]}


# -- a run's own bookkeeping failing ------------------------------------------------------------
def _fails_once(monkeypatch: pytest.MonkeyPatch, module: object, name: str) -> list[int]:
    """Make ``module.name`` raise a database error on its first call only; the calls made."""
    real = getattr(module, name)
    calls: list[int] = []

    def flaky(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 1:
            raise sa.exc.OperationalError("SELECT", {}, Exception("connection lost"))
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, flaky)
    return calls


def test_a_run_whose_first_claim_fails_takes_the_lease_alone_and_drains(
    bus: IntegrationBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first batch is claimed in the lease's transaction; should that claim fail, the
    lease is taken alone and the drain claims as before (not "processed by another runner")."""
    from syncbus.store import tasks

    add_connector(bus)
    ids = [log(bus, user(name)) for name in ("ann", "bob")]
    calls = _fails_once(monkeypatch, tasks, "next_ids")
    result = run(bus)
    assert len(calls) >= 2  # the failed early claim, then the drain's own
    assert not result.busy and result.not_run_reason is None, result
    assert result.applied == len(ids) and pending(bus) == []


def test_a_failed_read_of_the_next_attempt_still_releases_the_lease(
    bus: IntegrationBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    from syncbus.store import tasks

    add_connector(bus)
    log(bus, user("ann"))
    calls = _fails_once(monkeypatch, tasks, "next_attempt")
    assert run(bus).applied == 1
    assert len(calls) == 2  # read with the release, failed; read again on its own
    with bus.engine.connect() as c:
        owner = c.execute(sa.text("SELECT owner FROM syncbus_lease")).scalar_one()
    assert owner is None  # released: the next run need not wait for it to expire
    log(bus, user("bob"))
    assert run(bus).applied == 1
