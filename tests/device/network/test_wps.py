"""The WPS join: the secret agent on a real dbus-daemon, the backend on python-dbusmock's NM.

The test plays NetworkManager towards the agent: it asks for the key as NetworkManager does
(``GetSecrets`` with or without the push-button flag) and cancels the request when "the router"
handed the key over. NetworkManager's own WPS run is exercised in the VM stage
(``tests/vm``, scenarios ``wps_push_button`` and ``wps_off``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any, Final

import pytest
from dbus_fast import Message, MessageType, Variant
from dbus_fast.aio import MessageBus
from iob_protocol.diagnostics import DiagnosticCode

from device_firmware.network.backend import NetworkError, WifiCredentials
from device_firmware.network.networkmanager import NetworkManagerBackend, NMStateReason
from device_firmware.network.wps import (
    AGENT_IDENTIFIER,
    AGENT_MANAGER_PATH,
    AGENT_PATH,
    FLAG_WPS_PBC_ACTIVE,
    IFACE_AGENT_MANAGER,
    IFACE_SECRET_AGENT,
    NO_SECRETS,
    WpsAgent,
    WpsAgentError,
)

from .conftest import NetworkManagerMock

PROFILE = "/org/freedesktop/NetworkManager/Settings/7"
SECURITY = "802-11-wireless-security"
ALLOW_INTERACTION = 0x1
KEY = "router-made key 42"
BY_BUTTON = WifiCredentials(ssid=b"HomeNet", wps=True)


def _agent_manager(nm: NetworkManagerMock, *, refuse: bool = False) -> None:
    """NetworkManager's AgentManager on the mock (the template has none)."""
    code = (
        "raise dbus.exceptions.DBusException('not allowed', "
        "name='org.freedesktop.NetworkManager.AgentManager.PermissionDenied')"
    )
    nm.add_object(
        AGENT_MANAGER_PATH,
        IFACE_AGENT_MANAGER,
        [
            ("RegisterWithCapabilities", "su", "", code if refuse else ""),
            ("Unregister", "", "", ""),
        ],
    )


def _manager_calls(nm: NetworkManagerMock, method: str) -> list[Any]:
    return nm.calls(AGENT_MANAGER_PATH, method)


@pytest.fixture
async def buses(nm_mock: NetworkManagerMock) -> AsyncIterator[tuple[MessageBus, MessageBus]]:
    """The agent's connection and one for "NetworkManager" (the test) on the private bus."""
    _agent_manager(nm_mock)
    agent_bus = await MessageBus(bus_address=nm_mock.address).connect()
    nm_bus = await MessageBus(bus_address=nm_mock.address).connect()
    try:
        yield agent_bus, nm_bus
    finally:
        agent_bus.disconnect()
        nm_bus.disconnect()


def _to_agent(agent: MessageBus, member: str, signature: str, body: list[Any]) -> Message:
    """A call to the agent's object, as NetworkManager makes it."""
    return Message(
        destination=agent.unique_name,
        path=AGENT_PATH,
        interface=IFACE_SECRET_AGENT,
        member=member,
        signature=signature,
        body=body,
    )


def _get_secrets(agent: MessageBus, profile: str, flags: int) -> Message:
    connection = {"connection": {"id": Variant("s", "x")}}
    return _to_agent(
        agent, "GetSecrets", "a{sa{sv}}osasu", [connection, profile, SECURITY, [], flags]
    )


def _cancel(agent: MessageBus, profile: str) -> Message:
    return _to_agent(agent, "CancelGetSecrets", "os", [profile, SECURITY])


async def test_agent_holds_the_push_button_request_until_networkmanager_cancels(
    nm_mock: NetworkManagerMock, buses: tuple[MessageBus, MessageBus]
) -> None:
    agent_bus, nm_bus = buses
    agent = WpsAgent(agent_bus, PROFILE, wait=30, caller=nm_bus.unique_name)
    await agent.register()
    assert [list(call[1]) for call in _manager_calls(nm_mock, "RegisterWithCapabilities")] == [
        [AGENT_IDENTIFIER, 0]
    ]

    request = asyncio.create_task(
        nm_bus.call(_get_secrets(agent_bus, PROFILE, ALLOW_INTERACTION | FLAG_WPS_PBC_ACTIVE))
    )
    await asyncio.sleep(0.3)
    assert not request.done()  # held while the router's button session runs
    assert agent.outcome == "held"

    cancel = await nm_bus.call(_cancel(agent_bus, PROFILE))
    assert cancel is not None
    assert cancel.message_type is MessageType.METHOD_RETURN
    answer = await asyncio.wait_for(request, 5)
    assert answer is not None
    assert answer.message_type is MessageType.ERROR  # NetworkManager already has the key
    assert agent.outcome == "handed-over"

    await agent.unregister()
    assert len(_manager_calls(nm_mock, "Unregister")) == 1


