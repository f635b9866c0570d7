"""The bench as a smoke test: its phases run, its correctness gates run and pass, its JSON holds
what the report promises, and a wrong result is caught. No timing is asserted."""

from __future__ import annotations

import io
import itertools
import json
import os
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from rich.console import Console
from rich.progress import Progress
from sqlalchemy.engine import make_url

from syncbus.bench import PROFILES, BenchGateError, BenchHooks, Workload, run_bench
from syncbus.bench.environment import open_scratch
from syncbus.bench.gate import compare
from syncbus.bench.http import THREAD_NAME, log_concurrent, serve, serve_app
from syncbus.bench.prepare import prepare_bus
from syncbus.bench.reference import ReferenceModel
from syncbus.bench.runner import HISTORY_OFF, HTTP_CLIENTS, HTTP_PATHS, BenchRun
from syncbus.bench.workload import CONNECTOR_NAME
from syncbus.errors import ConfigurationError

PG_URL = os.environ.get("SYNCBUS_TEST_POSTGRES_URL")
RESULT_KEYS = {
    "backend",
    "path",
    "tasks",
    "seconds",
    "tasks_per_s",
    "baseline",
    "ratio",
    "peak_rss_mb",
}
TOP_KEYS = {
    "profile",
    "backend",
    "workload_version",
    "batch_size",
    "machine",
    "durability",
    "results",
    "latency",
    "gates",
    "skipped",
    "headline",
    "summary",
}


def _console() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=200, force_terminal=False), out


def _check_http_rows(data: dict[str, Any]) -> None:
    """The HTTP logging paths ran, were gated, and sit beside the other logging rows."""
    rows = {r["path"]: r for r in data["results"]}
    order = [r["path"] for r in data["results"]]
    http_tasks = PROFILES["smoke"].http_tasks
    at = order.index("raw-insert-many") + 1
    assert tuple(order[at : at + 3]) == HTTP_PATHS
    baselines = ("raw-insert-single", "raw-insert-single", "raw-insert-many")
    for path, baseline in zip(HTTP_PATHS, baselines, strict=True):
        row = rows[path]
        assert row["tasks"] == http_tasks and row["kind"] == "syncbus"
        assert row["tasks_per_s"] > 0 and row["baseline"] == baseline
        expected = row["tasks_per_s"] / rows[baseline]["tasks_per_s"]
        # The report rounds ratios to 3 decimals: allow that much besides 1 %.
        assert row["ratio"] == pytest.approx(expected, rel=0.01, abs=0.0005)
        # The app ran on the bench bus's engine: its statements were counted (a batch is a
        # few statements for 200 tasks, so per task it is well below one).
        assert row["statements_per_task"] > 0
        passed = {g["gate"] for g in data["gates"] if g["phase"] == path}
        assert passed == {"log", "cleanup"}
    assert data["headline"]["log-http-single/raw-insert"] == pytest.approx(
        rows["log-http-single"]["ratio"], abs=0.002
    )
    assert data["headline"]["log-http-concurrent/raw-insert"] == pytest.approx(
        rows["log-http-concurrent"]["ratio"], abs=0.002
    )
    # The load generator was a process of its own: its CPU is in the note.
    note = rows["log-http-concurrent"]["note"]
    assert f"{HTTP_CLIENTS} clients in a process of their own" in note
    assert "ms of CPU a request" in note
    gate = next(g for g in data["gates"] if g["phase"] == "log-http-concurrent")
    assert f"sent={http_tasks} created={http_tasks} queued={http_tasks}" in gate["detail"]
    assert data["headline"]["log-http-batch/raw-insert-many"] == pytest.approx(
        rows["log-http-batch"]["ratio"], abs=0.002
    )
    assert not {s["path"] for s in data["skipped"]} & set(HTTP_PATHS)


