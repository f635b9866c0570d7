"""What the route modules share: the task id path parameter, and how connector code is called."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import HTTPException, Path

from syncbus.errors import SyncBusError
from syncbus.store.db import MAX_ID

TaskId = Annotated[int, Path(ge=1, le=MAX_ID, description="The task's id.")]


def call_connector(fn: Callable[[], Any]) -> Any:
    """Run what calls the connector (logging, replacing an object); an exception raised by
    connector code is the caller's bad input (422)."""
    try:
        return fn()
    except (SyncBusError, sa.exc.SQLAlchemyError, HTTPException):
        raise
    except Exception as exc:
        index = getattr(exc, "syncbus_batch_task", None)  # which task of a batch (intake)
        where = "" if index is None else f"task {index} of the batch: "
        raise HTTPException(
            422,
            f"{where}the connector could not prepare the object: {type(exc).__name__}: {exc}",
        ) from exc
