"""The HTTP service: ``create_app(bus)`` returns the ASGI application (FastAPI)."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from syncbus import __version__
from syncbus.bus import IntegrationBus
from syncbus.dispatcher import Dispatcher
from syncbus.errors import (
    ConnectorDisabledError,
    ConnectorLoadError,
    ConnectorNotFoundError,
    IntegrationDisabledError,
    SyncBusError,
    TaskNotFoundError,
)
from syncbus.intake import TaskRequest
from syncbus.model import ConnectorInfo, TaskInfo
from syncbus.service import schemas as s
from syncbus.service.admin import install_admin
from syncbus.service.limits import BodySizeLimit
from syncbus.service.metrics import ServiceMetrics

DEFAULT_MAX_BODY = 5 * 1024 * 1024
MAX_ID = 2**63 - 1
TaskId = Annotated[int, Path(ge=1, le=MAX_ID, description="The task's id.")]
# Module level: FastAPI resolves the (string) annotations of dependencies in module globals.
bearer = HTTPBearer(auto_error=False, description="The SYNCBUS_API_TOKEN, when one is set.")

_STATUS: list[tuple[type[Exception], int]] = [
    (ConnectorDisabledError, 409),
    (ConnectorNotFoundError, 404),
    (TaskNotFoundError, 404),
    (ConnectorLoadError, 503),
    (IntegrationDisabledError, 503),
    (SyncBusError, 422),
]


def _status_of(exc: SyncBusError) -> int:
    return next(code for cls, code in _STATUS if isinstance(exc, cls))


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
) -> FastAPI:
    """The API, with processing in the background (workers, scheduler, wake-ups) unless
    ``run_dispatcher`` is False. The token comes from ``api_token`` or ``SYNCBUS_API_TOKEN``."""
    token = api_token if api_token is not None else os.environ.get("SYNCBUS_API_TOKEN") or None
    limit = max_body_bytes or int(os.environ.get("SYNCBUS_MAX_BODY_BYTES", DEFAULT_MAX_BODY))
    metrics = ServiceMetrics(bus)
    bus.add_task_listener(metrics.task_logged)
    disp = dispatcher or Dispatcher(
        bus,
        workers=workers,
        scheduler_interval=scheduler_interval,
        scheduler_connector=scheduler_connector,
    )
    disp.on_result = metrics.run_finished

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
    app.add_middleware(BodySizeLimit, max_bytes=limit)

    @app.exception_handler(SyncBusError)
    async def _syncbus_error(_request: Request, exc: SyncBusError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=_status_of(exc))

    @app.exception_handler(sa.exc.SQLAlchemyError)
    async def _db_error(_request: Request, exc: sa.exc.SQLAlchemyError) -> JSONResponse:
        return JSONResponse(
            {"detail": f"database unavailable: {type(exc).__name__}"}, status_code=503
        )

    async def authorize(  # async: a pure check needs no worker thread per request
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        if token is None:
            return
        given = credentials.credentials if credentials else ""
        if not secrets.compare_digest(given.encode(), token.encode()):
            raise HTTPException(
                401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"}
            )

    api = APIRouter(dependencies=[Depends(authorize)])
    _task_routes(api, bus, disp, metrics)
    _queue_routes(api, bus, disp, metrics)
    app.include_router(api)
    install_admin(app, bus, disp, token)

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

    @app.get("/metrics", tags=["service"], dependencies=[Depends(authorize)])
    def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def _request(task: s.TaskIn) -> TaskRequest:
    return TaskRequest(
        task.object,
        task.process_type,
        task.task_type,
        task.data_type,
        task.site_name,
        task.idempotency_key,
    )


def _call_connector(fn: Callable[[], Any]) -> Any:
    """Run logging; an exception raised by connector code is the caller's bad input (422)."""
    try:
        return fn()
    except (SyncBusError, sa.exc.SQLAlchemyError, HTTPException):
        raise
    except Exception as exc:
        raise HTTPException(
            422, f"the connector could not prepare the object: {type(exc).__name__}: {exc}"
        ) from exc


