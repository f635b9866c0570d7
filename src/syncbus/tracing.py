"""OpenTelemetry tracing (the optional extra ``otel``).

Three spans: ``syncbus.log`` around a logging call, ``syncbus.batch`` around a batch
transaction, and ``syncbus.task`` for each task's turn in it. A task keeps the W3C
``traceparent`` of its logging span (or, where nothing is traced, the one its producer sent),
and its ``syncbus.task`` span is that context's child: processing joins the producer's trace.

Spans are made only while a tracer provider is configured (an SDK, say). With the API alone,
or without it, every helper here is a no-op: a batch asks once whether anything records, and
its tasks then cost one function call each (no span, no context switch).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from syncbus.model import ProcessResult

try:
    from opentelemetry import trace as otel
except ImportError:  # the extra is not installed: nothing is traced
    otel = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, SpanContext, Tracer, TracerProvider

__all__ = [
    "BatchTrace",
    "LogTrace",
    "batch",
    "kept_untraced",
    "log_call",
    "recording",
    "set_tracer_provider",
    "traceparent",
]

_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
# A logging call's span names at most this many task ids (a batch may carry thousands).
MAX_IDS = 1000


def traceparent(value: Any) -> str | None:
    """A W3C ``traceparent`` to keep with the task, or None: one that is not well formed is
    ignored, as the W3C recommendation asks (it never fails the logging call)."""
    if not isinstance(value, str):
        return None
    text = value.strip().lower()
    if not _TRACEPARENT.match(text) or text.startswith("ff"):
        return None
    if set(text[3:35]) == {"0"} or set(text[36:52]) == {"0"}:
        return None  # all-zero trace or span ids are invalid
    return text


_override: TracerProvider | None = None
_cached: tuple[Any, Tracer] | None = None


def set_tracer_provider(provider: TracerProvider | None) -> None:
    """Trace with ``provider`` instead of OpenTelemetry's global one (tests, or an application
    that keeps several); None goes back to the global provider."""
    global _override
    _override = provider


def _tracer() -> Tracer | None:
    """The tracer, or None when spans would go nowhere: no OpenTelemetry, or no provider
    configured (the API's proxy and no-op providers record nothing)."""
    global _cached
    if otel is None:
        return None
    provider = _override or otel.get_tracer_provider()
    if isinstance(provider, otel.ProxyTracerProvider | otel.NoOpTracerProvider):
        return None
    cached = _cached
    if cached is None or cached[0] is not provider:
        cached = _cached = (provider, provider.get_tracer("syncbus"))
    return cached[1]


def _format(ctx: SpanContext) -> str | None:
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def _span_context(value: str) -> SpanContext:
    """The remote span context of a valid ``traceparent`` (see ``traceparent``)."""
    assert otel is not None
    return otel.SpanContext(
        trace_id=int(value[3:35], 16),
        span_id=int(value[36:52], 16),
        is_remote=True,
        trace_flags=otel.TraceFlags(int(value[53:55], 16)),
    )


def _current() -> str | None:
    """The current span's context as a ``traceparent``, if there is a valid one."""
    return None if otel is None else _format(otel.get_current_span().get_span_context())


def _error(span: Span, exc: BaseException) -> None:
    assert otel is not None
    span.record_exception(exc)
    span.set_status(otel.Status(otel.StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


# -- logging --------------------------------------------------------------------------------
@dataclass
class LogTrace:
    """A logging call's span (None when nothing records), and the ``traceparent`` each of its
    tasks keeps."""

    span: Span | None
    keep: list[str | None]

    def logged(self, task_ids: Iterable[int | None]) -> None:
        if self.span is not None:
            ids = [i for i in task_ids if i is not None]
            self.span.set_attribute("syncbus.task_ids", ids[:MAX_IDS])


def _parent(common: str | None) -> Context | None:
    """The logging span's parent: the producer's ``traceparent`` (the HTTP header), unless
    the current span already continues that trace (an instrumented server); else the current
    context (None)."""
    assert otel is not None
    if common is None:
        return None
    parent = _span_context(common)
    if otel.get_current_span().get_span_context().trace_id == parent.trace_id:
        return None
    return otel.set_span_in_context(otel.NonRecordingSpan(parent))


def recording() -> bool:
    """Whether spans are recorded now (a tracer provider is configured)."""
    return _tracer() is not None


def kept_untraced(given: Any) -> str | None:
    """The ``traceparent`` a task keeps when it is logged while nothing records: the one its
    producer sent, else the current span's (an instrumented server's), as ``log_call``."""
    return traceparent(given) or _current()


@contextmanager
def log_call(connector: str, given: Sequence[Any]) -> Iterator[LogTrace]:
    """Around a logging call of ``len(given)`` tasks, whose producers sent the
    ``traceparent``s ``given`` (None where they sent none). A task keeps the logging span's
    context where it sent the call's common one or none (so logging and processing share the
    producer's trace), else its own; where nothing records, its own or the current one."""
    own = [traceparent(v) for v in given]
    tracer = _tracer()
    if tracer is None:
        current = _current() if None in own else None
        yield LogTrace(None, [tp or current for tp in own])
        return
    assert otel is not None
    common = own[0] if own and all(tp == own[0] for tp in own) else None
    links = [otel.Link(_span_context(tp)) for tp in dict.fromkeys(own) if tp and tp != common]
    with tracer.start_as_current_span(
        "syncbus.log",
        context=_parent(common),
        kind=otel.SpanKind.PRODUCER,
        links=links,
        attributes={"syncbus.connector": connector, "syncbus.task_count": len(own)},
    ) as span:
        mine = _format(span.get_span_context())
        yield LogTrace(span, [(mine or tp) if tp in (None, common) else tp for tp in own])


# -- processing -----------------------------------------------------------------------------
@dataclass
class _Turn:
    span: Span
    outcome: str = "raised"
    ended_ns: int = 0


@dataclass
class BatchTrace:
    """A batch transaction's span and its tasks' spans. A task's span ends with the batch, so
    that its outcome is the committed one: a batch rolled back leaves ``rolled_back``."""

    tracer: Tracer
    span: Span
    result: ProcessResult  # the transaction's tally
    retried: type[BaseException]  # raised when the batch is to be applied again carefully
    turns: list[_Turn] = field(default_factory=list)
    linked: set[str] = field(default_factory=set)

    def task(self, row: Any, turn: Callable[[], tuple[bool, bool]]) -> tuple[bool, bool]:
        """Take a task's ``turn`` (-> stop?, take out?) in its span, whose parent is the
        context the task kept (the producer's), else this batch."""
        assert otel is not None
        parent, links = None, None
        tp = traceparent(getattr(row, "traceparent", None))  # a row edited by hand: ignored
        if tp is not None:
            producer = _span_context(tp)
            parent = otel.set_span_in_context(otel.NonRecordingSpan(producer))
            links = [otel.Link(self.span.get_span_context())]
            if tp not in self.linked:
                self.linked.add(tp)
                self.span.add_link(producer)
        span = self.tracer.start_span(
            "syncbus.task",
            context=parent,
            kind=otel.SpanKind.CONSUMER,
            links=links,
            attributes={
                "syncbus.connector": self.result.connector_name,
                "syncbus.task.id": int(row.task_id),
                "syncbus.task.type": str(row.task_type),
                "syncbus.task.process_type": str(row.process_type),
            },
        )
        record = _Turn(span)
        self.turns.append(record)
        r = self.result
        before = (r.applied, r.failed, r.skipped, r.waiting)
        try:
            with otel.use_span(span, record_exception=False, set_status_on_exception=False):
                stop, remove = turn()
        except self.retried as exc:  # this task failed the optimistic pass
            _error(span, exc.__cause__ or exc)
            raise
        except BaseException as exc:
            _error(span, exc)
            raise
        finally:
            record.ended_ns = time.time_ns()
        record.outcome = _outcome(before, r, stop)
        if record.outcome == "failed":
            span.set_status(otel.Status(otel.StatusCode.ERROR, r.error))
        return stop, remove

    def end(self, committed: bool) -> None:
        r = self.result
        self.span.set_attributes(
            {
                "syncbus.task_count": len(self.turns),
                "syncbus.batch.applied": r.applied,
                "syncbus.batch.failed": r.failed,
                "syncbus.batch.skipped": r.skipped,
                "syncbus.batch.waiting": r.waiting,
                "syncbus.batch.coalesced": r.coalesced,  # applied inside another's turn
                "syncbus.batch.committed": committed,
            }
        )
        for t in self.turns:
            t.span.set_attribute("syncbus.task.outcome", t.outcome if committed else "rolled_back")
            t.span.end(end_time=t.ended_ns)


def _outcome(before: tuple[int, int, int, int], r: ProcessResult, stop: bool) -> str:
    after = (r.applied, r.failed, r.skipped, r.waiting)
    names = ("applied", "failed", "skipped", "waiting")
    for name, was, now in zip(names, before, after, strict=True):
        if now > was:
            return name
    # Nothing counted: a task that stops (logged as Error), or one still backing off.
    return "stopped" if stop else "backing_off"


@contextmanager
def batch(
    result: ProcessResult, careful: bool, retried: type[BaseException]
) -> Iterator[BatchTrace | None]:
    """Around a batch transaction counted in ``result``: yields the trace its tasks take
    their turns in, or None when nothing records (then the tasks make no span at all).
    ``retried`` is the exception that sends the batch down the careful pass."""
    tracer = _tracer()
    if tracer is None:
        yield None
        return
    assert otel is not None
    with tracer.start_as_current_span(
        "syncbus.batch",
        attributes={"syncbus.connector": result.connector_name, "syncbus.batch.careful": careful},
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        trace = BatchTrace(tracer, span, result, retried)
        try:
            yield trace
        except retried:  # rolled back; applied again carefully, in a batch span of its own
            trace.end(committed=False)
            raise
        except BaseException as exc:
            _error(span, exc)
            trace.end(committed=False)
            raise
        trace.end(committed=True)
