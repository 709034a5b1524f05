"""Fixtures for the Home Assistant integration tests (run with the phcc plugin)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, contextmanager
from types import ModuleType
from unittest.mock import MagicMock, patch

import pytest
from homeassistant.core import HomeAssistant
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.iot_onboard import (
    account_client,
    commit_engine,
    config_flow,
    device_client,
    onboarding,
)
from custom_components.iot_onboard.const import DOMAIN
from tests.integration.fake_account import FakeAccountService
from tests.integration.runtime_helpers import DeviceProcesses
from tests.plugins.mosquitto import MosquittoBroker

_PACKAGE = "custom_components.iot_onboard."
_FLOW_MODULES = (config_flow, onboarding, commit_engine)


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(enable_custom_integrations: None) -> None:
    """Let Home Assistant load the integration from custom_components/."""


@pytest.fixture
def iob_socket_allowed(socket_enabled: None) -> None:
    """Real services (Mosquitto, the account service) need real loopback sockets."""


# --- the runtime (hub, entities, roles): a fake account service on a real Mosquitto ----------


@pytest.fixture
async def fake_account(
    hass: HomeAssistant, mosquitto_broker: MosquittoBroker
) -> AsyncIterator[FakeAccountService]:
    """The account service stand-in (tests/integration/fake_account.py) on the test's broker.

    Teardown unloads the integration's entries first, so the hub leaves while the broker is
    still up (a broker vanishing mid-subscribe makes aiomqtt log a callback error).
    """
    service = FakeAccountService(mosquitto_broker)
    await service.start()
    try:
        yield service
    finally:
        for entry in hass.config_entries.async_entries("iot_onboard"):
            await hass.config_entries.async_unload(entry.entry_id)
        await hass.async_block_till_done()
        await service.stop()


@pytest.fixture
def device_processes() -> Iterator[DeviceProcesses]:
    """Fake devices as subprocesses (tests/integration/fake_device.py), stopped by pid."""
    processes = DeviceProcesses()
    try:
        yield processes
    finally:
        processes.stop_all()


# --- the two clients, mocked (the config flow's tests): patched wherever they are imported ---


def _import_sites(name: str, defined_in: ModuleType) -> list[ModuleType]:
    """Every module of the integration that imported ``name`` from ``defined_in`` by name.

    Patching only one import site would leave the other modules talking to a real service;
    the sites are found, not listed, so a new module that imports the client is covered.
    """
    real = getattr(defined_in, name)
    for module in _FLOW_MODULES:  # imported here so that they are in sys.modules
        assert module.__name__.startswith(_PACKAGE)
    return [
        module
        for module_name, module in sorted(sys.modules.items())
        if module_name.startswith(_PACKAGE)
        and module is not defined_in
        and getattr(module, name, None) is real
    ]


@contextmanager
def _patched_everywhere(name: str, defined_in: ModuleType) -> Iterator[MagicMock]:
    sites = _import_sites(name, defined_in)
    assert sites, f"nothing imports {name}"
    with ExitStack() as stack:
        cls: MagicMock = stack.enter_context(patch.object(sites[0], name, autospec=True))
        for site in sites[1:]:
            stack.enter_context(patch.object(site, name, cls))
        yield cls


@pytest.fixture
def mock_account_client() -> Iterator[MagicMock]:
    """``AccountClient`` (autospec) at every import site; configure ``.return_value``."""
    with _patched_everywhere("AccountClient", account_client) as cls:
        yield cls


@pytest.fixture
def mock_device_client() -> Iterator[MagicMock]:
    """``DeviceClient`` (autospec) at every import site; configure ``.return_value``."""
    with _patched_everywhere("DeviceClient", device_client) as cls:
        yield cls


# --- the household entry (HA core's wled pattern: mock_config_entry, init_integration) ------


@pytest.fixture
def mock_config_entry(fake_account: FakeAccountService) -> MockConfigEntry:
    """The household entry of the fake account service, not added to Home Assistant yet."""
    return MockConfigEntry(
        domain=DOMAIN,
        title="Home",
        unique_id=fake_account.household_id,
        data=fake_account.entry_data(),
    )


@pytest.fixture
async def init_integration(
    hass: HomeAssistant, mock_config_entry: MockConfigEntry
) -> MockConfigEntry:
    """The household entry, added and set up (the runtime running against the fake service)."""
    mock_config_entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(mock_config_entry.entry_id)
    await hass.async_block_till_done()
    return mock_config_entry
