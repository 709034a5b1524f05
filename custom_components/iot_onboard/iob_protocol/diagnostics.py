"""Diagnostic codes for failed onboarding steps.

The device, the account service and Home Assistant show the same code with the same words,
so a user reading a support page, a log and the HA dialog sees one story. The value of each
member equals its name and is what travels on the wire; the English texts here are the
defaults (HA translates by code).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class DiagnosticText:
    """What went wrong, in the user's words, and what to do next."""

    message: str
    next_step: str


class DiagnosticCode(StrEnum):
    """Why the last commit (or claim) failed."""

    WIFI_AUTH_FAILED = "WIFI_AUTH_FAILED"
    WIFI_AP_NOT_FOUND = "WIFI_AP_NOT_FOUND"
    DHCP_TIMEOUT = "DHCP_TIMEOUT"
    DNS_FAILED = "DNS_FAILED"
    NO_INTERNET = "NO_INTERNET"
    RELAY_UNREACHABLE = "RELAY_UNREACHABLE"
    TLS_FAILED = "TLS_FAILED"
    CLOCK_SKEW = "CLOCK_SKEW"
    CLAIM_REJECTED = "CLAIM_REJECTED"
    CLAIM_EXPIRED = "CLAIM_EXPIRED"
    BROKER_AUTH_FAILED = "BROKER_AUTH_FAILED"
    #: A claimed device's Wi-Fi change: the new network does not reach the MQTT broker.
    BROKER_UNREACHABLE = "BROKER_UNREACHABLE"
    TIMEOUT = "TIMEOUT"
    #: The network sends every web request to its own sign-in page (hotel, shop, guest Wi-Fi).
    CAPTIVE_PORTAL = "CAPTIVE_PORTAL"
    #: A join by WPS push button: the router handed over no key (button not pressed in time,
    #: WPS off, or two routers pressed at once).
    WPS_FAILED = "WPS_FAILED"

    @property
    def text(self) -> DiagnosticText:
        """Message and next step for this code."""
        return _TEXTS[self]

    @property
    def message(self) -> str:
        """What went wrong."""
        return _TEXTS[self].message

    @property
    def next_step(self) -> str:
        """What the user should do now."""
        return _TEXTS[self].next_step


_TEXTS: dict[DiagnosticCode, DiagnosticText] = {
    DiagnosticCode.WIFI_AUTH_FAILED: DiagnosticText(
        "The device could not join the Wi-Fi network: the password was rejected.",
        "Check the Wi-Fi password (it is case-sensitive) and try again.",
    ),
    DiagnosticCode.WIFI_AP_NOT_FOUND: DiagnosticText(
        "The device cannot see the chosen Wi-Fi network.",
        "Move the device closer to the router, check the network name, and for a hidden "
        "network make sure 'hidden' is selected.",
    ),
    DiagnosticCode.DHCP_TIMEOUT: DiagnosticText(
        "The device joined the Wi-Fi network but got no IP address.",
        "Check that the router's DHCP server is on and has free addresses, then try again.",
    ),
    DiagnosticCode.DNS_FAILED: DiagnosticText(
        "The device has an IP address but cannot resolve host names.",
        "Check the router's DNS settings or any filtering (Pi-hole, parental controls).",
    ),
    DiagnosticCode.NO_INTERNET: DiagnosticText(
        "The device is on the network but cannot reach the internet.",
        "Check the router's internet connection and any firewall rules for the device.",
    ),
    DiagnosticCode.RELAY_UNREACHABLE: DiagnosticText(
        "The device cannot reach the account service.",
        "Check that the account service is running and reachable from the device's network "
        "(VLAN and firewall rules), then try again.",
    ),
    DiagnosticCode.TLS_FAILED: DiagnosticText(
        "The secure connection to the account service or broker failed.",
        "Check the service's certificate and the broker pin; a proxy that intercepts TLS "
        "will cause this.",
    ),
    DiagnosticCode.CLOCK_SKEW: DiagnosticText(
        "The device's clock is too far from the service's clock.",
        "Make sure the device can reach an NTP server (UDP port 123), then try again.",
    ),
    DiagnosticCode.CLAIM_REJECTED: DiagnosticText(
        "The account service refused the claim.",
        "The device may already belong to another household: ask its owner to release it, "
        "or contact support with the device id.",
    ),
    DiagnosticCode.CLAIM_EXPIRED: DiagnosticText(
        "The claim expired before the device confirmed it.",
        "Start the setup again from Home Assistant; claims are valid for ten minutes.",
    ),
    DiagnosticCode.BROKER_AUTH_FAILED: DiagnosticText(
        "The MQTT broker rejected the device's credentials.",
        "Run the account service's broker reconcile command, then try again.",
    ),
    DiagnosticCode.BROKER_UNREACHABLE: DiagnosticText(
        "On the new Wi-Fi network the device cannot reach its MQTT broker.",
        "Check that the broker is running and reachable from that network (VLAN and firewall "
        "rules), then try again; the device kept its previous network.",
    ),
    DiagnosticCode.TIMEOUT: DiagnosticText(
        "The step did not finish in time.",
        "Keep the device powered and in range, then try again.",
    ),
    DiagnosticCode.CAPTIVE_PORTAL: DiagnosticText(
        "The Wi-Fi network wants a sign-in on its own web page (a captive portal) before it "
        "lets the device out, and the device cannot sign in.",
        "Choose a network without a sign-in page, or ask the network's owner to let the "
        "device through without one (by its MAC address), then try again.",
    ),
    DiagnosticCode.WPS_FAILED: DiagnosticText(
        "The router did not hand its Wi-Fi key to the device by WPS: its WPS button was not "
        "pressed in the last two minutes, WPS is turned off on the router, or two routers were "
        "pressed at once.",
        "Press the router's WPS button (it usually blinks for two minutes), then try again "
        "right away; or type the Wi-Fi password instead.",
    ),
}
