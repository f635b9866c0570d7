"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-28 00:09:00.849446
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cms_site",
        sa.Column("site_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("site_guid", sa.String(length=36), nullable=True),
        sa.Column("site_name", sa.String(length=100), nullable=False),
        sa.Column("site_display_name", sa.String(length=200), nullable=True),
        sa.Column("site_domain", sa.String(length=400), nullable=True),
        sa.PrimaryKeyConstraint("site_id", name=op.f("pk_cms_site")),
        sa.UniqueConstraint("site_guid", name=op.f("uq_cms_site_site_guid")),
    )
    with op.batch_alter_table("cms_site", schema=None) as batch_op:
        batch_op.create_index("ix_cms_site_identity", ["site_name"], unique=False)

    op.create_table(
        "cms_user",
        sa.Column("user_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user_guid", sa.String(length=36), nullable=True),
        sa.Column("user_name", sa.String(length=200), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=True),
        sa.Column("first_name", sa.String(length=100), nullable=True),
        sa.Column("last_name", sa.String(length=100), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=True),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_cms_user")),
        sa.UniqueConstraint("user_guid", name=op.f("uq_cms_user_user_guid")),
    )
    with op.batch_alter_table("cms_user", schema=None) as batch_op:
        batch_op.create_index("ix_cms_user_identity", ["user_name"], unique=False)

    op.create_table(
        "syncbus_connector",
        sa.Column("connector_id", sa.Integer(), nullable=False),
        sa.Column("connector_name", sa.String(length=100), nullable=False),
        sa.Column("display_name", sa.String(length=440), nullable=False),
        sa.Column("class_path", sa.String(length=400), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("modified_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("connector_id", name=op.f("pk_syncbus_connector")),
        sa.UniqueConstraint("connector_name", name=op.f("uq_syncbus_connector_connector_name")),
    )
    op.create_table(
        "syncbus_event_log",
        sa.Column(
            "event_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event_type", sa.String(length=1), nullable=False),
        sa.Column("source", sa.String(length=100), nullable=False),
        sa.Column("code", sa.String(length=100), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_syncbus_event_log")),
    )
    op.create_table(
        "syncbus_setting",
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column("value", sa.String(length=400), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_syncbus_setting")),
    )
    op.create_table(
        "syncbus_type",
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("declaration", sa.Text(), nullable=False),
        sa.Column("modified_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("kind", "name", name=op.f("pk_syncbus_type")),
    )
    op.create_table(
        "cms_role",
        sa.Column("role_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("role_guid", sa.String(length=36), nullable=True),
        sa.Column("role_name", sa.String(length=100), nullable=False),
        sa.Column("role_display_name", sa.String(length=200), nullable=True),
        sa.Column("site_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["site_id"],
            ["cms_site.site_id"],
            name=op.f("fk_cms_role_site_id_cms_site"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("role_id", name=op.f("pk_cms_role")),
        sa.UniqueConstraint("role_guid", name=op.f("uq_cms_role_role_guid")),
    )
    with op.batch_alter_table("cms_role", schema=None) as batch_op:
        batch_op.create_index("ix_cms_role_identity", ["role_name", "site_id"], unique=False)

    op.create_table(
        "cms_tree",
        sa.Column("node_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("node_guid", sa.String(length=36), nullable=False),
        sa.Column("node_alias", sa.String(length=200), nullable=False),
        sa.Column("node_alias_path", sa.String(length=450), nullable=False),
        sa.Column("node_parent_id", sa.Integer(), nullable=True),
        sa.Column("node_class_name", sa.String(length=100), nullable=False),
        sa.Column("node_site_id", sa.Integer(), nullable=False),
        sa.Column("node_level", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["node_parent_id"],
            ["cms_tree.node_id"],
            name=op.f("fk_cms_tree_node_parent_id_cms_tree"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["node_site_id"],
            ["cms_site.site_id"],
            name=op.f("fk_cms_tree_node_site_id_cms_site"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("node_id", name=op.f("pk_cms_tree")),
        sa.UniqueConstraint(
            "node_site_id", "node_alias_path", name=op.f("uq_cms_tree_node_site_id_node_alias_path")
        ),
        sa.UniqueConstraint(
            "node_site_id", "node_guid", name=op.f("uq_cms_tree_node_site_id_node_guid")
        ),
    )
    with op.batch_alter_table("cms_tree", schema=None) as batch_op:
        batch_op.create_index("ix_cms_tree_parent", ["node_parent_id"], unique=False)

    op.create_table(
        "cms_usersite",
        sa.Column("user_site_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["site_id"],
            ["cms_site.site_id"],
            name=op.f("fk_cms_usersite_site_id_cms_site"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["cms_user.user_id"],
            name=op.f("fk_cms_usersite_user_id_cms_user"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_site_id", name=op.f("pk_cms_usersite")),
        sa.UniqueConstraint("site_id", "user_id", name=op.f("uq_cms_usersite_site_id_user_id")),
    )
    op.create_table(
        "community_group",
        sa.Column("group_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("group_guid", sa.String(length=36), nullable=True),
        sa.Column("group_name", sa.String(length=100), nullable=False),
        sa.Column("group_display_name", sa.String(length=200), nullable=True),
        sa.Column("site_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["site_id"],
            ["cms_site.site_id"],
            name=op.f("fk_community_group_site_id_cms_site"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("group_id", name=op.f("pk_community_group")),
        sa.UniqueConstraint("group_guid", name=op.f("uq_community_group_group_guid")),
    )
    with op.batch_alter_table("community_group", schema=None) as batch_op:
        batch_op.create_index(
            "ix_community_group_identity", ["group_name", "site_id"], unique=False
        )

    op.create_table(
        "syncbus_idempotency",
        sa.Column("connector_id", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=False),
        sa.Column("task_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["connector_id"],
            ["syncbus_connector.connector_id"],
            name=op.f("fk_syncbus_idempotency_connector_id_syncbus_connector"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "connector_id", "idempotency_key", name=op.f("pk_syncbus_idempotency")
        ),
    )
    op.create_table(
        "syncbus_lease",
        sa.Column("connector_id", sa.Integer(), nullable=False),
        sa.Column("owner", sa.String(length=200), nullable=True),
        sa.Column("expires_at", sa.Float(), nullable=True),
        sa.Column(
            "run_first_task_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column(
            "run_last_task_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("last_run_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_run_finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_run_applied", sa.Integer(), nullable=True),
        sa.Column("last_run_failed", sa.Integer(), nullable=True),
        sa.Column("last_run_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["connector_id"],
            ["syncbus_connector.connector_id"],
            name=op.f("fk_syncbus_lease_connector_id_syncbus_connector"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("connector_id", name=op.f("pk_syncbus_lease")),
    )
    op.create_table(
        "syncbus_task",
        sa.Column(
            "task_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("connector_id", sa.Integer(), nullable=False),
        sa.Column("task_type", sa.String(length=30), nullable=False),
        sa.Column("data_type", sa.String(length=20), nullable=False),
        sa.Column("process_type", sa.String(length=20), nullable=False),
        sa.Column("object_type", sa.String(length=100), nullable=True),
        sa.Column("class_name", sa.String(length=100), nullable=True),
        sa.Column("title", sa.String(length=450), nullable=False),
        sa.Column("site_name", sa.String(length=100), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=200), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["connector_id"],
            ["syncbus_connector.connector_id"],
            name=op.f("fk_syncbus_task_connector_id_syncbus_connector"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("task_id", name=op.f("pk_syncbus_task")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("syncbus_task", schema=None) as batch_op:
        batch_op.create_index("ix_syncbus_task_queue", ["connector_id", "task_id"], unique=False)

    op.create_table(
        "cms_document",
        sa.Column("document_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("document_node_id", sa.Integer(), nullable=False),
        sa.Column("document_culture", sa.String(length=10), nullable=False),
        sa.Column("document_name", sa.String(length=450), nullable=False),
        sa.Column("published", sa.Boolean(), nullable=False),
        sa.Column("archived", sa.Boolean(), nullable=False),
        sa.Column("modified_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["document_node_id"],
            ["cms_tree.node_id"],
            name=op.f("fk_cms_document_document_node_id_cms_tree"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("document_id", name=op.f("pk_cms_document")),
        sa.UniqueConstraint(
            "document_node_id",
            "document_culture",
            name=op.f("uq_cms_document_document_node_id_document_culture"),
        ),
    )
    op.create_table(
        "cms_userrole",
        sa.Column("user_role_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("role_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["role_id"],
            ["cms_role.role_id"],
            name=op.f("fk_cms_userrole_role_id_cms_role"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["cms_user.user_id"],
            name=op.f("fk_cms_userrole_user_id_cms_user"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_role_id", name=op.f("pk_cms_userrole")),
        sa.UniqueConstraint("role_id", "user_id", name=op.f("uq_cms_userrole_role_id_user_id")),
    )
    op.create_table(
        "forums_forum",
        sa.Column("forum_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("forum_guid", sa.String(length=36), nullable=True),
        sa.Column("forum_name", sa.String(length=100), nullable=False),
        sa.Column("forum_display_name", sa.String(length=200), nullable=True),
        sa.Column("site_id", sa.Integer(), nullable=True),
        sa.Column("forum_group_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["forum_group_id"],
            ["community_group.group_id"],
            name=op.f("fk_forums_forum_forum_group_id_community_group"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["site_id"],
            ["cms_site.site_id"],
            name=op.f("fk_forums_forum_site_id_cms_site"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("forum_id", name=op.f("pk_forums_forum")),
        sa.UniqueConstraint("forum_guid", name=op.f("uq_forums_forum_forum_guid")),
    )
    with op.batch_alter_table("forums_forum", schema=None) as batch_op:
        batch_op.create_index("ix_forums_forum_forum_group_id", ["forum_group_id"], unique=False)
        batch_op.create_index(
            "ix_forums_forum_identity", ["forum_name", "site_id", "forum_group_id"], unique=False
        )

    op.create_table(
        "syncbus_sync_log",
        sa.Column(
            "log_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("task_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("error_message", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["syncbus_task.task_id"],
            name=op.f("fk_syncbus_sync_log_task_id_syncbus_task"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("log_id", name=op.f("pk_syncbus_sync_log")),
    )
    with op.batch_alter_table("syncbus_sync_log", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_syncbus_sync_log_task_id"), ["task_id"], unique=False)

    op.create_table(
        "content_article",
        sa.Column("document_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("article_title", sa.String(length=450), nullable=True),
        sa.Column("article_summary", sa.Text(), nullable=True),
        sa.Column("article_text", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["document_id"],
            ["cms_document.document_id"],
            name=op.f("fk_content_article_document_id_cms_document"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("document_id", name=op.f("pk_content_article")),
    )
    op.create_table(
        "forums_forumpost",
        sa.Column("post_id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("post_guid", sa.String(length=36), nullable=False),
        sa.Column("post_subject", sa.String(length=450), nullable=True),
        sa.Column("post_text", sa.Text(), nullable=True),
        sa.Column("post_parent_id", sa.Integer(), nullable=True),
        sa.Column("post_user_id", sa.Integer(), nullable=True),
        sa.Column("forum_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["forum_id"],
            ["forums_forum.forum_id"],
            name=op.f("fk_forums_forumpost_forum_id_forums_forum"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["post_parent_id"],
            ["forums_forumpost.post_id"],
            name=op.f("fk_forums_forumpost_post_parent_id_forums_forumpost"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["post_user_id"],
            ["cms_user.user_id"],
            name=op.f("fk_forums_forumpost_post_user_id_cms_user"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("post_id", name=op.f("pk_forums_forumpost")),
        sa.UniqueConstraint("post_guid", name=op.f("uq_forums_forumpost_post_guid")),
    )
    with op.batch_alter_table("forums_forumpost", schema=None) as batch_op:
        batch_op.create_index("ix_forums_forumpost_forum_id", ["forum_id"], unique=False)
        batch_op.create_index(
            "ix_forums_forumpost_post_parent_id", ["post_parent_id"], unique=False
        )
        batch_op.create_index("ix_forums_forumpost_post_user_id", ["post_user_id"], unique=False)

    # A fresh repository has one site, "main", as a fresh CMS install has its default site.
    site = sa.table(
        "cms_site",
        sa.column("site_guid", sa.String),
        sa.column("site_name", sa.String),
        sa.column("site_display_name", sa.String),
        sa.column("site_domain", sa.String),
    )
    op.bulk_insert(
        site,
        [
            {
                "site_guid": "2f0e6b8c-5d0a-4f57-9a43-6d1c1a8e0001",
                "site_name": "main",
                "site_display_name": "Main site",
                "site_domain": "localhost",
            }
        ],
    )


def downgrade() -> None:
    with op.batch_alter_table("forums_forumpost", schema=None) as batch_op:
        batch_op.drop_index("ix_forums_forumpost_post_user_id")
        batch_op.drop_index("ix_forums_forumpost_post_parent_id")
        batch_op.drop_index("ix_forums_forumpost_forum_id")

    op.drop_table("forums_forumpost")
    op.drop_table("content_article")
    with op.batch_alter_table("syncbus_sync_log", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_syncbus_sync_log_task_id"))

    op.drop_table("syncbus_sync_log")
    with op.batch_alter_table("forums_forum", schema=None) as batch_op:
        batch_op.drop_index("ix_forums_forum_identity")
        batch_op.drop_index("ix_forums_forum_forum_group_id")

    op.drop_table("forums_forum")
    op.drop_table("cms_userrole")
    op.drop_table("cms_document")
    with op.batch_alter_table("syncbus_task", schema=None) as batch_op:
        batch_op.drop_index("ix_syncbus_task_queue")

    op.drop_table("syncbus_task")
    op.drop_table("syncbus_lease")
    op.drop_table("syncbus_idempotency")
    with op.batch_alter_table("community_group", schema=None) as batch_op:
        batch_op.drop_index("ix_community_group_identity")

    op.drop_table("community_group")
    op.drop_table("cms_usersite")
    with op.batch_alter_table("cms_tree", schema=None) as batch_op:
        batch_op.drop_index("ix_cms_tree_parent")

    op.drop_table("cms_tree")
    with op.batch_alter_table("cms_role", schema=None) as batch_op:
        batch_op.drop_index("ix_cms_role_identity")

    op.drop_table("cms_role")
    op.drop_table("syncbus_type")
    op.drop_table("syncbus_setting")
    op.drop_table("syncbus_event_log")
    op.drop_table("syncbus_connector")
    with op.batch_alter_table("cms_user", schema=None) as batch_op:
        batch_op.drop_index("ix_cms_user_identity")

    op.drop_table("cms_user")
    with op.batch_alter_table("cms_site", schema=None) as batch_op:
        batch_op.drop_index("ix_cms_site_identity")

    op.drop_table("cms_site")