def _task_routes(
    api: APIRouter, bus: IntegrationBus, disp: Dispatcher, metrics: ServiceMetrics
) -> None:
    @api.post(
        "/api/connectors/{name}/tasks",
        status_code=201,
        response_model=s.TaskCreated,
        responses={200: {"model": s.TaskCreated}, 204: {"description": "skipped"}},
        tags=["tasks"],
    )
    def log_task(name: str, task: s.TaskIn) -> Any:
        outcome = _call_connector(lambda: bus.log_tasks(name, [_request(task)])[0])
        if outcome.task_id is None:
            return Response(status_code=204)
        if not outcome.created:
            return JSONResponse({"task_id": outcome.task_id}, status_code=200)
        return s.TaskCreated(task_id=outcome.task_id)

    @api.post(
        "/api/connectors/{name}/tasks/batch",
        status_code=201,
        response_model=s.TasksCreated,
        tags=["tasks"],
    )
    def log_batch(name: str, batch: s.TaskBatchIn) -> s.TasksCreated:
        outcomes = _call_connector(lambda: bus.log_tasks(name, [_request(t) for t in batch.tasks]))
        return s.TasksCreated(task_ids=[o.task_id for o in outcomes])

    def notify(connector: str | None) -> s.NotifyOut:
        if connector is not None and not any(c.name == connector for c in bus.list_connectors()):
            raise ConnectorNotFoundError(f"no connector named {connector!r} is registered")
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


def _queue_routes(
    api: APIRouter, bus: IntegrationBus, disp: Dispatcher, metrics: ServiceMetrics
) -> None:
    @api.get("/api/tasks", response_model=s.TaskList, tags=["queue"])
    def list_tasks(
        connector: str | None = None,
        after: Annotated[
            int | None, Query(ge=0, le=MAX_ID, description="Only tasks with a greater id.")
        ] = None,
        limit: Annotated[int | None, Query(ge=1, le=100_000)] = None,
    ) -> s.TaskList:
        tasks = bus.list_tasks(connector, after=after, limit=limit)
        return s.TaskList(tasks=[t for t in tasks])

    def one(task_id: int) -> TaskInfo:
        task = bus.get_task(task_id)
        if task is None:
            raise TaskNotFoundError(f"no queued task with id {task_id}")
        return task

    @api.get("/api/tasks/{task_id}", response_model=TaskInfo, tags=["queue"])
    def get_task(task_id: TaskId) -> TaskInfo:
        return one(task_id)

    @api.get("/api/tasks/{task_id}/log", response_model=s.TaskLog, tags=["queue"])
    def task_log(task_id: TaskId) -> s.TaskLog:
        one(task_id)
        return s.TaskLog(task_id=task_id, log=bus.task_log(task_id))

    @api.post("/api/tasks/{task_id}/synchronize", response_model=s.SyncResult, tags=["queue"])
    def synchronize(task_id: TaskId) -> s.SyncResult:
        task = one(task_id)
        applied = bus.synchronize_task(task_id)
        (metrics.applied if applied else metrics.failed).labels(task.connector_name).inc()
        after = bus.get_task(task_id)
        return s.SyncResult(task_id=task_id, applied=applied, task=after)

    @api.delete("/api/tasks/{task_id}", status_code=204, tags=["queue"])
    def delete_task(task_id: TaskId) -> Response:
        bus.delete_task(task_id)
        return Response(status_code=HTTPStatus.NO_CONTENT)

    @api.get("/api/connectors", response_model=s.ConnectorList, tags=["connectors"])
    def list_connectors() -> s.ConnectorList:
        return s.ConnectorList(connectors=bus.list_connectors())

    @api.patch("/api/connectors/{name}", response_model=ConnectorInfo, tags=["connectors"])
    def patch_connector(name: str, patch: s.ConnectorPatch) -> ConnectorInfo:
        bus.set_connector_enabled(name, patch.enabled)
        if patch.enabled:
            disp.trigger(name)  # its waiting tasks can run now
        return next(c for c in bus.list_connectors() if c.name == name)
