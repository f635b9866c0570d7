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

from syncbus.bench import PROFILES, BenchGateError, BenchHooks, Workload, floors, run_bench
from syncbus.bench.bursty import HEADLINE as BURSTY_HEADLINE
from syncbus.bench.bursty import OFF as BURSTY_OFF
from syncbus.bench.bursty import ON as BURSTY_ON
from syncbus.bench.environment import open_scratch, reset_content
from syncbus.bench.gate import Gates, compare, read_content
from syncbus.bench.http import THREAD_NAME, log_concurrent, serve, serve_app
from syncbus.bench.load import OFF as LOAD_OFF
from syncbus.bench.load import ON as LOAD_ON
from syncbus.bench.prepare import prepare_bus
from syncbus.bench.prepare import request as bench_request
from syncbus.bench.reference import ReferenceModel
from syncbus.bench.runner import (
    HISTORY_OFF,
    HTTP_CLIENTS,
    HTTP_PATHS,
    RAW_FLOOR,
    SETWISE_FLOOR,
    BenchRun,
)
from syncbus.bench.setwise import SetwiseApplier, setwise_process
from syncbus.bench.workload import CONNECTOR_NAME
from syncbus.bus import IntegrationBus
from syncbus.enums import TaskType
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


def _check_floors(data: dict[str, Any]) -> None:
    """Both processing floors ran; the processing rows are shown against the set-wise one, and
    the headline has the bus against each."""
    rows = {r["path"]: r for r in data["results"]}
    setwise, per_task = rows[SETWISE_FLOOR], rows[RAW_FLOOR]
    assert setwise["kind"] == per_task["kind"] == "baseline"
    assert setwise["tasks"] == per_task["tasks"] == PROFILES["smoke"].tasks
    assert setwise["baseline"] is None and setwise["ratio"] is None
    for path in ("process", HISTORY_OFF, RAW_FLOOR):
        row = rows[path]
        assert row["baseline"] == SETWISE_FLOOR
        expected = row["tasks_per_s"] / setwise["tasks_per_s"]
        assert row["ratio"] == pytest.approx(expected, rel=0.01, abs=0.0005)
    head = data["headline"]
    assert head["process/setwise-floor"] == pytest.approx(rows["process"]["ratio"], abs=0.002)
    per_task_ratio = rows["process"]["tasks_per_s"] / per_task["tasks_per_s"]
    assert head["process/raw-floor"] == pytest.approx(per_task_ratio, rel=0.01, abs=0.0005)
    # Set-wise: a handful of statements per batch of 200, against ~3 per task task by task.
    assert 0 < setwise["statements_per_task"] < 0.25 < 2.5 < per_task["statements_per_task"]
    assert "tasks written: in each batch the last operation per key" in setwise["note"]