def _check_run(json_path: Path, printed: str, backend: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(json_path.read_text())
    assert set(data) >= TOP_KEYS
    assert data["backend"] == backend
    assert data["profile"] == "smoke"
    assert "timings" not in data  # the latency and admin-scale profiles' table only
    paths = {r["path"] for r in data["results"]}
    assert {"log-api", "raw-insert-single", "raw-insert-many", "process", "raw-sql-floor"} <= paths
    assert "end-to-end" in paths
    for row in data["results"]:
        assert set(row) >= RESULT_KEYS
        assert row["tasks"] > 0 and row["seconds"] > 0
    _check_http_rows(data)
    gates = Counter((g["gate"], g["phase"]) for g in data["gates"])
    for phase in ("process", "raw-sql-floor", "end-to-end", HISTORY_OFF):
        assert gates[("content", phase)] == 1
        assert gates[("counts", phase)] == 1
    # History on (process): one applied record per task; off: none.
    assert gates[("history", "process")] == 1 and gates[("history", HISTORY_OFF)] == 1
    rows = {r["path"]: r for r in data["results"]}
    history = rows["process"]["tasks_per_s"] / rows[HISTORY_OFF]["tasks_per_s"]
    assert data["headline"]["process/history-off"] == pytest.approx(history, abs=0.002)
    assert data["machine"]["cpu_count"] and data["machine"]["sqlite"]
    assert set(data["latency"]) >= {"p50_ms", "p95_ms", "p99_ms"}
    assert data["headline"]["process/raw-floor"] is not None
    assert data["headline"]["log/raw-insert"] is not None
    last = [line for line in printed.splitlines() if line.strip()][-1]
    assert last == data["summary"]
    assert last.startswith("process/raw-floor=") and "syncbus/huey=" in last
    assert f"history-on/off={data['headline']['process/history-off']:.2f}" in last
    assert "History cost: process with history on" in printed
    return data


@pytest.mark.slow
def test_smoke_profile_on_sqlite(tmp_path: Path) -> None:
    console, out = _console()
    json_path = tmp_path / "bench.json"
    report = run_bench("smoke", None, str(json_path), console)
    data = _check_run(json_path, out.getvalue(), "sqlite")
    assert data["durability"] == {"journal_mode": "wal", "synchronous": "FULL"}
    assert report.gates and all(g["gate"] for g in report.gates)
    peers = {s["path"]: s["reason"] for s in data["skipped"]}
    assert "procrastinate" in peers  # PostgreSQL only
    if data["headline"]["syncbus/huey"] is None:
        assert "not installed" in peers["huey"]
    else:
        assert ("content", "huey") in {(g["gate"], g["phase"]) for g in data["gates"]}


@pytest.fixture
def own_pg_database() -> Iterator[str]:
    """A database of this test's own on the test server, dropped afterwards."""
    if not PG_URL:
        pytest.skip("SYNCBUS_TEST_POSTGRES_URL is not set")
    url = make_url(PG_URL).set(drivername="postgresql+psycopg")
    name = f"syncbus_benchtest_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.mark.slow
@pytest.mark.postgres
def test_smoke_profile_on_postgres(tmp_path: Path, own_pg_database: str) -> None:
    console, out = _console()
    json_path = tmp_path / "bench.json"
    run_bench("smoke", own_pg_database, str(json_path), console)
    data = _check_run(json_path, out.getvalue(), "postgresql")
    assert data["machine"]["postgresql"]
    assert {"synchronous_commit", "fsync"} <= set(data["durability"])
    # The bench ran in a scratch database of its own, and dropped it.
    admin = sa.create_engine(own_pg_database)
    with admin.connect() as conn:
        left = conn.execute(
            sa.text("SELECT count(*) FROM pg_database WHERE datname = :n"), {"n": data["database"]}
        ).scalar_one()
        tables = conn.execute(
            sa.text("SELECT count(*) FROM information_schema.tables WHERE table_schema='public'")
        ).scalar_one()
    admin.dispose()
    assert left == 0
    assert tables == 0  # the database the URL names was never written to


def _corrupt_one_post(phase: str, engine: sa.Engine) -> None:
    if phase != "process":
        return
    with engine.begin() as conn:
        post_id = conn.execute(sa.text("SELECT min(post_id) FROM forums_forumpost")).scalar_one()
        conn.execute(
            sa.text("UPDATE forums_forumpost SET post_subject = 'tampered' WHERE post_id = :i"),
            {"i": post_id},
        )


@pytest.mark.slow
def test_gate_catches_a_wrong_result(tmp_path: Path) -> None:
    console, out = _console()
    json_path = tmp_path / "bench.json"
    with pytest.raises(BenchGateError) as caught:
        run_bench(
            "smoke", None, str(json_path), console, hooks=BenchHooks(before_gate=_corrupt_one_post)
        )
    assert caught.value.gate == "content"
    assert caught.value.phase == "process"
    assert "forums.forumpost" in str(caught.value) and "tampered" in str(caught.value)
    assert not json_path.exists()  # a failed run reports no figures
    assert "process/raw-floor=" not in out.getvalue()


def _lose_one_record(phase: str, engine: sa.Engine) -> None:
    if phase != "process":
        return
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "DELETE FROM syncbus_history WHERE task_id = "
                "(SELECT max(task_id) FROM syncbus_history)"
            )
        )


