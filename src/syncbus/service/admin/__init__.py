"""The admin web UI at ``/admin/``: server-rendered pages (Jinja2) with htmx, shipped inside the
package (no CDN, no build step). ``install_admin`` adds it to the service's FastAPI app."""

from __future__ import annotations

from urllib.parse import quote, urlsplit

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from syncbus.bus import IntegrationBus
from syncbus.dispatcher import Dispatcher
from syncbus.service.admin.context import (
    STATIC_DIR,
    AdminContext,
    CsrfRejected,
    SignInRequired,
    is_htmx,
    render,
    secure,
)
from syncbus.service.admin.security import BadForm, safe_next
from syncbus.service.auth import FailureThrottle
from syncbus.service.common import invalid_request
from syncbus.service.metrics import ServiceMetrics

__all__ = ["AdminContext", "install_admin"]


def _return_path(request: Request) -> str:
    """Where to go after signing in: this page, or the page an htmx request came from."""
    if request.method == "GET" and not is_htmx(request):
        query = request.url.query
        return request.url.path + ("?" + query if query else "")
    current = urlsplit(request.headers.get("hx-current-url", ""))
    return current.path + ("?" + current.query if current.query else "")


async def _sign_in_required(request: Request, _exc: Exception) -> Response:
    location = "/admin/signin?next=" + quote(safe_next(_return_path(request)), safe="")
    if is_htmx(request):
        return secure(request, Response(status_code=200, headers={"HX-Redirect": location}))
    return secure(request, RedirectResponse(location, status_code=303))


async def _csrf_rejected(request: Request, _exc: Exception) -> Response:
    return render(
        request,
        "error.html",
        403,
        session=None,
        heading="Forbidden",
        message="The request did not carry this session's CSRF token (or came from another "
        "site). Reload the page and try again.",
    )


async def _bad_form(request: Request, exc: Exception) -> Response:
    status = exc.status if isinstance(exc, BadForm) else 400
    heading = "Bad request" if status == 400 else "Invalid input"
    return render(request, "error.html", status, session=None, heading=heading, message=str(exc))


async def _invalid_request(request: Request, exc: Exception) -> Response:
    """An address or query the admin's routes cannot take (``/admin/tasks/abc``): a page
    that says what is wrong, not the API's JSON; the API answers JSON (``invalid_request``)."""
    assert isinstance(exc, RequestValidationError)
    if not request.url.path.startswith("/admin"):
        return await invalid_request(request, exc)
    errors = exc.errors()
    in_path = all(e.get("loc", ("",))[0] == "path" for e in errors)
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'the request'}: {e.get('msg')}"
        + (f" (got {e['input']!r})" if isinstance(e.get("input"), str) else "")
        for e in errors
    )
    return render(
        request,
        "error.html",
        404 if in_path else 400,
        session=None,
        heading="Not found" if in_path else "Bad request",
        message=f"This address cannot be served: {problems}.",
    )


def install_admin(
    app: FastAPI,
    bus: IntegrationBus,
    dispatcher: Dispatcher,
    token: str | None,
    *,
    throttle: FailureThrottle | None = None,
    metrics: ServiceMetrics | None = None,
) -> AdminContext:
    """Serve the admin UI under ``/admin/`` on ``app`` (same token as the API, if any; the
    same throttle of wrong tokens per client as the API's, so both share one budget)."""
    from syncbus.service.admin import actions, lineage, pages

    ctx = AdminContext(
        bus=bus,
        dispatcher=dispatcher,
        token=token or None,
        throttle=throttle or FailureThrottle(),
        metrics=metrics,
    )
    app.state.admin = ctx
    app.include_router(pages.router)
    app.include_router(actions.router)
    app.include_router(lineage.router)
    app.mount("/admin/static", StaticFiles(directory=STATIC_DIR), name="admin-static")
    app.add_exception_handler(SignInRequired, _sign_in_required)
    app.add_exception_handler(CsrfRejected, _csrf_rejected)
    app.add_exception_handler(BadForm, _bad_form)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    return ctx
