"""The connector of the sample CRM: turns CRM records into syncbus objects and pages.

Every record the CRM sends is a dict with a ``"kind"`` key ("user", "role", "membership",
"group", "forum", "post", "folder" or "article") plus the record's own fields. Foreign keys
(a membership's user and role, a post's forum, author and reply-to post, an article's folder)
are the CRM's own integer ids; the bus asks this connector, at log time, which internal
object or page each of them names.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from syncbus import (
    BaseIntegrationConnector,
    DocumentParams,
    InternalObject,
    InvalidObjectError,
    ObjectParams,
    Ordering,
    Page,
    TaskDataType,
    TaskType,
)

CrmData = dict[str, Any]
Record = dict[str, Any]

# The CRM collection that holds the records a referenced object type's ids point to.
_COLLECTIONS = {
    "cms.user": "users",
    "cms.role": "roles",
    "community.group": "groups",
    "forums.forum": "forums",
    "forums.forumpost": "posts",
}


def load_crm_data() -> CrmData:
    """The sample CRM's data, shipped as package data next to this module."""
    text = resources.files("syncbus.examples.crm").joinpath("data.json").read_text(encoding="utf-8")
    data: CrmData = json.loads(text)
    return data


def _as_id(value: Any) -> int | None:
    """CRM ids are integers; accept their string form too (e.g. from JSON or HTTP)."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class CrmConnector(BaseIntegrationConnector):
    """Maps the sample CRM's records onto the built-in object types and page types."""

    connector_name = "CrmConnector"
    display_name = "Sample CRM"

    def __init__(self, data: CrmData | None = None) -> None:
        self.data: CrmData = load_crm_data() if data is None else data
        self.site_name: str = self.data.get("site_name", "main")
        self.culture: str = self.data.get("culture", "en-US")
        self._index: dict[str, dict[int, Record]] = {
            name: {int(r["id"]): r for r in self.data.get(name, [])}
            for name in ("users", "roles", "groups", "forums", "posts", "folders", "articles")
        }
        # New hires are CRM users too: the ENTITY part of the demo sends them, and a membership
        # naming one must translate at log time although the bus has no such user yet.
        for rec in self.data.get("new_hires", {}).get("users", []):
            self._index["users"][int(rec["id"])] = rec

    # -- log time: external record -> internal object or page ------------------------------
    def prepare_internal_object(
        self,
        obj: Any,
        task_type: TaskType,
        data_type: TaskDataType,
        site_name: str | None,
    ) -> InternalObject | Page | None:
        if not isinstance(obj, dict) or "kind" not in obj:
            raise InvalidObjectError(f"a CRM record must be a dict with a 'kind' key, got {obj!r}")
        kind = obj["kind"]
        if kind in ("folder", "article"):
            return self._page(obj)
        builder = _OBJECT_BUILDERS.get(kind)
        if builder is None:
            raise InvalidObjectError(f"unknown CRM record kind {kind!r}; known: {_KINDS}")
        return builder(obj)

    def _page(self, rec: Record) -> Page:
        if rec["kind"] == "folder":
            return Page(
                "cms.folder",
                name=rec["name"],
                culture=self.culture,
                node_guid=rec["node_guid"],
                alias=rec["alias"],
            )
        return Page(
            "cms.article",
            name=rec["title"],
            culture=self.culture,
            node_guid=rec["node_guid"],
            alias=rec["alias"],
            parent_id=rec["folder_id"],  # the CRM's folder id, translated by the bus
            fields={
                "article_title": rec["title"],
                "article_summary": rec["summary"],
                "article_text": rec["text"],
            },
        )

    # -- log time: which internal object does an external id name? -------------------------
    def get_internal_object_params(self, id: Any, object_type: str) -> ObjectParams | None:
        collection = _COLLECTIONS.get(object_type)
        key = _as_id(id)
        if collection is None or key is None:
            return None
        rec = self._index[collection].get(key)
        if rec is None:
            return None  # the bus turns this into a TranslationError naming the column
        if object_type == "cms.user":
            return ObjectParams(rec["username"])
        if object_type == "cms.role":
            return ObjectParams(rec["name"], site_name=self.site_name)
        if object_type == "community.group":
            return ObjectParams(rec["name"], site_name=self.site_name)
        if object_type == "forums.forum":
            return ObjectParams(rec["name"], site_name=self.site_name, group_id=rec["group_id"])
        # forums.forumpost has no code name: its GUID names it, within its forum.
        return ObjectParams(rec["guid"], parent_id=rec["forum_id"])

    def get_internal_document_params(self, id: Any, class_name: str) -> DocumentParams | None:
        key = _as_id(id)
        if key is None:
            return None
        rec = self._index["folders"].get(key) or self._index["articles"].get(key)
        if rec is None:
            return None
        return DocumentParams(rec["node_guid"], self.culture, self.site_name)


class CrmEntityConnector(CrmConnector):
    """The same CRM connector, registered a second time with entity lanes (CONTRACT §8).

    Under ``Ordering.ENTITY`` a membership that arrives before the user it names does not fail
    (as it would under ``CrmConnector``'s one strict queue): it waits, with
    ``TaskInfo.waiting_for`` saying for what, and runs as soon as a task creating that user is
    applied through this connector.
    """

    connector_name = "CrmEntityConnector"
    display_name = "Sample CRM (entity lanes)"
    ordering = Ordering.ENTITY


def _user(rec: Record) -> InternalObject:
    return InternalObject(
        "cms.user",
        {
            "user_name": rec["username"],
            "email": rec["email"],
            "first_name": rec["first_name"],
            "last_name": rec["last_name"],
            "enabled": True,
        },
    )


def _role(rec: Record) -> InternalObject:
    return InternalObject(
        "cms.role", {"role_name": rec["name"], "role_display_name": rec["display_name"]}
    )


def _membership(rec: Record) -> InternalObject:
    # External ids on purpose: the data type is SIMPLE_SNAPSHOT, so the bus translates them.
    return InternalObject("cms.userrole", {"user_id": rec["user_id"], "role_id": rec["role_id"]})


def _group(rec: Record) -> InternalObject:
    return InternalObject(
        "community.group", {"group_name": rec["name"], "group_display_name": rec["display_name"]}
    )


def _forum(rec: Record) -> InternalObject:
    return InternalObject(
        "forums.forum",
        {
            "forum_name": rec["name"],
            "forum_display_name": rec["display_name"],
            "forum_group_id": rec["group_id"],
        },
    )


def _post(rec: Record) -> InternalObject:
    return InternalObject(
        "forums.forumpost",
        {
            "post_guid": rec["guid"],
            "forum_id": rec["forum_id"],
            "post_parent_id": rec.get("reply_to"),
            "post_user_id": rec["author_id"],
            "post_subject": rec["subject"],
            "post_text": rec["text"],
        },
    )


_OBJECT_BUILDERS = {
    "user": _user,
    "role": _role,
    "membership": _membership,
    "group": _group,
    "forum": _forum,
    "post": _post,
}
_KINDS = ", ".join([*_OBJECT_BUILDERS, "folder", "article"])
