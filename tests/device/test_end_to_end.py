"""Full provisioning over real HTTP on loopback: the simulated network, the REAL account service
(``cloud_relay.app.create_app`` on SQLite) and the REAL Mosquitto with dynamic security.

The first test goes on past the claim into re-onboarding: the router is replaced, the watchdog
reopens provisioning for the owner only, the label is refused, and the owner's session (the
secret sent with the claim) moves the device to the new Wi-Fi while owner and entities stay.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiomqtt
import pytest
from iob_protocol.commands import InfoRequest, OkResponse, ScanWifiRequest, ScanWifiResult
from iob_protocol.diagnostics import DiagnosticCode

from device_firmware.actions import Action
from device_firmware.network.simulated import Scenario, SimulatedNetwork
from device_firmware.state import Phase
from device_firmware.supervision import default_runtime_factory
from tests.plugins.clock import FakeClock

from .commit_helpers import OWNER_SECRET, change_wifi, claim_and_commit, commit
from .conftest import (
    HOME_PASSPHRASE,
    HOME_SSID,
    WRONG_PASSPHRASE,
    AgentStarter,
    Provisioned,
    RunningAgent,
    home_scenario,
    provision,
)
from .mqtt_clients import device_mqtt, hub_mqtt
from .real_relay import RealRelay


def window_open(running: RunningAgent) -> bool:
    return running.agent.session_host.window_open


NEW_ROUTER = b"NewRouter"
NEW_PASSPHRASE = "the new router's pw"  # noqa: S105 - a simulated network's password


async def test_full_provisioning_against_the_real_service(  # noqa: PLR0915 - one story
    start_agent: AgentStarter,
    provisioned: Provisioned,
    account_service: RealRelay,
) -> None:
    new_router = SimulatedNetwork(ssid=NEW_ROUTER, passphrase=NEW_PASSPHRASE, strength=90)
    base = home_scenario()
    scenario = Scenario(networks=(*base.networks, new_router))
    relay = account_service
    device_id = provisioned.device.identity.device_id
    claim = await relay.claim(device_id)
    async with start_agent(scenario, reonboard_after=1) as running:
        client = await running.connected_client()
        info = await client.call(InfoRequest(request_id=client.next_id()))
        assert isinstance(info, OkResponse)
        scan = await client.call(ScanWifiRequest(request_id=client.next_id()))
        assert isinstance(scan, OkResponse)
        _client, status = await commit(running, relay.url, token=claim["token"], client=client)
        assert (status.state.value, status.diagnostic) == ("committed", None)
        assert running.backend.saved_ssid == HOME_SSID
        assert await relay.claim_status(claim["claim_id"]) == "owned"
        assert [d["device_id"] for d in await relay.devices()] == [device_id]
        record = running.agent.store.current
        assert record.phase is Phase.ONLINE
        assert record.ownership is not None
        assert record.ownership.household_id == relay.household_id
        # The claim carried HA's owner secret; the device saved it with the ownership.
        assert record.owner_secret == OWNER_SECRET
        mqtt = record.mqtt
        assert mqtt is not None

        # --- re-onboarding: the old router is gone --------------------------------------
        assert not window_open(running)  # claimed and online: closed
        running.backend.remove_network(HOME_SSID)
        for _ in range(1000):  # the watchdog notices after reonboard_after (1 s)
            if window_open(running):
                break
            await asyncio.sleep(0.01)
        assert window_open(running)
        # Anyone holding the label gets nothing from the reopened window...
        for label in (provisioned.qr_client(), provisioned.manual_client()):
            refused = await running.client().handshake(label)
            assert (refused.status, refused.error) == (403, "owner_session_required")
        # ...the owner's Home Assistant sends only the new Wi-Fi.
        owner = await running.connected_client(owner_secret=OWNER_SECRET)
        scan = await owner.call(ScanWifiRequest(request_id=owner.next_id()))
        assert isinstance(scan, OkResponse)
        assert isinstance(scan.result, ScanWifiResult)
        assert NEW_ROUTER in [network.ssid for network in scan.result.networks]
        status = await change_wifi(owner, ssid=NEW_ROUTER, passphrase=NEW_PASSPHRASE)
        assert (status.state.value, status.diagnostic) == ("committed", None)
        assert running.backend.saved_ssid == NEW_ROUTER
        assert await running.backend.wifi_connected()
        after = running.agent.store.current
        assert (after.phase, after.wifi_ssid) == (Phase.ONLINE, NEW_ROUTER)
        # Ownership, broker credentials and owner secret stay; the service still has it.
        assert (after.ownership, after.mqtt, after.owner_secret) == (
            record.ownership,
            mqtt,
            OWNER_SECRET,
        )
        assert [d["device_id"] for d in await relay.devices()] == [device_id]
        saved = running.provisioned.config.state_file.read_text()
        assert NEW_PASSPHRASE not in saved  # Wi-Fi secrets live with NetworkManager only
        assert HOME_PASSPHRASE not in saved
    # The credentials the service created really open the broker.
    async with device_mqtt(mqtt) as device_client:
        await device_client.publish(f"iob/{device_id}/availability", b"online", qos=1)
    with pytest.raises(aiomqtt.MqttError):
        async with device_mqtt(mqtt, password=WRONG_PASSPHRASE):
            pass


async def test_real_service_refusals(
    start_agent: AgentStarter,
    provisioned: Provisioned,
    account_service: RealRelay,
    tmp_path: Path,
) -> None:
    other = provision(tmp_path / "other")
    relay = account_service
    await relay.import_records(other.result.record_file)
    device_id = provisioned.device.identity.device_id
    started = relay.clock.now
    device_clock = FakeClock(started)
    async with start_agent(wall_clock=device_clock) as running:
        # A token bound to another device: refused, rolled back, readable over the session.
        foreign = await relay.claim(other.device.identity.device_id)
        client, status = await commit(running, relay.url, token=foreign["token"])
        assert status.diagnostic is DiagnosticCode.CLAIM_REJECTED
        assert running.backend.saved_ssid is None
        # A token that expired (the service's clock moved past its ten minutes).
        claim = await relay.claim(device_id)
        relay.clock.advance(700)
        device_clock.advance(700)
        client, status = await commit(running, relay.url, token=claim["token"], client=client)
        assert status.diagnostic is DiagnosticCode.CLAIM_EXPIRED
        # The device's clock is wrong: caught against the service's clock, nothing posted.
        relay.clock.now = started
        device_clock.now = started - 3600
        claim = await relay.claim(device_id)
        client, status = await commit(running, relay.url, token=claim["token"], client=client)
        assert status.diagnostic is DiagnosticCode.CLOCK_SKEW
        assert await relay.claim_status(claim["claim_id"]) == "pending"


async def test_factory_reset_releases_at_the_real_service(
    start_agent: AgentStarter,
    account_service: RealRelay,
) -> None:

    relay = account_service
    async with start_agent() as running:
        await claim_and_commit(running, relay)
        mqtt = running.agent.store.current.mqtt
        assert mqtt is not None
        report = await running.agent.controller.factory_reset()
        assert report.released is True
        assert report.wifi_forgotten
        assert running.backend.saved_ssid is None
        assert running.agent.store.current.phase is Phase.UNCLAIMED
        assert running.agent.store.current.mqtt is None
        assert await relay.devices() == []
        # The window is open again: a new owner can set the device up.
        running.agent.request(Action.BUTTON)
        await claim_and_commit(running, relay)
    # The released credentials no longer open the broker.
    with pytest.raises(aiomqtt.MqttError):
        async with device_mqtt(mqtt):  # refused for the release, not for the client id
            pass


async def test_zero_touch_over_ethernet(
    start_agent: AgentStarter,
    provisioned: Provisioned,
    account_service: RealRelay,
) -> None:

    relay = account_service
    device_id = provisioned.device.identity.device_id
    await relay.preassign(device_id)
    async with start_agent(Scenario(wired=True), zero_touch_url=relay.url) as running:
        for _ in range(500):
            if running.agent.store.current.phase is Phase.ONLINE:
                break
            await asyncio.sleep(0.01)
        record = running.agent.store.current
        assert record.phase is Phase.ONLINE
        assert record.ownership is not None
        assert record.ownership.household_id == relay.household_id
        assert [d["device_id"] for d in await relay.devices()] == [device_id]
        # No Wi-Fi was touched and no hotspot opened: Ethernet was enough.
        assert not [e for e in running.backend.events if e.startswith(("connect", "hotspot"))]


async def test_zero_touch_not_preassigned_stays_unclaimed(
    start_agent: AgentStarter,
    account_service: RealRelay,
) -> None:

    relay = account_service
    async with start_agent(Scenario(wired=True), zero_touch_url=relay.url) as running:
        for _ in range(500):
            if running.agent.store.current.diagnostic is not None:
                break
            await asyncio.sleep(0.01)
        record = running.agent.store.current
        assert record.phase is Phase.UNCLAIMED
        assert record.diagnostic is DiagnosticCode.CLAIM_REJECTED
        assert running.agent.session_host.window_open


async def test_claimed_device_publishes_to_the_real_broker_and_reset_clears_it(
    start_agent: AgentStarter,
    provisioned: Provisioned,
    account_service: RealRelay,
) -> None:
    """Claim → the agent starts the MQTT runtime with the service's credentials → HA's hub
    credential sees the retained descriptor and ``online``; a factory reset clears them."""

    relay = account_service
    device_id = provisioned.device.identity.device_id
    hub = await relay.hub()
    async with hub_mqtt(hub) as observer:
        factory = default_runtime_factory(simulated=True, model="pi-test", firmware="0.1.0")
        async with start_agent(runtime_factory=factory) as running:
            await claim_and_commit(running, relay)
            # The hub's ACL covers the device once it is owned: subscribe now; the
            # retained descriptor and availability arrive as soon as the runtime has sent them.
            await observer.subscribe(f"iob/{device_id}/#", qos=1)
            seen: dict[str, bytes] = {}
            async with asyncio.timeout(30):
                async for message in observer.messages:
                    seen[str(message.topic)] = bytes(message.payload)
                    if {"meta", "availability"} <= {t.rsplit("/", 1)[1] for t in seen}:
                        break
            assert seen[f"iob/{device_id}/availability"] == b"online"
            meta = json.loads(seen[f"iob/{device_id}/meta"])
            assert meta["device"]["model"] == "pi-test"
            assert meta["entities"], meta  # the simulated demo entities
            report = await running.agent.controller.factory_reset()
            assert report.retained_cleared is True
            assert report.released is True
            cleared: set[str] = set()
            async with asyncio.timeout(30):
                async for message in observer.messages:
                    if message.payload == b"" and message.topic.value.endswith(
                        ("/meta", "/availability")
                    ):
                        cleared.add(message.topic.value.rsplit("/", 1)[1])
                    if cleared == {"meta", "availability"}:
                        break
