"""The provisioning window's bookkeeping: opened by a trigger, closed by the claim, lapsing."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from iob_protocol.ble import SERVICE_UUID
from iob_protocol.commands import CommandResult, Request
from iob_protocol.limiter import WINDOW_SECONDS

from device_firmware import presence
from device_firmware.ble.bridge import BridgePeripheral
from device_firmware.decide import Facts, Trigger, WindowReason, decide
from device_firmware.provisioning.session_host import SessionHost
from device_firmware.state import DeviceStateRecord, Ownership, Phase
from device_firmware.window import ProvisioningWindow
from tests.plugins.clock import MONOTONIC_START, FakeClock

from .conftest import AgentStarter, Provisioned

UNCLAIMED = DeviceStateRecord()
CLAIMED = DeviceStateRecord(
    phase=Phase.ONLINE,
    ownership=Ownership(household_id="hh", service_url="https://relay.example", claimed_at=1),
    wifi_ssid=b"home",
)


async def _no_commands(_request: Request) -> CommandResult:
    raise AssertionError("no command expected")


def _window(provisioned: Provisioned, now: list[float], *, claimed: bool) -> ProvisioningWindow:
    host = SessionHost(provisioned.device, _no_commands, clock=lambda: now[0])
    return ProvisioningWindow(host, claimed=claimed)


def reason(window: ProvisioningWindow) -> WindowReason | None:
    """Read afresh at every call (no narrowing across the window's changes)."""
    return window.reason


def test_the_label_window_opens_at_boot_and_closes_with_the_claim(
    provisioned: Provisioned,
) -> None:
    now = [0.0]
    window = _window(provisioned, now, claimed=False)
    assert window.open_for(Trigger.BOOT, UNCLAIMED) is WindowReason.BOOT_UNCLAIMED
    assert reason(window) is WindowReason.BOOT_UNCLAIMED
    facts = Facts(phase=Phase.ONLINE, claimed=True, wifi_saved=True, window=reason(window))
    window.follow(decide(facts), CLAIMED)
    assert (reason(window), window.was_claimed) == (None, True)
    # The owner's later windows are not closed by the (old) claim.
    assert window.open_for(Trigger.BUTTON, CLAIMED) is WindowReason.BUTTON_OWNER
    window.follow(decide(dataclasses.replace(facts, was_claimed=True)), CLAIMED)
    assert reason(window) is WindowReason.BUTTON_OWNER


def test_a_trigger_that_does_not_apply_leaves_the_window_closed(
    provisioned: Provisioned,
) -> None:
    now = [0.0]
    window = _window(provisioned, now, claimed=True)
    assert window.open_for(Trigger.BOOT, CLAIMED) is None
    assert window.open_for(Trigger.WIFI_LOST, UNCLAIMED) is None
    assert reason(window) is None


def test_the_reason_goes_when_the_window_lapses(provisioned: Provisioned) -> None:
    now = [0.0]
    window = _window(provisioned, now, claimed=False)
    window.open_for(Trigger.FACTORY_RESET, UNCLAIMED)
    now[0] = WINDOW_SECONDS - 1
    assert reason(window) is WindowReason.FACTORY_RESET
    now[0] = WINDOW_SECONDS + 1
    assert reason(window) is None
    window.open_for(Trigger.RELEASED, UNCLAIMED, end_session=True)
    assert reason(window) is WindowReason.RELEASED
    window.close()
    assert reason(window) is None


async def test_a_lapsed_window_takes_the_hotspot_and_the_ble_advertisement_down(
    start_agent: AgentStarter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing changes in the state when the 15 minutes run out, yet what ran for the window
    (the setup hotspot, its captive page, the BLE advertisement) must go: the presence
    notices the lapse and decides again."""
    monkeypatch.setattr(presence, "WINDOW_CHECK", 0.02)
    clock = FakeClock(MONOTONIC_START)
    async with start_agent(clock=clock, ble=True, ble_bridge="127.0.0.1:0") as running:
        ble = running.agent.ble
        assert isinstance(ble, BridgePeripheral)

        def up() -> tuple[bool, bool, bool]:
            """Hotspot, captive page, BLE advertisement: read afresh at every call."""
            return (
                running.backend.hotspot is not None,
                bool(running.agent.captive_ports()),
                ble.advertising["iot_onboard"],
            )

        assert up() == (True, True, True)
        clock.advance(WINDOW_SECONDS + 1)
        for _ in range(1000):
            if up() == (False, False, False):
                break
            await asyncio.sleep(0.01)
        assert up() == (False, False, False)
        advert = ble.advertisement
        assert advert is None or SERVICE_UUID not in advert["service_data"]
