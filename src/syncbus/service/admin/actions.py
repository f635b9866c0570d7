"""The admin's state changes, all POST with the session's CSRF token: sign-in and sign-out,
the switches, connectors, "process now", per-task synchronize/delete, and mass actions.

A request from htmx gets the fragment it swaps in; a plain form post is redirected (303) to
a page that shows the outcome as a flash message, so everything also works without script.
"""

from __future__ import annotations

import re

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from syncbus import readmodel
from syncbus.errors import (
    ConnectorNotFoundError,
    InvalidFilterError,
    SyncBusError,
    TaskBusyError,
    TaskNotFoundError,
)
from syncbus.service.admin import security
from syncbus.service.admin.context import (
    AdminContext,
    CheckedForm,
    CsrfRejected,
    Ctx,
    Form,
    back_to,
    is_htmx,
    redirect,
    render,
    session_cookie,
)
from syncbus.service.admin.jobs import Action
from syncbus.service.admin.pages import page_span, stats_data, task_filter, tasks_url
from syncbus.service.common import TaskId
from syncbus.store.db import MAX_ID

router = APIRouter(include_in_schema=False)


@router.post("/admin/signin")
async def signin(request: Request, ctx: Ctx) -> Response:
    if not security.same_origin(request):
        raise CsrfRejected
    fields = security.parse_form(await request.body(), security.MAX_SIGNIN_FIELDS)

    def field(key: str) -> str:
        return (fields.get(key) or [""])[0]

    target = security.safe_next(field("next"))
    if ctx.token is None:
        return redirect(request, target)
    client = security.client_address(request)
    name = field("name").strip()[: security.MAX_NAME]
    # The right token always signs in: only wrong guesses are throttled, so whoever guesses
    # from the operator's address cannot lock the operator out.
    if not security.token_matches(field("token"), ctx.token):
        wait = ctx.throttle.retry_after(client)
        if wait:
            refused = render(
                request, "signin.html", 429, session=None, next_url=target, name=name,
                error=f"Too many wrong tokens from your address: try again in {wait} s.",
            )  # fmt: skip
            refused.headers["Retry-After"] = str(wait)
            return refused
        ctx.throttle.failed(client)
        return render(
            request, "signin.html", 401, session=None, next_url=target, name=name,
            error="Wrong token.",
        )  # fmt: skip
    _session, value = ctx.signer.issue(name or "admin")
    response = redirect(request, target)
    session_cookie(request, response, value, ctx.signer.lifetime)
    return response


@router.post("/admin/signout")
def signout(request: Request, form: CheckedForm) -> Response:
    response = redirect(request, "/admin/signin", "Signed out.")
    response.delete_cookie(security.COOKIE, path="/admin", httponly=True, samesite="strict")
    return response


def _stats_or_redirect(
    request: Request, ctx: AdminContext, form: Form, message: str, kind: str = "info"
) -> Response:
    if is_htmx(request):
        notice = message if kind == "info" else f"Error: {message}"
        return render(
            request,
            "_stats.html",
            session=form.session,
            **stats_data(ctx, notice, page_span(request)),
        )
    return redirect(request, back_to(form, "/admin/"), message, kind)


@router.post("/admin/settings")
def change_setting(request: Request, ctx: Ctx, form: CheckedForm) -> Response:
    key, value = form.get("key"), form.get("value")
    if key not in readmodel.SETTING_KEYS or value not in ("on", "off"):
        return _stats_or_redirect(request, ctx, form, f"Unknown setting {key!r}.", "error")
    setattr(ctx.bus.settings, key, value == "on")
    if value == "on":
        ctx.dispatcher.trigger()  # what waited may run now
    label = key.replace("_", " ")
    return _stats_or_redirect(request, ctx, form, f"Switched {label} {value}.")


@router.post("/admin/connectors/{name}/enabled")
def set_enabled(request: Request, ctx: Ctx, form: CheckedForm, name: str) -> Response:
    enabled = form.get("enabled") in ("true", "1", "on")
    try:
        ctx.bus.set_connector_enabled(name, enabled)
    except ConnectorNotFoundError as exc:
        return _stats_or_redirect(request, ctx, form, str(exc), "error")
    if enabled:
        ctx.dispatcher.trigger(name)  # its waiting tasks can run now
    state = "enabled" if enabled else "disabled"
    return _stats_or_redirect(request, ctx, form, f"Connector {name} {state}.")


@router.post("/admin/process")
def process_now(request: Request, ctx: Ctx, form: CheckedForm) -> Response:
    connector = form.get("connector") or None
    if connector is not None and connector not in readmodel.connector_names(ctx.bus):
        message = f"No connector named {connector!r} is registered."
        return _stats_or_redirect(request, ctx, form, message, "error")
    ctx.dispatcher.trigger(connector)
    what = f"connector {connector}" if connector else "all connectors"
    return _stats_or_redirect(request, ctx, form, f"Processing of {what} requested.")


def busy_message(task_id: int) -> str:
    return f"Task {task_id} is being applied right now; try again in a moment."


def _has_record(ctx: AdminContext, task_id: int) -> bool:
    """Whether a task that left the queue still has a page (its record, CONTRACT §10)."""
    return ctx.bus.task_history(task_id) is not None


def _row_response(
    request: Request, ctx: AdminContext, form: Form, task_id: int, gone: str | None, message: str
) -> HTMLResponse:
    row = None if gone else readmodel.task_row(ctx.bus, task_id)
    return render(
        request,
        "_row.html",
        session=form.session,
        task_id=task_id,
        gone=gone or ("no longer queued" if row is None else None),
        row=row,
        message=message,
    )


