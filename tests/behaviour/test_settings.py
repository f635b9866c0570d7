"""Settings: defaults and persistence in the database (CONTRACT §4)."""

from __future__ import annotations

import pytest

from syncbus import IntegrationBus
from syncbus.store.switches import LOGGING, MASTER, PROCESSING, first_off

SETTINGS = ["integration_enabled", "log_external", "process_external"]


@pytest.mark.parametrize("setting", SETTINGS)
def test_settings_are_on_by_default(bus: IntegrationBus, setting: str) -> None:
    assert getattr(bus.settings, setting) is True


@pytest.mark.parametrize("setting", SETTINGS)
def test_setting_persists_in_the_database(bus: IntegrationBus, db_url: str, setting: str) -> None:
    setattr(bus.settings, setting, False)
    assert getattr(bus.settings, setting) is False
    other = IntegrationBus(db_url)
    try:
        assert getattr(other.settings, setting) is False
        assert all(getattr(other.settings, s) is True for s in SETTINGS if s != setting)
    finally:
        other.close()


def test_setting_turned_back_on_persists(bus: IntegrationBus, db_url: str) -> None:
    bus.settings.log_external = False
    bus.settings.log_external = True
    other = IntegrationBus(db_url)
    try:
        assert other.settings.log_external is True
    finally:
        other.close()


@pytest.mark.parametrize(
    ("stored", "switch", "off"),
    [
        ({}, PROCESSING, None),
        ({"integration_enabled": "false", "process_external": "false"}, PROCESSING, MASTER),
        ({"process_external": "false"}, PROCESSING, PROCESSING),
        ({"process_external": "false"}, LOGGING, None),
        ({"log_external": "0", "integration_enabled": "true"}, LOGGING, LOGGING),
    ],
)
def test_the_master_switch_governs_logging_and_processing(
    stored: dict[str, str], switch: str, off: str | None
) -> None:
    """One rule for every caller: the master switch first, then the switch of the work."""
    assert first_off(stored, switch) == off
