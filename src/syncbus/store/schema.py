"""Table definitions: the bus's own tables and the built-in content repository.

The migrations under ``syncbus/store/migrations`` create exactly these tables; a change here
needs a new migration (``alembic revision --autogenerate``, see docs/design.md).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from syncbus.content.types import (
    BUILTIN_OBJECT_TYPES,
    BUILTIN_PAGE_TYPES,
    ObjectType,
    PageType,
)

# A 64-bit id on PostgreSQL; SQLite's rowid alias must be spelled INTEGER.
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
UtcDateTime = sa.DateTime(timezone=True)

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

connector_table = sa.Table(
    "syncbus_connector",
    metadata,
    sa.Column("connector_id", sa.Integer, primary_key=True),
    sa.Column("connector_name", sa.String(100), nullable=False, unique=True),
    sa.Column("display_name", sa.String(440), nullable=False),
    sa.Column("class_path", sa.String(400)),
    sa.Column("enabled", sa.Boolean, nullable=False, default=True),
    sa.Column("modified_at", UtcDateTime, nullable=False),
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
    sa.Index("ix_syncbus_task_queue", "connector_id", "task_id"),
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


def object_table(ot: ObjectType, md: sa.MetaData, types: dict[str, ObjectType]) -> sa.Table:
    """Build the table of an object type, with foreign keys to the tables it references."""
    columns: list[Any] = []
    parent_col, group_col = ot.parent_column, ot.group_column
    for name, typ in ot.all_columns().items():
        if name == ot.id_column:
            columns.append(sa.Column(name, sa.Integer, primary_key=True, autoincrement=True))
            continue
        target: ObjectType | None = None
        ondelete = "SET NULL"
        if name == ot.site_column:
            target, ondelete = types["cms.site"], "CASCADE"
        elif name in ot.references():
            target = types.get(ot.references()[name])
            if ot.is_binding or name == parent_col:
                ondelete = "CASCADE"
        args: list[Any] = [name, typ]
        if target is not None:
            args.append(sa.ForeignKey(f"{target.table}.{target.id_column}", ondelete=ondelete))
        nullable = not (ot.is_binding and name in ot.foreign_keys) and name != ot.key_column
        columns.append(sa.Column(*args, nullable=nullable))
    if ot.guid_column:
        columns.append(sa.UniqueConstraint(ot.guid_column))
    if ot.is_binding:
        columns.append(sa.UniqueConstraint(*ot.identity_columns()))
    elif ot.code_name_column:
        scope = [c for c in (ot.site_column, parent_col, group_col) if c]
        columns.append(sa.Index(f"ix_{ot.table}_identity", ot.code_name_column, *scope))
    for name in ot.references():
        if not ot.is_binding:
            columns.append(sa.Index(f"ix_{ot.table}_{name}", name))
    return sa.Table(ot.table, md, *columns)


tree_table = sa.Table(
    "cms_tree",
    metadata,
    sa.Column("node_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("node_guid", sa.String(36), nullable=False),
    sa.Column("node_alias", sa.String(200), nullable=False),
    sa.Column("node_alias_path", sa.String(450), nullable=False),
    sa.Column("node_parent_id", sa.Integer, sa.ForeignKey("cms_tree.node_id", ondelete="CASCADE")),
    sa.Column("node_class_name", sa.String(100), nullable=False),
    sa.Column(
        "node_site_id",
        sa.Integer,
        sa.ForeignKey("cms_site.site_id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("node_level", sa.Integer, nullable=False),
    sa.UniqueConstraint("node_site_id", "node_alias_path"),
    sa.UniqueConstraint("node_site_id", "node_guid"),
    sa.Index("ix_cms_tree_parent", "node_parent_id"),
)

document_table = sa.Table(
    "cms_document",
    metadata,
    sa.Column("document_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "document_node_id",
        sa.Integer,
        sa.ForeignKey("cms_tree.node_id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("document_culture", sa.String(10), nullable=False),
    sa.Column("document_name", sa.String(450), nullable=False),
    sa.Column("published", sa.Boolean, nullable=False),
    sa.Column("archived", sa.Boolean, nullable=False),
    sa.Column("modified_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("document_node_id", "document_culture"),
)


def page_table(pt: PageType, md: sa.MetaData) -> sa.Table | None:
    """Build the table holding a page type's fields, one row per document."""
    if not pt.table:
        return None
    from syncbus.content.types import sql_type

    cols: list[Any] = [
        sa.Column(
            "document_id",
            sa.Integer,
            sa.ForeignKey("cms_document.document_id", ondelete="CASCADE"),
            primary_key=True,
            autoincrement=False,
        )
    ]
    cols += [sa.Column(name, sql_type(spec)) for name, spec in pt.fields.items()]
    return sa.Table(pt.table, md, *cols)


BUILTIN_TYPES = {ot.name: ot for ot in BUILTIN_OBJECT_TYPES}
BUILTIN_TABLES = {ot.name: object_table(ot, metadata, BUILTIN_TYPES) for ot in BUILTIN_OBJECT_TYPES}
BUILTIN_PAGE_TABLES = {
    pt.class_name: t for pt in BUILTIN_PAGE_TYPES if (t := page_table(pt, metadata)) is not None
}