def _check_run(json_path: Path, printed: str, backend: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(json_path.read_text())
    assert set(data) >= TOP_KEYS
    assert data["backend"] == backend
    assert data["profile"] == "smoke"
    assert "timings" not in data  # the latency and admin-scale profiles' table only
    paths = {r["path"] for r in data["results"]}
    assert {"log-api", "raw-insert-single", "raw-insert-many", "process", RAW_FLOOR} <= paths
    assert SETWISE_FLOOR in paths
    assert "end-to-end" in paths
    for row in data["results"]:
        assert set(row) >= RESULT_KEYS
        assert row["tasks"] > 0 and row["seconds"] > 0
    _check_http_rows(data)
    gates = Counter((g["gate"], g["phase"]) for g in data["gates"])
    for phase in ("process", RAW_FLOOR, SETWISE_FLOOR, "end-to-end", HISTORY_OFF):
        assert gates[("content", phase)] == 1
        assert gates[("counts", phase)] == 1
    _check_floors(data)
    # History on (process): one applied record per task; off: none.
    assert gates[("history", "process")] == 1 and gates[("history", HISTORY_OFF)] == 1
    rows = {r["path"]: r for r in data["results"]}
    history = rows["process"]["tasks_per_s"] / rows[HISTORY_OFF]["tasks_per_s"]
    assert data["headline"]["process/history-off"] == pytest.approx(history, abs=0.002)
    assert data["machine"]["cpu_count"] and data["machine"]["sqlite"]
    assert set(data["latency"]) >= {"p50_ms", "p95_ms", "p99_ms"}
    assert data["headline"]["log/raw-insert"] is not None
    last = [line for line in printed.splitlines() if line.strip()][-1]
    assert last == data["summary"]
    printed_ratios = dict(part.split("=") for part in last.split())
    assert list(printed_ratios)[:2] == ["process/setwise-floor", "process/raw-floor"]
    for key in ("process/setwise-floor", "process/raw-floor"):  # the JSON rounds to 3 places
        assert float(printed_ratios[key]) == pytest.approx(data["headline"][key], abs=0.0051)
    assert "syncbus/huey" in printed_ratios
    # The JSON rounds to 3 places, the line to 2: 0.8049 prints 0.80 but its JSON 0.805 formats
    # to 0.81, so compare the numbers, as above.
    history_printed = float(printed_ratios["history-on/off"])
    assert history_printed == pytest.approx(data["headline"]["process/history-off"], abs=0.0051)
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


def _corrupt_one_article(phase: str, engine: sa.Engine) -> None:
    if phase != SETWISE_FLOOR:
        return
    with engine.begin() as conn:
        doc = conn.execute(sa.text("SELECT min(document_id) FROM content_article")).scalar_one()
        conn.execute(
            sa.text("UPDATE content_article SET article_title = 'tampered' WHERE document_id = :d"),
            {"d": doc},
        )


@pytest.mark.slow
@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_gate_catches_a_wrong_result_of_the_setwise_floor(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    """The set-wise floor is held to the same content gate as the bus: a page it left wrong
    fails the run, after every earlier phase (the per-task floor too) passed."""
    db = None if backend == "sqlite" else str(request.getfixturevalue("own_pg_database"))
    console, out = _console()
    json_path = tmp_path / "bench.json"
    hooks = BenchHooks(before_gate=_corrupt_one_article, skip=frozenset({"peers", "http"}))
    with pytest.raises(BenchGateError) as caught:
        run_bench("smoke", db, str(json_path), console, hooks=hooks)
    assert caught.value.gate == "content"
    assert caught.value.phase == SETWISE_FLOOR
    assert "cms.article" in str(caught.value) and "tampered" in str(caught.value)
    assert not json_path.exists()
    assert "process/setwise-floor=" not in out.getvalue()


@pytest.mark.parametrize("batch_size", [1, 7, 500])
def test_setwise_floor_leaves_the_reference_content(db_url: str, batch_size: int) -> None:
    """Whatever the batch size (1: every task written; 500: the whole smoke workload in one
    batch, so keys deleted and created again within it), the set-wise floor leaves exactly the
    content the reference model computes, and writes one operation per key and batch."""
    workload = Workload(PROFILES["smoke"])
    bus = IntegrationBus(db_url)
    try:
        gates = Gates(bus.registry)
        prepare_bus(bus, workload, gates)
        tasks = list(workload.tasks())
        bus.log_tasks(CONNECTOR_NAME, [bench_request(t) for t in tasks])
        floors.create_tables(bus.engine)
        assert floors.copy_payloads(bus.engine) == len(tasks)
        reset_content(bus.engine, bus.registry)
        assert floors.fill_queue(bus.engine) == len(tasks)
        applier = SetwiseApplier(bus.engine, bus.registry)
        done: list[int] = []
        _, applied = setwise_process(bus.engine, applier, batch_size, done.append)
        assert applied == len(tasks) and done[-1] == len(tasks)
        assert floors.queued_in_copy(bus.engine) == 0
        assert compare(ReferenceModel.of(workload), read_content(bus.engine, bus.registry)) == []
        keys = [
            {(t.kind, t.key) for t in tasks[i : i + batch_size]}
            for i in range(0, len(tasks), batch_size)
        ]
        assert applier.writes == sum(len(k) for k in keys)
        assert (applier.writes == len(tasks)) == (batch_size == 1)
    finally:
        bus.close()


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


# -- the bursty profiles: coalescing off and on over the same queue ----------------------------
def _check_bursty_run(json_path: Path, printed: str, backend: str) -> dict[str, Any]:
    """Both drains ran over the whole queue, were gated, and the headline is their ratio."""
    data: dict[str, Any] = json.loads(json_path.read_text())
    assert data["backend"] == backend and data["profile"] == "bursty-smoke"
    n = PROFILES["bursty-smoke"].tasks
    off, on = data["results"]
    assert (off["path"], on["path"]) == (BURSTY_OFF, BURSTY_ON)
    assert off["tasks"] == on["tasks"] == n  # logged tasks, with or without coalescing
    assert off["seconds"] > 0 and on["seconds"] > 0
    assert on["baseline"] == BURSTY_OFF and off["baseline"] is None
    ratio = on["tasks_per_s"] / off["tasks_per_s"]
    assert on["ratio"] == pytest.approx(ratio, rel=0.01, abs=0.0005)
    assert data["headline"] == {BURSTY_HEADLINE: pytest.approx(ratio, rel=0.01, abs=0.0005)}
    gates = Counter((g["gate"], g["phase"]) for g in data["gates"])
    for path in (BURSTY_OFF, BURSTY_ON):
        for gate in ("counts", "content", "history", "coalesced"):
            assert gates[(gate, path)] == 1, (gate, path)
    coalesced = {g["phase"]: g["detail"] for g in data["gates"] if g["gate"] == "coalesced"}
    assert coalesced[BURSTY_OFF] == "0 tasks coalesced with it off"
    # 100 bursts of 10: at most 900 tasks can be absorbed; a burst that straddles a batch
    # boundary keeps a write on each side, and a new post's create is never absorbed into the
    # delete that ends its burst. The stream and the batches are fixed: the first batch (200
    # tasks) merges nine in ten, so the next claims ten times as many (read-ahead) and takes
    # the other 800 at once; 900 are absorbed (896 before read-ahead: four bursts straddled).
    assert coalesced[BURSTY_ON] == f"900 of {n} tasks coalesced"
    assert "900 of 1,000 tasks coalesced into another, 100 applied on their own" in on["note"]
    history = {g["phase"]: g["detail"] for g in data["gates"] if g["gate"] == "history"}
    assert "expected {'applied': 100, 'coalesced': 900}" in history[BURSTY_ON]
    assert "expected {'applied': 1000, 'coalesced': 0}" in history[BURSTY_OFF]
    # The counts themselves: per task, rounded to hundredths, both can read 0.12.
    assert off["statements"] > on["statements"] > 0, (off["statements"], on["statements"])
    assert off["statements_per_task"] >= on["statements_per_task"] > 0
    (target,) = data["targets"]
    assert target["target"] == "coalescing on >= 3x off (bursts of 10)"
    assert target["met"] == (ratio >= 3.0)
    last = _last_line(printed)
    assert last == data["summary"]
    # The line prints the headline as computed (checked against the rates above); the
    # rates' own ratio may round the other way at the second decimal (1.855: CI saw 1.85
    # printed for 1.86 recomputed from the JSON's rounded rates).
    assert last.endswith(f"coalesce-on/off={data['headline'][BURSTY_HEADLINE]:.2f}")
    return data


@pytest.mark.slow
def test_bursty_profile_on_sqlite(tmp_path: Path) -> None:
    console, out = _console()
    json_path = tmp_path / "bursty.json"
    run_bench("bursty-smoke", None, str(json_path), console)
    _check_bursty_run(json_path, out.getvalue(), "sqlite")


@pytest.mark.slow
@pytest.mark.postgres
def test_bursty_profile_on_postgres(tmp_path: Path, own_pg_database: str) -> None:
    console, out = _console()
    json_path = tmp_path / "bursty.json"
    run_bench("bursty-smoke", own_pg_database, str(json_path), console)
    data = _check_bursty_run(json_path, out.getvalue(), "postgresql")
    assert data["machine"]["postgresql"]


# -- the load profiles: a first synchronisation, history off and on ---------------------------
def _check_load_run(json_path: Path, printed: str, backend: str) -> dict[str, Any]:
    """Both drains created every object and page of the initial load, were gated, and the
    headline is their ratio; every task of the stream is a create."""
    data: dict[str, Any] = json.loads(json_path.read_text())
    assert data["backend"] == backend and data["profile"] == "load-smoke"
    n = PROFILES["load-smoke"].tasks
    off, on = data["results"]
    assert (off["path"], on["path"]) == (LOAD_OFF, LOAD_ON)
    assert off["tasks"] == on["tasks"] == n and off["seconds"] > 0 and on["seconds"] > 0
    ratio = on["tasks_per_s"] / off["tasks_per_s"]
    assert data["headline"] == {"load/history-off": pytest.approx(ratio, rel=0.01, abs=0.0005)}
    gates = Counter((g["gate"], g["phase"]) for g in data["gates"])
    for path in (LOAD_OFF, LOAD_ON):
        for gate in ("counts", "content", "history"):
            assert gates[(gate, path)] == 1, (gate, path)
    history = {g["phase"]: g["detail"] for g in data["gates"] if g["gate"] == "history"}
    assert history[LOAD_OFF].endswith("0 expected") and history[LOAD_ON].endswith(f"{n} expected")
    stream = list(Workload(PROFILES["load-smoke"]).tasks())
    assert len(stream) == n
    assert {t.task_type for t in stream} == {TaskType.CREATE_OBJECT, TaskType.CREATE_DOCUMENT}
    assert len({(t.kind, t.key) for t in stream}) == n  # each created once
    assert _last_line(printed) == data["summary"]
    return data


@pytest.mark.slow
def test_load_profile_on_sqlite(tmp_path: Path) -> None:
    console, out = _console()
    json_path = tmp_path / "load.json"
    run_bench("load-smoke", None, str(json_path), console)
    _check_load_run(json_path, out.getvalue(), "sqlite")


@pytest.mark.slow
@pytest.mark.postgres
def test_load_profile_on_postgres(tmp_path: Path, own_pg_database: str) -> None:
    console, out = _console()
    json_path = tmp_path / "load.json"
    run_bench("load-smoke", own_pg_database, str(json_path), console)
    _check_load_run(json_path, out.getvalue(), "postgresql")


def _drop_one_post(phase: str, engine: sa.Engine) -> None:
    """Before the load's gate with history on: one created post is gone."""
    if phase != LOAD_ON:
        return
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "DELETE FROM forums_forumpost WHERE post_id = "
                "(SELECT min(post_id) FROM forums_forumpost)"
            )
        )


