"""Agent lifecycle: boot recovery after a power cut, shutdown mid-commit, the HA-relayed claim,
the MQTT runtime's failures becoming diagnostics, identify."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
from iob_protocol.account_api import RelayedOwned
from iob_protocol.claim import ClaimConfirmation
from iob_protocol.commands import (
    ClaimAnswerRequest,
    CommitRequest,
    DeviceState,
    ErrorResponse,
    IdentifyRequest,
    OkResponse,
    SetClaimRequest,
    SetWifiRequest,
    decode_request,
    encode_request,
)
from iob_protocol.diagnostics import DiagnosticCode
from iob_protocol.errors import InsecureUrlError

from device_firmware.attempts import AttemptLog, Step
from device_firmware.commit import ClaimDelivery, ClaimPlan
from device_firmware.controller import DeviceController
from device_firmware.errors import CommandRefusedError
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
    defaults: dict[str, Any] = {
        "service_url": "https://relay.example",
        "claim_token": "T" * 30,
        "owner_secret": OWNER_SECRET,
    }
    await controller.set_claim(ClaimPlan(**(defaults | plan)))
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
    owned = ClaimOutcome(
        device_id=provisioned.device.identity.device_id,
        household_id="ab" * 16,
        mqtt=MqttGrant(
            host="broker.public", port=8883, tls=True, username="u", password=TEST_PASSWORD
        ),
    )
    controller.deliver_hub_answer(RelayedOwned.sealed(owned, exchange.confirmation).to_dict())
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


def _no_uplink() -> Scenario:
    """HomeNet as an IoT VLAN: DNS for the LAN only, no route out."""
    scenario = home_scenario()
    home = dataclasses.replace(scenario.networks[0], internet=False)
    return dataclasses.replace(scenario, networks=(home, *scenario.networks[1:]))


#: A closed port on loopback: the device's own path to the service is refused.
CLOSED_SERVICE = "http://127.0.0.1:9"


async def _relay_asked(controller: DeviceController) -> ClaimConfirmation:
    """What HA's long-polled ``status`` sees: the confirmation to relay (the wait ends for it)."""
    status = await controller.status_after(20)
    assert status.state is DeviceState.COMMITTING
    assert status.relay is not None, status
    return status.relay


async def _answered_through_hub(
    controller: DeviceController, device_id: str, household_id: str
) -> tuple[ClaimConfirmation, DeviceStateRecord]:
    """HA relays the confirmation the device asks it to; the service's MACed grant comes back
    over the session. The confirmation, and the device's record once its commit ended."""
    confirmation = await _relay_asked(controller)
    owned = ClaimOutcome(
        device_id=device_id,
        household_id=household_id,
        mqtt=MqttGrant(host="broker.lan", port=8883, tls=True, username="u", password="p" * 20),
    )
    await controller.dispatch(
        ClaimAnswerRequest(request_id=7, answer=RelayedOwned.sealed(owned, confirmation).to_dict())
    )
    return confirmation, await controller.wait_for_commit()


async def test_out_of_reach_service_the_device_hands_its_confirmation_to_home_assistant(
    provisioned: Provisioned,
) -> None:
    """Local-only household: the device cannot reach the service (refused, no uplink), HA
    offered to relay (``hub_relay``): the signed confirmation goes out through HA and the
    service's MACed grant comes back; the device ends owned and online on the broker's address."""
    controller, backend = await _hub_claim(
        provisioned,
        _no_uplink(),
        RelayClient,
        service_url=CLOSED_SERVICE,
        hub_relay=True,
        broker_host="10.0.0.2",
        broker_port=1883,
    )
    await controller.start_commit()
    identity = provisioned.device.identity
    confirmation, record = await _answered_through_hub(controller, identity.device_id, "cd" * 16)
    confirmation.verify(identity.public_key, now=confirmation.timestamp)
    assert confirmation.claim_token == "T" * 30
    assert (record.phase, record.diagnostic) == (Phase.ONLINE, None)
    assert record.ownership is not None
    assert record.ownership.household_id == "cd" * 16
    assert record.mqtt is not None
    assert (record.mqtt.host, record.mqtt.password) == ("10.0.0.2", "p" * 20)
    assert record.owner_secret == OWNER_SECRET
    assert backend.saved_ssid == HOME_SSID
    assert controller.status().relay is None
    await controller.aclose()


