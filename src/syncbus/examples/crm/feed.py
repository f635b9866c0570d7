"""The tasks the sample CRM pushes into the bus, in the order it would send them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from syncbus import ProcessType, TaskDataType, TaskType

Record = dict[str, Any]


@dataclass(frozen=True)
class CrmTask:
    """One call of ``bus.process_external_task`` the CRM makes."""

    obj: dict[str, Any]
    task_type: TaskType
    data_type: TaskDataType
    process_type: ProcessType
    site_name: str | None
    idempotency_key: str

    @property
    def label(self) -> str:
        """A short human description, e.g. ``CreateObject user 1017``."""
        return f"{self.task_type.value} {self.obj['kind']} {self.obj['id']}"


_OBJECT_KINDS = {
    # collection, kind, site-bound?
    "groups": ("group", True),
    "roles": ("role", True),
    "users": ("user", False),
    "memberships": ("membership", False),
    "forums": ("forum", True),
    "posts": ("post", False),
}


def _process_type(rec: Record) -> ProcessType:
    """Records may carry their own process type; everything else is DEFAULT."""
    return ProcessType(rec.get("process_type", ProcessType.DEFAULT.value))


def _task(
    kind: str,
    rec: Record,
    task_type: TaskType,
    site_name: str | None,
    action: str,
    process_type: ProcessType | None = None,
) -> CrmTask:
    return CrmTask(
        obj={"kind": kind, **rec},
        task_type=task_type,
        data_type=TaskDataType.SIMPLE_SNAPSHOT,
        process_type=_process_type(rec) if process_type is None else process_type,
        site_name=site_name,
        idempotency_key=f"crm:{kind}:{rec['id']}:{action}",
    )


def _create(collection: str, rec: Record, site: str) -> CrmTask:
    kind, site_bound = _OBJECT_KINDS[collection]
    return _task(kind, rec, TaskType.CREATE_OBJECT, site if site_bound else None, "create")


def crm_tasks(data: dict[str, Any]) -> list[CrmTask]:
    """Every task the CRM sends, dependencies first.

    Groups and roles before the users and memberships that use them, forums before posts,
    folders before articles. Users who left the company are deleted just before the posts are
    sent (so a post written by one of them cannot be translated when it is processed). Articles
    whose folder the CRM never sends come last.
    """
    site: str = data.get("site_name", "main")
    tasks: list[CrmTask] = []
    for collection in ("groups", "roles", "users", "memberships", "forums"):
        tasks += [_create(collection, rec, site) for rec in data[collection]]
    tasks += [
        _task("user", rec, TaskType.DELETE_OBJECT, None, "delete")
        for rec in data["users"]
        if rec.get("left_company")
    ]
    tasks += [_create("posts", rec, site) for rec in data["posts"]]

    synced_folders = {f["id"] for f in data["folders"] if f.get("sync", True)}
    tasks += [
        _task("folder", rec, TaskType.CREATE_DOCUMENT, site, "create")
        for rec in data["folders"]
        if rec["id"] in synced_folders
    ]
    articles = data["articles"]
    tasks += [
        _task("article", rec, TaskType.CREATE_DOCUMENT, site, "create")
        for rec in articles
        if rec["folder_id"] in synced_folders
    ]
    tasks += [_change(data, change, site) for change in data.get("changes", [])]
    tasks += [
        _task("article", rec, TaskType.CREATE_DOCUMENT, site, "create")
        for rec in articles
        if rec["folder_id"] not in synced_folders
    ]
    return tasks


def _change(data: dict[str, Any], change: Record, site: str) -> CrmTask:
    """A later change to a record: the record as it is after the change."""
    kind: str = change["kind"]
    collection = f"{kind}s"
    rec = next(r for r in data[collection] if r["id"] == change["id"])
    site_bound = kind in ("folder", "article") or _OBJECT_KINDS[collection][1]
    return _task(
        kind,
        {**rec, **change.get("set", {})},
        TaskType(change["task_type"]),
        site if site_bound else None,
        change["label"],
        process_type=ProcessType.DEFAULT,
    )


def new_hire_tasks(data: dict[str, Any]) -> list[CrmTask]:
    """The new hires, in the wrong order on purpose: each membership BEFORE the user it names.

    Sent through ``CrmEntityConnector`` (``Ordering.ENTITY``), where a membership whose user is
    missing waits for it instead of failing.
    """
    site: str = data.get("site_name", "main")
    hires = data.get("new_hires", {})
    tasks = [_create("memberships", rec, site) for rec in hires.get("memberships", [])]
    return tasks + [_create("users", rec, site) for rec in hires.get("users", [])]
