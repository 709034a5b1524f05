"""The device's decisions as a table: state, window, configuration and uplink in; what runs out."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import pytest
from iob_protocol.diagnostics import DiagnosticCode

from device_firmware.decide import (
    Decision,
    Facts,
    Trigger,
    Uplink,
    WindowReason,
    button_authorizes_improv,
    decide,
    improv_offered,
    runs_mqtt,
    watches_wifi,
    window_for,
)
from device_firmware.led import LedState
from device_firmware.state import DeviceStateRecord, MqttCredentials, Ownership, Phase

from .conftest import TEST_PASSWORD

OWNERSHIP = Ownership(household_id="hh", service_url="https://relay.example", claimed_at=1)
MQTT = MqttCredentials(host="b", port=1883, tls=False, username="u", password=TEST_PASSWORD)

#: A fresh device at boot: unclaimed, no Wi-Fi, the label's window open, nothing probed yet.
FRESH = Facts(window=WindowReason.BOOT_UNCLAIMED)
#: An owned device at work: online with its MQTT credentials and Wi-Fi, window closed.
OWNED = Facts(phase=Phase.ONLINE, claimed=True, was_claimed=True, wifi_saved=True, mqtt_saved=True)

#: Nothing on but the LED (unclaimed) and zeroconf: each row names what differs from it.
BASE = Decision(
    led=LedState.UNCLAIMED,
    close_window=False,
    zeroconf=Phase.UNCLAIMED,
    ble_advertise=False,
    improv=False,
    hotspot=False,
    captive_page=False,
    probe_uplink=False,
    mqtt=False,
)
ONLINE = dataclasses.replace(BASE, led=LedState.ONLINE, zeroconf=Phase.ONLINE, mqtt=True)


def row(facts: Facts, expected: Decision, row_id: str, **changes: Any) -> Any:
    """One table row: ``facts`` with ``changes`` in, ``expected`` out."""
    return pytest.param(dataclasses.replace(facts, **changes), expected, id=row_id)


HOTSPOT: dict[str, Any] = {"hotspot": True, "captive_page": True}
PROVISIONING: dict[str, Any] = {"led": LedState.PROVISIONING, "zeroconf": Phase.PROVISIONING}
COMMITTING: dict[str, Any] = {"led": LedState.COMMITTING, "zeroconf": Phase.COMMITTING}

TABLE = [
    # --- unclaimed, without Wi-Fi: the hotspot waits for the uplink probe -----------------
    row(FRESH, dataclasses.replace(BASE, probe_uplink=True), "fresh, uplink unknown: probe"),
    row(
        FRESH,
        dataclasses.replace(BASE, **HOTSPOT),
        "fresh, no uplink: hotspot + captive",
        uplink=Uplink.NONE,
    ),
    row(FRESH, BASE, "fresh, on Ethernet: no hotspot", uplink=Uplink.CONNECTED),
    row(
        FRESH,
        dataclasses.replace(BASE, **HOTSPOT),
        "hotspot running: kept, nothing probed",
        hotspot_on=True,
    ),
    row(FRESH, BASE, "window lapsed: hotspot off", window=None, hotspot_on=True),
    row(FRESH, BASE, "hotspot disabled: never probed", hotspot_enabled=False),
    row(
        FRESH,
        dataclasses.replace(BASE, probe_uplink=True),
        "button window: as at boot",
        window=WindowReason.BUTTON,
    ),
    row(
        FRESH,
        dataclasses.replace(BASE, probe_uplink=True),
        "after a factory reset (was claimed): as at boot, no close",
        window=WindowReason.FACTORY_RESET,
        was_claimed=True,
    ),
    row(
        FRESH,
        dataclasses.replace(BASE, **PROVISIONING, **HOTSPOT),
        "provisioning over the hotspot: kept",
        phase=Phase.PROVISIONING,
        hotspot_on=True,
    ),
    row(
        FRESH,
        dataclasses.replace(BASE, led=LedState.ERROR, zeroconf=Phase.PROVISIONING, **HOTSPOT),
        "failed commit rolled back: error LED, hotspot kept",
        phase=Phase.PROVISIONING,
        diagnostic=True,
        hotspot_on=True,
    ),
    # --- unclaimed with a saved Wi-Fi (released by its household) ------------------------
    row(
        FRESH,
        BASE,
        "released, keeps its Wi-Fi: no hotspot, no probe",
        window=WindowReason.RELEASED,
        wifi_saved=True,
        uplink=Uplink.NONE,
    ),
    # --- BLE and Improv ------------------------------------------------------------------
    row(
        FRESH,
        dataclasses.replace(BASE, ble_advertise=True, improv=True, probe_uplink=True),
        "BLE + Improv, window open: both offered",
        ble_running=True,
        improv_enabled=True,
    ),
    row(
        FRESH,
        dataclasses.replace(BASE, ble_advertise=True, probe_uplink=True),
        "BLE without Improv: advertised only",
        ble_running=True,
    ),
    row(
        FRESH,
        BASE,
        "BLE + Improv, window closed: neither",
        ble_running=True,
        improv_enabled=True,
        window=None,
    ),
    row(
        FRESH,
        dataclasses.replace(BASE, probe_uplink=True),
        "Improv configured, BLE could not start: neither",
        improv_enabled=True,
    ),
    row(
        FRESH,
        dataclasses.replace(BASE, ble_advertise=True),
        "released with Wi-Fi: BLE advertised, no Improv",
        ble_running=True,
        improv_enabled=True,
        window=WindowReason.RELEASED,
        wifi_saved=True,
    ),
    # --- zeroconf ------------------------------------------------------------------------
    row(
        FRESH,
        dataclasses.replace(BASE, zeroconf=None, probe_uplink=True),
        "zeroconf disabled",
        zeroconf_enabled=False,
    ),
    # --- committing: the commit owns the radio -------------------------------------------
    row(
        FRESH,
        dataclasses.replace(BASE, **COMMITTING, **HOTSPOT),
        "committing over the hotspot: kept",
        phase=Phase.COMMITTING,
        hotspot_on=True,
    ),
    row(
        FRESH,
        dataclasses.replace(BASE, **COMMITTING),
        "committing without hotspot: none started, nothing probed",
        phase=Phase.COMMITTING,
    ),
    row(
        FRESH,
        dataclasses.replace(BASE, **COMMITTING),
        "committing with a diagnostic: the commit's LED wins",
        phase=Phase.COMMITTING,
        diagnostic=True,
    ),
    row(
        FRESH,
        dataclasses.replace(BASE, **COMMITTING, close_window=True, **HOTSPOT),
        "claim confirmed mid-commit: window closes, radio still the commit's",
        phase=Phase.COMMITTING,
        claimed=True,
        ble_running=True,
        improv_enabled=True,
        hotspot_on=True,
    ),
    # --- the claim arrives ---------------------------------------------------------------
    row(
        FRESH,
        dataclasses.replace(ONLINE, close_window=True),
        "claimed: label window closes, hotspot and BLE advert go",
        phase=Phase.ONLINE,
        claimed=True,
        wifi_saved=True,
        mqtt_saved=True,
        ble_running=True,
        improv_enabled=True,
        hotspot_on=True,
    ),
    # --- owned ---------------------------------------------------------------------------
    row(OWNED, ONLINE, "online: MQTT, zeroconf, steady LED"),
    row(
        OWNED,
        dataclasses.replace(ONLINE, led=LedState.ERROR),
        "online, broker refused: error LED, MQTT retries",
        diagnostic=True,
    ),
    row(
        OWNED,
        dataclasses.replace(ONLINE, mqtt=False),
        "online without MQTT credentials: no runtime",
        mqtt_saved=False,
    ),
    row(
        OWNED,
        dataclasses.replace(ONLINE, ble_advertise=True),
        "button while owned: owner window over BLE, no Improv",
        window=WindowReason.BUTTON_OWNER,
        ble_running=True,
        improv_enabled=True,
    ),
    row(
        OWNED,
        dataclasses.replace(ONLINE, ble_advertise=True),
        "Wi-Fi lost while owned: owner window, never the hotspot",
        window=WindowReason.WIFI_LOST,
        ble_running=True,
        uplink=Uplink.NONE,
    ),
    row(
        OWNED,
        dataclasses.replace(ONLINE, **COMMITTING, mqtt=False),
        "owner changes the Wi-Fi: committing, no MQTT",
        phase=Phase.COMMITTING,
        window=WindowReason.WIFI_LOST,
    ),
]


@pytest.mark.parametrize(("facts", "expected"), TABLE)
def test_decision_table(facts: Facts, expected: Decision) -> None:
    assert decide(facts) == expected


WINDOWS = [None, *WindowReason]


def every_facts() -> list[Facts]:
    """Every combination of the facts (about 86,000)."""
    flags = ("diagnostic", "claimed", "was_claimed", "wifi_saved", "mqtt_saved")
    config = ("zeroconf_enabled", "ble_running", "improv_enabled", "hotspot_enabled", "hotspot_on")
    combos = itertools.product(
        Phase, WINDOWS, Uplink, *([(False, True)] * (len(flags) + len(config)))
    )
    return [
        Facts(
            phase=phase,
            window=window,
            uplink=uplink,
            **dict(zip(flags + config, rest, strict=True)),
        )
        for phase, window, uplink, *rest in combos
    ]


def test_rules_that_hold_in_every_combination() -> None:
    for facts in every_facts():
        decision = decide(facts)
        window_open = facts.window is not None and not decision.close_window
        # The captive page is served on the hotspot; the uplink is probed only to start one.
        assert decision.captive_page == decision.hotspot, facts
        if decision.probe_uplink:
            assert facts.uplink is Uplink.UNKNOWN, facts
            assert not decision.hotspot, facts
            assert not facts.hotspot_on, facts
        # A running commit keeps the radio as it is.
        if facts.phase is Phase.COMMITTING:
            assert decision.hotspot == facts.hotspot_on, facts
            assert not decision.probe_uplink, facts
        elif decision.hotspot:
            assert window_open, facts
            assert facts.hotspot_enabled, facts
            assert not facts.claimed, facts
            assert not facts.wifi_saved, facts
            assert facts.hotspot_on or facts.uplink is Uplink.NONE, facts
        # Improv never moves an owned device, nor one with a saved Wi-Fi.
        if decision.improv:
            assert decision.ble_advertise, facts
            assert not facts.claimed, facts
            assert not facts.wifi_saved, facts
        # The claim ends the label's window before anything follows it.
        assert decision.close_window == (facts.claimed and not facts.was_claimed), facts
        if decision.close_window:
            assert not decision.ble_advertise, facts
            assert not decision.improv, facts
        assert decision.ble_advertise == (facts.ble_running and window_open), facts
        assert decision.mqtt == (facts.phase is Phase.ONLINE and facts.mqtt_saved), facts
        assert (decision.zeroconf is None) != facts.zeroconf_enabled, facts


UNCLAIMED = DeviceStateRecord()
UNCLAIMED_WIFI = DeviceStateRecord(wifi_ssid=b"home")
CLAIMED = DeviceStateRecord(
    phase=Phase.ONLINE, ownership=OWNERSHIP, mqtt=MQTT, wifi_ssid=b"home", owner_secret=b"s" * 32
)
CLAIMED_NO_WIFI = dataclasses.replace(CLAIMED, wifi_ssid=None)


@pytest.mark.parametrize(
    ("trigger", "record", "expected"),
    [
        pytest.param(Trigger.BOOT, UNCLAIMED, WindowReason.BOOT_UNCLAIMED, id="boot unclaimed"),
        pytest.param(Trigger.BOOT, CLAIMED, None, id="boot claimed: closed"),
        pytest.param(Trigger.BUTTON, UNCLAIMED, WindowReason.BUTTON, id="button unclaimed"),
        pytest.param(Trigger.BUTTON, CLAIMED, WindowReason.BUTTON_OWNER, id="button claimed"),
        pytest.param(Trigger.WIFI_LOST, CLAIMED, WindowReason.WIFI_LOST, id="wifi lost claimed"),
        pytest.param(Trigger.WIFI_LOST, CLAIMED_NO_WIFI, None, id="wifi lost, none saved"),
        pytest.param(Trigger.WIFI_LOST, UNCLAIMED_WIFI, None, id="wifi lost unclaimed"),
        pytest.param(Trigger.RELEASED, UNCLAIMED_WIFI, WindowReason.RELEASED, id="released"),
        pytest.param(Trigger.FACTORY_RESET, UNCLAIMED, WindowReason.FACTORY_RESET, id="reset"),
    ],
)
def test_when_the_window_opens(
    trigger: Trigger, record: DeviceStateRecord, expected: WindowReason | None
) -> None:
    assert window_for(trigger, record) is expected


@pytest.mark.parametrize(
    ("record", "authorizes", "watched", "mqtt", "improv_with_window"),
    [
        pytest.param(UNCLAIMED, True, False, False, True, id="unclaimed"),
        pytest.param(UNCLAIMED_WIFI, True, False, False, False, id="unclaimed with Wi-Fi"),
        pytest.param(CLAIMED, False, True, True, False, id="claimed online"),
        pytest.param(CLAIMED_NO_WIFI, False, False, True, False, id="claimed without Wi-Fi"),
        pytest.param(
            dataclasses.replace(CLAIMED, phase=Phase.COMMITTING),
            False,
            True,
            False,
            False,
            id="claimed, changing its Wi-Fi",
        ),
        pytest.param(
            dataclasses.replace(CLAIMED, mqtt=None), False, True, False, False, id="no MQTT"
        ),
    ],
)
def test_what_a_record_allows(
    record: DeviceStateRecord, authorizes: bool, watched: bool, mqtt: bool, improv_with_window: bool
) -> None:
    assert button_authorizes_improv(record) is authorizes
    assert watches_wifi(record) is watched
    assert runs_mqtt(record) is mqtt
    assert improv_offered(record, window_open=True) is improv_with_window
    assert improv_offered(record, window_open=False) is False


def test_facts_of_a_record() -> None:
    record = dataclasses.replace(
        CLAIMED, diagnostic=DiagnosticCode.BROKER_AUTH_FAILED, diagnostic_at=1
    )
    facts = Facts.of(
        record,
        was_claimed=False,
        window=WindowReason.WIFI_LOST,
        zeroconf_enabled=False,
        ble_running=True,
        improv_enabled=True,
        hotspot_enabled=False,
        hotspot_on=True,
        uplink=Uplink.NONE,
    )
    assert facts == Facts(
        phase=Phase.ONLINE,
        diagnostic=True,
        claimed=True,
        was_claimed=False,
        wifi_saved=True,
        mqtt_saved=True,
        window=WindowReason.WIFI_LOST,
        zeroconf_enabled=False,
        ble_running=True,
        improv_enabled=True,
        hotspot_enabled=False,
        hotspot_on=True,
        uplink=Uplink.NONE,
    )
    assert Facts.of(
        UNCLAIMED,
        was_claimed=True,
        window=None,
        zeroconf_enabled=True,
        ble_running=False,
        improv_enabled=False,
        hotspot_enabled=True,
        hotspot_on=False,
    ) == Facts(was_claimed=True)
