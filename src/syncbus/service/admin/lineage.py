"""The admin's history views (CONTRACT §10): a task's lineage on its page, queued or finished;
edit and replay of a queued or failed task's external object; an object's history.

The lineage reads as one chain: the external object as logged, the internal object the
connector made of it, what each translation resolved to, what applying it changed, and its
errors. Editing re-runs the connector on a new external object (``replace_task_object``);
a bad edit is shown next to the editor and changes nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlencode

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from syncbus import readmodel
from syncbus.errors import SyncBusError, TaskBusyError, TaskNotFoundError
from syncbus.model import TaskRecord
from syncbus.readmodel import TaskDetail
from syncbus.service.admin.context import (
    AdminContext,
    CheckedForm,
    Ctx,
    PageSession,
    redirect,
    render,
)
from syncbus.service.admin.security import Session
from syncbus.service.common import TaskId

router = APIRouter(include_in_schema=False)

# A record in one of these states is still in the queue: its object can be replaced.
EDITABLE = ("queued", "waiting", "failed")
HISTORY_LIMIT = 100


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def identity_text(identity: dict[str, Any]) -> str:
    """``adm.ref 'ref1' on site main, culture en-US, under page 'news'``: what a translation
    record looked for, in words."""
    kind = identity.get("object_type") or "object"
    text = f"{kind} {identity.get('code_name')!r}"
    details = []
    if identity.get("site_name"):
        details.append(f"on site {identity['site_name']}")
    if identity.get("culture"):
        details.append(f"culture {identity['culture']}")
    if isinstance(identity.get("parent"), dict):
        details.append(f"under {identity_text(identity['parent'])}")
    if isinstance(identity.get("group"), dict):
        details.append(f"in group {identity_text(identity['group'])}")
    return " ".join([text, ", ".join(details)]) if details else text


@dataclass(frozen=True)
class TranslationView:
    column: str | None
    external_id: str
    identity: str
    internal_id: Any


@dataclass(frozen=True)
class ChangeView:
    column: str
    old: str | None  # None: the row was new
    new: str


@dataclass(frozen=True)
class Editor:
    """The external object's editor: the text shown and the error of the last try."""

    text: str
    error: str | None = None


@dataclass(frozen=True)
class Lineage:
    """A task's record, ready for the template."""

    record: TaskRecord
    external: str | None
    internal: str
    translations: list[TranslationView]
    changes: list[ChangeView] | None
    editable: bool
    history_url: str | None


def lineage_of(record: TaskRecord) -> Lineage:
    translations = [
        TranslationView(
            column=t.get("column"),
            external_id=compact(t.get("external_id")),
            identity=identity_text(t.get("identity") or {}),
            internal_id=t.get("internal_id"),
        )
        for t in record.translations
    ]
    changes = None
    if record.changes is not None:
        changes = [
            ChangeView(col, None if pair[0] is None else compact(pair[0]), compact(pair[1]))
            for col, pair in record.changes.items()
        ]
    history_url = None
    if record.object_type and record.code_name is not None:
        history_url = object_history_url(record.object_type, record.code_name, record.site_name)
    return Lineage(
        record=record,
        external=None if record.external is None else pretty(record.external),
        internal=pretty(record.internal),
        translations=translations,
        changes=changes,
        editable=record.state in EDITABLE,
        history_url=history_url,
    )


def object_history_url(object_type: str, code_name: str, site_name: str | None) -> str:
    params = {"object_type": object_type, "code_name": code_name, "site_name": site_name or ""}
    return "/admin/history?" + urlencode({k: v for k, v in params.items() if v})


def task_page(
    request: Request,
    ctx: AdminContext,
    session: Session,
    task_id: int,
    editor: Editor | None = None,
    status: int = 200,
) -> HTMLResponse:
    """A task's page: its place in the queue while queued, and its lineage either way."""
    record = ctx.bus.task_history(task_id)
    detail: TaskDetail | None = readmodel.task_detail(ctx.bus, task_id)
    if record is None and detail is None:
        days = ctx.bus.settings.history_retention_days
        kept = f"records are kept {days} days" if days else "history_retention_days is 0"
        return render(
            request, "error.html", 404, session=session, heading="Not found",
            message=f"Task {task_id} is not queued, and no record of it is kept ({kept}).",
        )  # fmt: skip
    lineage = None if record is None else lineage_of(record)
    if editor is None and lineage is not None and lineage.editable:
        editor = Editor(lineage.external or "")
    return render(
        request,
        "task.html",
        status,
        session=session,
        task_id=task_id,
        d=detail,
        lineage=lineage,
        editor=editor,
    )