async def test_agent_has_no_key_without_a_push_button_session(
    buses: tuple[MessageBus, MessageBus],
) -> None:
    """A router without WPS (or a typed-passphrase join NetworkManager retries by WPS, for
    another profile): the agent answers NoSecrets at once and holds nothing."""
    agent_bus, nm_bus = buses
    agent = WpsAgent(agent_bus, PROFILE, wait=30, caller=nm_bus.unique_name)
    await agent.register()

    other = await nm_bus.call(
        _get_secrets(agent_bus, "/org/freedesktop/NetworkManager/Settings/9", FLAG_WPS_PBC_ACTIVE)
    )
    assert other is not None
    assert other.error_name == NO_SECRETS
    assert agent.outcome == "waiting"

    started = time.monotonic()
    plain = await nm_bus.call(_get_secrets(agent_bus, PROFILE, ALLOW_INTERACTION))
    assert plain is not None
    assert plain.error_name == NO_SECRETS
    assert time.monotonic() - started < 5
    assert agent.outcome == "no-wps"
    assert "does not offer WPS push-button" in agent.describe()
    await agent.unregister()


async def test_agent_gives_up_after_its_wait_and_on_unregister(
    buses: tuple[MessageBus, MessageBus],
) -> None:
    agent_bus, nm_bus = buses
    agent = WpsAgent(agent_bus, PROFILE, wait=0.2, caller=nm_bus.unique_name)
    await agent.register()
    answer = await asyncio.wait_for(
        nm_bus.call(_get_secrets(agent_bus, PROFILE, FLAG_WPS_PBC_ACTIVE)), 5
    )
    assert answer is not None
    assert answer.error_name == NO_SECRETS
    assert agent.outcome == "timed-out"
    assert "handed over no key within" in agent.describe()
    await agent.unregister()

    # A request still held when the join ends is answered, not left hanging.
    agent = WpsAgent(agent_bus, PROFILE, wait=30, caller=nm_bus.unique_name)
    await agent.register()
    held = asyncio.create_task(nm_bus.call(_get_secrets(agent_bus, PROFILE, FLAG_WPS_PBC_ACTIVE)))
    await asyncio.sleep(0.2)
    await agent.unregister()
    answer = await asyncio.wait_for(held, 5)
    assert answer is not None
    assert answer.error_name == NO_SECRETS
    # Unregistered: the object no longer answers for the agent.
    gone = await nm_bus.call(_get_secrets(agent_bus, PROFILE, FLAG_WPS_PBC_ACTIVE))
    assert gone is not None
    assert gone.message_type is MessageType.ERROR
    assert gone.error_name != NO_SECRETS


async def test_only_networkmanager_is_answered(buses: tuple[MessageBus, MessageBus]) -> None:
    """Another process on the system bus can neither release NetworkManager's held request nor
    cancel it: by default the agent answers only the name that owns NetworkManager's."""
    agent_bus, nm_bus = buses
    agent = WpsAgent(agent_bus, PROFILE, wait=30)
    await agent.register()
    for message in (
        _get_secrets(agent_bus, PROFILE, FLAG_WPS_PBC_ACTIVE),
        _cancel(agent_bus, PROFILE),
    ):
        refused = await nm_bus.call(message)
        assert refused is not None
        assert refused.error_name == "org.freedesktop.DBus.Error.AccessDenied"
    assert agent.outcome == "waiting"
    await agent.unregister()


async def test_a_refused_registration_is_an_error(nm_mock: NetworkManagerMock) -> None:
    _agent_manager(nm_mock, refuse=True)
    bus = await MessageBus(bus_address=nm_mock.address).connect()
    try:
        with pytest.raises(WpsAgentError, match="PermissionDenied"):
            await WpsAgent(bus, PROFILE, wait=1).register()
    finally:
        bus.disconnect()


# --- the backend's WPS join ----------------------------------------------------------------


#: NM80211ApFlags of a WPA2 router whose WPS button was pressed: privacy, WPS, push button.
PRESSED: Final = 0x1 | 0x2 | 0x4


def _home(nm: NetworkManagerMock, *, flags: int = PRESSED) -> str:
    device = nm.add_wifi_device()
    point = nm.add_access_point(device, "home", b"HomeNet", strength=80)
    nm.set_ap_flags(point, flags)
    _agent_manager(nm)
    return device


