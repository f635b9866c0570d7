"""Prometheus metrics of one service: counters from this process, queue gauges from the database."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from syncbus.bus import IntegrationBus
from syncbus.model import ProcessResult
from syncbus.store.db import as_utc
from syncbus.store.reads import connector_queues

# Set (with ``share_across_processes``) where several server processes answer /metrics on one
# port: each process's counters go to files there, and any process sums them all.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def share_across_processes(directory: str) -> None:
    """Before forking server processes: counters made from now on (in this process and the
    forked ones) live in files under ``directory``, and /metrics in any of them sums every
    process's, so a scrape that lands on any process sees the service's totals (prometheus
    client's multiprocess mode)."""
    os.environ[MULTIPROC_ENV] = directory
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]  # re-chosen


class QueueCollector(Collector):
    """Queue depth, failed tasks and the age of the oldest task per connector, read at scrape."""

    def __init__(self, bus: IntegrationBus) -> None:
        self.bus = bus

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "syncbus_queue_depth", "Tasks waiting in the queue.", labels=["connector"]
        )
        failed = GaugeMetricFamily(
            "syncbus_queue_failed", "Queued tasks whose last attempt failed.", labels=["connector"]
        )
        age = GaugeMetricFamily(
            "syncbus_oldest_task_age_seconds",
            "Age of the oldest queued task.",
            labels=["connector"],
        )
        with self.bus.reader.connect() as conn:
            rows = connector_queues(conn)
        now = time.time()
        for r in rows:
            depth.add_metric([r.connector_name], float(r.queued or 0))
            failed.add_metric([r.connector_name], float(r.failed or 0))
            first = as_utc(r.oldest)
            age.add_metric([r.connector_name], max(0.0, now - first.timestamp()) if first else 0.0)
        yield depth
        yield failed
        yield age


class ServiceMetrics:
    """The metrics registry of one app (not the global one, so several apps can coexist)."""

    def __init__(self, bus: IntegrationBus) -> None:
        self.registry = CollectorRegistry()
        self.logged = Counter(
            "syncbus_tasks_logged",
            "Tasks logged through this process.",
            ["connector"],
            registry=self.registry,
        )
        self.applied = Counter(
            "syncbus_tasks_applied",
            "Tasks applied by this process's runs and manual synchronizes.",
            ["connector"],
            registry=self.registry,
        )
        self.failed = Counter(
            "syncbus_tasks_failed",
            "Task attempts that failed in this process's runs and manual synchronizes.",
            ["connector"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "syncbus_queue_rejected",
            "Tasks refused at log time because the connector's queue was full.",
            ["connector"],
            registry=self.registry,
        )
        self.quarantined = Counter(
            "syncbus_tasks_quarantined",
            "Tasks made ERROR because the worker applying them died too often.",
            ["connector"],
            registry=self.registry,
        )
        self.run_seconds = Histogram(
            "syncbus_run_duration_seconds",
            "Duration of processing runs.",
            ["connector"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
        )
        self.queues = QueueCollector(bus)
        self.registry.register(self.queues)

    def exposition(self) -> bytes:
        """The text /metrics answers: this process's counters, or, with several server
        processes (``share_across_processes``), the sum of all of theirs; the queue gauges,
        read from the database."""
        directory = os.environ.get(MULTIPROC_ENV)
        if not directory:
            return bytes(generate_latest(self.registry))
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        registry.register(self.queues)
        return bytes(generate_latest(registry))

    # -- hooks (subscribed to the bus: see syncbus.hooks) ----------------------------------
    def task_logged(self, connector_name: str, _task_id: int) -> None:
        self.logged.labels(connector_name).inc()

    def task_applied(self, connector_name: str, _task_id: int, _manual: bool) -> None:
        self.applied.labels(connector_name).inc()

    def task_failed(self, connector_name: str, _task_id: int, _error: str, _manual: bool) -> None:
        self.failed.labels(connector_name).inc()

    def task_quarantined(self, connector_name: str, _task_id: int) -> None:
        self.quarantined.labels(connector_name).inc()

    def tasks_rejected(self, connector_name: str, count: int) -> None:
        self.rejected.labels(connector_name).inc(count)

    def run_finished(self, result: ProcessResult) -> None:
        if result.not_run_reason is not None:
            return
        if result.started_at is not None and result.finished_at is not None:
            self.run_seconds.labels(result.connector_name).observe(
                result.finished_at - result.started_at
            )
