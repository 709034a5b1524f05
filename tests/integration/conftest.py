"""Fixtures for the Home Assistant integration tests (run with the phcc plugin)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from homeassistant.core import HomeAssistant

from tests.integration.fake_account import FakeAccountService
from tests.integration.runtime_helpers import DeviceProcesses
from tests.plugins.mosquitto import MosquittoBroker


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
