"""The reference model: the content the workload must leave behind, computed in plain Python.

Create and update are upserts of the whole record (a post's edit in the bursty stream: of its
subject and text); delete removes it. The model keeps, per
identity, what the last operation wrote, in the terms a reader of the database sees: code names,
GUIDs and alias paths, never internal ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from syncbus.bench.workload import (
    AUTHOR_BASE,
    FOLDER_BASE,
    FORUM_BASE,
    ROLE_BASE,
    BenchTask,
    Workload,
    author_name,
    folder_alias,
    forum_name,
    role_name,
)
from syncbus.enums import TaskType

_DELETES = (TaskType.DELETE_OBJECT, TaskType.DELETE_DOCUMENT)


@dataclass
class Content:
    """Content by identity. Used for both the expectation and what the database holds."""

    users: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    roles: dict[str, str] = field(default_factory=dict)
    forums: dict[str, str] = field(default_factory=dict)
    folders: dict[str, str] = field(default_factory=dict)
    # post GUID -> (forum name, author user name, subject, text)
    posts: dict[str, tuple[str, str, str, str]] = field(default_factory=dict)
    # (user name, role name)
    memberships: set[tuple[str, str]] = field(default_factory=set)
    # alias path -> (document name, title, summary, text)
    articles: dict[str, tuple[str, str, str, str]] = field(default_factory=dict)

    def sections(self) -> dict[str, dict[Any, Any]]:
        """Every part as a mapping (memberships map to True), for a uniform comparison."""
        return {
            "cms.user": dict(self.users),
            "cms.role": dict(self.roles),
            "forums.forum": dict(self.forums),
            "cms.folder": dict(self.folders),
            "forums.forumpost": dict(self.posts),
            "cms.userrole": dict.fromkeys(self.memberships, True),
            "cms.article": dict(self.articles),
        }


class ReferenceModel:
    """Replays workload tasks into a :class:`Content`."""

    def __init__(self, workload: Workload) -> None:
        self.workload = workload
        self.content = Content()
        self.applied = 0
        for task in workload.setup_tasks():
            self._setup(task)

    @classmethod
    def of(cls, workload: Workload, limit: int | None = None) -> Content:
        """The expected content after the setup and the first ``limit`` timed tasks."""
        model = cls(workload)
        for task in workload.tasks(limit):
            model.apply(task)
        return model.content

    def _setup(self, task: BenchTask) -> None:
        obj, c = task.obj, self.content
        if task.kind == "user":
            c.users[obj["username"]] = (obj["email"], obj["first_name"], obj["last_name"])
        elif task.kind == "role":
            c.roles[obj["name"]] = obj["display_name"]
        elif task.kind == "forum":
            c.forums[obj["name"]] = obj["display_name"]
        elif task.kind == "folder":
            c.folders["/" + obj["alias"]] = obj["name"]

    def apply(self, task: BenchTask) -> None:
        obj, c = task.obj, self.content
        delete = task.task_type in _DELETES
        self.applied += 1
        if task.kind == "post":
            if delete:
                c.posts.pop(obj["guid"], None)
            elif "forum_id" not in obj:  # an edit (bursty stream): subject and text only
                forum, author, _, _ = c.posts[obj["guid"]]
                c.posts[obj["guid"]] = (forum, author, obj["subject"], obj["text"])
            else:
                c.posts[obj["guid"]] = (
                    forum_name(obj["forum_id"] - FORUM_BASE),
                    author_name(obj["author_id"] - AUTHOR_BASE),
                    obj["subject"],
                    obj["text"],
                )
        elif task.kind == "membership":
            pair = (
                author_name(obj["user_id"] - AUTHOR_BASE),
                role_name(obj["role_id"] - ROLE_BASE),
            )
            if delete:
                c.memberships.discard(pair)
            else:
                c.memberships.add(pair)
        elif task.kind == "user":  # a user's whole record saved again (bursty stream)
            c.users[obj["username"]] = (obj["email"], obj["first_name"], obj["last_name"])
        elif task.kind == "article":
            folder = folder_alias(obj["folder_id"] - FOLDER_BASE)
            path = f"/{folder}/{obj['alias']}"
            if delete:
                c.articles.pop(path, None)
            else:
                c.articles[path] = (obj["title"], obj["title"], obj["summary"], obj["text"])
        else:
            raise ValueError(f"unknown task kind {task.kind!r}")
