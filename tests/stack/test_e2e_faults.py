"""Faults against the whole real stack (issue 7, item 2), through Home Assistant's own APIs.

One demo stack for the module (``fault_stack``: two devices, a slow network in range, the
broker and the account service restartable by pid on their ports). The tests run in file
order and share the stack: device 1 is onboarded after a wrong Wi-Fi password, survives a
broker restart and is factory reset and onboarded again; device 2 is onboarded while the
account service is killed around its claim. Each test makes sure of its own preconditions
(a stopped part is started again after every test; a device a failed test left unclaimed is
onboarded by hand) so it fails for its own behaviour, not an earlier test's.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from .faults import (
    COMMIT_TIMEOUT,
    ENTITIES_TIMEOUT,
    FLOW_TIMEOUT,
    HOME,
    RECONNECT_TIMEOUT,
    SLOW,
    WRONG,
    FaultStack,
    advertisement,
    commit_end,
    device_info,
    discovery_flow,
    ensure_onboarded,
    entity_states,
    error_message,
    finish_onboarding,
    flow_open,
    ha_device_id,
    household_id,
    map_owner,
    open_device,
    progress_end,
    registry_owner,
    running_fault_stack,
    submit_wifi,
)
from .helpers import REPO, processes_mentioning
from .test_onboarding_through_ha import device_entities, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fault_stack() -> Iterator[FaultStack]:
    """One stack for the module: starting it costs most of a minute."""
    with running_fault_stack() as stack:
        yield stack


@pytest.fixture(autouse=True)
def parts_running(fault_stack: FaultStack) -> Iterator[None]:
    """After each test, start again what it stopped (also when it failed halfway)."""
    yield
    for part in sorted(fault_stack.down):
        fault_stack.command("start", part)


@pytest.fixture
def onboarded_1(fault_stack: FaultStack) -> FaultStack:
    """Device 1 owned, online and with entities (onboarded here if an earlier test did not)."""
    device = fault_stack.device(1)
    ensure_onboarded(fault_stack, 1)
    wait_for(
        "device 1's entities, every one available",
        lambda: device_entities(fault_stack.ha, device["device_id"]),
        ENTITIES_TIMEOUT,
    )
    return fault_stack


def _wifi_form_error(result: dict[str, Any]) -> str:
    """The Wi-Fi form the failed provision step came back to, and its one error."""
    assert (result["type"], result["step_id"]) == ("form", "wifi"), result
    errors: dict[str, str] = result["errors"]
    assert set(errors) == {"base"}, errors
    return errors["base"]


def test_wrong_wifi_password_is_diagnosed_and_retried_in_place(fault_stack: FaultStack) -> None:
    stack = fault_stack
    device = stack.device(1)
    device_id = device["device_id"]
    flow_id = discovery_flow(stack, device_id)
    form = open_device(stack, flow_id, device)

    result = commit_end(stack, flow_id, submit_wifi(stack, flow_id, form, WRONG))

    # The device's own diagnostic, with its next step, on the same flow's Wi-Fi form.
    assert _wifi_form_error(result) == "wifi_auth_failed"
    message = error_message(stack, "wifi_auth_failed")
    assert "password was rejected" in message, message
    assert "try again" in message, message
    assert flow_open(stack, flow_id)
    # Never half-onboarded: the device rolled back and is nobody's, HA has nothing of it.
    assert device_info(device)["state"] != "online"
    assert registry_owner(stack, device_id) is None
    assert entity_states(stack, device_id) == []

    # The retry in place, with the right passphrase, completes with entities.
    result = submit_wifi(stack, flow_id, result, HOME)
    states = finish_onboarding(stack, flow_id, device_id, result)
    assert {s["entity_id"].split(".")[0] for s in states} >= {"sensor", "switch"}, states
    assert device_info(device)["state"] == "online"
    assert registry_owner(stack, device_id) == household_id(stack)


def _switch(stack: FaultStack, device_id: str) -> dict[str, Any]:
    switches = [s for s in entity_states(stack, device_id) if s["entity_id"].startswith("switch.")]
    assert switches, entity_states(stack, device_id)
    return switches[0]


def _all_unavailable(states: list[dict[str, Any]]) -> bool:
    return bool(states) and all(s["state"] == "unavailable" for s in states)


def test_broker_restart_brings_the_entities_back(onboarded_1: FaultStack) -> None:
    stack = onboarded_1
    device_id = stack.device(1)["device_id"]
    broker = stack.ready["broker"]

    stopped = stack.command("stop", "broker")
    assert stopped["pid"] == broker["pid"]
    assert processes_mentioning(f"{stack.state_dir}/mosquitto") == {}
    wait_for(
        "every entity of device 1 unavailable while the broker is down",
        lambda: _all_unavailable(entity_states(stack, device_id)) or None,
        RECONNECT_TIMEOUT,
    )

    started = stack.command("start", "broker")
    assert started["pid"] != broker["pid"]
    wait_for(
        "device 1's entities available again after the broker restart",
        lambda: device_entities(stack.ha, device_id),
        RECONNECT_TIMEOUT,
    )

    # State updates flow again, both ways: a command reaches the device, its state comes back.
    map_owner(stack)
    switch = _switch(stack, device_id)
    wanted = "off" if switch["state"] == "on" else "on"
    stack.ha.call(f"/api/services/switch/turn_{wanted}", {"entity_id": switch["entity_id"]})
    wait_for(
        f"{switch['entity_id']} reported {wanted} by the device",
        lambda: _switch(stack, device_id)["state"] == wanted or None,
        RECONNECT_TIMEOUT,
    )


def _settled(device: dict[str, Any]) -> dict[str, Any] | None:
    """The device's info once it is no longer in the middle of a commit."""
    info = device_info(device)
    return None if info["state"] == "committing" else info