@pytest.mark.slow
def test_load_gate_catches_a_missing_row(tmp_path: Path) -> None:
    console, _ = _console()
    with pytest.raises(BenchGateError) as caught:
        run_bench("load-smoke", None, None, console, hooks=BenchHooks(before_gate=_drop_one_post))
    assert caught.value.gate == "content" and caught.value.phase == LOAD_ON
    assert "forums.forumpost" in caught.value.detail


def _corrupt_one_user(phase: str, engine: sa.Engine) -> None:
    """After the coalescing drain: one user's e-mail is not what its last save wrote."""
    if phase != BURSTY_ON:
        return
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE cms_user SET email = 'tampered@example.com' "
                "WHERE user_id = (SELECT min(user_id) FROM cms_user)"
            )
        )


@pytest.mark.slow
def test_bursty_gate_catches_a_wrong_result(tmp_path: Path) -> None:
    console, out = _console()
    json_path = tmp_path / "bursty.json"
    with pytest.raises(BenchGateError) as caught:
        run_bench(
            "bursty-smoke",
            None,
            str(json_path),
            console,
            hooks=BenchHooks(before_gate=_corrupt_one_user),
        )
    assert caught.value.gate == "content" and caught.value.phase == BURSTY_ON
    assert "cms.user" in caught.value.detail and "tampered@example.com" in caught.value.detail
    assert not json_path.exists()
    assert "coalesce-on/off=" not in out.getvalue()


