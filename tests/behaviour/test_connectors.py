"""Registering and loading connectors (CONTRACT §3, §4)."""

from __future__ import annotations

import pytest

from syncbus import (
    BaseIntegrationConnector,
    ConnectorLoadError,
    ConnectorNotFoundError,
    IntegrationBus,
    TaskType,
)
from tests.helpers import CONNECTOR, DictConnector, add_connector, log, pending, put, run, user
from tests.sample_connectors import NothingConnector, PrepareOnlyConnector, SampleConnector


def test_register_by_class(bus: IntegrationBus) -> None:
    bus.register_connector(DictConnector)
    assert isinstance(bus.get_connector(CONNECTOR), DictConnector)
    put(bus, user("alice"))
    assert bus.get_object("cms.user", "alice") is not None


def test_register_by_instance_keeps_that_instance(bus: IntegrationBus) -> None:
    conn = DictConnector("Mine")
    bus.register_connector(conn)
    assert bus.get_connector("Mine") is conn
    put(bus, user("alice"), connector="Mine")
    assert len(conn.prepare_calls) == 1


def test_register_by_import_path_with_name_set_in_init(bus: IntegrationBus) -> None:
    bus.register_connector("tests.sample_connectors:SampleConnector")
    conn = bus.get_connector("Sample")
    assert isinstance(conn, SampleConnector)
    assert conn.connector_name == "Sample"
    assert conn.init_calls == 1
    put(bus, {"login": "alice", "mail": "a@example.com"}, connector="Sample")
    assert bus.get_object("cms.user", "alice")["email"] == "a@example.com"


def test_init_runs_once_for_a_class_and_for_an_instance(bus: IntegrationBus, db_url: str) -> None:
    bus.register_connector(SampleConnector)
    assert bus.get_connector("Sample").init_calls == 1
    conn = SampleConnector()
    other = IntegrationBus(db_url)
    try:
        other.register_connector(conn)
        assert conn.init_calls == 1
        assert other.get_connector("Sample") is conn
    finally:
        other.close()


@pytest.mark.parametrize(
    ("path", "named"),
    [
        ("tests.no_such_module:Connector", "no_such_module"),
        ("tests.sample_connectors:NoSuchClass", "NoSuchClass"),
    ],
)
def test_import_path_that_does_not_load_is_a_load_error(
    bus: IntegrationBus, path: str, named: str
) -> None:
    add_connector(bus)
    with pytest.raises(ConnectorLoadError, match=named):
        bus.register_connector(path)
    put(bus, user("alice"))
    assert bus.get_object("cms.user", "alice") is not None


def test_set_connector_enabled(bus: IntegrationBus) -> None:
    add_connector(bus)
    bus.set_connector_enabled(CONNECTOR, False)
    with pytest.raises(ConnectorNotFoundError):
        log(bus, user("alice"))
    bus.set_connector_enabled(CONNECTOR, True)
    task_id = log(bus, user("alice"))
    assert pending(bus) == [task_id]
    run(bus)
    assert bus.get_object("cms.user", "alice") is not None


def test_each_connector_has_its_own_queue(bus: IntegrationBus) -> None:
    add_connector(bus)
    add_connector(bus, "Other")
    mine = log(bus, user("alice"))
    theirs = log(bus, user("bob"), connector="Other")
    assert pending(bus, CONNECTOR) == [mine]
    assert pending(bus, "Other") == [theirs]
    assert pending(bus) == [mine, theirs]
    assert bus.get_task(theirs).connector_name == "Other"


# -- methods a connector does not override -----------------------------------------------------


@pytest.mark.parametrize(
    ("connector", "method", "args"),
    [
        (NothingConnector(), "prepare_internal_object", ({}, TaskType.CREATE_OBJECT, None, None)),
        (PrepareOnlyConnector(), "get_internal_object_params", (1, "cms.user")),
        (PrepareOnlyConnector(), "get_internal_document_params", (1, "cms.article")),
    ],
)
def test_base_method_not_overridden_names_connector_and_method(
    connector: BaseIntegrationConnector, method: str, args: tuple[object, ...]
) -> None:
    with pytest.raises(NotImplementedError) as raised:
        getattr(connector, method)(*args)
    assert method in str(raised.value)
    assert str(connector.connector_name) in str(raised.value)


def test_prepare_not_overridden_reaches_the_caller(bus: IntegrationBus) -> None:
    bus.register_connector(NothingConnector)
    with pytest.raises(NotImplementedError, match="prepare_internal_object"):
        log(bus, user("alice"), connector="Nothing")
    assert pending(bus) == []