def test_relay_killed_around_the_claim_leaves_no_half_onboarded_device(
    fault_stack: FaultStack,
) -> None:
    stack = fault_stack
    device = stack.device(2)
    device_id = device["device_id"]
    relay_pid = stack.ready["account_service"]["pid"]
    flow_id = discovery_flow(stack, device_id)
    form = open_device(stack, flow_id, device)  # the claim exists at the service from here on

    # 1. Killed after Home Assistant created the claim, before the device got its token.
    killed = stack.command("kill", "relay")
    assert killed["pid"] == relay_pid
    result = commit_end(stack, flow_id, submit_wifi(stack, flow_id, form, HOME))
    error = _wifi_form_error(result)
    assert error == "account_unreachable", result
    assert "Check that it is running" in error_message(stack, error)
    assert device_info(device)["state"] != "online"
    relay_pid = stack.command("start", "relay")["pid"]
    assert registry_owner(stack, device_id) is None

    # 2. Killed while the device joins the (slow) network holding the claim token: between
    # the claim and its confirmation.
    result = submit_wifi(stack, flow_id, result, SLOW)
    # The slow network outlasts the flow's inline wait: the progress screen.
    assert (result["type"], result["step_id"]) == ("progress", "provision"), result
    wait_for(
        "device 2 committing",
        lambda: device_info(device)["state"] == "committing" or None,
        FLOW_TIMEOUT,
    )
    assert stack.command("kill", "relay")["pid"] == relay_pid
    result = progress_end(stack, flow_id)
    # A specific error with its next step, not a hang: Home Assistant waits for the device's
    # own verdict (RELAY_UNREACHABLE, rolled back) while it still commits, unless the device
    # is gone too; the same flow can retry.
    error = _wifi_form_error(result)
    assert error == "relay_unreachable", result
    assert "try again" in error_message(stack, error)
    assert flow_open(stack, flow_id)
    # The device gives up by itself (RELAY_UNREACHABLE) and rolls back: nobody's device.
    info = wait_for("device 2 back from its commit", lambda: _settled(device), COMMIT_TIMEOUT)
    assert info["state"] in {"unclaimed", "provisioning"}, info
    stack.command("start", "relay")
    assert registry_owner(stack, device_id) is None
    assert entity_states(stack, device_id) == []

    # 3. Killed right after the confirmation: the device says it is owned. The same flow
    # completes anyway (the device's word decides), and once the service is back the device
    # is fully onboarded: owned, on the broker, with entities.
    answer = submit_wifi(stack, flow_id, result, HOME)
    wait_for(
        "device 2 online", lambda: device_info(device)["state"] == "online" or None, COMMIT_TIMEOUT
    )
    stack.command("kill", "relay")
    result = commit_end(stack, flow_id, answer)  # answered inline, or the progress's end
    assert result["type"] == "create_entry", result
    stack.command("start", "relay")
    wait_for(
        "device 2's entities, every one available",
        lambda: device_entities(stack.ha, device_id),
        ENTITIES_TIMEOUT,
    )
    assert device_info(device)["state"] == "online"
    assert registry_owner(stack, device_id) == household_id(stack)