def _skip_the_saves(phase: str, engine: sa.Engine) -> None:
    """Before the coalescing drain's gate: every user set back to its setup record, as if the
    drain had applied none of the saves (a carrier that lost its merged values would look so)."""
    if phase != BURSTY_ON:
        return
    with engine.begin() as conn:
        for i in range(Workload(PROFILES["bursty-smoke"]).authors):
            conn.execute(
                sa.text("UPDATE cms_user SET email = :e WHERE user_name = :u"),
                {"e": f"author{i:05d}@example.com", "u": f"author{i:05d}"},
            )


@pytest.mark.slow
def test_bursty_gate_catches_saves_left_unapplied(tmp_path: Path) -> None:
    """The users are reset between the drains: what the first drain wrote does not pass for
    what the second should have."""
    console, _ = _console()
    with pytest.raises(BenchGateError) as caught:
        run_bench(
            "bursty-smoke", None, None, console, hooks=BenchHooks(before_gate=_skip_the_saves)
        )
    assert caught.value.gate == "content" and caught.value.phase == BURSTY_ON
    assert "cms.user: 20 expected, 20 found" in caught.value.detail


def test_bursty_stream_comes_in_bursts() -> None:
    """Every entity's tasks come ``burst`` at a time: a post's consecutively (a create first
    for a new one, a delete last for some), two users' saves interleaved; fixed."""
    profile = PROFILES["bursty"]
    workload = Workload(profile)
    tasks = list(workload.tasks(5_000))
    assert [(t.task_type, t.obj) for t in Workload(profile).tasks(5_000)] == [
        (t.task_type, t.obj) for t in tasks
    ]
    assert len(list(workload.tasks())) == profile.tasks
    i, posts, users, deletes, creates = 0, 0, 0, 0, 0
    while i + 20 <= len(tasks):
        head = tasks[i]
        if head.kind == "post":
            burst = tasks[i : i + 10]
            assert {(t.kind, t.key) for t in burst} == {("post", head.key)}
            kinds = [t.task_type for t in burst]
            assert TaskType.CREATE_OBJECT not in kinds[1:]
            assert TaskType.DELETE_OBJECT not in kinds[:-1]
            creates += kinds[0] == TaskType.CREATE_OBJECT
            deletes += kinds[-1] == TaskType.DELETE_OBJECT
            # An edit names neither the forum nor the author: they do not change.
            assert all("forum_id" not in t.obj for t in burst[1:])
            posts, i = posts + 1, i + 10
            continue
        keys = Counter(t.key for t in tasks[i : i + 20])
        if len(keys) == 1 or tasks[i + 10].kind == "post":  # a lone user burst
            assert {(t.kind, t.key) for t in tasks[i : i + 10]} == {("user", head.key)}
            users, i = users + 1, i + 10
            continue
        assert all(t.kind == "user" for t in tasks[i : i + 20]) and sorted(keys.values()) == [
            10,
            10,
        ]
        users, i = users + 2, i + 20
    assert posts > 100 and users > 150 and creates > 20 and deletes > 20


def test_bursty_reference_model_depends_on_order() -> None:
    """Swapping the last two saves of a user, or the last two edits of a post, changes the
    expected content: the content gate detects a burst applied out of order."""
    workload = Workload(PROFILES["bursty-smoke"])
    expected = ReferenceModel.of(workload)
    tasks = list(workload.tasks())
    by_key: dict[tuple[str, int], list[int]] = {}
    for n, t in enumerate(tasks):
        by_key.setdefault((t.kind, t.key), []).append(n)
    for kind in ("user", "post"):
        i, j = next(
            v[-2:]
            for (k, _), v in by_key.items()
            if k == kind and all(tasks[n].task_type == TaskType.UPDATE_OBJECT for n in v[-2:])
        )
        swapped = list(tasks)
        swapped[i], swapped[j] = swapped[j], swapped[i]
        model = ReferenceModel(workload)
        for t in swapped:
            model.apply(t)
        assert compare(expected, model.content), kind
