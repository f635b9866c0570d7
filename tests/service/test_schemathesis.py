"""Schemathesis generates requests from /openapi.json: the service must never answer 5xx."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error

from syncbus import IntegrationBus, create_app
from tests.http_server import running
from tests.seq import SEQ_TYPE, SeqConnector

TOKEN = "fuzz-token"


@pytest.mark.slow
def test_no_server_errors(sqlite_url: str) -> None:
    bus = IntegrationBus(sqlite_url)
    bus.register_object_type(SEQ_TYPE)
    bus.create_schema()
    bus.register_connector(SeqConnector)
    for n in range(3):
        bus.process_external_task("Seq", {"key": f"k{n}", "n": n})
    app = create_app(bus, api_token=TOKEN, scheduler_interval=None)
    with running(app) as url:
        # §11: the schema needs the token like the API.
        schema = schemathesis.openapi.from_url(
            url + "/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"}
        )
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 12
        strategy = st.one_of(*(op.as_strategy() for op in operations))

        @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def check(case: schemathesis.Case) -> None:
            response = case.call(
                base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
            )
            case.validate_response(response, checks=[not_a_server_error])

        check()
    bus.close()