# -- edit and replay ----------------------------------------------------------------------------
def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_object(text: str) -> Any:
    """The editor's text as JSON; ``ValueError`` with a message an operator can act on."""
    if not text.strip():
        raise ValueError("The external object is empty: type the object as JSON.")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"Not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno}). "
            "Nothing was changed."
        ) from exc
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"Not valid JSON: {exc}. Nothing was changed.") from exc


def replace(ctx: AdminContext, task_id: int, obj: Any, by: str) -> None:
    """``replace_task_object``; an exception raised by connector code becomes a
    ``ValueError`` (the operator's object is what it could not prepare)."""
    try:
        ctx.bus.replace_task_object(task_id, obj, by=by)
    except (SyncBusError, sa.exc.SQLAlchemyError):
        raise
    except Exception as exc:
        raise ValueError(
            f"The connector could not prepare the object: {type(exc).__name__}: {exc}"
        ) from exc


def _synchronize(ctx: AdminContext, task_id: int) -> tuple[str, str]:
    """Run a just-replaced task; the flash message and its kind."""
    try:
        applied = ctx.bus.synchronize_task(task_id)
    except TaskBusyError:
        return f"Task {task_id}'s object was replaced; it is being applied right now.", "info"
    except TaskNotFoundError:
        return f"Task {task_id}'s object was replaced; it left the queue meanwhile.", "info"
    except SyncBusError as exc:
        return f"Task {task_id}'s object was replaced, but it was not run: {exc}", "error"
    if applied:
        return f"Task {task_id}'s object was replaced and the task was applied.", "info"
    after = ctx.bus.get_task(task_id)
    error = after.error_message if after else "unknown error"
    return f"Task {task_id}'s object was replaced, but it failed again: {error}", "error"


@router.get("/admin/tasks/{task_id}/object")
def edit_object_page(request: Request, task_id: TaskId) -> Response:
    """The address a refused Save leaves in the browser: reloaded, bookmarked or shared, it
    leads back to the task's page (where the editor is), not to a bare 405."""
    return RedirectResponse(f"/admin/tasks/{task_id}", status_code=303)


@router.post("/admin/tasks/{task_id}/object")
def edit_object(request: Request, ctx: Ctx, form: CheckedForm, task_id: TaskId) -> Response:
    """Save (replace the external object) or save and synchronize. A bad object is shown
    again with its error, and nothing changes."""
    here = f"/admin/tasks/{task_id}"
    text = (form.fields.get("object") or [""])[0]
    try:
        who = f"{form.session.name} in the admin UI from {form.client}"
        replace(ctx, task_id, parse_object(text), who)
    except TaskNotFoundError:
        message = f"Task {task_id} is no longer queued: its object can no longer be replaced."
        return redirect(request, here, message, "error")
    except TaskBusyError:
        busy = f"Task {task_id} is being applied right now; try again in a moment."
        return task_page(request, ctx, form.session, task_id, Editor(text, busy), 409)
    except (SyncBusError, ValueError) as exc:
        return task_page(request, ctx, form.session, task_id, Editor(text, str(exc)), 422)
    if form.get("op") != "save-sync":
        message = f"Task {task_id}'s object was replaced; its connector's next run tries it."
        return redirect(request, here, message)
    message, kind = _synchronize(ctx, task_id)
    return redirect(request, here, message, kind)


# -- an object's history --------------------------------------------------------------------------
def object_type_names(ctx: AdminContext) -> list[str]:
    """The types a task may write an object of (page types have no code name to look up)."""
    pages = set(ctx.bus.registry.page_types)
    return [name for name in readmodel.type_names(ctx.bus) if name not in pages]


@router.get("/admin/history")
def object_history(
    request: Request,
    ctx: Ctx,
    session: PageSession,
    object_type: Annotated[str, Query(max_length=200)] = "",
    code_name: Annotated[str, Query(max_length=450)] = "",
    site_name: Annotated[str, Query(max_length=200)] = "",
) -> HTMLResponse:
    object_type, code_name, site_name = object_type.strip(), code_name.strip(), site_name.strip()
    records: list[Lineage] | None = None
    error = None
    if object_type and code_name:
        try:
            found = ctx.bus.object_history(
                object_type, code_name, site_name or None, limit=HISTORY_LIMIT
            )
        except SyncBusError as exc:
            error = str(exc)
        else:
            records = [lineage_of(r) for r in found]
    elif object_type or code_name:
        error = "Choose an object type and type a code name (or GUID)."
    return render(
        request,
        "history.html",
        400 if error else 200,
        session=session,
        type_names=object_type_names(ctx),
        object_type=object_type,
        code_name=code_name,
        site_name=site_name,
        records=records,
        error=error,
        limit=HISTORY_LIMIT,
        retention=ctx.bus.settings.history_retention_days,
    )
