"""What every admin route shares: the context on ``app.state.admin``, the request
dependencies (session, CSRF-checked form), rendering with security headers, flash messages."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, cast
from urllib.parse import quote, urlencode

import jinja2
from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from syncbus.bus import IntegrationBus
from syncbus.dispatcher import Dispatcher
from syncbus.service.admin import security
from syncbus.service.admin.jobs import MassActions
from syncbus.service.admin.security import Session, SessionSigner
from syncbus.service.admin.views import describe
from syncbus.service.auth import FailureThrottle
from syncbus.service.metrics import ServiceMetrics

HERE = Path(__file__).parent
TEMPLATES_DIR = HERE / "templates"
STATIC_DIR = HERE / "static"
FLASH_COOKIE = "syncbus_flash"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class SignInRequired(Exception):
    """No valid session: send the browser to the sign-in form."""


class CsrfRejected(Exception):
    """A state-changing request without the session's CSRF token (or from another site)."""


def _fmt_time(value: dt.datetime | None) -> str:
    if value is None:
        return "\u2013"
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _age(value: dt.datetime | None) -> str:
    if value is None:
        return "\u2013"
    seconds = max(0, int((dt.datetime.now(dt.UTC) - value).total_seconds()))
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def _until(value: dt.datetime | None) -> str:
    """``in 4 min`` for a time to come (a task's next attempt); ``now`` once it has come."""
    if value is None:
        return "\u2013"
    seconds = int((value - dt.datetime.now(dt.UTC)).total_seconds())
    if seconds <= 0:
        return "now"
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"in {seconds // size} {unit}"
    return f"in {seconds} s"


def _ago(value: dt.datetime | None) -> str:
    return "never" if value is None else f"{_age(value)} ago"


def _iso(value: dt.datetime | None) -> str:
    return "" if value is None else value.astimezone(dt.UTC).isoformat()


def _q(value: object) -> str:
    return quote(str(value), safe="")


def make_environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        when=_fmt_time, age=_age, ago=_ago, until=_until, iso=_iso, q=_q, describe=describe
    )
    env.globals["urlencode"] = urlencode
    return env


@dataclass
class AdminContext:
    """The admin's state for one app: the bus, the dispatcher, the token and the sessions."""

    bus: IntegrationBus
    dispatcher: Dispatcher
    token: str | None
    signer: SessionSigner = field(default_factory=SessionSigner)
    throttle: FailureThrottle = field(default_factory=FailureThrottle)
    metrics: ServiceMetrics | None = None
    env: jinja2.Environment = field(default_factory=make_environment)
    mass_actions: MassActions = field(init=False)

    def __post_init__(self) -> None:
        self.mass_actions = MassActions(self.bus)


@dataclass(frozen=True)
class Form:
    """A POSTed form whose session and CSRF token were verified."""

    session: Session
    fields: dict[str, list[str]]
    client: str

    def get(self, key: str, default: str = "") -> str:
        values = self.fields.get(key)
        return values[0].strip() if values else default

    def getlist(self, key: str) -> list[str]:
        return self.fields.get(key, [])


# -- dependencies (module level: FastAPI resolves their annotations in module globals) --------
def admin_context(request: Request) -> AdminContext:
    return cast(AdminContext, request.app.state.admin)


def page_session(request: Request) -> Session:
    """The session of a page view. Without a configured token a session is opened on the fly
    (the admin is open like the API, but its forms still carry a CSRF token)."""
    ctx = admin_context(request)
    session = ctx.signer.read(request.cookies.get(security.COOKIE))
    if session is None:
        if ctx.token is not None:
            raise SignInRequired
        session, value = ctx.signer.issue("anonymous")
        request.state.new_session_cookie = value
    return session


async def checked_form(request: Request) -> Form:
    """The form of a state-changing request, after checking session, origin and CSRF token."""
    ctx = admin_context(request)
    session = ctx.signer.read(request.cookies.get(security.COOKIE))
    if session is None:
        if ctx.token is not None and security.same_origin(request):
            raise SignInRequired
        raise CsrfRejected
    fields = security.parse_form(await request.body())
    given = (
        request.headers.get(security.CSRF_HEADER) or (fields.get(security.CSRF_FIELD) or [""])[0]
    )
    if not security.same_origin(request) or not security.csrf_matches(given, session):
        raise CsrfRejected
    return Form(session, fields, security.client_address(request))


# -- responses -----------------------------------------------------------------------------------
def session_cookie(request: Request, response: Response, value: str, max_age: int) -> None:
    """HttpOnly, SameSite=Strict, Path=/admin; Secure when the request came over HTTPS."""
    response.set_cookie(
        security.COOKIE,
        value,
        max_age=max_age,
        path="/admin",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def _read_flash(ctx: AdminContext, request: Request) -> dict[str, str] | None:
    payload = ctx.signer.unsign(request.cookies.get(FLASH_COOKIE))
    if not payload:
        return None
    return {"text": str(payload.get("t", "")), "kind": str(payload.get("k", "info"))}


def flash(request: Request, response: Response, text: str, kind: str = "info") -> None:
    """A one-time message shown by the next page."""
    value = admin_context(request).signer.sign({"t": text[:2000], "k": kind})
    response.set_cookie(
        FLASH_COOKIE,
        value,
        path="/admin",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def secure(request: Request, response: Response) -> Response:
    for key, value in SECURITY_HEADERS.items():
        response.headers[key] = value
    new_cookie = getattr(request.state, "new_session_cookie", None)
    if new_cookie:
        session_cookie(request, response, new_cookie, security.SESSION_SECONDS)
    return response


def render(
    request: Request, template: str, status: int = 200, *, session: Session | None, **data: Any
) -> HTMLResponse:
    ctx = admin_context(request)
    shown = _read_flash(ctx, request) if template != "_stats.html" else None
    html = ctx.env.get_template(template).render(
        session=session,
        csrf=session.csrf if session else "",
        signed_in=ctx.token is not None,
        flash=shown,
        path=request.url.path,
        **data,
    )
    response = HTMLResponse(html, status_code=status)
    if shown is not None:
        response.delete_cookie(FLASH_COOKIE, path="/admin")
    return cast(HTMLResponse, secure(request, response))


def redirect(
    request: Request, url: str, message: str | None = None, kind: str = "info"
) -> Response:
    response = RedirectResponse(url, status_code=303)
    if message:
        flash(request, response, message, kind)
    return secure(request, response)


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def back_to(form: Form, default: str) -> str:
    """Where to return after an action: the ``back`` field when it is an admin path."""
    back = form.get("back")
    return back if back.startswith("/admin") and not back.startswith("//") else default


# The dependencies of the admin's routes, as parameter annotations.
Ctx = Annotated[AdminContext, Depends(admin_context)]
PageSession = Annotated[Session, Depends(page_session)]
CheckedForm = Annotated[Form, Depends(checked_form)]
