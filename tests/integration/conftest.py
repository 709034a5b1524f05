"""Fixtures for the Home Assistant integration tests (run with the phcc plugin)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from types import ModuleType
from unittest.mock import MagicMock, patch

import pytest
import pytest_socket  # type: ignore[import-untyped]
from homeassistant.core import HomeAssistant
from homeassistant.helpers.aiohttp_client import async_get_clientsession
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
from tests.integration.onboarding_services import AccountService, Device, running_services
from tests.integration.runtime_helpers import OPERATOR, DeviceProcesses, RealAccount
from tests.plugins.mosquitto import MosquittoBroker, MosquittoProcess

_PACKAGE = "custom_components.iot_onboard."
_FLOW_MODULES = (config_flow, onboarding, commit_engine)


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(enable_custom_integrations: None) -> None:
    """Let Home Assistant load the integration from custom_components/."""


@pytest.fixture(autouse=True)
def progress_screens(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every commit through the progress screen, so a test's steps do not depend on how fast
    the commit was; tests/integration/test_commit_progress.py covers the inline finish."""
    monkeypatch.setattr(onboarding.DeviceSteps, "inline_commit_wait", 0.0)


@pytest.fixture
def iob_socket_allowed(socket_enabled: None) -> None:
    """Real services (Mosquitto, the account service) need real loopback sockets."""


@pytest.fixture(scope="session")
def iob_socket_allowed_session() -> None:
    """Let the session's broker and account service start; phcc disables sockets again before
    the next test."""
    pytest_socket.enable_socket()


async def _unload_entries(hass: HomeAssistant) -> None:
    """Unload the integration's entries while the services they talk to are still up (a broker
    vanishing mid-subscribe makes aiomqtt log a callback error)."""
    for entry in hass.config_entries.async_entries(DOMAIN):
        await hass.config_entries.async_unload(entry.entry_id)
    await hass.async_block_till_done()


# --- the real account service, a subprocess, on a real Mosquitto -----------------------------


@contextmanager
def _account_service(directory: Path, broker: MosquittoBroker) -> Iterator[AccountService]:
    service = AccountService(directory, broker)
    try:
        service.start()
        yield service
    finally:
        service.stop()


@pytest.fixture
def services(
    mosquitto_broker: MosquittoBroker, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[AccountService, Device]]:
    """A provisioned device in the registry and the account service, both running as
    subprocesses (tests/integration/onboarding_services.py); stopped by pid.

    Indirectly parametrized with a name, the device has that name (its ``name`` setting).
    """
    with running_services(
        tmp_path, mosquitto_broker, name=getattr(request, "param", None)
    ) as running:
        yield running


@asynccontextmanager
async def _owner_at(hass: HomeAssistant, service: AccountService) -> AsyncIterator[RealAccount]:
    """A new owner and household at ``service``; the test's entries unloaded at the end."""
    try:
        yield await RealAccount.sign_up(service, async_get_clientsession(hass))
    finally:
        await _unload_entries(hass)


@pytest.fixture(scope="session")
def real_account_process(
    iob_socket_allowed_session: None,  # noqa: ARG001 - requested for its effect (sockets)
    mosquitto_session_process: MosquittoProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[AccountService]:
    """The real account service (``python -m cloud_relay serve``, SQLite, the session's
    Mosquitto) as a subprocess, started once for the session and stopped by pid.

    A subprocess, not in-process: this tree is type-checked as ``custom_components
    tests/integration``, where the protocol package is ``custom_components.iot_onboard.
    iob_protocol``; importing ``cloud_relay`` (which imports the top-level ``iob_protocol``,
    the same files) makes mypy stop with "Source file found twice under different module
    names". At run time the in-process service works on both Home Assistant versions.
    """
    with _account_service(
        tmp_path_factory.mktemp("account-service"), mosquitto_session_process.broker
    ) as service:
        service.create_admin(*OPERATOR)
        yield service


@pytest.fixture
async def real_account_service(
    hass: HomeAssistant,
    iob_socket_allowed: None,  # noqa: ARG001 - requested for its effect (sockets)
    real_account_process: AccountService,
) -> AsyncIterator[RealAccount]:
    """The session's real account service with this test's own owner and household, both made
    through the /v1 API (``RealAccount``): tests share the service, not their accounts."""
    async with _owner_at(hass, real_account_process) as account:
        yield account


@pytest.fixture
async def real_account_service_own_broker(
    hass: HomeAssistant, mosquitto_broker: MosquittoBroker, tmp_path: Path
) -> AsyncIterator[RealAccount]:
    """``real_account_service`` on this test's own Mosquitto (``mosquitto_process``), for tests
    that kill or restart the broker (no operator there: it cannot ``claim_new_device``)."""
    with _account_service(tmp_path / "account-service", mosquitto_broker) as service:
        async with _owner_at(hass, service) as account:
            yield account


# --- faults: the fault-injecting account service stand-in on a real Mosquitto --------------


@pytest.fixture
async def fake_account(
    hass: HomeAssistant, mosquitto_broker: MosquittoBroker
) -> AsyncIterator[FakeAccountService]:
    """The fault-injecting account service stand-in (tests/integration/fake_account.py) on the
    test's broker: for faults and directly set state; the happy path uses
    ``real_account_service``.

    Teardown unloads the integration's entries first, so the hub leaves while the broker is
    still up (a broker vanishing mid-subscribe makes aiomqtt log a callback error).
    """
    service = FakeAccountService(mosquitto_broker)
    await service.start()
    try:
        yield service
    finally:
        await _unload_entries(hass)
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