async def test_without_the_offer_an_out_of_reach_service_rolls_back_as_before(
    provisioned: Provisioned,
) -> None:
    controller, backend = await _hub_claim(
        provisioned, _no_uplink(), RelayClient, service_url=CLOSED_SERVICE
    )
    await controller.start_commit()
    record = await controller.wait_for_commit()
    assert (record.phase, record.diagnostic) == (Phase.PROVISIONING, DiagnosticCode.NO_INTERNET)
    assert controller.hub_exchange is None
    assert backend.saved_ssid is None
    await controller.aclose()


async def test_a_relayed_grant_that_is_not_the_service_s_answer_is_refused(
    provisioned: Provisioned,
) -> None:
    """HA (or anything on its way) changed the grant: the MAC fails, nothing is owned."""
    controller, backend = await _hub_claim(
        provisioned, _no_uplink(), RelayClient, service_url=CLOSED_SERVICE, hub_relay=True
    )
    await controller.start_commit()
    confirmation = await _relay_asked(controller)
    owned = ClaimOutcome(
        device_id=provisioned.device.identity.device_id,
        household_id="cd" * 16,
        mqtt=MqttGrant(host="broker.lan", port=8883, tls=True, username="u", password="p" * 20),
    )
    answer = RelayedOwned.sealed(owned, confirmation).to_dict()
    answer["mqtt"] = {**answer["mqtt"], "host": "evil.example"}
    with pytest.raises(CommandRefusedError) as refused:
        await controller.dispatch(ClaimAnswerRequest(request_id=7, answer=answer))
    assert refused.value.error == "claim_error"
    record = await controller.wait_for_commit()
    assert (record.phase, record.diagnostic) == (
        Phase.PROVISIONING,
        DiagnosticCode.CLAIM_REJECTED,
    )
    assert (record.owner_secret, record.mqtt) == (None, None)
    assert backend.saved_ssid is None
    await controller.aclose()


async def test_an_http_service_is_confirmed_through_home_assistant_never_in_clear(
    provisioned: Provisioned, scripted_service: ScriptedService
) -> None:
    """An add-on or LAN service without TLS: HA hands an ``http`` URL with its relay offer. A
    device without the development switch accepts it only for the relay: it signs and hands
    its confirmation over the encrypted session at once, and never sends the service a byte
    (its MQTT credential must not cross the LAN in clear), though the service is reachable."""
    attempts = AttemptLog()
    controller = DeviceController(
        device=provisioned.device,
        store=StateStore(provisioned.config.state_file),
        backend=SimulatedBackend(home_scenario()),
        relay_factory=RelayClient,
        commit_timeout=30,
        attempts=attempts,
    )
    await controller.set_wifi(WifiCredentials(ssid=HOME_SSID, passphrase=HOME_PASSPHRASE))
    claim = SetClaimRequest(
        request_id=2,
        service_url=scripted_service.url,
        claim_token="T" * 30,
        owner_secret=OWNER_SECRET,
        hub_relay=True,
    )
    # Decoded as a production device's session does (no ``allow_insecure_http``).
    await controller.dispatch(decode_request(encode_request(claim)))
    await controller.start_commit()
    device_id = provisioned.device.identity.device_id
    _confirmation, record = await _answered_through_hub(controller, device_id, "ef" * 16)
    assert (record.phase, record.diagnostic) == (Phase.ONLINE, None)
    assert scripted_service.requests == []  # not even the health check
    assert attempts.current is not None
    steps = [(step.step, step.result) for step in attempts.current.steps]
    assert (Step.CLAIM_RELAYED, "insecure_url") in steps, steps
    assert Step.SERVICE_CHECKED not in {step for step, _ in steps}
    await controller.aclose()


def test_without_the_relay_offer_an_http_service_is_refused() -> None:
    """An older HA (no ``hub_relay``) naming an ``http`` service: refused as before."""
    claim = SetClaimRequest(
        request_id=2,
        service_url=CLOSED_SERVICE,
        claim_token="T" * 30,
        owner_secret=OWNER_SECRET,
        allow_insecure_http=True,
    )
    with pytest.raises(InsecureUrlError):
        decode_request(encode_request(claim))


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