@pytest.mark.slow
def test_history_gate_catches_a_missing_record(tmp_path: Path) -> None:
    console, _ = _console()
    with pytest.raises(BenchGateError) as caught:
        run_bench("smoke", None, None, console, hooks=BenchHooks(before_gate=_lose_one_record))
    assert caught.value.gate == "history" and caught.value.phase == "process"
    n = PROFILES["smoke"].tasks
    assert f"{n - 1} records ({n - 1} applied) of {n} applied tasks" in str(caught.value)


def _http_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == THREAD_NAME]


@pytest.mark.slow
def test_http_gate_catches_a_refused_request() -> None:
    """A request the service refuses (here: the connector is disabled, 409) fails the HTTP
    phase's gate, and the server is stopped all the same."""
    console, _ = _console()
    scratch = open_scratch(None)
    try:
        with Progress(console=console) as progress:
            run = BenchRun(PROFILES["smoke"], scratch, progress, 200, BenchHooks())
            try:
                prepare_bus(run.bus, run.workload, run.gates)
                run.bus.set_connector_enabled(CONNECTOR_NAME, False)
                with pytest.raises(BenchGateError) as caught:
                    run.http_paths()
            finally:
                run.bus.close()
    finally:
        scratch.drop()
    assert caught.value.gate == "log"
    assert caught.value.phase == "log-http-single"
    assert "task 0: HTTP 409" in caught.value.detail and "disabled" in caught.value.detail
    assert run.report.row("log-http-single") is None
    assert _http_threads() == []


@pytest.mark.slow
def test_concurrent_http_gate_catches_a_refused_request() -> None:
    """log-http-concurrent: a request the service refuses fails the gate with its answer."""
    console, _ = _console()
    scratch = open_scratch(None)
    try:
        with Progress(console=console) as progress:
            run = BenchRun(PROFILES["smoke"], scratch, progress, 200, BenchHooks())
            try:
                prepare_bus(run.bus, run.workload, run.gates)
                run.bus.set_connector_enabled(CONNECTOR_NAME, False)
                with serve(run.bus) as client, pytest.raises(BenchGateError) as caught:
                    log_concurrent(
                        client, CONNECTOR_NAME, run.workload.tasks(40), 8, "phase", _no_progress
                    )
            finally:
                run.bus.close()
    finally:
        scratch.drop()
    assert caught.value.gate == "log" and caught.value.phase == "phase"
    assert ": HTTP 409" in caught.value.detail and "disabled" in caught.value.detail
    assert _http_threads() == []


def _no_progress(_done: int) -> None:
    pass