def _router_hands_over(backend: NetworkManagerBackend, key: str | None) -> list[str]:
    """NetworkManager's answer to the key it learned by WPS (the template's GetSecrets does
    not answer in NetworkManager's shape); the paths asked are returned."""
    real = backend._call
    asked: list[str] = []

    async def call(path: str, interface: str, member: str, *args: Any, **kwargs: Any) -> Any:
        if member == "GetSecrets":
            asked.append(path)
            return [{} if key is None else {SECURITY: {"psk": Variant("s", key)}}]
        return await real(path, interface, member, *args, **kwargs)

    backend._call = call  # type: ignore[method-assign]
    return asked


async def test_a_wps_join_saves_the_key_the_router_handed_over(
    nm_mock: NetworkManagerMock, backend: NetworkManagerBackend
) -> None:
    device = _home(nm_mock)
    asked = _router_hands_over(backend, KEY)

    joined = await backend.connect(BY_BUTTON)

    assert joined == WifiCredentials(ssid=b"HomeNet", passphrase=KEY)
    trial = nm_mock.active_profile(device)
    assert trial is not None
    assert asked == [trial]
    # The trial asked NetworkManager for WPS: WPA2 key management, no key, NM keeps what it gets.
    (added,) = nm_mock.calls("/org/freedesktop/NetworkManager/Settings", "AddConnectionUnsaved")
    security = added[1][0][SECURITY]
    assert dict(security) == {"key-mgmt": "wpa-psk", "psk-flags": 0}
    assert len(_manager_calls(nm_mock, "RegisterWithCapabilities")) == 1
    assert len(_manager_calls(nm_mock, "Unregister")) == 1
    assert len(nm_mock.calls(device, "RequestScan")) == 1  # a fresh scan shows the button

    await backend.commit()  # the saved profile carries the learned key (a restart rejoins)
    saved = nm_mock.settings(trial)
    assert saved[SECURITY]["psk"] == KEY
    assert saved[SECURITY]["key-mgmt"] == "wpa-psk"


async def test_a_wps_join_scans_again_until_the_router_shows_its_button(
    nm_mock: NetworkManagerMock, backend: NetworkManagerBackend
) -> None:
    """A scan already under way when the join asked for one may have begun before the button
    was pressed (the VM stage's Trixie: "Reject scan trigger since one is already pending", then
    no push-button session): the join scans again while the router shows no pressed button,
    at most three times, and then lets NetworkManager decide."""
    device = _home(nm_mock, flags=0x1 | 0x2)  # WPS, but no push-button session (yet)
    _router_hands_over(backend, KEY)
    joined = await backend.connect(BY_BUTTON)
    assert len(nm_mock.calls(device, "RequestScan")) == 3
    assert joined.passphrase == KEY
    await backend.rollback()


async def test_a_wps_join_without_the_routers_key_is_wps_failed(
    nm_mock: NetworkManagerMock, backend: NetworkManagerBackend
) -> None:
    device = _home(nm_mock)
    nm_mock.fail_activation(
        {b"HomeNet": [(40, 0), (50, 0), (60, 0), (120, NMStateReason.NO_SECRETS), (30, 0)]}
    )
    with pytest.raises(NetworkError) as caught:
        await backend.connect(BY_BUTTON)
    assert caught.value.code is DiagnosticCode.WPS_FAILED  # not "the password was rejected"
    assert "NO_SECRETS" in caught.value.detail
    assert len(_manager_calls(nm_mock, "Unregister")) == 1
    await backend.rollback()
    assert nm_mock.profiles() == []
    assert nm_mock.active_profile(device) is None


async def test_a_wps_join_whose_key_cannot_be_read_is_not_saved_without_it(
    nm_mock: NetworkManagerMock, backend: NetworkManagerBackend
) -> None:
    """Joined, but NetworkManager does not give the key: saving would lose it (Update replaces
    the secrets), so the join fails and is rolled back rather than saved keyless."""
    _home(nm_mock)
    _router_hands_over(backend, None)
    with pytest.raises(NetworkError) as caught:
        await backend.connect(BY_BUTTON)
    assert caught.value.code is DiagnosticCode.WPS_FAILED
    assert "did not give the key" in caught.value.detail
    await backend.rollback()
    assert nm_mock.profiles() == []


async def test_a_refused_agent_is_wps_failed(
    nm_mock: NetworkManagerMock, backend: NetworkManagerBackend
) -> None:
    device = nm_mock.add_wifi_device()
    nm_mock.add_access_point(device, "home", b"HomeNet", strength=80)
    _agent_manager(nm_mock, refuse=True)
    with pytest.raises(NetworkError) as caught:
        await backend.connect(BY_BUTTON)
    assert caught.value.code is DiagnosticCode.WPS_FAILED
    assert "refused the WPS agent" in caught.value.detail
