"""What the route modules share: the task id path parameter, and how connector code is called."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import HTTPException, Path, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from syncbus.errors import SyncBusError
from syncbus.store.db import MAX_ID

TaskId = Annotated[int, Path(ge=1, le=MAX_ID, description="The task's id.")]


def call_connector(fn: Callable[[], Any]) -> Any:
    """Run what calls the connector (logging, replacing an object); an exception raised by
    connector code is the caller's bad input (422)."""
    try:
        return fn()
    except Exception as exc:
        answer = as_answer(exc)
        if answer is exc:
            raise
        raise answer from exc


async def awaiting_connector(call: Awaitable[Any]) -> Any:
    """``call_connector`` for a call that is awaited."""
    try:
        return await call
    except Exception as exc:
        answer = as_answer(exc)
        if answer is exc:
            raise
        raise answer from exc


def as_answer(exc: Exception) -> Exception:
    """What to raise for an exception of a logging call: ours (``SyncBusError``), the
    database's and HTTP ones as they are (their handlers answer them); anything else came from
    connector code: the caller's bad input (422)."""
    if isinstance(exc, SyncBusError | sa.exc.SQLAlchemyError | HTTPException):
        return exc
    index = getattr(exc, "syncbus_batch_task", None)  # which task of a batch (intake)
    where = "" if index is None else f"task {index} of the batch: "
    return HTTPException(
        422, f"{where}the connector could not prepare the object: {type(exc).__name__}: {exc}"
    )


# How much of a refused value a 422 repeats: enough to recognise it, never the whole body
# (a 10,001-task batch answered a megabyte).
ECHO_CHARS = 120


def _echo(value: Any) -> Any:
    """A refused input as an answer repeats it: short values as they are, long text cut,
    containers summarised."""
    if isinstance(value, str):
        return (
            value
            if len(value) <= ECHO_CHARS
            else value[:ECHO_CHARS] + f"… ({len(value)} characters)"
        )
    if isinstance(value, list | tuple):
        return f"(a list of {len(value)} items)" if len(value) > 3 else value
    if isinstance(value, dict):
        return f"(an object of {len(value)} keys)" if len(value) > 10 else value
    return value


async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """422 for a body, path or query the API cannot take: FastAPI's answer (``detail``: a list
    of ``{"loc", "msg", "type", "input"}``), with each refused input cut short, and the two
    answers FastAPI leaves cryptic said plainly: a body that is not JSON, and a body sent
    without a JSON content type (read as text, it "should be a valid dictionary")."""
    assert isinstance(exc, RequestValidationError)
    errors = [_plain(request, exc, e) for e in exc.errors()]
    return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)


def _plain(request: Request, exc: RequestValidationError, error: dict[str, Any]) -> dict[str, Any]:
    kind, loc = error.get("type"), tuple(error.get("loc", ()))
    if kind == "json_invalid":
        doc = exc.body if isinstance(exc.body, str) else ""
        at = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else None
        reason = (error.get("ctx") or {}).get("error", "JSON decode error")
        where = "" if at is None else f" at character {at}"
        near = doc if at is None else doc[max(0, at - ECHO_CHARS // 2) : at + ECHO_CHARS // 2]
        return {**error, "msg": f"the body is not valid JSON: {reason}{where}", "input": near}
    content_type = request.headers.get("content-type", "")
    if (
        loc == ("body",)
        and isinstance(error.get("input"), str | bytes)
        and "json" not in content_type
    ):
        sent = f"'{content_type}'" if content_type else "none"
        return {
            **error,
            "msg": "the body must be JSON sent with the header 'Content-Type: application/json' "
            f"(this request's content type: {sent})",
            "input": _echo(error["input"]),
        }
    return {**error, "input": _echo(error["input"])} if "input" in error else error
