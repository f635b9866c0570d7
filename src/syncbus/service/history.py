"""The history routes (CONTRACT §10): a task's record, an object's records, edit and replay."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from starlette.convertors import Convertor, register_url_convertor

from syncbus import readmodel
from syncbus.bus import IntegrationBus
from syncbus.errors import TaskNotFoundError
from syncbus.model import TaskInfo
from syncbus.service import schemas as s
from syncbus.service.common import TaskId, call_connector


class _AnyText(Convertor[str]):
    """A path parameter of any characters, slashes and line breaks included: Starlette's
    ``path`` (``.*``) stops at a line break, so a code name or alias path holding one
    matched no route and got the framework's bare "Not Found" instead of our answer."""

    regex = r"[\s\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("anytext", _AnyText())


DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
ObjectTypePath = Annotated[str, Path(description="The object type, e.g. cms.user.")]
CodeNamePath = Annotated[
    str, Path(description="The object's code name (or GUID for types without one).")
]
ObjectSite = Annotated[
    str | None, Query(min_length=1, max_length=100, description="Its site (site-bound types).")
]
_OBJECT_ANSWERS: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such object."},
    422: {"description": "Unknown object type or site, or a type without a code name."},
}


def history_routes(api: APIRouter, bus: IntegrationBus) -> None:
    @api.get(
        "/api/tasks/{task_id}/history",
        response_model=s.TaskRecordOut,
        responses={404: {"description": "Unknown id, or finished before the retention."}},
        tags=["history"],
    )
    def task_history(task_id: TaskId) -> s.TaskRecordOut:
        """What happened to a task, queued or finished within the retention."""
        record = bus.task_history(task_id)
        if record is None:
            days = bus.settings.history_retention_days
            raise TaskNotFoundError(
                f"no record of task {task_id}: no task with that id was logged, or it finished "
                f"more than {days} days ago (history_retention_days = {days})"
            )
        return s.TaskRecordOut.of(record)

    @api.put(
        "/api/tasks/{task_id}/object",
        response_model=TaskInfo,
        responses={
            404: {"description": "No such task queued."},
            409: {"description": "A worker is applying the task right now."},
            422: {"description": "The connector refused the new object; nothing changed."},
        },
        tags=["history"],
    )
    def replace_object(task_id: TaskId, body: s.ObjectIn, request: Request) -> TaskInfo:
        """Edit and replay: give a queued or failed task a new external object, prepared and
        captured as at logging, in place (same id and place in its queue, error log kept). It
        runs at its connector's next run, or now with POST /api/tasks/{id}/synchronize."""
        where = request.client.host if request.client else "an unknown client"
        task = call_connector(
            lambda: bus.replace_task_object(task_id, body.object, by=f"the HTTP API from {where}")
        )
        return readmodel.with_hint(bus, task)

    @api.get(
        "/api/objects/{object_type}/{code_name:anytext}/history",
        response_model=s.ObjectHistory,
        responses={422: {"description": "Unknown object type."}},
        tags=["history"],
    )
    def object_history(
        object_type: ObjectTypePath,
        code_name: CodeNamePath,
        site_name: Annotated[
            str | None,
            Query(min_length=1, max_length=100, description="Only records on this site."),
        ] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    ) -> s.ObjectHistory:
        """The records of the tasks that wrote an object (applied, or coalesced into one
        that was), newest first."""
        records = bus.object_history(object_type, code_name, site_name, limit=limit)
        return s.ObjectHistory(records=[s.TaskRecordOut.of(r) for r in records])

    # After the history route: a code name may hold slashes, and this path takes them all.
    @api.get(
        "/api/objects/{object_type}/{code_name:anytext}",
        response_model=s.ObjectOut,
        responses=_OBJECT_ANSWERS,
        tags=["history"],
    )
    def get_object(
        object_type: ObjectTypePath, code_name: CodeNamePath, site_name: ObjectSite = None
    ) -> s.ObjectOut:
        """The object as it is now in the content repository, every column (times in ISO
        8601; a float that is not finite as the string NaN, Infinity or -Infinity). A code
        name that ends in ``/history``: use ``GET /api/objects/{object_type}?code_name=``."""
        return read_object(object_type, code_name, site_name)

    @api.get(
        "/api/objects/{object_type}",
        response_model=s.ObjectOut,
        responses=_OBJECT_ANSWERS,
        tags=["history"],
    )
    def get_object_by_query(
        object_type: ObjectTypePath,
        code_name: Annotated[
            str, Query(min_length=1, description="The object's code name (or GUID), any text.")
        ],
        site_name: ObjectSite = None,
    ) -> s.ObjectOut:
        """The same as ``GET /api/objects/{object_type}/{code_name}``, the code name in the
        query: for any code name, one that ends in ``/history`` included."""
        return read_object(object_type, code_name, site_name)

    @api.get(
        "/api/pages/{site_name}/{alias_path:anytext}",
        response_model=s.PageOut,
        responses={
            404: {
                "description": "No page at that path in that culture (the answer names "
                "the cultures it has)."
            },
            422: {"description": "Unknown site."},
        },
        tags=["history"],
    )
    def get_page(
        site_name: Annotated[str, Path(description="The page's site.")],
        alias_path: Annotated[
            str, Path(description="Its alias path, e.g. news/launch (empty: the root).")
        ],
        culture: Annotated[
            str, Query(min_length=1, max_length=50, description="The document's culture.")
        ] = "en-US",
    ) -> s.PageOut:
        """A page as it is now: its node (id, GUID, alias path, parent, page type), its
        document in ``culture`` and the page type's fields (times in ISO 8601)."""
        found = readmodel.current_page(bus, site_name, alias_path, culture)
        path, culture = str(found["node_alias_path"]), str(found["document_culture"])
        return s.PageOut(
            site_name=site_name, alias_path=path, culture=culture, page=readmodel.plain(found)
        )

    def read_object(object_type: str, code_name: str, site_name: str | None) -> s.ObjectOut:
        found = readmodel.current_object(bus, object_type, code_name, site_name)
        return s.ObjectOut(object_type=object_type, object=readmodel.plain(found))
