"""The bus's own tables: connectors, the task queue, idempotency keys, logs, settings, type
declarations and leases. Only ``syncbus.store`` reads or writes them (an import-linter
contract holds every other module to that); the rest of syncbus asks the store's modules.

The migrations under ``syncbus/store/migrations`` create exactly these tables and those of
``syncbus.content.tables``; a change here needs a new migration (see docs/design.md).
"""

from __future__ import annotations

import sqlalchemy as sa

from syncbus.store.db import BigId, UtcDateTime, metadata

connector_table = sa.Table(
    "syncbus_connector",
    metadata,
    sa.Column("connector_id", sa.Integer, primary_key=True),
    sa.Column("connector_name", sa.String(100), nullable=False, unique=True),
    sa.Column("display_name", sa.String(440), nullable=False),
    sa.Column("class_path", sa.String(400)),
    sa.Column("enabled", sa.Boolean, nullable=False, default=True),
    sa.Column("modified_at", UtcDateTime, nullable=False),
    # The connector class's Ordering (its wire value), recorded when it is registered or
    # loaded, so that processes that never import the class know it.
    sa.Column("ordering", sa.String(20), nullable=False, server_default="connector"),
    # Its ``dependency_timeout`` (seconds a task may wait for a missing reference), recorded
    # likewise; NULL: the default.
    sa.Column("dependency_timeout", sa.Float),
    # Its ``retry_delay`` and ``retry_max_delay`` (CONTRACT §9), likewise; NULL: the defaults.
    sa.Column("retry_delay", sa.Float),
    sa.Column("retry_max_delay", sa.Float),
    # Backpressure (CONTRACT §9): logging is refused while this many tasks are queued; NULL:
    # no limit. Set by an operator (like ``enabled``), not by the class.
    sa.Column("queue_limit", sa.Integer),
    # Its ``quarantine_after`` (CONTRACT §9), recorded like its retry delays; NULL: 3.
    sa.Column("quarantine_after", sa.Integer),
    # Its ``coalesce`` (merge consecutive upserts of one object), recorded likewise.
    sa.Column("coalesce", sa.Boolean, nullable=False, server_default=sa.false()),
)

