"""Zeroconf on 127.0.0.1 only: the record HA's zeroconf matcher sees, and its withdrawal."""

from __future__ import annotations

import asyncio

import pytest
from zeroconf import DNSQuestionType, IPVersion, ServiceStateChange
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from device_firmware.errors import ConfigError
from device_firmware.provisioning.advertise import SERVICE_TYPE, Advertiser

from .commit_helpers import commit
from .conftest import AgentStarter, FakeRelay


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


async def test_agent_advertises_txt_and_withdraws_when_claimed(
    start_agent: AgentStarter, fake_relay: FakeRelay
) -> None:
    async with start_agent(zeroconf=True, advertise=("127.0.0.1",)) as running:
        advertiser = running.agent.advertiser
        assert advertiser is not None
        assert advertiser.registered
        listener = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
        try:
            info = await browse(listener, advertiser.service_name)
            properties = {k.decode(): (v or b"").decode() for k, v in info.properties.items()}
            device = running.provisioned.device
            assert properties == {
                "id": device.identity.device_id,
                "model": "pi-test",
                "firmware": "0.1.0",
                "state": "unclaimed",
                "protocol": "1",
            }
            assert info.port == running.agent.lan_ports()[0]
            assert info.parsed_addresses() == ["127.0.0.1"]
        finally:
            await listener.async_close()
        _client, status = await commit(running, fake_relay.url)
        assert status.state.value == "committed"
        for _ in range(3000):
            if not is_registered(advertiser):
                break
            await asyncio.sleep(0.01)
        assert not is_registered(advertiser)


async def test_advertiser_refuses_no_addresses() -> None:

    with pytest.raises(ConfigError):
        Advertiser(device_id="0" * 16, model="m", firmware="1", port=1, addresses=[])
