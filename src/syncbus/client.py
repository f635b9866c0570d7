"""Talking to a running syncbus service from another program."""

from __future__ import annotations

import time
from http import HTTPStatus

import httpx

# Statuses after which a service's Retry-After is honoured: slow down, or try again later.
_RETRY_STATUSES = {HTTPStatus.TOO_MANY_REQUESTS, HTTPStatus.SERVICE_UNAVAILABLE}


def retry_after(response: httpx.Response) -> float | None:
    """The seconds a service's ``Retry-After`` header asks for (a number of seconds), or None."""
    value = response.headers.get("Retry-After")
    try:
        return None if value is None else max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: not sent by syncbus


def request_tasks_processing(
    server_url: str,
    connector_name: str | None = None,
    *,
    token: str | None = None,
    timeout: float = 10.0,
    retries: int = 3,
    max_wait: float = 60.0,
) -> HTTPStatus:
    """Ask a running service to process one connector's tasks (or every connector's).

    Calls the Kentico-compatible notify endpoint and returns the status the service answered
    (``HTTPStatus.OK`` when processing was started). Unlike Kentico's, the connector name is
    honoured. When the service answers 429 or 503 with ``Retry-After``, waits that long (at
    most ``max_wait`` seconds) and asks again, up to ``retries`` times. Network failures raise
    ``httpx.HTTPError``.
    """
    url = server_url.rstrip("/") + "/CMSPages/IntegrationNotify.aspx"
    params = {"connectorName": connector_name} if connector_name else None
    headers = {"Authorization": f"Bearer {token}"} if token else None
    for attempt in range(retries + 1):
        response = httpx.get(url, params=params, headers=headers, timeout=timeout)
        status = HTTPStatus(response.status_code)
        wait = retry_after(response)
        if status not in _RETRY_STATUSES or wait is None or attempt == retries:
            return status
        time.sleep(min(wait, max_wait))
    raise AssertionError("unreachable")
