"""The HTTP service: ``create_app(bus)`` returns the ASGI application (FastAPI)."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from http import HTTPStatus
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.concurrency import run_in_threadpool

from syncbus import __version__, readmodel, tracing
from syncbus.bus import IntegrationBus
from syncbus.dispatcher import HEARTBEAT, Dispatcher
from syncbus.errors import (
    ConfigurationError,
    ConnectorDisabledError,
    ConnectorLoadError,
    ConnectorNotFoundError,
    IntegrationDisabledError,
    ObjectNotFoundError,
    QueueFullError,
    SchemaMissingError,
    SyncBusError,
    TaskBusyError,
    TaskNotFoundError,
)
from syncbus.intake import TaskRequest
from syncbus.model import ConnectorInfo, TaskInfo
from syncbus.service import schemas as s
from syncbus.service.admin import install_admin
from syncbus.service.auth import BearerAuth, FailureThrottle, TrustedProxies, parse_networks
from syncbus.service.common import TaskId, awaiting_connector, call_connector, invalid_request
from syncbus.service.gather import LogGatherer
from syncbus.service.history import history_routes
from syncbus.service.limits import BodySizeLimit, NulGuard
from syncbus.service.metrics import ServiceMetrics
from syncbus.service.ready import readiness
from syncbus.store.db import MAX_ID
from syncbus.store.enqueue import LANE_MAX

log = logging.getLogger(__name__)
DEFAULT_MAX_BODY = 5 * 1024 * 1024
PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
RETRY_AFTER_SECONDS = 5
# The producer's W3C trace context: kept with the task, so processing joins its trace. One
# that is not well formed is ignored (never an error).
TraceParent = Annotated[
    str | None,
    Header(description="W3C trace context of the producer (processing joins its trace)."),
]
# Only documents the scheme in the OpenAPI schema; the check itself is the BearerAuth
# middleware, which runs before routing and body parsing.
bearer = HTTPBearer(auto_error=False, description="The SYNCBUS_API_TOKEN, when one is set.")

_STATUS: list[tuple[type[Exception], int]] = [
    (TaskBusyError, 409),
    (ConnectorDisabledError, 409),
    (ConnectorNotFoundError, 404),
    (TaskNotFoundError, 404),
    (ObjectNotFoundError, 404),
    (ConnectorLoadError, 503),
    (SchemaMissingError, 503),
    (IntegrationDisabledError, 503),
    (SyncBusError, 422),
]


def _status_of(exc: SyncBusError) -> int:
    return next(code for cls, code in _STATUS if isinstance(exc, cls))


def _not_queued(bus: IntegrationBus, task_id: int) -> str:
    """Why a task id is not in the queue, and where to look: a finished task left a record
    (CONTRACT §10), which a 404 alone would hide."""
    record = bus.task_history(task_id)
    if record is None or record.finished_at is None:
        return (
            f"no queued task with id {task_id}, and no record of it (never logged, or "
            "finished longer ago than the history's retention)"
        )
    return (
        f"no queued task with id {task_id}: it left the queue ({record.state} at "
        f"{record.finished_at.isoformat()}); what happened to it: GET /api/tasks/{task_id}/history"
    )


def _delete(bus: IntegrationBus, task_id: int, request: Request) -> None:
    where = request.client.host if request.client else "an unknown client"
    try:
        bus.delete_task(task_id, by=f"the HTTP API from {where}")
    except TaskNotFoundError:  # say where it went, as GET does (trial 6)
        raise TaskNotFoundError(_not_queued(bus, task_id)) from None


def create_app(
    bus: IntegrationBus,
    api_token: str | None = None,
    *,
    dispatcher: Dispatcher | None = None,
    run_dispatcher: bool = True,
    workers: int = 4,
    scheduler_interval: float | None = 60.0,
    scheduler_connector: str | None = None,
    max_body_bytes: int | None = None,
    no_auth: bool = False,
    trusted_proxies: str | Sequence[str] | None = None,
    auth_throttle: FailureThrottle | None = None,
    heartbeat: float = HEARTBEAT,
) -> FastAPI:
    """The API, with processing in the background (workers, scheduler, wake-ups) unless
    ``run_dispatcher`` is False. ``workers=0``: the API and admin only, for a deployment whose
    processing runs in ``syncbus worker`` processes; what asks for a run here (notify, an
    admin action) wakes those workers (PostgreSQL: at once).

    The token comes from ``api_token`` or ``SYNCBUS_API_TOKEN``; an empty one is a
    ``ConfigurationError`` (it would open everything silently): run without authentication
    only with ``no_auth=True``. With no token configured at all, the app is open, as for
    embedding and tests. ``X-Forwarded-For`` / ``-Proto`` are honoured only from
    ``trusted_proxies`` (or ``SYNCBUS_TRUSTED_PROXIES``: addresses or networks, comma-separated).
    """
    token = _resolve_token(api_token, no_auth)
    networks = parse_networks(
        trusted_proxies
        if trusted_proxies is not None
        else os.environ.get("SYNCBUS_TRUSTED_PROXIES")
    )
    throttle = auth_throttle or FailureThrottle()
    limit = max_body_bytes or int(os.environ.get("SYNCBUS_MAX_BODY_BYTES", DEFAULT_MAX_BODY))
    metrics = ServiceMetrics(bus)
    bus.hooks.subscribe(metrics)
    elsewhere = workers == 0
    if elsewhere and dispatcher is not None:
        raise ValueError("workers=0 (the API only) and a dispatcher of its own: drop one")
    run_dispatcher = run_dispatcher and not elsewhere
    disp = dispatcher or Dispatcher(
        bus,
        workers=max(workers, 1),
        scheduler_interval=scheduler_interval,
        scheduler_connector=scheduler_connector,
        elsewhere=elsewhere,
        kind="serve",
        heartbeat=heartbeat,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if run_dispatcher:
            disp.start()
        try:
            yield
        finally:
            if run_dispatcher:
                disp.stop()

    app = FastAPI(
        title="syncbus",
        version=__version__,
        description="Log incoming tasks, trigger processing, inspect and fix the queue.",
        lifespan=lifespan,
    )
    app.state.bus = bus
    app.state.dispatcher = disp
    app.state.metrics = metrics
    # Group commit of the single-task route (service.gather).
    app.state.log_gatherer = gatherer = LogGatherer(bus.intake.log_each)
    # Added innermost first: proxies are resolved, then the token is checked (before any
    # body is read or validated), then the path and query are screened, then the body size.
    app.add_middleware(BodySizeLimit, max_bytes=limit)
    app.add_middleware(NulGuard)
    if token is not None:
        app.add_middleware(BearerAuth, token=token, throttle=throttle)
    app.add_middleware(TrustedProxies, networks=networks)
    app.add_exception_handler(SyncBusError, _syncbus_error)  # type: ignore[arg-type]
    app.add_exception_handler(sa.exc.SQLAlchemyError, _db_error)  # type: ignore[arg-type]
    # Refused input echoed short (install_admin puts an HTML page before it for /admin).
    app.add_exception_handler(RequestValidationError, invalid_request)

    api = APIRouter(dependencies=[Depends(bearer)])
    _task_routes(api, bus, gatherer, disp)
    _queue_routes(api, bus, disp, metrics)
    _worker_routes(api, bus)
    history_routes(api, bus)
    app.include_router(api)
    install_admin(app, bus, disp, token, throttle=throttle, metrics=metrics)

    _service_routes(app, bus, metrics)
    return app


def _service_routes(app: FastAPI, bus: IntegrationBus, metrics: ServiceMetrics) -> None:
    @app.get("/healthz", response_model=s.Health, tags=["service"])
    def healthz() -> s.Health | JSONResponse:
        try:
            with bus.reader.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except sa.exc.SQLAlchemyError as exc:
            return JSONResponse(
                {"status": "unhealthy", "database": type(exc).__name__}, status_code=503
            )
        return s.Health(status="ok", database="ok")

    @app.get(
        "/readyz",
        response_model=s.Ready,
        responses={503: {"model": s.Ready}},
        tags=["service"],
    )
    async def readyz() -> s.Ready | JSONResponse:
        """Whether the database can be written now (a rolled-back insert, short timeouts).
        No token needed, like /healthz: the answer names no URL, path or query."""
        reason = await readiness(bus)
        if reason is not None:
            return JSONResponse(
                {"status": "unavailable", "database": reason},
                status_code=503,
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        return s.Ready(status="ready", database="writable")

    @app.get("/metrics", tags=["service"], dependencies=[Depends(bearer)])
    def prometheus_metrics() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


def _resolve_token(api_token: str | None, no_auth: bool) -> str | None:
    """The bearer token, or None for no authentication (see ``create_app``)."""
    from_env = api_token is None
    token = os.environ.get("SYNCBUS_API_TOKEN") if from_env else api_token
    if no_auth:
        if not from_env and token and token.strip():
            raise ConfigurationError("create_app: pass either api_token or no_auth=True, not both")
        log.warning("syncbus service: authentication is off (no_auth): anyone can call it")
        return None
    if token is None:
        return None
    if not token.strip():
        where = "SYNCBUS_API_TOKEN" if from_env else "api_token"
        raise ConfigurationError(
            f"{where} is empty: an empty token would leave the API and the admin open. Set a "
            "token, or run without authentication explicitly (create_app(..., no_auth=True), "
            "syncbus serve --no-auth)"
        )
    return token


async def _syncbus_error(_request: Request, exc: SyncBusError) -> JSONResponse:
    if isinstance(exc, QueueFullError):  # backpressure: the client should slow down
        seconds = str(max(1, math.ceil(exc.retry_after)))
        return JSONResponse({"detail": str(exc)}, status_code=429, headers={"Retry-After": seconds})
    return JSONResponse({"detail": str(exc)}, status_code=_status_of(exc))


_UNAVAILABLE = (
    sa.exc.OperationalError,
    sa.exc.InterfaceError,
    sa.exc.DisconnectionError,
    sa.exc.TimeoutError,
)


async def _db_error(_request: Request, exc: sa.exc.SQLAlchemyError) -> JSONResponse:
    """503 only for a database that cannot be reached or used now; a value the database
    refuses is the caller's bad input (422); anything else is our bug (500)."""
    name = type(exc).__name__
    if isinstance(exc, (sa.exc.DataError, sa.exc.IntegrityError)):
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0][:300]
        detail = f"the database refused a value of this request ({name}): {reason}"
        return JSONResponse({"detail": detail}, status_code=422)
    if isinstance(exc, _UNAVAILABLE):
        return JSONResponse(
            {"detail": f"database unavailable ({name}): try again later"},
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    log.error("database error", exc_info=exc)
    return JSONResponse({"detail": f"internal database error ({name})"}, status_code=500)


def _request(task: s.TaskIn, traceparent: str | None = None) -> TaskRequest:
    return TaskRequest(
        task.object,
        task.process_type,
        task.task_type,
        task.data_type,
        task.site_name,
        task.idempotency_key,
        traceparent,
    )


def _task_routes(
    api: APIRouter, bus: IntegrationBus, gatherer: LogGatherer, disp: Dispatcher
) -> None:
    @api.post(
        "/api/connectors/{name}/tasks",
        status_code=201,
        response_model=s.TaskCreated,
        responses={200: {"model": s.TaskCreated}, 204: {"description": "skipped"}},
        tags=["tasks"],
    )
    async def log_task(name: str, task: s.TaskIn, traceparent: TraceParent = None) -> Any:
        request = _request(task, traceparent)
        if tracing.recording():  # a span per call: the call as Python callers make it
            outcome = await run_in_threadpool(
                call_connector, lambda: bus.log_tasks(name, [request])[0]
            )
        else:  # group commit on the event loop (service.gather)
            kept = tracing.kept_untraced(request.traceparent)
            request = replace(request, traceparent=kept)
            outcome = await awaiting_connector(gatherer.log(name, request))
        if outcome.task_id is None:
            return Response(status_code=204)
        # A response of its own: FastAPI would otherwise validate the model again, in another
        # trip to its thread pool (the route's model still documents the body).
        status = 201 if outcome.created else 200
        return JSONResponse({"task_id": outcome.task_id}, status_code=status)

    @api.post(
        "/api/connectors/{name}/tasks/batch",
        status_code=201,
        response_model=s.TasksCreated,
        tags=["tasks"],
    )
    def log_batch(
        name: str, batch: s.TaskBatchIn, traceparent: TraceParent = None
    ) -> s.TasksCreated:
        requests = [_request(t, traceparent) for t in batch.tasks]
        outcomes = call_connector(lambda: bus.log_tasks(name, requests))
        return s.TasksCreated(task_ids=[o.task_id for o in outcomes])

    def notify(connector: str | None) -> s.NotifyOut:
        if connector is not None and not bus.connectors.exists(connector):
            raise bus.connectors.not_found(connector)
        disp.trigger(connector)
        return s.NotifyOut(status="started", connector=connector)

    @api.get("/CMSPages/IntegrationNotify.aspx", response_model=s.NotifyOut, tags=["processing"])
    def kentico_notify(
        connector_name: Annotated[str | None, Query(alias="connectorName")] = None,
    ) -> s.NotifyOut:
        return notify(connector_name)

    @api.post("/api/notify", response_model=s.NotifyOut, tags=["processing"])
    def api_notify(connector: str | None = None) -> s.NotifyOut:
        return notify(connector)


def _patch_connector(
    bus: IntegrationBus, disp: Dispatcher, name: str, patch: s.ConnectorPatch
) -> None:
    if "queue_limit" in patch.model_fields_set:
        bus.set_queue_limit(name, patch.queue_limit)
    if patch.enabled is not None:
        bus.set_connector_enabled(name, patch.enabled)
        if patch.enabled:
            disp.trigger(name)  # its waiting tasks can run now


def _worker_routes(api: APIRouter, bus: IntegrationBus) -> None:
    @api.get("/api/workers", response_model=s.WorkerList, tags=["processing"])
    def list_workers() -> s.WorkerList:
        found = bus.list_workers()
        return s.WorkerList(workers=found, alive=sum(1 for w in found if w.alive))


def _queue_routes(
    api: APIRouter, bus: IntegrationBus, disp: Dispatcher, metrics: ServiceMetrics
) -> None:
    @api.get("/api/tasks", response_model=s.TaskList, tags=["queue"])
    def list_tasks(
        connector: str | None = None,
        after: Annotated[
            int | None, Query(ge=0, le=MAX_ID, description="Only tasks with a greater id.")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = PAGE_SIZE,
        lane: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=LANE_MAX,
                description="Only the tasks of this lane (its exact key, e.g. cms.user/alice).",
            ),
        ] = None,
        waiting: Annotated[
            bool, Query(description="Only tasks waiting for a missing reference (ENTITY).")
        ] = False,
    ) -> s.TaskList:
        """One page of the queue by key: pass the answer's ``next_after`` as ``after``."""
        tasks = bus.list_tasks(connector, after=after, limit=limit + 1, lane=lane, waiting=waiting)
        if not tasks and connector is not None and not bus.connectors.exists(connector):
            raise bus.connectors.not_found(connector)
        page = tasks[:limit]
        more = len(tasks) > limit
        return s.TaskList(tasks=page, next_after=page[-1].task_id if more else None)

    def one(task_id: int) -> TaskInfo:
        task = bus.get_task(task_id)
        if task is None:
            raise TaskNotFoundError(_not_queued(bus, task_id))
        return task

    @api.get("/api/tasks/{task_id}", response_model=TaskInfo, tags=["queue"])
    def get_task(task_id: TaskId) -> TaskInfo:
        return readmodel.with_hint(bus, one(task_id))

    @api.get("/api/tasks/{task_id}/log", response_model=s.TaskLog, tags=["queue"])
    def task_log(task_id: TaskId) -> s.TaskLog:
        one(task_id)
        return s.TaskLog(task_id=task_id, log=bus.task_log(task_id))

    @api.post("/api/tasks/{task_id}/synchronize", response_model=s.SyncResult, tags=["queue"])
    def synchronize(task_id: TaskId) -> s.SyncResult:
        one(task_id)
        applied = bus.synchronize_task(task_id)  # counted in /metrics through the bus's hooks
        after = bus.get_task(task_id)
        return s.SyncResult(task_id=task_id, applied=applied, task=after)

    @api.delete("/api/tasks/{task_id}", status_code=204, tags=["queue"])
    def delete_task(task_id: TaskId, request: Request) -> Response:
        _delete(bus, task_id, request)
        return Response(status_code=HTTPStatus.NO_CONTENT)

    @api.get("/api/connectors", response_model=s.ConnectorList, tags=["connectors"])
    def list_connectors() -> s.ConnectorList:
        return s.ConnectorList(connectors=bus.list_connectors())

    @api.patch("/api/connectors/{name}", response_model=ConnectorInfo, tags=["connectors"])
    def patch_connector(name: str, patch: s.ConnectorPatch) -> ConnectorInfo:
        _patch_connector(bus, disp, name, patch)
        found = [c for c in bus.list_connectors() if c.name == name]
        if not found:
            raise bus.connectors.not_found(name)
        return found[0]