def test_factory_reset_from_home_assistant_then_onboard_again(onboarded_1: FaultStack) -> None:
    stack = onboarded_1
    device = stack.device(1)
    device_id = device["device_id"]
    registry_id = ha_device_id(stack, device_id)
    assert registry_id is not None
    map_owner(stack)

    stack.ha.call("/api/services/iot_onboard/factory_reset", {"device_id": registry_id})

    # The device forgets owner and Wi-Fi, the service releases it, HA removes it.
    wait_for(
        "device 1 unclaimed after the reset",
        lambda: device_info(device)["state"] == "unclaimed" or None,
        FLOW_TIMEOUT,
    )
    wait_for(
        "device 1 released at the account service",
        lambda: registry_owner(stack, device_id) is None or None,
        FLOW_TIMEOUT,
    )
    wait_for(
        "device 1 removed from Home Assistant",
        lambda: ha_device_id(stack, device_id) is None or None,
        FLOW_TIMEOUT,
    )
    assert entity_states(stack, device_id) == []
    # Discoverable again: its zeroconf record says it has no owner.
    record = advertisement(stack, device_id)
    assert record is not None
    assert (record["id"], record["state"]) == (device_id, "unclaimed"), record

    # Home Assistant offers it again (its "unclaimed" advert beats the record it still had for
    # a moment) and it is onboarded again into the same household, with entities.
    flow_id = discovery_flow(stack, device_id)
    form = open_device(stack, flow_id, device)
    result = submit_wifi(stack, flow_id, form, HOME)
    finish_onboarding(stack, flow_id, device_id, result)
    assert device_info(device)["state"] == "online"
    assert registry_owner(stack, device_id) == household_id(stack)


def test_factory_reset_on_the_device_releases_it(fault_stack: FaultStack) -> None:
    """The device's own CLI (as the button does): the same outcome without Home Assistant."""
    stack = fault_stack
    device = stack.device(2)
    device_id = device["device_id"]
    ensure_onboarded(stack, 2)
    config = stack.state_dir / "devices" / "2" / "device.toml"

    reset = subprocess.run(
        [sys.executable, "-m", "device_firmware", "--config", str(config), "reset", "--yes"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=COMMIT_TIMEOUT,
        check=False,
    )
    assert reset.returncode == 0, reset.stdout + reset.stderr
    assert device_info(device)["state"] == "unclaimed"
    wait_for(
        "device 2 released at the account service",
        lambda: registry_owner(stack, device_id) is None or None,
        FLOW_TIMEOUT,
    )
    wait_for(
        "device 2 removed from Home Assistant",
        lambda: ha_device_id(stack, device_id) is None or None,
        FLOW_TIMEOUT,
    )
    record = advertisement(stack, device_id)
    assert record is not None
    assert record["state"] == "unclaimed", record


def test_the_stack_stops_cleanly_after_the_faults(fault_stack: FaultStack) -> None:
    stack = fault_stack
    stack.orchestrator.process.send_signal(signal.SIGINT)
    assert stack.orchestrator.wait() == 0, stack.orchestrator.output
    assert processes_mentioning(str(stack.state_dir)) == {}
