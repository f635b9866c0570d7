"""The content repository's tables: one per object type, the page tree, documents, and one
per page type with fields. Built from the type declarations (``content.types``, the built-in
ones in ``content.builtin``) on the one MetaData that the migrations know.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from syncbus.content.builtin import BUILTIN_OBJECT_TYPES, BUILTIN_PAGE_TYPES
from syncbus.content.types import ObjectType, PageType, sql_type
from syncbus.store.db import UtcDateTime, metadata


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
