"""The device's decisions as a table: state, window, configuration and uplink in; what runs out."""

from __future__ import annotations

import dataclasses
import itertools
import re
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
    zeroconf=Phase.UNCLAIMED,
    **dict.fromkeys(
        ("close_window", "ble_advertise", "improv", "hotspot", "captive_page", "probe_uplink"),
        False,
    ),
    mqtt=False,
)
ONLINE = dataclasses.replace(BASE, led=LedState.ONLINE, zeroconf=Phase.ONLINE, mqtt=True)


#: Named groups of changes a row may use (the words of the compact rows below).
GROUPS: dict[str, str] = {
    "HOTSPOT": "hotspot captive_page",
    "PROVISIONING": "led=PROVISIONING zeroconf=PROVISIONING",
    "COMMITTING": "led=COMMITTING zeroconf=COMMITTING",
}
#: How a word's value reads, by field: an enum member's name, or ``None``.
ENUMS: dict[str, Any] = {
    "phase": Phase,
    "window": WindowReason,
    "uplink": Uplink,
    "led": LedState,
    "zeroconf": Phase,
}
STARTS: dict[str, Facts | Decision] = {
    "FRESH": FRESH,
    "OWNED": OWNED,
    "BASE": BASE,
    "ONLINE": ONLINE,
}


def fields(words: str) -> dict[str, Any]:
    """``"flag !flag field=MEMBER GROUP"`` as fields: flag = True, !flag = False."""
    changes: dict[str, Any] = {}
    for word in " ".join(GROUPS.get(w, w) for w in words.split()).split():
        name, _, value = word.lstrip("!").partition("=")
        if not value:
            changes[name] = not word.startswith("!")
        else:
            changes[name] = None if value == "None" else ENUMS[name][value]
    return changes


def changed(words: str) -> Any:
    """``"START words"``: START (a :data:`STARTS` name) with the :func:`fields` of the words."""
    start, _, rest = words.partition(" ")
    return dataclasses.replace(STARTS[start], **fields(rest))


def rows(table: str) -> list[Any]:
    """The table's rows, ``facts | decision | id`` (a line opening with ``|`` goes on the one
    before), facts and decision as :func:`changed` words; ``--`` lines are headings."""
    params = []
    for line in re.sub(r"\n\s*\|", " |", table).strip().splitlines():
        if not line.strip().startswith("--"):
            facts, expected, row_id = (cell.strip() for cell in line.split("|"))
            params.append(pytest.param(changed(facts), changed(expected), id=row_id))
    return params


TABLE = rows(
    """
    -- unclaimed, without Wi-Fi: the hotspot waits for the uplink probe
    FRESH | BASE probe_uplink | fresh, uplink unknown: probe
    FRESH uplink=NONE | BASE HOTSPOT | fresh, no uplink: hotspot + captive
    FRESH uplink=CONNECTED | BASE | fresh, on Ethernet: no hotspot
    FRESH hotspot_on | BASE HOTSPOT | hotspot running: kept, nothing probed
    FRESH window=None hotspot_on | BASE | window lapsed: hotspot off
    FRESH !hotspot_enabled | BASE | hotspot disabled: never probed
    FRESH window=BUTTON | BASE probe_uplink | button window: as at boot
    FRESH window=FACTORY_RESET was_claimed | BASE probe_uplink
        | after a factory reset (was claimed): as at boot, no close
    FRESH phase=PROVISIONING hotspot_on | BASE PROVISIONING HOTSPOT
        | provisioning over the hotspot: kept
    FRESH phase=PROVISIONING diagnostic hotspot_on | BASE led=ERROR zeroconf=PROVISIONING HOTSPOT
        | failed commit rolled back: error LED, hotspot kept
    -- unclaimed with a saved Wi-Fi (released by its household)
    FRESH window=RELEASED wifi_saved uplink=NONE | BASE
        | released, keeps its Wi-Fi: no hotspot, no probe
    -- BLE and Improv
    FRESH ble_running improv_enabled | BASE ble_advertise improv probe_uplink
        | BLE + Improv, window open: both offered
    FRESH ble_running | BASE ble_advertise probe_uplink | BLE without Improv: advertised only
    FRESH ble_running improv_enabled window=None | BASE | BLE + Improv, window closed: neither
    FRESH improv_enabled | BASE probe_uplink | Improv configured, BLE could not start: neither
    FRESH ble_running improv_enabled window=RELEASED wifi_saved | BASE ble_advertise
        | released with Wi-Fi: BLE advertised, no Improv
    -- zeroconf
    FRESH !zeroconf_enabled | BASE zeroconf=None probe_uplink | zeroconf disabled
    -- committing: the commit owns the radio
    FRESH phase=COMMITTING hotspot_on | BASE COMMITTING HOTSPOT | committing over the hotspot: kept
    FRESH phase=COMMITTING | BASE COMMITTING
        | committing without hotspot: none started, nothing probed
    FRESH phase=COMMITTING diagnostic | BASE COMMITTING
        | committing with a diagnostic: the commit's LED wins
    FRESH phase=COMMITTING claimed ble_running improv_enabled hotspot_on
        | BASE COMMITTING close_window HOTSPOT
        | claim confirmed mid-commit: window closes, radio still the commit's
    -- the claim arrives
    FRESH phase=ONLINE claimed wifi_saved mqtt_saved ble_running improv_enabled hotspot_on
        | ONLINE close_window
        | claimed: label window closes, hotspot and BLE advert go
    -- owned
    OWNED | ONLINE | online: MQTT, zeroconf, steady LED
    OWNED diagnostic | ONLINE led=ERROR | online, broker refused: error LED, MQTT retries
    OWNED !mqtt_saved | ONLINE !mqtt | online without MQTT credentials: no runtime
    OWNED window=BUTTON_OWNER ble_running improv_enabled | ONLINE ble_advertise
        | button while owned: owner window over BLE, no Improv
    OWNED window=WIFI_LOST ble_running uplink=NONE | ONLINE ble_advertise
        | Wi-Fi lost while owned: owner window, never the hotspot
    OWNED phase=COMMITTING window=WIFI_LOST | ONLINE COMMITTING !mqtt
        | owner changes the Wi-Fi: committing, no MQTT
"""
)


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
    given = fields(
        "!was_claimed window=WIFI_LOST !zeroconf_enabled ble_running improv_enabled"
        " !hotspot_enabled hotspot_on uplink=NONE"
    )
    owned = fields("phase=ONLINE diagnostic claimed wifi_saved mqtt_saved")
    assert Facts.of(record, **given) == Facts(**owned, **given)
    unclaimed = fields(
        "was_claimed window=None zeroconf_enabled !ble_running !improv_enabled"
        " hotspot_enabled !hotspot_on"
    )
    assert Facts.of(UNCLAIMED, **unclaimed) == Facts(was_claimed=True)
