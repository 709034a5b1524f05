"""Local-only households in a real network topology (issue 16 item 4).

The device agent runs in a network namespace of its own (tests/plugins/netns.py), joined to
the test's namespace by a veth pair on a private /30: from there it reaches Home Assistant's
side and Mosquitto (which listens on the test's veth address), and nothing else. The account
service listens on the test's 127.0.0.1 only. Home Assistant reaches the device over the veth.
Real programs throughout: the device agent and the account service as subprocesses, a real
Mosquitto, the config flow from discovery to the created entry.

* An IoT VLAN: the device cannot reach the service (its connection is refused by its own
  kernel: no proxy), so it hands its signed confirmation to Home Assistant, which relays it.
* An account service without TLS (an add-on or LAN service on ``http``), which the device
  could reach: a real device (no ``--allow-insecure-http``) sends it nothing in clear and
  confirms through Home Assistant's relay over the encrypted session.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_socket  # type: ignore[import-untyped]
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType

from custom_components.iot_onboard.const import CONF_HOUSEHOLD_ID
from tests.integration.onboarding_services import (
    LOOPBACK,
    AccountService,
    Device,
    new_household_onboards,
    running_services,
)
from tests.plugins.lossy_proxy import lossy_proxy
from tests.plugins.mosquitto import MosquittoBroker, MosquittoProcess
from tests.plugins.netns import DeviceNamespace, device_namespace

REFUSED = "ConnectionRefusedError 111"


@dataclass
class LocalNet:
    """The device in its namespace, the service on the test's loopback, the broker on the
    test's veth address."""

    namespace: DeviceNamespace
    broker: MosquittoBroker
    relay: AccountService
    device: Device


def _local_net(tmp_path: Path, *, allow_insecure_http: bool) -> Iterator[LocalNet]:
    with device_namespace() as namespace:
        # HA's sockets may reach the veth's two ends, as they reach loopback.
        pytest_socket.socket_allow_hosts(
            [LOOPBACK, namespace.host_address, namespace.device_address]
        )
        with (
            MosquittoProcess(host=namespace.host_address) as mosquitto,
            running_services(
                tmp_path,
                mosquitto.broker,
                allow_insecure_http=allow_insecure_http,
                device_namespace=namespace,
            ) as (relay, device),
        ):
            yield LocalNet(namespace, mosquitto.broker, relay, device)


@pytest.fixture
def vlan_net(iob_socket_allowed: None, tmp_path: Path) -> Iterator[LocalNet]:
    """The device as the other e2e tests run it (``--allow-insecure-http``: the test's
    service has no TLS), so it does try the service itself."""
    del iob_socket_allowed
    yield from _local_net(tmp_path, allow_insecure_http=True)


@pytest.fixture
def real_device_net(iob_socket_allowed: None, tmp_path: Path) -> Iterator[LocalNet]:
    """The device as shipped: no ``--allow-insecure-http``."""
    del iob_socket_allowed
    yield from _local_net(tmp_path, allow_insecure_http=False)


async def _steps_once_online(device: Device) -> str:
    """The device's attempts, once its first MQTT connection (after the commit) is in."""
    steps = ""
    for _ in range(600):
        steps = await asyncio.to_thread(device.attempts)
        if "mqtt_online" in steps:
            break
        await asyncio.sleep(0.05)
    return steps


def _results(steps: str, step: str) -> list[str]:
    """The results of ``step`` in the device's printed attempts (its rows' last column)."""
    return [row.split()[-1] for row in steps.splitlines() if row.split()[:1] == [step]]


async def _owned_and_online(hass: HomeAssistant, net: LocalNet, account_url: str) -> str:
    """The flow from discovery (the device on its veth address) to the created entry; the
    device online in the new household, the entry loaded. The device's attempts."""
    result = await new_household_onboards(hass, net.device, account_url)
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    entry = result["result"]
    assert entry.data["host"] == net.namespace.device_address
    status = await asyncio.to_thread(net.device.status)
    assert (status["phase"], status["household_id"]) == ("online", entry.data[CONF_HOUSEHOLD_ID])
    steps = await _steps_once_online(net.device)
    assert "mqtt_online" in steps, steps  # on the broker, over the veth
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED, (entry.state, entry.reason)
    return steps


async def test_a_device_that_reaches_only_home_assistant_and_the_broker_is_claimed(
    hass: HomeAssistant, vlan_net: LocalNet
) -> None:
    """An IoT VLAN: the device's namespace reaches HA and the broker, not the service."""
    namespace, relay = vlan_net.namespace, vlan_net.relay
    # The cut is the network's, seen from the device's namespace: the service's URL
    # (127.0.0.1) is the device's own loopback, and the service is not on the veth either.
    assert namespace.probe(LOOPBACK, relay.port) == REFUSED
    assert namespace.probe(namespace.host_address, relay.port) == REFUSED
    assert namespace.probe(namespace.host_address, vlan_net.broker.port) == "ok"

    steps = await _owned_and_online(hass, vlan_net, relay.url)
    # Through HA, not by itself; why: the service did not answer.
    assert _results(steps, "claim_relayed") == ["RELAY_UNREACHABLE"], steps
    assert "service_checked" not in steps, steps
    log = (vlan_net.device.directory / "device.log").read_text()
    assert "cannot reach the account service" in log, log
    assert f"{LOOPBACK}:{relay.port}/v1/health: Connection refused" in log, log


async def test_a_device_given_an_http_service_confirms_through_home_assistant_only(
    hass: HomeAssistant, real_device_net: LocalNet
) -> None:
    """An account service without TLS (on HA's host: HA accepts ``http`` on loopback only),
    and a device that could reach it: inside the device's namespace a forwarder listens on the
    same 127.0.0.1 port and forwards to the service, so the URL Home Assistant hands over
    works from the device too, and the forwarder counts who used it. A real device (no
    ``--allow-insecure-http``) never does: it confirms through HA's relay instead."""
    net = real_device_net
    url = net.relay.url  # http://127.0.0.1:PORT in both namespaces
    inside = net.namespace.listening_socket(LOOPBACK, net.relay.port)
    async with lossy_proxy(LOOPBACK, net.relay.port, drop=0, sock=inside) as forwarder:
        # The device's path to the service works (its own rule keeps it away).
        assert await asyncio.to_thread(net.namespace.probe, LOOPBACK, net.relay.port) == "ok"
        for _ in range(500):  # its connection is accepted by this loop, maybe after it ended
            if forwarder.peers:
                break
            await asyncio.sleep(0.01)
        assert len(forwarder.peers) == 1
        forwarder.peers.clear()  # that was the test's probe
        steps = await _owned_and_online(hass, net, url)
        assert forwarder.peers == []  # not one connection from the device to the service
    assert _results(steps, "claim_relayed") == ["insecure_url"], steps
    assert "service_checked" not in steps, steps
