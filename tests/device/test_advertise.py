"""Zeroconf on 127.0.0.1 only: the record HA's zeroconf matcher sees, in every state."""

from __future__ import annotations

import asyncio

import pytest
from zeroconf import DNSQuestionType, IPVersion, ServiceStateChange
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from device_firmware.errors import ConfigError
from device_firmware.provisioning.advertise import SERVICE_TYPE, Advertiser, txt_record

from .commit_helpers import commit
from .conftest import AgentStarter
from .real_relay import RealRelay


def is_registered(advertiser: Advertiser) -> bool:
    """Read the property afresh (mypy keeps an earlier narrowing across awaits)."""
    return advertiser.registered


async def browse(zeroconf: AsyncZeroconf, name: str) -> AsyncServiceInfo:
    found = asyncio.Event()

    def on_change(
        zeroconf: object, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        del zeroconf, service_type
        if state_change is ServiceStateChange.Added and name == wanted:
            found.set()

    wanted = name
    browser = AsyncServiceBrowser(
        zeroconf.zeroconf, SERVICE_TYPE, handlers=[on_change], question_type=DNSQuestionType.QM
    )
    try:
        async with asyncio.timeout(20):
            await found.wait()
    finally:
        await browser.async_cancel()
    info = AsyncServiceInfo(SERVICE_TYPE, name)
    assert await info.async_request(zeroconf.zeroconf, 3000)
    return info


def txt(info: AsyncServiceInfo) -> dict[str, str]:
    return {k.decode(): (v or b"").decode() for k, v in info.properties.items()}


async def wait_for_state(zeroconf: AsyncZeroconf, name: str, state: str) -> AsyncServiceInfo:
    """Ask until the record says ``state`` (the update is announced, then cached)."""
    async with asyncio.timeout(20):
        while True:
            info = AsyncServiceInfo(SERVICE_TYPE, name)
            if await info.async_request(zeroconf.zeroconf, 1000) and txt(info)["state"] == state:
                return info
            await asyncio.sleep(0.05)


async def test_agent_keeps_advertising_when_claimed(
    start_agent: AgentStarter, account_service: RealRelay
) -> None:
    """HA's zeroconf aborts the discovery flows of a removed record: claiming only updates it."""
    listener = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    try:
        async with start_agent(zeroconf=True, advertise=("127.0.0.1",)) as running:
            advertiser = running.agent.advertiser
            assert advertiser is not None
            assert advertiser.registered
            info = await browse(listener, advertiser.service_name)
            device = running.provisioned.device
            assert txt(info) == {
                "id": device.identity.device_id,
                "model": "pi-test",
                "firmware": "0.1.0",
                "state": "unclaimed",
                "protocol": "1",
            }
            assert info.port == running.agent.lan_ports()[0]
            assert info.parsed_addresses() == ["127.0.0.1"]
            claim = await account_service.claim(device.identity.device_id)
            _client, status = await commit(running, account_service.url, token=claim["token"])
            assert status.state.value == "committed"
            online = await wait_for_state(listener, advertiser.service_name, "online")
            assert is_registered(advertiser)
            assert txt(online)["id"] == device.identity.device_id
            assert online.port == running.agent.lan_ports()[0]
        # Withdrawn only when the agent shuts down.
        assert not is_registered(advertiser)
    finally:
        await listener.async_close()


async def test_a_failed_first_advertisement_is_tried_again(
    start_agent: AgentStarter, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A fresh device nobody can discover must not wait for a state change that never comes."""
    monkeypatch.setattr("device_firmware.presence.ADVERTISE_RETRY", 0.1)
    real_publish = Advertiser.publish
    calls: list[str] = []

    async def flaky_publish(self: Advertiser, state: str) -> None:
        calls.append(state)
        if len(calls) <= 2:  # two failures, then the network is back
            raise OSError(19, "No such device")
        await real_publish(self, state)

    monkeypatch.setattr(Advertiser, "publish", flaky_publish)
    listener = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    try:
        async with start_agent(zeroconf=True, advertise=("127.0.0.1",)) as running:
            advertiser = running.agent.advertiser
            assert advertiser is not None
            info = await browse(listener, advertiser.service_name)
            assert txt(info)["state"] == "unclaimed"
            assert calls[:3] == ["unclaimed"] * 3
        assert "zeroconf: [Errno 19] No such device; trying again in" in caplog.text
    finally:
        await listener.async_close()


async def test_advertiser_refuses_no_addresses() -> None:

    with pytest.raises(ConfigError):
        Advertiser(device_id="0" * 16, model="m", firmware="1", port=1, addresses=[])


async def test_a_named_device_advertises_its_name(start_agent: AgentStarter) -> None:
    """Home Assistant's discovery card shows the device's own name (device.toml ``name``)."""
    listener = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    try:
        async with start_agent(
            zeroconf=True, advertise=("127.0.0.1",), name="Kitchen sensor"
        ) as running:
            advertiser = running.agent.advertiser
            assert advertiser is not None
            info = await browse(listener, advertiser.service_name)
            assert txt(info)["name"] == "Kitchen sensor"
    finally:
        await listener.async_close()


def test_a_name_too_long_for_txt_is_left_out() -> None:
    """A TXT string holds 255 bytes: a longer ``name=…`` is not advertised (info still has it)."""
    common = {"device_id": "0" * 16, "model": "m", "firmware": "1", "state": "unclaimed"}
    assert txt_record(**common, name="Küche")["name"] == "Küche"
    assert "name" not in txt_record(**common, name="ü" * 126)
    assert "name" not in txt_record(**common)
