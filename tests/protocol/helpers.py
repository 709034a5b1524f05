"""Deterministic stand-ins for the injected clock and randomness, and handshake shortcuts."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from iob_protocol import (
    ClientSession,
    DeviceIdentity,
    DeviceSession,
    QrPayload,
    SetupCode,
)

#: The diagnostic codes on the wire, pinned here rather than read from the code under test, in
#: the order the BLE state value numbers them (append only: a new code goes at the end).
WIRE_DIAGNOSTICS = [
    "WIFI_AUTH_FAILED",
    "WIFI_AP_NOT_FOUND",
    "DHCP_TIMEOUT",
    "DNS_FAILED",
    "NO_INTERNET",
    "RELAY_UNREACHABLE",
    "TLS_FAILED",
    "CLOCK_SKEW",
    "CLAIM_REJECTED",
    "CLAIM_EXPIRED",
    "BROKER_AUTH_FAILED",
    "TIMEOUT",
    "BROKER_UNREACHABLE",
    "CAPTIVE_PORTAL",
    "WPS_FAILED",
]


class SeededRandom:
    """SHA-256 in counter mode: the same label always yields the same byte stream."""

    def __init__(self, label: str | bytes) -> None:
        self._seed = label.encode() if isinstance(label, str) else label
        self._counter = 0
        self._buffer = b""
        self.drawn = b""

    def __call__(self, size: int) -> bytes:
        while len(self._buffer) < size:
            block = self._seed + self._counter.to_bytes(8, "big")
            self._buffer += hashlib.sha256(block).digest()
            self._counter += 1
        out, self._buffer = self._buffer[:size], self._buffer[size:]
        self.drawn += out
        return out


class ReplayRandom:
    """Hands out exactly the recorded bytes (from a test vector), then refuses."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def __call__(self, size: int) -> bytes:
        if size > len(self._data):
            msg = "vector has no more entropy"
            raise AssertionError(msg)
        out, self._data = self._data[:size], self._data[size:]
        return out


@dataclass
class Device:
    identity: DeviceIdentity
    code: SetupCode

    @property
    def qr(self) -> QrPayload:
        return self.code.qr_payload(self.identity.fingerprint)


def make_device(label: str = "device") -> Device:
    rng = SeededRandom(label)
    identity = DeviceIdentity.generate(random_bytes=rng)
    return Device(identity, SetupCode.generate(identity.device_id, random_bytes=rng))


def handshake(client: ClientSession, device: DeviceSession) -> tuple[bytes, bytes, bytes]:
    """Run the three messages; return them."""
    hello = client.start()
    device_hello = device.handle_client_hello(hello)
    finish = client.handle_device_hello(device_hello)
    device.handle_client_finish(finish)
    return hello, device_hello, finish
