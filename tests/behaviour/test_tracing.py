"""OpenTelemetry tracing (the extra ``otel``), on both databases: the producer's trace context
is kept with the task and processing joins it; batch and task spans say what happened; without
a provider, or without OpenTelemetry at all, nothing changes."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from syncbus import IntegrationBus, TaskDataType, create_app, tracing
from syncbus.intake import TaskRequest
from tests.helpers import CONNECTOR, DictConnector, add_connector, log, membership, run, user
from tests.http_server import asgi_client

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PRODUCER_SPAN = "00f067aa0ba902b7"
HEADER = f"00-{TRACE_ID}-{PRODUCER_SPAN}-01"


@pytest.fixture
def conn(bus: IntegrationBus) -> DictConnector:
    c = add_connector(bus)
    c.knows("cms.user", 1, "alice")
    c.knows("cms.role", 2, "editors", site="main")  # never created: a membership fails
    return c


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on for this test: a provider of its own (OpenTelemetry's global provider can be
    set once per process), whose finished spans the test reads."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.set_tracer_provider(provider)
    yield exporter
    tracing.set_tracer_provider(None)
    provider.shutdown()


@pytest.fixture
def api(bus: IntegrationBus, conn: DictConnector) -> Iterator[httpx.Client]:
    app = create_app(bus, run_dispatcher=False)
    with asgi_client(app) as client:
        yield client


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def stored(bus: IntegrationBus, task_id: int) -> Any:
    with bus.engine.connect() as c:
        return c.execute(
            sa.text("SELECT traceparent FROM syncbus_task WHERE task_id = :t"), {"t": task_id}
        ).scalar_one()


def hex_trace(span: ReadableSpan) -> str:
    return f"{span.context.trace_id:032x}"


def post(api: httpx.Client, obj: Any, **headers: str) -> int:
    r = api.post(
        f"/api/connectors/{CONNECTOR}/tasks",
        json={"object": obj, "site_name": "main", "task_type": "CreateObject"},
        headers=headers,
    )
    assert r.status_code == 201, r.text
    return int(r.json()["task_id"])


def test_http_traceparent_makes_processing_join_the_producers_trace(
    bus: IntegrationBus, api: httpx.Client, spans: InMemorySpanExporter
) -> None:
    task_id = post(api, user("alice"), traceparent=HEADER)
    [logged] = named(spans, "syncbus.log")
    assert hex_trace(logged) == TRACE_ID
    assert logged.parent is not None and f"{logged.parent.span_id:016x}" == PRODUCER_SPAN
    assert logged.kind is SpanKind.PRODUCER
    assert logged.attributes is not None
    assert logged.attributes["syncbus.connector"] == CONNECTOR
    assert logged.attributes["syncbus.task_count"] == 1
    assert list(logged.attributes["syncbus.task_ids"]) == [task_id]  # type: ignore[arg-type]
    # The task keeps the logging span's context: logging and processing sit in one trace.
    assert stored(bus, task_id) == f"00-{TRACE_ID}-{logged.context.span_id:016x}-01"

    assert run(bus).applied == 1
    [task] = named(spans, "syncbus.task")
    assert hex_trace(task) == TRACE_ID
    assert task.parent is not None and task.parent.span_id == logged.context.span_id
    assert task.kind is SpanKind.CONSUMER
    assert task.attributes is not None
    assert task.attributes["syncbus.task.id"] == task_id
    assert task.attributes["syncbus.task.outcome"] == "applied"
    [batch] = named(spans, "syncbus.batch")
    assert [link.context.span_id for link in task.links] == [batch.context.span_id]
    assert [link.context.span_id for link in batch.links] == [logged.context.span_id]


def test_a_batch_call_gives_every_task_the_header(
    bus: IntegrationBus, api: httpx.Client, spans: InMemorySpanExporter
) -> None:
    body = {
        "tasks": [
            {"object": user(n), "site_name": "main", "task_type": "CreateObject"}
            for n in ("a", "b", "c")
        ]
    }
    r = api.post(
        f"/api/connectors/{CONNECTOR}/tasks/batch", json=body, headers={"traceparent": HEADER}
    )
    assert r.status_code == 201, r.text
    ids = r.json()["task_ids"]
    [logged] = named(spans, "syncbus.log")
    assert logged.attributes is not None and logged.attributes["syncbus.task_count"] == 3
    assert {stored(bus, i) for i in ids} == {f"00-{TRACE_ID}-{logged.context.span_id:016x}-01"}
    assert run(bus).applied == 3
    tasks = named(spans, "syncbus.task")
    assert len(tasks) == 3 and {hex_trace(s) for s in tasks} == {TRACE_ID}
    [batch] = named(spans, "syncbus.batch")
    assert batch.attributes is not None
    assert batch.attributes["syncbus.task_count"] == 3
    assert batch.attributes["syncbus.batch.applied"] == 3
    assert batch.attributes["syncbus.batch.failed"] == 0
    assert batch.attributes["syncbus.batch.committed"] is True
    assert len(batch.links) == 1  # the producer's context once, however many tasks share it


def test_python_api_inside_a_user_span_joins_its_trace(
    bus: IntegrationBus, conn: DictConnector, spans: InMemorySpanExporter
) -> None:
    provider = tracing._override
    assert provider is not None
    with provider.get_tracer("app").start_as_current_span("import users") as outer:
        task_id = log(bus, user("bob"))
    [logged] = named(spans, "syncbus.log")
    assert logged.parent is not None and logged.parent.span_id == outer.get_span_context().span_id
    run(bus)
    [task] = named(spans, "syncbus.task")
    assert task.context.trace_id == outer.get_span_context().trace_id
    assert task.attributes is not None and task.attributes["syncbus.task.id"] == task_id


def test_a_task_without_a_producer_context_is_a_child_of_its_batch(
    bus: IntegrationBus, conn: DictConnector, spans: InMemorySpanExporter
) -> None:
    tracing.set_tracer_provider(None)  # logged while nothing traces: no context to keep
    task_id = log(bus, user("carol"))
    assert stored(bus, task_id) is None
    tracing.set_tracer_provider(trace.NoOpTracerProvider())  # configured, but a no-op
    assert tracing._tracer() is None
    spans_provider = TracerProvider()
    spans_provider.add_span_processor(SimpleSpanProcessor(spans))
    tracing.set_tracer_provider(spans_provider)
    run(bus)
    [batch] = named(spans, "syncbus.batch")
    [task] = named(spans, "syncbus.task")
    assert task.parent is not None and task.parent.span_id == batch.context.span_id
    assert batch.links == ()


def test_a_stored_context_that_is_not_well_formed_is_ignored(
    bus: IntegrationBus, conn: DictConnector, spans: InMemorySpanExporter
) -> None:
    task_id = log(bus, user("hank"))
    with bus.engine.begin() as c:  # edited by hand: processing must not mind
        c.execute(
            sa.text("UPDATE syncbus_task SET traceparent = 'garbage' WHERE task_id = :t"),
            {"t": task_id},
        )
    assert run(bus).applied == 1
    [batch] = named(spans, "syncbus.batch")
    [task] = named(spans, "syncbus.task")
    assert task.parent is not None and task.parent.span_id == batch.context.span_id


def test_a_failing_task_has_an_error_status(
    bus: IntegrationBus, conn: DictConnector, spans: InMemorySpanExporter
) -> None:
    good = log(bus, user("dave"))
    bad = log(bus, membership(1, 2), data_type=TaskDataType.SIMPLE_SNAPSHOT)
    result = run(bus)
    assert result.failed == 1 and result.applied == 1
    final = [
        s
        for s in named(spans, "syncbus.batch")
        if s.attributes and s.attributes["syncbus.batch.committed"]
    ]
    [batch] = final
    assert batch.attributes is not None and batch.attributes["syncbus.batch.careful"] is True
    assert batch.attributes["syncbus.batch.failed"] == 1
    by_outcome = {
        (s.attributes["syncbus.task.id"], s.attributes["syncbus.task.outcome"]): s
        for s in named(spans, "syncbus.task")
        if s.attributes is not None
    }
    failed = by_outcome[(bad, "failed")]
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description and "Cannot translate" in failed.status.description
    assert by_outcome[(good, "applied")].status.status_code is StatusCode.UNSET
    # The optimistic pass before it was rolled back: its spans say so, not "applied".
    assert by_outcome[(good, "rolled_back")].status.status_code is StatusCode.UNSET
    assert by_outcome[(bad, "rolled_back")].status.status_code is StatusCode.ERROR


def test_without_a_provider_nothing_is_traced_and_the_header_is_kept_as_sent(
    bus: IntegrationBus, api: httpx.Client
) -> None:
    assert tracing._tracer() is None  # the API alone: a proxy provider that records nothing
    traced = post(api, user("erin"), traceparent=HEADER.upper())
    malformed = post(api, user("frank"), traceparent="00-not-a-trace-context")
    assert stored(bus, traced) == HEADER
    assert stored(bus, malformed) is None
    assert run(bus).applied == 2


def test_without_opentelemetry_processing_still_works(
    bus: IntegrationBus, conn: DictConnector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The extra not installed: ``import opentelemetry`` fails, tracing falls back to no-ops."""
    monkeypatch.setitem(sys.modules, "opentelemetry", None)
    importlib.reload(tracing)
    try:
        assert tracing.otel is None
        task_id = bus.log_tasks(
            CONNECTOR, [TaskRequest(user("gina"), site_name="main", traceparent=HEADER)]
        )[0].task_id
        assert task_id is not None and stored(bus, task_id) == HEADER
        log(bus, membership(1, 2), data_type=TaskDataType.SIMPLE_SNAPSHOT)
        result = run(bus)
        assert (result.applied, result.failed) == (1, 1)
    finally:
        monkeypatch.undo()
        importlib.reload(tracing)
    assert tracing.otel is not None