def test_concurrent_http_gate_catches_an_id_given_twice() -> None:
    """Ids need not increase across concurrent clients, but each task must get its own: a
    server that answers 201 with an id it gave before fails the gate."""
    counter = itertools.count()
    app = FastAPI()

    @app.post("/api/connectors/{name}/tasks", status_code=201)
    def log_task(name: str) -> dict[str, int]:
        n = next(counter)
        return {"task_id": n if n != 30 else 3}

    headers = {"Authorization": "Bearer t"}
    tasks = Workload(PROFILES["smoke"]).tasks(40)
    with serve_app(app, headers) as client, pytest.raises(BenchGateError) as caught:
        log_concurrent(client, CONNECTOR_NAME, tasks, 8, "phase", _no_progress)
    assert caught.value.detail == "1 of 40 answers repeat an id given before"
    assert _http_threads() == []


def test_workload_is_fixed_and_mixed() -> None:
    workload = Workload(PROFILES["quick"])
    first = [(t.task_type, t.obj) for t in workload.tasks(2_000)]
    again = [(t.task_type, t.obj) for t in Workload(PROFILES["quick"]).tasks(2_000)]
    assert first == again
    ops = Counter(
        t.task_type.value.removesuffix("Object").removesuffix("Document") for t in workload.tasks()
    )
    total = sum(ops.values())
    assert abs(ops["Create"] / total - 0.15) < 0.02
    assert abs(ops["Update"] / total - 0.80) < 0.02
    assert abs(ops["Delete"] / total - 0.05) < 0.02
    sizes = [len(json.dumps(obj)) for _, obj in first]
    assert min(sizes) >= 300 and max(sizes) <= 550


def test_reference_model_depends_on_order() -> None:
    """Swapping two operations on one key changes the expected content: the content gate
    detects tasks applied out of order."""
    workload = Workload(PROFILES["smoke"])
    tasks = list(workload.tasks())
    expected = ReferenceModel.of(workload)
    by_key: dict[tuple[str, int], list[int]] = {}
    for i, t in enumerate(tasks):
        by_key.setdefault((t.kind, t.key), []).append(i)
    i, j = next(v[-2:] for (kind, _), v in by_key.items() if kind == "post" and len(v) >= 2)
    tasks[i], tasks[j] = tasks[j], tasks[i]
    model = ReferenceModel(workload)
    for t in tasks:
        model.apply(t)
    assert compare(expected, model.content)
    assert not compare(expected, ReferenceModel.of(workload))


@pytest.mark.slow
def test_drain_profile_measures_a_fresh_subprocess(tmp_path: Path) -> None:
    """drain-smoke is drain-1m in small: the queue is drained by a subprocess of its own."""
    console, out = _console()
    json_path = tmp_path / "drain.json"
    run_bench("drain-smoke", None, str(json_path), console)
    data = json.loads(json_path.read_text())
    (row,) = data["results"]
    assert row["path"] == "process (fresh subprocess)" and row["tasks"] == 2_000
    assert row["peak_rss_mb"] > 0 and "RSS when the drain started" in row["note"]
    tenths = row["note"].split("after each tenth of the queue: ")[1].removesuffix(" MB")
    assert len(tenths.split(", ")) == 10 and all(float(mb) > 0 for mb in tenths.split(", "))
    assert ("content", "drain") in {(g["gate"], g["phase"]) for g in data["gates"]}
    last = [line for line in out.getvalue().splitlines() if line.strip()][-1]
    assert last.endswith(f"drain-peak-rss-mb={row['peak_rss_mb']:.0f}")


def _last_line(printed: str) -> str:
    return [line for line in printed.splitlines() if line.strip()][-1]


def _check_latency_run(json_path: Path, printed: str, backend: str) -> None:
    data = json.loads(json_path.read_text())
    assert data["backend"] == backend and data["profile"] == "latency-smoke"
    (timing,) = data["timings"]
    assert timing["label"] == "POST to applied"
    assert timing["runs"] == PROFILES["latency-smoke"].tasks
    assert 0 < timing["min_ms"] <= timing["median_ms"] <= timing["max_ms"]
    gates = {(g["gate"], g["phase"]) for g in data["gates"]}
    assert {("counts", "latency"), ("content", "latency")} <= gates
    last = _last_line(printed)
    assert last == data["summary"]
    assert last.endswith(f"latency-p99-ms={timing['p99_ms']:.1f}")
    assert not json_path.with_suffix(".png").exists()  # no tasks/s chart for times


