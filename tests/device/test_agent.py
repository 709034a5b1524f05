"""Agent lifecycle: boot recovery after a power cut, shutdown mid-commit, the HA-relayed claim,
the MQTT runtime's failures becoming diagnostics, identify."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

from iob_protocol.commands import (
    CommitRequest,
    ErrorResponse,
    IdentifyRequest,
    OkResponse,
    SetClaimRequest,
    SetWifiRequest,
)
from iob_protocol.diagnostics import DiagnosticCode

from device_firmware.commit import ClaimDelivery, ClaimPlan
from device_firmware.controller import DeviceController
from device_firmware.network.backend import WifiCredentials
from device_firmware.network.simulated import Scenario, SimulatedBackend, SimulatedNetwork
from device_firmware.relay_client import ClaimOutcome, MqttGrant, RelayClient
from device_firmware.state import (
    DeviceStateRecord,
    MqttCredentials,
    Ownership,
    Phase,
    StateStore,
)
from device_firmware.supervision import default_runtime_factory
from tests.plugins.mosquitto import MosquittoBroker
from tests.plugins.scripted_service import ScriptedService

from .commit_helpers import OWNER_SECRET, commit
from .conftest import (
    HOME_PASSPHRASE,
    HOME_SSID,
    TEST_PASSWORD,
    WRONG_PASSPHRASE,
    AgentStarter,
    Provisioned,
    home_scenario,
)

OWNER = Ownership(household_id="hh", service_url="http://127.0.0.1:9", claimed_at=1)


async def test_boot_after_power_cut_mid_commit_rolls_back(
    start_agent: AgentStarter, provisioned: Provisioned
) -> None:
    store = StateStore(provisioned.config.state_file)
    store.change(phase=Phase.PROVISIONING)
    store.change(phase=Phase.COMMITTING)
    async with start_agent() as running:
        record = running.agent.store.current
        assert (record.phase, record.diagnostic) == (Phase.PROVISIONING, DiagnosticCode.TIMEOUT)
        assert "rollback" in running.backend.events
        assert running.agent.session_host.window_open


async def test_boot_after_power_cut_once_owned_is_online(
    start_agent: AgentStarter, provisioned: Provisioned
) -> None:
    store = StateStore(provisioned.config.state_file)
    store.change(phase=Phase.PROVISIONING)
    store.change(
        phase=Phase.COMMITTING,
        ownership=OWNER,
        mqtt=MqttCredentials(host="h", port=1, tls=False, username="u", password=TEST_PASSWORD),
    )
    async with start_agent() as running:
        assert running.agent.store.current.phase is Phase.ONLINE
        assert not running.agent.session_host.window_open


async def test_stopping_mid_commit_rolls_back(
    start_agent: AgentStarter, scripted_service: ScriptedService
) -> None:
    slow = Scenario(
        networks=(SimulatedNetwork(ssid=HOME_SSID, passphrase=HOME_PASSPHRASE, connect_delay=60),)
    )
    async with start_agent(slow) as running:
        client = await running.connected_client()

        await client.call(SetWifiRequest(request_id=1, ssid=HOME_SSID, passphrase=HOME_PASSPHRASE))
        await client.call(
            SetClaimRequest(
                request_id=2,
                service_url=scripted_service.url,
                claim_token="A" * 30,
                owner_secret=OWNER_SECRET,
                allow_insecure_http=True,
            )
        )
        await client.call(CommitRequest(request_id=3))
        assert running.agent.store.current.phase is Phase.COMMITTING
    record = StateStore(running.provisioned.config.state_file).load()
    assert (record.phase, record.diagnostic) == (Phase.PROVISIONING, DiagnosticCode.TIMEOUT)
    assert running.backend.events[-1] == "rollback"


async def test_identify(start_agent: AgentStarter) -> None:
    async with start_agent() as running:
        client = await running.connected_client()
        response = await client.call(IdentifyRequest(request_id=1))
        assert isinstance(response, OkResponse)
        assert "identify" in running.hardware.history
        assert running.hardware.pattern.value == "slow_blink"


async def _hub_claim(
    provisioned: Provisioned,
    scenario: Scenario,
    relay_factory: Callable[[str], RelayClient],
    **plan: Any,
) -> tuple[DeviceController, SimulatedBackend]:
    """A controller on ``scenario`` with the home Wi-Fi and a claim (``plan`` added) set."""
    backend = SimulatedBackend(scenario)
    controller = DeviceController(
        device=provisioned.device,
        store=StateStore(provisioned.config.state_file),
        backend=backend,
        relay_factory=relay_factory,
        commit_timeout=30,
    )
    await controller.set_wifi(WifiCredentials(ssid=HOME_SSID, passphrase=HOME_PASSPHRASE))
    await controller.set_claim(
        ClaimPlan(
            service_url="https://relay.example",
            claim_token="T" * 30,
            owner_secret=OWNER_SECRET,
            **plan,
        )
    )
    return controller, backend


async def _hub_exchange_begun(controller: DeviceController) -> None:
    """Wait (up to 5 s) until the commit hands its confirmation to Home Assistant."""
    for _ in range(500):
        if controller.hub_exchange is not None:
            break
        await asyncio.sleep(0.01)


async def test_claim_relayed_by_home_assistant(provisioned: Provisioned) -> None:
    """IoT VLAN without internet: the signed confirmation goes out through HA, the service's
    answer comes back the same way; the device never talks to the service."""

    def no_relay(url: str) -> RelayClient:
        raise AssertionError(f"the device must not call {url}")

    controller, backend = await _hub_claim(
        provisioned, home_scenario(), no_relay, broker_host="10.0.0.2", broker_port=1883
    )
    controller.set_claim_delivery(ClaimDelivery.HUB)
    await controller.start_commit()
    await _hub_exchange_begun(controller)
    exchange = controller.hub_exchange
    assert exchange is not None
    exchange.confirmation.verify(
        provisioned.device.identity.public_key, now=exchange.confirmation.timestamp
    )
    controller.deliver_hub_outcome(
        ClaimOutcome(
            device_id=provisioned.device.identity.device_id,
            household_id="hh_vlan",
            mqtt=MqttGrant(
                host="broker.public", port=8883, tls=True, username="u", password=TEST_PASSWORD
            ),
        )
    )
    record = await controller.wait_for_commit()
    assert record.phase is Phase.ONLINE
    assert record.mqtt is not None
    assert (record.mqtt.host, record.mqtt.port) == ("10.0.0.2", 1883)
    assert record.owner_secret == OWNER_SECRET  # saved with the claim, whoever delivered it
    assert backend.saved_ssid == HOME_SSID
    await controller.aclose()


async def test_claim_relayed_by_home_assistant_refused(provisioned: Provisioned) -> None:
    controller, backend = await _hub_claim(
        provisioned, home_scenario(saved=b"Cafe"), RelayClient, delivery=ClaimDelivery.HUB
    )
    await controller.start_commit()
    await _hub_exchange_begun(controller)
    controller.fail_hub_outcome(DiagnosticCode.CLAIM_EXPIRED)
    record = await controller.wait_for_commit()
    assert (record.phase, record.diagnostic) == (Phase.PROVISIONING, DiagnosticCode.CLAIM_EXPIRED)
    assert record.owner_secret is None
    assert backend.saved_ssid == b"Cafe"
    await controller.aclose()


async def test_refused_broker_credentials_become_broker_auth_failed(
    start_agent: AgentStarter, provisioned: Provisioned, mosquitto_broker: MosquittoBroker
) -> None:
    """The real runtime against the real Mosquitto with credentials it does not know."""
    store = StateStore(provisioned.config.state_file)
    store.write(
        DeviceStateRecord(
            phase=Phase.ONLINE,
            ownership=OWNER,
            mqtt=MqttCredentials(
                host=mosquitto_broker.host,
                port=mosquitto_broker.port,
                tls=False,
                username="nobody",
                password=WRONG_PASSPHRASE,
            ),
        )
    )
    factory = default_runtime_factory(simulated=True)
    async with start_agent(runtime_factory=factory) as running:
        for _ in range(1000):
            # The state is saved (in a worker thread) a moment before the LED is told.
            if running.agent.store.current.diagnostic is not None and (
                running.hardware.pattern.value != "off"
            ):
                break
            await asyncio.sleep(0.01)
        record = running.agent.store.current
        assert (record.phase, record.diagnostic) == (
            Phase.ONLINE,
            DiagnosticCode.BROKER_AUTH_FAILED,
        )
        assert running.hardware.pattern.value == "solid"


async def test_commit_refusals(
    start_agent: AgentStarter, scripted_service: ScriptedService
) -> None:
    async with start_agent() as running:
        client, status = await commit(running, scripted_service.url)
        assert status.state.value == "committed"

        again = await client.call(
            SetClaimRequest(
                request_id=client.next_id(),
                service_url=scripted_service.url,
                claim_token="B" * 30,
                allow_insecure_http=True,
            )
        )
        assert isinstance(again, ErrorResponse)
        assert again.error == "already_claimed"
        assert dataclasses.is_dataclass(running.agent.store.current)
