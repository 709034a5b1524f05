"""``factory-provision --self-test``: per-unit checks recorded with the manufacturing record.

Checks the key (the saved identity loads back and signs a challenge that verifies against the
factory public key) and the label (every label file exists; the QR payload parses back to the
device id and key fingerprint), then the hardware the agent drives (``selftest_hardware``: Wi-Fi
radio, NetworkManager, BLE adapter, status LED, button). The result holds no secret: names,
pass/fail/skipped, a one-line reason.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

from iob_protocol.canonical import FieldValue
from iob_protocol.errors import ProtocolError
from iob_protocol.identity import DeviceIdentity, public_key_fingerprint, verify_signature
from iob_protocol.payload import QrPayload
from iob_protocol.sources import system_random, unix_time

from .errors import StateError

if TYPE_CHECKING:
    from .config import DeviceConfig
    from .factory import FactoryResult
    from .selftest_hardware import HardwareAccess

CHALLENGE_DOMAIN: Final = "iob/v1/factory-self-test"
Result = Literal["pass", "fail", "skipped"]
_REPROVISION: Final = "run factory-provision --force --self-test again; scrap the unit if it fails"


@dataclass(frozen=True, slots=True)
class Check:
    """One check: its name, its result and why."""

    name: str
    result: Result
    reason: str
    next_step: str = ""

    def to_json(self) -> dict[str, str]:
        """The record's form (no next step: that is for the operator's screen)."""
        return {"name": self.name, "result": self.result, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class SelfTestReport:
    """Every check, and when they ran."""

    checks: tuple[Check, ...]
    at: int

    @property
    def passed(self) -> bool:
        """True unless a check failed (skipped checks do not fail the unit)."""
        return all(check.result != "fail" for check in self.checks)

    def to_json(self) -> dict[str, object]:
        """The ``self_test`` object of the manufacturing record."""
        return {
            "at": self.at,
            "checks": [check.to_json() for check in self.checks],
            "passed": self.passed,
        }


def _check_key(config: DeviceConfig, result: FactoryResult, public_key: bytes) -> Check:
    try:
        identity = DeviceIdentity.load(config.identity_file)
        challenge: dict[str, FieldValue] = {
            "device_id": identity.device_id,
            "nonce": system_random(16),
        }
        signature = identity.sign(CHALLENGE_DOMAIN, challenge)
        verify_signature(public_key, CHALLENGE_DOMAIN, challenge, signature)
    except (ProtocolError, StateError, OSError) as err:
        return Check("key", "fail", f"identity does not load or sign: {err}", _REPROVISION)
    if identity.device_id != result.device_id:
        return Check("key", "fail", "saved identity is another device's", _REPROVISION)
    return Check("key", "pass", f"{config.identity_file} loads and signs a verified challenge")


def _check_label(result: FactoryResult, fingerprint: bytes) -> Check:
    missing = [str(path) for path in result.label_files if not path.is_file()]
    if missing:
        return Check("label", "fail", f"label file missing: {', '.join(missing)}", _REPROVISION)
    try:
        payload = QrPayload.parse(result.qr_payload)
    except ProtocolError as err:
        return Check("label", "fail", f"QR payload does not parse: {err}", _REPROVISION)
    if payload.device_id != result.device_id or payload.fingerprint != fingerprint:
        return Check("label", "fail", "QR payload names another device or key", _REPROVISION)
    return Check("label", "pass", f"{len(result.label_files)} files; QR names the device and key")


def run_self_test(
    config: DeviceConfig, result: FactoryResult, access: HardwareAccess | None = None
) -> SelfTestReport:
    """Run the checks against what ``factory_provision`` just wrote, and the unit's hardware."""
    from .factory import FactoryInfo  # noqa: PLC0415 - factory imports this module
    from .selftest_hardware import HardwareAccess, hardware_checks  # noqa: PLC0415 - as above

    hardware = asyncio.run(hardware_checks(config, access or HardwareAccess()))
    try:
        public_key = FactoryInfo.load(config.factory_file).public_key
    except StateError as err:
        failed = Check("key", "fail", f"factory file unreadable: {err}", _REPROVISION)
        checks = (failed, _check_label(result, b""), *hardware)
        return SelfTestReport(checks=checks, at=unix_time())
    fingerprint = public_key_fingerprint(public_key)
    checks = (_check_key(config, result, public_key), _check_label(result, fingerprint), *hardware)
    return SelfTestReport(checks=checks, at=unix_time())