@pytest.mark.slow
@pytest.mark.multiprocess
def test_latency_profile_times_tasks_through_serve_on_sqlite(tmp_path: Path) -> None:
    """``syncbus serve`` in a subprocess applies each POSTed task; every one is timed and
    gated, and the server is stopped afterwards."""
    console, out = _console()
    json_path = tmp_path / "latency.json"
    run_bench("latency-smoke", None, str(json_path), console)
    _check_latency_run(json_path, out.getvalue(), "sqlite")


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.multiprocess
def test_latency_profile_times_tasks_through_serve_on_postgres(
    tmp_path: Path, own_pg_database: str
) -> None:
    console, out = _console()
    json_path = tmp_path / "latency.json"
    run_bench("latency-smoke", own_pg_database, str(json_path), console)
    _check_latency_run(json_path, out.getvalue(), "postgresql")


@pytest.mark.slow
def test_admin_scale_profile_times_every_page(tmp_path: Path) -> None:
    console, out = _console()
    json_path = tmp_path / "admin.json"
    run_bench("admin-scale-smoke", None, str(json_path), console)
    data = json.loads(json_path.read_text())
    fill, history = data["results"]
    assert fill["path"] == "fill: bus.log_tasks" and fill["tasks"] == 2_500
    assert history["path"] == "fill: history" and history["tasks"] == 2_500
    assert len(data["timings"]) == 10
    assert all(t["runs"] == 1 and t["median_ms"] > 0 for t in data["timings"])
    labels = {t["label"] for t in data["timings"]}
    assert {"tasks, deep page (after=2250)", "dashboard, charts of the last day"} <= labels
    gates = {(g["gate"], g["phase"]) for g in data["gates"]}
    assert gates == {("log", "fill"), ("log", "history"), ("pages", "admin-scale")}
    slowest = max(t["median_ms"] for t in data["timings"])
    last = _last_line(out.getvalue())
    assert last == data["summary"]
    assert last.endswith(f"admin-slowest-page-median-ms={slowest:.1f}")


