"""What the device should be doing: every decision of the agent as a pure function.

No I/O and no asyncio here. The agent gathers the facts (the persisted
:class:`~device_firmware.state.DeviceStateRecord`, whether the provisioning window is open and
why, the configuration, what runs now, the uplink), asks :func:`decide`, and applies the
difference to what runs (``presence.py``). The other decisions are here too: when the window
opens (:func:`window_for`) and closes (:attr:`Decision.close_window`), when MQTT runs
(:func:`runs_mqtt`), when the Wi-Fi watchdog applies (:func:`watches_wifi`), what a button press
means (:func:`window_for`, :func:`button_authorizes_improv`) and when Improv is offered
(:func:`improv_offered`, which the BLE peripherals ask as well).

| output | rule |
|---|---|
| LED | the phase; ``committing`` wins over a diagnostic, which shows as ``error`` |
| zeroconf | advertised in every state (only the TXT ``state`` changes) while enabled |
| BLE advertisement | while BLE runs and the window is open |
| Improv | while BLE and Improv run, unclaimed, no saved Wi-Fi, window open |
| hotspot | enabled, unclaimed, no saved Wi-Fi, window open, no uplink (a commit keeps it as is) |
| captive page | with the hotspot |
| MQTT | online with saved credentials |

The window: the claim ends the label's window (:attr:`Decision.close_window`, so everything
that follows the window sees it closed in the same decision); a claimed device's later windows
(button, Wi-Fi lost) admit only the owner's session and stay open until they lapse.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import assert_never

from .led import LedState
from .state import DeviceStateRecord, Phase


class WindowReason(StrEnum):
    """Why the provisioning window is open (the value is what the log says)."""

    #: The label's window: an unclaimed device starts with one.
    BOOT_UNCLAIMED = "boot while unclaimed"
    #: A short press on an unclaimed device: the label's window (and Improv's authorization).
    BUTTON = "button"
    #: A short press on a claimed device: a window for the owner's session only.
    BUTTON_OWNER = "button, claimed: owner sessions only"
    #: The saved Wi-Fi stayed down (the watchdog): re-onboarding by the owner's session.
    WIFI_LOST = "saved Wi-Fi lost (re-onboarding, owner only)"
    #: The household released the device at the account service: the label's window again.
    RELEASED = "released by its household"
    #: A factory reset (button held, ``iob-device reset``, the owner over MQTT).
    FACTORY_RESET = "factory reset"


class Trigger(StrEnum):
    """Something that happened and may open the window (:func:`window_for`)."""

    BOOT = "boot"
    BUTTON = "button"
    WIFI_LOST = "wifi_lost"
    RELEASED = "released"
    FACTORY_RESET = "factory_reset"


class Uplink(StrEnum):
    """Whether the device reaches a network other than its own hotspot."""

    #: Not probed: probing costs I/O, so :func:`decide` asks for it (``probe_uplink``) only
    #: when the answer decides something.
    UNKNOWN = "unknown"
    NONE = "none"
    #: The saved Wi-Fi is connected, or another uplink (Ethernet) reaches the internet.
    CONNECTED = "connected"


@dataclass(frozen=True, slots=True, kw_only=True)
class Facts:
    """Everything :func:`decide` looks at."""

    # --- the persisted state ---
    phase: Phase = Phase.UNCLAIMED
    #: A diagnostic is recorded (the last commit or the MQTT runtime failed).
    diagnostic: bool = False
    claimed: bool = False
    #: Claimed at the previous decision: a claim that just arrived ends the label's window.
    was_claimed: bool = False
    wifi_saved: bool = False
    mqtt_saved: bool = False
    # --- the window ---
    #: Why the window is open; None while it is closed (or has lapsed).
    window: WindowReason | None = None
    # --- the configuration (and what could be started) ---
    zeroconf_enabled: bool = True
    #: BLE provisioning runs (configured, and BlueZ or the loopback bridge could be used).
    ble_running: bool = False
    improv_enabled: bool = False
    hotspot_enabled: bool = True
    # --- what runs, and the uplink ---
    hotspot_on: bool = False
    uplink: Uplink = Uplink.UNKNOWN

    @classmethod
    def of(
        cls,
        record: DeviceStateRecord,
        *,
        was_claimed: bool,
        window: WindowReason | None,
        zeroconf_enabled: bool,
        ble_running: bool,
        improv_enabled: bool,
        hotspot_enabled: bool,
        hotspot_on: bool,
        uplink: Uplink = Uplink.UNKNOWN,
    ) -> Facts:
        """The facts of ``record`` with the rest as given."""
        return cls(
            phase=record.phase,
            diagnostic=record.diagnostic is not None,
            claimed=record.claimed,
            was_claimed=was_claimed,
            wifi_saved=record.wifi_ssid is not None,
            mqtt_saved=record.mqtt is not None,
            window=window,
            zeroconf_enabled=zeroconf_enabled,
            ble_running=ble_running,
            improv_enabled=improv_enabled,
            hotspot_enabled=hotspot_enabled,
            hotspot_on=hotspot_on,
            uplink=uplink,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """What the device should be doing."""

    led: LedState
    #: Close the window first (the claim just arrived); the outputs below assume it closed.
    close_window: bool
    #: The zeroconf TXT ``state`` to publish; None: zeroconf is not advertised.
    zeroconf: Phase | None
    #: The IoT Onboard BLE advertisement (the GATT services run whenever BLE runs).
    ble_advertise: bool
    improv: bool
    hotspot: bool
    captive_page: bool
    #: The hotspot is wanted but the uplink is unknown: probe it and decide again.
    probe_uplink: bool
    mqtt: bool


def led_state(phase: Phase, *, diagnostic: bool) -> LedState:
    """The LED for the onboarding phase (a recorded diagnostic shows as an error)."""
    if phase is Phase.COMMITTING:
        return LedState.COMMITTING
    if diagnostic:
        return LedState.ERROR
    return LedState(phase.value)


def improv_offered(record: DeviceStateRecord, *, window_open: bool) -> bool:
    """Improv Wi-Fi is offered while unclaimed, without a saved Wi-Fi, window open.

    Improv carries no claim, so it never moves an owned device to another network.
    """
    return _improv(
        claimed=record.claimed, wifi_saved=record.wifi_ssid is not None, window_open=window_open
    )


def _improv(*, claimed: bool, wifi_saved: bool, window_open: bool) -> bool:
    return window_open and not claimed and not wifi_saved


def runs_mqtt(record: DeviceStateRecord) -> bool:
    """The MQTT runtime runs while online with saved credentials."""
    return _mqtt(record.phase, mqtt_saved=record.mqtt is not None)


def _mqtt(phase: Phase, *, mqtt_saved: bool) -> bool:
    return phase is Phase.ONLINE and mqtt_saved


def watches_wifi(record: DeviceStateRecord) -> bool:
    """Only a claimed device with a saved Wi-Fi re-onboards (its label window is gone)."""
    return record.claimed and record.wifi_ssid is not None


def window_for(trigger: Trigger, record: DeviceStateRecord) -> WindowReason | None:
    """Whether ``trigger`` opens the provisioning window, and why (None: it does not).

    A claimed device's window admits only its owner's session (the session host asks the
    controller's policy at every hello), so reopening it never lets the label back in.
    """
    if trigger is Trigger.BOOT:
        return None if record.claimed else WindowReason.BOOT_UNCLAIMED
    if trigger is Trigger.BUTTON:
        return WindowReason.BUTTON_OWNER if record.claimed else WindowReason.BUTTON
    if trigger is Trigger.WIFI_LOST:
        return WindowReason.WIFI_LOST if watches_wifi(record) else None
    if trigger is Trigger.RELEASED:
        return WindowReason.RELEASED
    if trigger is Trigger.FACTORY_RESET:
        return WindowReason.FACTORY_RESET
    assert_never(trigger)


def button_authorizes_improv(record: DeviceStateRecord) -> bool:
    """A short press authorizes Improv only on an unclaimed device (after its window opened)."""
    return not record.claimed


def decide(facts: Facts) -> Decision:
    """What the device should be doing, given ``facts``."""
    close_window = facts.claimed and not facts.was_claimed
    window_open = facts.window is not None and not close_window
    hotspot_wanted = (
        facts.hotspot_enabled and not facts.claimed and not facts.wifi_saved and window_open
    )
    probe_uplink = False
    if facts.phase is Phase.COMMITTING:
        hotspot = facts.hotspot_on  # the commit owns the radio until it ends
    elif not hotspot_wanted:
        hotspot = False
    elif facts.hotspot_on:
        hotspot = True  # the hotspot holds the radio: nothing to probe
    else:
        # On a network already (Wi-Fi or Ethernet), Home Assistant finds the device there.
        hotspot = facts.uplink is Uplink.NONE
        probe_uplink = facts.uplink is Uplink.UNKNOWN
    return Decision(
        led=led_state(facts.phase, diagnostic=facts.diagnostic),
        close_window=close_window,
        zeroconf=facts.phase if facts.zeroconf_enabled else None,
        ble_advertise=facts.ble_running and window_open,
        improv=facts.ble_running
        and facts.improv_enabled
        and _improv(claimed=facts.claimed, wifi_saved=facts.wifi_saved, window_open=window_open),
        hotspot=hotspot,
        captive_page=hotspot,
        probe_uplink=probe_uplink,
        mqtt=_mqtt(facts.phase, mqtt_saved=facts.mqtt_saved),
    )
