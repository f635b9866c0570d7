"""The built-in object types and page types (CONTRACT §5), pre-registered in every bus.

Their tables are built in ``content.tables``; the declaration classes are in ``content.types``.
"""

from __future__ import annotations

import sqlalchemy as sa

from syncbus.content.types import ObjectType, PageType

SITE = ObjectType(
    "cms.site",
    "cms_site",
    "site_id",
    code_name_column="site_name",
    guid_column="site_guid",
    columns={
        "site_guid": "guid",
        "site_name": sa.String(100),
        "site_display_name": sa.String(200),
        "site_domain": sa.String(400),
    },
)
USER = ObjectType(
    "cms.user",
    "cms_user",
    "user_id",
    code_name_column="user_name",
    guid_column="user_guid",
    site_binding="cms.usersite",
    columns={
        "user_guid": "guid",
        "user_name": sa.String(200),
        "email": sa.String(254),
        "first_name": sa.String(100),
        "last_name": sa.String(100),
        "enabled": bool,
    },
)
USER_SITE = ObjectType(
    "cms.usersite",
    "cms_usersite",
    "user_site_id",
    foreign_keys={"user_id": "cms.user", "site_id": "cms.site"},
)
ROLE = ObjectType(
    "cms.role",
    "cms_role",
    "role_id",
    code_name_column="role_name",
    guid_column="role_guid",
    site_column="site_id",
    columns={"role_guid": "guid", "role_name": sa.String(100), "role_display_name": sa.String(200)},
)
USER_ROLE = ObjectType(
    "cms.userrole",
    "cms_userrole",
    "user_role_id",
    foreign_keys={"user_id": "cms.user", "role_id": "cms.role"},
)
GROUP = ObjectType(
    "community.group",
    "community_group",
    "group_id",
    code_name_column="group_name",
    guid_column="group_guid",
    site_column="site_id",
    columns={
        "group_guid": "guid",
        "group_name": sa.String(100),
        "group_display_name": sa.String(200),
    },
)
FORUM = ObjectType(
    "forums.forum",
    "forums_forum",
    "forum_id",
    code_name_column="forum_name",
    guid_column="forum_guid",
    site_column="site_id",
    group=("forum_group_id", "community.group"),
    columns={
        "forum_guid": "guid",
        "forum_name": sa.String(100),
        "forum_display_name": sa.String(200),
    },
)
FORUM_POST = ObjectType(
    "forums.forumpost",
    "forums_forumpost",
    "post_id",
    guid_column="post_guid",
    parent=("forum_id", "forums.forum"),
    foreign_keys={"post_parent_id": "forums.forumpost", "post_user_id": "cms.user"},
    columns={"post_guid": "guid", "post_subject": sa.String(450), "post_text": "text"},
)

BUILTIN_OBJECT_TYPES: tuple[ObjectType, ...] = (
    SITE,
    USER,
    USER_SITE,
    ROLE,
    USER_ROLE,
    GROUP,
    FORUM,
    FORUM_POST,
)

ROOT_CLASS = "cms.root"
FOLDER = PageType("cms.folder")
ARTICLE = PageType(
    "cms.article",
    "content_article",
    {"article_title": sa.String(450), "article_summary": "text", "article_text": "text"},
)
BUILTIN_PAGE_TYPES: tuple[PageType, ...] = (PageType(ROOT_CLASS), FOLDER, ARTICLE)