LANE_PATHS = ("CONNECTOR, 1 worker", "ENTITY, 1 worker", "ENTITY, 2 workers", "ENTITY, 4 workers")


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.multiprocess
def test_lanes_profile_drains_by_1_2_and_4_workers(tmp_path: Path, own_pg_database: str) -> None:
    """lanes-smoke: each drain by `syncbus worker` processes is timed and gated (counts, order
    per entity from the audit trigger, final values); the ratios, the targets and the profile
    of the one-worker drain are in the report."""
    console, out = _console()
    json_path = tmp_path / "lanes.json"
    run_bench("lanes-smoke", own_pg_database, str(json_path), console)
    data = json.loads(json_path.read_text())
    assert data["profile"] == "lanes-smoke" and data["backend"] == "postgresql"
    rows = {r["path"]: r for r in data["results"]}
    assert tuple(rows) == LANE_PATHS
    tasks = PROFILES["lanes-smoke"].tasks
    for row in rows.values():
        assert row["tasks"] == tasks and row["tasks_per_s"] > 0 and row["peak_rss_mb"] > 0
        assert "database sessions active per sample" in row["note"]
        assert "CPU ms per task, workers + database" in row["note"] and "runs " in row["note"]
    one = rows["ENTITY, 1 worker"]
    assert one["baseline"] == "CONNECTOR, 1 worker"
    assert one["ratio"] == pytest.approx(
        one["tasks_per_s"] / rows["CONNECTOR, 1 worker"]["tasks_per_s"], rel=0.01
    )
    for path in ("ENTITY, 2 workers", "ENTITY, 4 workers"):
        assert rows[path]["baseline"] == "ENTITY, 1 worker"
        assert rows[path]["ratio"] == pytest.approx(
            rows[path]["tasks_per_s"] / one["tasks_per_s"], rel=0.01
        )
    head = data["headline"]
    assert head["lanes-2/1"] == pytest.approx(rows["ENTITY, 2 workers"]["ratio"], abs=0.002)
    assert head["lanes-4/1"] == pytest.approx(rows["ENTITY, 4 workers"]["ratio"], abs=0.002)
    assert head["entity-1/connector-1"] == pytest.approx(one["ratio"], abs=0.002)
    targets = {t["target"]: t for t in data["targets"]}
    assert len(targets) == 2
    two = targets["2 workers >= 1.5x one worker (ENTITY)"]
    assert two["measured"] == pytest.approx(head["lanes-2/1"], abs=0.002)
    assert two["met"] == (two["measured"] >= 1.5)
    # Every drain, the profiled one too, passed every gate.
    gates = Counter((g["gate"], g["phase"]) for g in data["gates"])
    for phase in (*LANE_PATHS, "ENTITY, 1 worker (profiled)"):
        for gate in ("counts", "order", "content"):
            assert gates[(gate, phase)] == 1, (gate, phase)
        assert gates[("log", f"{phase}: fill")] == 1
    counts = next(g for g in data["gates"] if g["phase"] == "ENTITY, 4 workers")
    assert f"applied={tasks} failed=0 left queued=0" in counts["detail"]
    prof = data["where_time_goes"]
    assert prof["drain"] == "ENTITY, 1 worker (profiled)" and prof["profiled_seconds"] > 0
    functions = [r["function"] for r in prof["by_cumulative"]]
    assert functions[0].startswith("process_tasks") and len(functions) > 5
    assert any("_apply_batch" in f for f in functions)
    printed = out.getvalue()
    assert "Where the time goes: ENTITY, 1 worker (profiled)" in printed
    assert "2 workers >= 1.5x one worker (ENTITY)" in printed
    last = _last_line(printed)
    assert last == data["summary"] and f"lanes-2/1={head['lanes-2/1']:.2f}" in last


def _swap_two_audited_writes(phase: str, engine: sa.Engine) -> None:
    if phase != "CONNECTOR, 1 worker":
        return
    with engine.begin() as conn:
        a, b = conn.execute(
            sa.text("SELECT id FROM bench_lanes_audit WHERE name = 'e00001' ORDER BY id LIMIT 2")
        ).scalars()
        conn.execute(
            sa.text(
                "UPDATE bench_lanes_audit SET n = CASE id WHEN :a THEN "
                "(SELECT n FROM bench_lanes_audit WHERE id = :b) ELSE "
                "(SELECT n FROM bench_lanes_audit WHERE id = :a) END WHERE id IN (:a, :b)"
            ),
            {"a": a, "b": b},
        )


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.multiprocess
def test_lanes_gate_catches_a_write_out_of_order(tmp_path: Path, own_pg_database: str) -> None:
    console, _ = _console()
    json_path = tmp_path / "lanes.json"
    hooks = BenchHooks(before_gate=_swap_two_audited_writes)
    with pytest.raises(BenchGateError) as caught:
        run_bench("lanes-smoke", own_pg_database, str(json_path), console, hooks=hooks)
    assert caught.value.gate == "order" and caught.value.phase == "CONNECTOR, 1 worker"
    assert "1 entities with lost, doubled or reordered writes (e.g. 'e00001'" in caught.value.detail
    assert not json_path.exists()


def test_lanes_profile_refuses_sqlite(tmp_path: Path) -> None:
    console, _ = _console()
    with pytest.raises(ConfigurationError) as caught:
        run_bench("lanes-smoke", None, str(tmp_path / "lanes.json"), console)
    assert "PostgreSQL only" in str(caught.value)
    assert "SQLite runs one writer at a time" in str(caught.value)
    assert not list(tmp_path.iterdir())