task_table = sa.Table(
    "syncbus_task",
    metadata,
    sa.Column("task_id", BigId, primary_key=True, autoincrement=True),
    sa.Column(
        "connector_id",
        sa.Integer,
        sa.ForeignKey("syncbus_connector.connector_id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("task_type", sa.String(30), nullable=False),
    sa.Column("data_type", sa.String(20), nullable=False),
    sa.Column("process_type", sa.String(20), nullable=False),
    sa.Column("object_type", sa.String(100)),
    sa.Column("class_name", sa.String(100)),
    sa.Column("title", sa.String(450), nullable=False),
    sa.Column("site_name", sa.String(100)),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("idempotency_key", sa.String(200)),
    sa.Column("error_message", sa.Text),
    sa.Column("last_run_at", UtcDateTime),
    # The entity the task writes (syncbus.content.lanes), under Ordering.ENTITY; else NULL.
    sa.Column("lane", sa.String(400)),
    # A waiting task (CONTRACT §8): what it waits for, as an operator reads it; the lane key of
    # the entity it awaits (a task applied in that lane wakes it); since when it waits.
    sa.Column("waiting_for", sa.Text),
    sa.Column("awaits", sa.String(400)),
    sa.Column("waiting_since", UtcDateTime),
    # Back-off (CONTRACT §9): failed automatic attempts so far, and when the next may start.
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", UtcDateTime),
    # Poison quarantine (CONTRACT §9): how often a worker died with the task in flight.
    sa.Column("deaths", sa.Integer, nullable=False, server_default="0"),
    # History (CONTRACT §10): the external object as logged (JSON; NULL when it was not
    # JSON-compatible), and the producer's W3C trace context, so processing joins its trace.
    sa.Column("external", sa.Text),
    sa.Column("traceparent", sa.String(55)),
    sa.Index("ix_syncbus_task_queue", "connector_id", "task_id"),
    # The next task of each lane; only ENTITY connectors' tasks have one.
    sa.Index(
        "ix_syncbus_task_lane",
        "connector_id",
        "lane",
        "task_id",
        sqlite_where=sa.text("lane IS NOT NULL"),
        postgresql_where=sa.text("lane IS NOT NULL"),
    ),
    # The tasks waiting for an entity, found when a task is applied in its lane.
    sa.Index(
        "ix_syncbus_task_awaits",
        "awaits",
        sqlite_where=sa.text("awaits IS NOT NULL"),
        postgresql_where=sa.text("awaits IS NOT NULL"),
    ),
    # Tasks backing off: the earliest next attempt is the dispatcher's next wake-up.
    sa.Index(
        "ix_syncbus_task_backoff",
        "connector_id",
        "next_attempt_at",
        sqlite_where=sa.text("next_attempt_at IS NOT NULL"),
        postgresql_where=sa.text("next_attempt_at IS NOT NULL"),
    ),
    # Failed and blocking tasks are few among many: partial indexes find them without a scan
    # (the admin's "failed" filter, the blocked-connector banner).
    sa.Index(
        "ix_syncbus_task_failed",
        "connector_id",
        "task_id",
        sqlite_where=sa.text("error_message IS NOT NULL"),
        postgresql_where=sa.text("error_message IS NOT NULL"),
    ),
    sa.Index(
        "ix_syncbus_task_blocking",
        "connector_id",
        "task_id",
        sqlite_where=sa.text("process_type = 'Error'"),
        postgresql_where=sa.text("process_type = 'Error'"),
    ),
    # Ids are never reused, so "a task id greater than any seen" always means a new task.
    sqlite_autoincrement=True,
)

# Idempotency keys outlive their tasks: a key seen once maps to its first task id forever, so
# a retry after the task was applied logs nothing new either.
idempotency_table = sa.Table(
    "syncbus_idempotency",
    metadata,
    sa.Column(
        "connector_id",
        sa.Integer,
        sa.ForeignKey("syncbus_connector.connector_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("idempotency_key", sa.String(200), primary_key=True),
    sa.Column("task_id", BigId, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
)

sync_log_table = sa.Table(
    "syncbus_sync_log",
    metadata,
    sa.Column("log_id", BigId, primary_key=True, autoincrement=True),
    sa.Column(
        "task_id",
        BigId,
        sa.ForeignKey("syncbus_task.task_id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("time", UtcDateTime, nullable=False),
    sa.Column("error_message", sa.Text, nullable=False),
)

# Under Ordering.ENTITY, the lanes a queued SNAPSHOT task writes besides its own: one row per
# child object's lane. A later task of such a lane runs after the snapshot (and a task that
# refers to such an entity, or waits for it, knows the snapshot may write it). The rows go
# with their task.
task_lane_table = sa.Table(
    "syncbus_task_lane",
    metadata,
    sa.Column(
        "task_id",
        BigId,
        sa.ForeignKey("syncbus_task.task_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("lane", sa.String(400), primary_key=True),
    sa.Index("ix_syncbus_task_lane_lane", "lane", "task_id"),
)

event_log_table = sa.Table(
    "syncbus_event_log",
    metadata,
    sa.Column("event_id", BigId, primary_key=True, autoincrement=True),
    sa.Column("time", UtcDateTime, nullable=False),
    sa.Column("event_type", sa.String(1), nullable=False),
    sa.Column("source", sa.String(100), nullable=False),
    sa.Column("code", sa.String(100), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
)

# A task leaves the queue but not the record (CONTRACT §10): one row per finished task, written
# in the transaction of its outcome, kept ``history_retention_days``. Not a foreign key to the
# queue: the task row is gone; nor to the connector: the record outlives it.
history_table = sa.Table(
    "syncbus_history",
    metadata,
    sa.Column("task_id", BigId, primary_key=True, autoincrement=False),
    sa.Column("connector_name", sa.String(100), nullable=False),
    sa.Column("task_type", sa.String(30), nullable=False),
    sa.Column("data_type", sa.String(20), nullable=False),
    sa.Column("process_type", sa.String(20), nullable=False),
    sa.Column("title", sa.String(450), nullable=False),
    sa.Column("object_type", sa.String(100)),
    sa.Column("class_name", sa.String(100)),
    # The object's code name (or GUID) as the task named it: object_history finds it by this.
    sa.Column("code_name", sa.String(450)),
    sa.Column("site_name", sa.String(100)),
    sa.Column("lane", sa.String(400)),
    # applied, deleted (by an operator), dropped (DELETE_ON_ERROR), coalesced
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("logged_at", UtcDateTime, nullable=False),
    sa.Column("finished_at", UtcDateTime, nullable=False),
    sa.Column("external", sa.Text),
    # The task's payload as it was queued (internal object and translation records), and the
    # internal id each record resolved to when the task was applied (JSON list, by record).
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("resolved", sa.Text),
    # {column: [old, new]} of an applied task; NULL otherwise.
    sa.Column("changes", sa.Text),
    # The task's error log when it finished: [[time, message], ...]; NULL for none.
    sa.Column("errors", sa.Text),
    # A coalesced task: the task that carried its values.
    sa.Column("into_task_id", BigId),
    # The idempotency key the task was logged with (what its producer knows it by), if any.
    sa.Column("idempotency_key", sa.String(200)),
    sa.Index("ix_syncbus_history_object", "object_type", "code_name", "task_id"),
    sa.Index("ix_syncbus_history_finished", "finished_at"),
    # The tasks coalesced into a carrier (its record lists them); only coalesced rows.
    sa.Index(
        "ix_syncbus_history_into",
        "into_task_id",
        sqlite_where=sa.text("into_task_id IS NOT NULL"),
        postgresql_where=sa.text("into_task_id IS NOT NULL"),
    ),
)

# The processes that run connectors (a service's or a worker's dispatcher), each seen again
# every ``heartbeat`` seconds on the database's clock (``seen_at``, seconds since the epoch):
# what the admin and ``GET /api/workers`` show as alive, and warn about when none is.
worker_table = sa.Table(
    "syncbus_worker",
    metadata,
    sa.Column("worker_id", sa.String(36), primary_key=True),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("threads", sa.Integer, nullable=False),
    sa.Column("started_at", UtcDateTime, nullable=False),
    sa.Column("seen_at", sa.Float, nullable=False),
    sa.Column("heartbeat", sa.Float, nullable=False),
)

# In ``syncbus_setting``: on SQLite, a counter that a wake-up moves (SQLite has no NOTIFY; its
# workers poll it with the task-id counter: ``store.tasks.log_sequence``).
WAKE_KEY = "syncbus.wakeups"

setting_table = sa.Table(
    "syncbus_setting",
    metadata,
    sa.Column("key", sa.String(100), primary_key=True),
    sa.Column("value", sa.String(400), nullable=False),
)

# Declarations of user-defined object types and page types, so that every process (CLI,
# workers) knows them without importing the code that registered them.
type_table = sa.Table(
    "syncbus_type",
    metadata,
    sa.Column("kind", sa.String(10), primary_key=True),
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("declaration", sa.Text, nullable=False),
    sa.Column("modified_at", UtcDateTime, nullable=False),
)

# One row per connector: who runs it (a lease with an expiry on the database's clock), which
# task ids the current run holds, and how the last run ended.
# The batch each lease-free run (Ordering.ENTITY on PostgreSQL) has in flight, written
# (committed) once its lanes are locked and deleted in the batch's own commit: a row that
# outlives its ``expires_at`` is the batch of a runner that died (poison quarantine, §9).
inflight_table = sa.Table(
    "syncbus_inflight",
    metadata,
    sa.Column("owner", sa.String(64), primary_key=True),
    sa.Column(
        "connector_id",
        sa.Integer,
        sa.ForeignKey("syncbus_connector.connector_id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("task_ids", sa.Text, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
)

lease_table = sa.Table(
    "syncbus_lease",
    metadata,
    sa.Column(
        "connector_id",
        sa.Integer,
        sa.ForeignKey("syncbus_connector.connector_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("owner", sa.String(200)),
    sa.Column("expires_at", sa.Float),
    sa.Column("run_first_task_id", BigId),
    sa.Column("run_last_task_id", BigId),
    sa.Column("last_run_started_at", UtcDateTime),
    sa.Column("last_run_finished_at", UtcDateTime),
    sa.Column("last_run_applied", sa.Integer),
    sa.Column("last_run_failed", sa.Integer),
    sa.Column("last_run_error", sa.Text),
)