@router.post("/admin/tasks/{task_id}/synchronize")
def synchronize(request: Request, ctx: Ctx, form: CheckedForm, task_id: TaskId) -> Response:
    before = ctx.bus.get_task(task_id)
    list_url = tasks_url(task_filter(before.connector_name if before else None, "", "", ""))
    gone: str | None = None
    kind = "info"
    try:
        applied = ctx.bus.synchronize_task(task_id)
    except TaskNotFoundError:
        applied, gone, kind = False, "is no longer queued", "error"
        message = f"Task {task_id} is no longer queued."
    except TaskBusyError:
        applied, kind, message = False, "error", busy_message(task_id)
    except SyncBusError as exc:
        applied, kind, message = False, "error", f"Task {task_id} was not run: {exc}"
    else:
        assert before is not None
        if applied:
            gone, message = "was applied", f"Task {task_id} “{before.title}” was applied."
        else:
            after = ctx.bus.get_task(task_id)
            error = after.error_message if after else "unknown error"
            kind, message = "error", f"Task {task_id} failed again: {error}"
    if is_htmx(request):
        return _row_response(request, ctx, form, task_id, gone, message if not gone else "")
    back = back_to(form, list_url)
    if gone and back.startswith(f"/admin/tasks/{task_id}") and not _has_record(ctx, task_id):
        back = list_url
    return redirect(request, back, message, kind)


@router.post("/admin/tasks/{task_id}/delete")
def delete(request: Request, ctx: Ctx, form: CheckedForm, task_id: TaskId) -> Response:
    gone: str | None
    try:
        ctx.bus.delete_task(task_id, by=f"{form.session.name} in the admin UI from {form.client}")
        gone, kind, message = "was deleted", "info", f"Task {task_id} was deleted."
    except TaskNotFoundError:
        gone, kind = "is no longer queued", "error"
        message = f"Task {task_id} is no longer queued."
    except TaskBusyError:
        gone, kind, message = None, "error", busy_message(task_id)
    if is_htmx(request):
        return _row_response(request, ctx, form, task_id, gone, message if not gone else "")
    back = back_to(form, "/admin/tasks")
    if gone and back.startswith(f"/admin/tasks/{task_id}") and not _has_record(ctx, task_id):
        back = "/admin/tasks"
    return redirect(request, back, message, kind)


OPS: dict[str, tuple[Action, bool]] = {
    "sync-selected": ("sync", False),
    "delete-selected": ("delete", False),
    "sync-all": ("sync", True),
    "delete-all": ("delete", True),
}


ID_TEXT = re.compile(r"[0-9]{1,19}")


def selected_ids(values: list[str]) -> list[int]:
    """The ``ids`` of a form: ASCII decimal task ids (``int()`` would also take ``²``-like
    digits of other scripts, or raise), at most ``MAX_SELECTED`` of them."""
    if len(values) > security.MAX_SELECTED:
        raise security.BadForm(
            f"{len(values)} tasks are selected; a mass action takes at most "
            f"{security.MAX_SELECTED}: act on all tasks matching a filter instead",
            422,
        )
    bad = [v for v in values if not (ID_TEXT.fullmatch(v) and 0 < int(v) <= MAX_ID)]
    if bad:
        raise security.BadForm(
            f"ids: {bad[0][:40]!r} is not a task id (a whole number from 1 to {MAX_ID})", 422
        )
    return sorted({int(v) for v in values})


@router.post("/admin/jobs")
def start_mass_action(request: Request, ctx: Ctx, form: CheckedForm) -> Response:
    op = OPS.get(form.get("op"))
    back = back_to(form, "/admin/tasks")
    if op is None:
        return redirect(request, back, "Choose an action.", "error")
    action, everything = op
    who = form.session.name
    if not everything:
        ids = selected_ids(form.getlist("ids"))
        if not ids:
            return redirect(request, back, "Select at least one task first.", "error")
        mass_action = ctx.mass_actions.start_selected(action, ids, who, form.client)
    else:
        lane = (form.getlist("f_lane") or [""])[0]  # as sent: a key may end in a space
        try:
            flt = task_filter(form.get("f_connector"), form.get("f_state"), form.get("f_type"),
                              form.get("f_text"), lane, form.get("f_waiting"))  # fmt: skip
        except InvalidFilterError as exc:
            return redirect(request, back, str(exc), "error")
        if action == "delete" and form.get("confirm") != "yes":
            total = readmodel.count_tasks(ctx.bus, flt)
            return render(
                request, "confirm.html", session=form.session, flt=flt, total=total, back=back
            )
        mass_action = ctx.mass_actions.start_matching(action, flt, who, form.client)
    mass_action.back = back
    return redirect(request, f"/admin/jobs/{mass_action.job_id}")


@router.post("/admin/jobs/{job_id}/cancel")
def cancel_mass_action(request: Request, ctx: Ctx, form: CheckedForm, job_id: str) -> Response:
    mass_action = ctx.mass_actions.get(job_id)
    if mass_action is None:
        return redirect(request, "/admin/tasks", "This mass action is not known (any more).")
    mass_action.cancel_event.set()
    mass_action.line("warn", f"Cancel requested by {form.session.name}")
    if is_htmx(request):
        return render(request, "_progress.html", session=form.session, job=mass_action)
    return redirect(request, f"/admin/jobs/{job_id}")
