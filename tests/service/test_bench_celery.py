"""The bench's Celery peer on a tiny job count: its rows, its gates, its skip reasons, and that
it stops its worker and removes its Redis keys whatever happens. Needs Celery (the bench extra)
and a Redis server (``SYNCBUS_BENCH_REDIS_URL``, else redis://127.0.0.1:6379/0); skipped
without them."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from rich.console import Console
from rich.progress import Progress

from syncbus.bench import BenchGateError, BenchHooks, floors
from syncbus.bench.environment import Scratch, open_scratch
from syncbus.bench.peers import installed, redis_unreachable
from syncbus.bench.prepare import prepare_bus
from syncbus.bench.runner import BenchRun
from syncbus.bench.workload import Profile

PG_URL = os.environ.get("SYNCBUS_TEST_POSTGRES_URL")
REDIS_URL = os.environ.get("SYNCBUS_BENCH_REDIS_URL") or "redis://127.0.0.1:6379/0"
JOBS = 120
TINY = Profile("celery-tiny", tasks=JOBS, keys=30, e2e_tasks=0, peer_tasks=JOBS)

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]


def _need_celery() -> None:
    if not installed("celery"):
        pytest.skip("celery is not installed (pip install -e '.[bench]')")
    reason = redis_unreachable(REDIS_URL)
    if reason is not None:
        pytest.skip(reason)


def _our_keys() -> list[bytes]:
    """Redis keys of a Celery peer run of this process (their prefix names the pid)."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        return list(client.scan_iter(match=f"syncbus-bench-{os.getpid()}-*"))
    finally:
        client.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def scratch(request: pytest.FixtureRequest) -> Iterator[Scratch]:
    if request.param == "postgres" and not PG_URL:
        pytest.skip("SYNCBUS_TEST_POSTGRES_URL is not set")
    _need_celery()
    made = open_scratch(PG_URL if request.param == "postgres" else None)
    try:
        yield made
    finally:
        made.drop()


def _prepared(scratch: Scratch, hooks: BenchHooks, progress: Progress) -> BenchRun:
    """A run up to the peers: setup, the tiny workload logged, its payloads kept."""
    run = BenchRun(TINY, scratch, progress, 200, hooks)
    prepare_bus(run.bus, run.workload, run.gates)
    floors.create_tables(run.engine)
    run.log_path()
    assert floors.copy_payloads(run.engine) == JOBS
    return run


def _progress() -> Progress:
    return Progress(console=Console(file=io.StringIO(), force_terminal=False))


def test_celery_peer_rows_and_gates(scratch: Scratch) -> None:
    with _progress() as progress:
        run = _prepared(scratch, BenchHooks(), progress)
        try:
            run._peer("celery")
            run.headline()
        finally:
            run.bus.close()
    rep = run.report
    enqueue, work = rep.row("celery enqueue"), rep.row("celery work")
    assert enqueue is not None and work is not None
    for row in (enqueue, work):
        assert row.kind == "peer" and row.tasks == JOBS and row.seconds > 0
    assert enqueue.baseline == "log-api" and enqueue.ratio is not None
    # The headline is the bus against the peer: log-api tasks/s over celery enqueue jobs/s.
    assert rep.headline["syncbus-log/celery-enqueue"] == pytest.approx(1 / enqueue.ratio)
    assert enqueue.note.startswith("broker persistence: ")
    assert "worker boot" in work.note and "not in the time" in work.note
    # No process row in this run: the work ratio has no baseline yet.
    assert rep.headline["syncbus/celery"] is None
    passed = {(g["gate"], g["phase"]) for g in rep.gates}
    assert {("counts", "celery"), ("content", "celery")} <= passed
    assert _our_keys() == []  # the run removed its queue and bookkeeping keys
    assert _our_workers() == []


def _tamper_post(phase: str, engine: sa.Engine) -> None:
    if phase != "celery":
        return
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE forums_forumpost SET post_subject = 'tampered' "
                "WHERE post_id = (SELECT min(post_id) FROM forums_forumpost)"
            )
        )


def test_celery_peer_content_gate_catches_a_wrong_result() -> None:
    _need_celery()
    made = open_scratch(None)
    try:
        with _progress() as progress:
            run = _prepared(made, BenchHooks(before_gate=_tamper_post), progress)
            try:
                with pytest.raises(BenchGateError) as caught:
                    run._peer("celery")
            finally:
                run.bus.close()
    finally:
        made.drop()
    assert caught.value.gate == "content" and caught.value.phase == "celery"
    assert "tampered" in str(caught.value)
    assert run.report.row("celery work") is None
    assert _our_keys() == [] and _our_workers() == []


def _break_last_payload(engine: sa.Engine) -> None:
    """The last job's payload names a type the raw apply code does not know: that job fails."""
    p = floors.payloads
    last = sa.select(sa.func.max(p.c.id)).scalar_subquery()
    bad = '{"object": {"type": "cms.nosuchtype", "data": {}}}'
    with engine.begin() as conn:
        conn.execute(p.update().where(p.c.id == last).values(data=bad))


def test_a_failing_job_stops_the_worker_and_fails_the_phase() -> None:
    _need_celery()
    made = open_scratch(None)
    try:
        with _progress() as progress:
            run = _prepared(made, BenchHooks(), progress)
            _break_last_payload(run.engine)
            try:
                with pytest.raises(RuntimeError, match="a job failed in the Celery worker"):
                    run._peer("celery")
            finally:
                run.bus.close()
    finally:
        made.drop()
    assert _our_keys() == []
    assert _our_workers() == []


def _our_workers() -> list[str]:
    """Living processes (the worker and its pool process) started by this process's peer runs:
    their command line names the run's queue, which names this pid."""
    mark = f"syncbus-bench-{os.getpid()}-".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if mark in cmdline:
                found.append(entry.name)
    return found


def test_celery_peer_skipped_when_redis_is_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    if not installed("celery"):
        pytest.skip("celery is not installed")
    monkeypatch.setenv("SYNCBUS_BENCH_REDIS_URL", "redis://127.0.0.1:1/0")
    made = open_scratch(None)
    try:
        with _progress() as progress:
            run = BenchRun(TINY, made, progress, 200, BenchHooks())
            try:
                reason = run._peer_skipped("celery", ("sqlite", "postgresql"))
                left_out = BenchRun(
                    TINY, made, progress, 200, BenchHooks(skip=frozenset({"peers"}))
                )
                skipped = left_out._peer_skipped("celery", ("sqlite", "postgresql"))
                left_out.bus.close()
            finally:
                run.bus.close()
    finally:
        made.drop()
    assert reason is not None and "Redis at 127.0.0.1:1 is not reachable" in reason
    assert skipped == "left out on request (--skip peers)"
