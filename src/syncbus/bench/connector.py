"""The bench connector: maps the workload's records to objects and pages, with no I/O.

Translations are answered from the external id alone (each kind has its own id range), so
the connector costs the same on every run and never waits for anything.
"""

from __future__ import annotations

from typing import Any

from syncbus.bench.workload import (
    ARTICLE_BASE,
    AUTHOR_BASE,
    CONNECTOR_NAME,
    CULTURE,
    FOLDER_BASE,
    FOLDERS,
    FORUM_BASE,
    FORUMS,
    PROFILES,
    ROLE_BASE,
    ROLES,
    SITE,
    Workload,
    article_guid,
    author_name,
    folder_guid,
    forum_name,
    role_name,
)
from syncbus.connector import BaseIntegrationConnector
from syncbus.enums import TaskDataType, TaskType
from syncbus.errors import InvalidObjectError
from syncbus.model import DocumentParams, InternalObject, ObjectParams, Page


class BenchConnector(BaseIntegrationConnector):
    """The connector of the bench's sample external system."""

    connector_name = CONNECTOR_NAME
    display_name = "syncbus bench"

    def __init__(self, workload: Workload) -> None:
        self.workload = workload

    def prepare_internal_object(
        self, obj: Any, task_type: TaskType, data_type: TaskDataType, site_name: str | None
    ) -> InternalObject | Page | None:
        kind = obj.get("kind") if isinstance(obj, dict) else None
        if kind == "post":
            data = {"post_guid": obj["guid"]}
            if "forum_id" in obj:  # not in an edit of the bursty stream: it does not change
                data.update(forum_id=obj["forum_id"], post_user_id=obj["author_id"])
            data.update(post_subject=obj["subject"], post_text=obj["text"])
            return InternalObject("forums.forumpost", data)
        if kind == "membership":
            return InternalObject(
                "cms.userrole", {"user_id": obj["user_id"], "role_id": obj["role_id"]}
            )
        if kind == "article":
            return Page(
                "cms.article",
                name=obj["title"],
                culture=CULTURE,
                node_guid=obj["node_guid"],
                alias=obj["alias"],
                parent_id=obj["folder_id"],
                fields={
                    "article_title": obj["title"],
                    "article_summary": obj["summary"],
                    "article_text": obj["text"],
                },
            )
        return self._setup_object(kind, obj)

    @staticmethod
    def _setup_object(kind: Any, obj: Any) -> InternalObject | Page:
        if kind == "user":
            data = {k: obj[k] for k in ("email", "first_name", "last_name")}
            return InternalObject(
                "cms.user", {"user_name": obj["username"], "enabled": True, **data}
            )
        if kind == "role":
            return InternalObject(
                "cms.role", {"role_name": obj["name"], "role_display_name": obj["display_name"]}
            )
        if kind == "forum":
            return InternalObject(
                "forums.forum",
                {"forum_name": obj["name"], "forum_display_name": obj["display_name"]},
            )
        if kind == "folder":
            return Page(
                "cms.folder",
                name=obj["name"],
                culture=CULTURE,
                node_guid=obj["node_guid"],
                alias=obj["alias"],
            )
        raise InvalidObjectError(f"unknown bench record {obj!r}")

    def get_internal_object_params(self, id: Any, object_type: str) -> ObjectParams | None:
        if not isinstance(id, int):
            return None
        if object_type == "cms.user" and 0 <= id - AUTHOR_BASE < self.workload.authors:
            return ObjectParams(author_name(id - AUTHOR_BASE))
        if object_type == "cms.role" and 0 <= id - ROLE_BASE < ROLES:
            return ObjectParams(role_name(id - ROLE_BASE), site_name=SITE)
        if object_type == "forums.forum" and 0 <= id - FORUM_BASE < FORUMS:
            return ObjectParams(forum_name(id - FORUM_BASE), site_name=SITE)
        return None

    def get_internal_document_params(self, id: Any, class_name: str) -> DocumentParams | None:
        if not isinstance(id, int):
            return None
        if 0 <= id - FOLDER_BASE < FOLDERS:
            return DocumentParams(folder_guid(id - FOLDER_BASE), CULTURE, SITE)
        if 0 <= id - ARTICLE_BASE < self.workload.key_space["article"]:
            return DocumentParams(article_guid(id - ARTICLE_BASE), CULTURE, SITE)
        return None


class LatencyConnector(BenchConnector):
    """The bench connector of the latency profiles, built without arguments: the
    ``syncbus serve`` subprocess of those profiles loads it by its class path."""

    def __init__(self) -> None:
        super().__init__(Workload(PROFILES["latency"]))
