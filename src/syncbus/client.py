"""Talking to a running syncbus service from another program."""

from __future__ import annotations

from http import HTTPStatus

import httpx


def request_tasks_processing(
    server_url: str,
    connector_name: str | None = None,
    *,
    token: str | None = None,
    timeout: float = 10.0,
) -> HTTPStatus:
    """Ask a running service to process one connector's tasks (or every connector's).

    Calls the Kentico-compatible notify endpoint and returns the status the service answered
    (``HTTPStatus.OK`` when processing was started). Unlike Kentico's, the connector name is
    honoured. Network failures raise ``httpx.HTTPError``.
    """
    url = server_url.rstrip("/") + "/CMSPages/IntegrationNotify.aspx"
    params = {"connectorName": connector_name} if connector_name else None
    headers = {"Authorization": f"Bearer {token}"} if token else None
    response = httpx.get(url, params=params, headers=headers, timeout=timeout)
    return HTTPStatus(response.status_code)
