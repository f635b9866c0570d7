"""What every bench run does before its timed phases, and small shared helpers."""

from __future__ import annotations

import resource
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from itertools import islice
from typing import Protocol, TypeVar

from syncbus.bench.connector import BenchConnector
from syncbus.bench.gate import BeforeGate, Gates
from syncbus.bench.workload import CONNECTOR_NAME, BenchTask, Workload
from syncbus.bus import IntegrationBus
from syncbus.intake import TaskRequest

T = TypeVar("T")


class PhaseWrapper(Protocol):
    def __call__(self, phase: str) -> AbstractContextManager[object]: ...


@dataclass
class BenchHooks:
    """Optional hooks: ``before_gate(phase, engine)`` runs right before each content gate (tests
    use it to corrupt a row); ``wrap_phase(phase)`` wraps each timed phase (e.g. a profiler);
    ``skip`` names optional phases to leave out."""

    before_gate: BeforeGate | None = None
    wrap_phase: PhaseWrapper | None = None
    skip: frozenset[str] = frozenset()  # "peers", "end-to-end", "http": phases left out

    def wrap(self, phase: str) -> AbstractContextManager[object]:
        return nullcontext() if self.wrap_phase is None else self.wrap_phase(phase)


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MB (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def chunks(items: Iterator[T], size: int) -> Iterator[list[T]]:
    while chunk := list(islice(items, size)):
        yield chunk


def request(task: BenchTask) -> TaskRequest:
    return TaskRequest(
        task.obj, task_type=task.task_type, data_type=task.data_type, site_name=task.site_name
    )


def prepare_bus(
    bus: IntegrationBus,
    workload: Workload,
    gates: Gates,
    connector: BenchConnector | None = None,
) -> None:
    """Schema, the bench connector (``BenchConnector(workload)`` unless given), and the setup
    records (users, roles, forums, folders) logged and applied through the bus; not timed."""
    bus.create_schema()
    bus.register_connector(connector or BenchConnector(workload))
    setup = workload.setup_tasks()
    for chunk in chunks(iter(setup), 1_000):
        bus.log_tasks(CONNECTOR_NAME, [request(t) for t in chunk])
    result = bus.process_tasks(CONNECTOR_NAME)[CONNECTOR_NAME]
    gates.counts(
        "setup",
        logged=len(setup),
        applied=result.applied,
        failed=result.failed,
        queued=bus.queue_size(),
    )
