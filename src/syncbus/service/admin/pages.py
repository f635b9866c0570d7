"""The admin's pages (GET): dashboard and its stats fragment, the task list, a task, the event
log, a mass action's progress, and the sign-in form."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any
from urllib.parse import parse_qs, urlencode, urlsplit

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from syncbus import activity, readmodel
from syncbus.errors import InvalidFilterError
from syncbus.readmodel import STATES, State, TaskFilter, bad_lane
from syncbus.service.admin import lineage, security
from syncbus.service.admin.charts import chart_svg, per_bucket
from syncbus.service.admin.context import (
    AdminContext,
    Ctx,
    PageSession,
    redirect,
    render,
)
from syncbus.service.admin.security import Session
from syncbus.store.db import MAX_ID

PAGE_SIZE = 50

router = APIRouter(include_in_schema=False)
Cursor = Annotated[int | None, Query(ge=0, le=MAX_ID)]


def stats_data(
    ctx: AdminContext, notice: str | None = None, span: str | None = None
) -> dict[str, Any]:
    """What the dashboard's self-refreshing fragment shows (``span``: the charts', hour or day)."""
    charts = activity.activity(ctx.bus, activity.span_of(span))
    return {
        "charts": charts,
        "chart": chart_svg,
        "chart_unit": per_bucket(charts),
        "connectors": readmodel.connector_stats(ctx.bus),
        "settings": readmodel.read_settings(ctx.bus),
        "blockers": readmodel.blockers(ctx.bus),
        "workers": ctx.bus.list_workers(),
        "now": dt.datetime.now(dt.UTC),
        "notice": notice,
    }


def page_span(request: Request) -> str | None:
    """The charts' span of the page an htmx request comes from (its ``HX-Current-URL``), so
    an action on the dashboard keeps the span it shows."""
    query = urlsplit(request.headers.get("hx-current-url", "")).query
    found = parse_qs(query).get("span")
    return found[0] if found else None


@router.get("/admin")
def admin_root() -> Response:
    return RedirectResponse("/admin/", status_code=307)


@router.get("/admin/")
def dashboard(
    request: Request, ctx: Ctx, session: PageSession, span: str | None = None
) -> HTMLResponse:
    return render(
        request,
        "dashboard.html",
        session=session,
        events=readmodel.event_page(ctx.bus, limit=5).events,
        jobs=ctx.mass_actions.recent()[:5],
        **stats_data(ctx, span=span),
    )


@router.get("/admin/stats")
def stats(
    request: Request, ctx: Ctx, session: PageSession, span: str | None = None
) -> HTMLResponse:
    return render(request, "_stats.html", session=session, **stats_data(ctx, span=span))


@router.get("/admin/signin")
def signin_form(request: Request, ctx: Ctx, next: str | None = None) -> Response:
    target = security.safe_next(next)
    if ctx.token is None or ctx.signer.read(request.cookies.get(security.COOKIE)):
        return redirect(request, target)
    return render(request, "signin.html", session=None, next_url=target, name="", error=None)


_YES, _NO = ("1", "true", "on", "yes"), ("", "0", "false", "off", "no")


def task_filter(
    connector: str | None,
    state: str | None,
    type: str | None,
    text: str | None,
    lane: str | None = None,
    waiting: str | None = None,
) -> TaskFilter:
    """The filter the list's query (or a mass action's form) asks for. An unknown state or
    type matches loosely; a lane key or a ``waiting`` value that cannot be meant raises
    ``InvalidFilterError``: a mass action must never widen to more than was asked for."""
    clean_state: State = next((s for s in STATES if s == (state or "")), "")
    if lane and (why := bad_lane(lane)) is not None:
        raise InvalidFilterError(f"The lane filter {lane[:80]!r} is not a lane key: {why}.")
    flag = (waiting or "").strip().lower()
    if flag not in _YES + _NO:
        raise InvalidFilterError(f"The waiting filter is 1 or empty, not {flag[:20]!r}.")
    return TaskFilter(
        connector=connector or None,
        state=clean_state,
        type=type or None,
        text=(text or "").strip()[:200] or None,
        lane=lane or None,
        waiting=flag in _YES,
    )


def filter_params(flt: TaskFilter, sort: str) -> dict[str, str]:
    params = {
        "connector": flt.connector or "",
        "state": flt.state,
        "type": flt.type or "",
        "text": flt.text or "",
        "lane": flt.lane or "",
        "waiting": "1" if flt.waiting else "",
        "sort": sort if sort != "asc" else "",
    }
    return {k: v for k, v in params.items() if v}


@router.get("/admin/tasks")
def tasks(
    request: Request,
    ctx: Ctx,
    session: PageSession,
    connector: str | None = None,
    state: str | None = None,
    type: str | None = None,
    text: str | None = None,
    lane: str | None = None,
    waiting: str | None = None,
    sort: str = "asc",
    after: Cursor = None,
    before: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=500)] = PAGE_SIZE,
) -> HTMLResponse:
    try:
        flt = task_filter(connector, state, type, text, lane, waiting)
    except InvalidFilterError as exc:
        return render(
            request, "error.html", 400, session=session, heading="Invalid filter", message=str(exc)
        )
    names = readmodel.connector_names(ctx.bus)
    if flt.connector is not None and flt.connector not in names:  # as the API answers it
        message = f"No connector named {flt.connector!r} is registered."
        return not_found(request, session, message)
    order: readmodel.Sort = "desc" if sort == "desc" else "asc"
    page = readmodel.task_page(ctx.bus, flt, sort=order, after=after, before=before, limit=limit)
    params = filter_params(flt, order)
    here = request.url.path + ("?" + request.url.query if request.url.query else "")
    return render(
        request,
        "tasks.html",
        session=session,
        flt=flt,
        sort=order,
        page=page,
        params=params,
        back=here,
        total=readmodel.count_tasks(ctx.bus, flt),
        blockers=readmodel.blockers(ctx.bus, flt.connector),
        connector_names=names,
        type_names=readmodel.type_names(ctx.bus),
    )


def not_found(request: Request, session: Session, message: str) -> HTMLResponse:
    return render(request, "error.html", 404, session=session, heading="Not found", message=message)


@router.get("/admin/tasks/{task_id}")
def task(
    request: Request,
    ctx: Ctx,
    session: PageSession,
    task_id: Annotated[int, Path(ge=1, le=MAX_ID)],
) -> HTMLResponse:
    return lineage.task_page(request, ctx, session, task_id)


@router.get("/admin/events")
def events(
    request: Request, ctx: Ctx, session: PageSession, before: Cursor = None, after: Cursor = None
) -> HTMLResponse:
    page = readmodel.event_page(ctx.bus, before=before, after=after)
    return render(request, "events.html", session=session, page=page, events=page.events)


@router.get("/admin/jobs/{job_id}")
def mass_action(request: Request, ctx: Ctx, session: PageSession, job_id: str) -> HTMLResponse:
    found = ctx.mass_actions.get(job_id)
    if found is None:
        return not_found(request, session, "This mass action is not known (any more).")
    return render(request, "job.html", session=session, job=found, back=found.back)


@router.get("/admin/jobs/{job_id}/progress")
def mass_action_progress(
    request: Request, ctx: Ctx, session: PageSession, job_id: str
) -> HTMLResponse:
    found = ctx.mass_actions.get(job_id)
    if found is None:
        return not_found(request, session, "This mass action is not known (any more).")
    return render(request, "_progress.html", session=session, job=found)


def tasks_url(flt: TaskFilter) -> str:
    query = urlencode(filter_params(flt, "asc"))
    return "/admin/tasks" + ("?" + query if query else "")
