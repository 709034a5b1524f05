"""The provisioning window's bookkeeping: opened by a trigger, closed by the claim, lapsing."""

from __future__ import annotations

import dataclasses

from iob_protocol.commands import CommandResult, Request
from iob_protocol.limiter import WINDOW_SECONDS

from device_firmware.decide import Facts, Trigger, WindowReason, decide
from device_firmware.provisioning.session_host import SessionHost
from device_firmware.state import DeviceStateRecord, Ownership, Phase
from device_firmware.window import ProvisioningWindow

from .conftest import Provisioned

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
