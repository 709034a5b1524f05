"""``factory-provision``: give a device its identity, setup code, registry record and label.

Runs once per device on the production line (or by a maker at home). It writes, under the
device's data directory, the Ed25519 identity and the setup code (both mode 0600: the agent
needs the code itself for the PAKE) and the registry verifier; and, in an output directory,
the manufacturing record for the account service's registry import (JSON lines: id, model,
public key, setup-code verifier - never the code) and the label: the QR code as SVG and PNG,
the manual code as text, and the setup hotspot's QR code for phone users.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Final, Self

import segno
from iob_protocol.canonical import b64url_decode, b64url_encode, base32_encode, encode_fields
from iob_protocol.errors import ProtocolError
from iob_protocol.identity import DeviceIdentity, format_fingerprint
from iob_protocol.payload import SetupCode, SetupVerifier
from iob_protocol.sources import RandomSource, system_random, unix_time

from . import __version__
from .config import DeviceConfig
from .errors import FactoryError, IdentityExistsError, NotProvisionedError, StateError
from .selftest import SelfTestReport, run_self_test
from .state import atomic_write, read_small_file

if TYPE_CHECKING:
    from .selftest_hardware import HardwareAccess

RECORD_FILE: Final = "manufacturing-records.jsonl"
FACTORY_FORMAT: Final = "iob-factory-v1"
SECRET_MODE: Final = 0o600
PUBLIC_MODE: Final = 0o644
HOTSPOT_DOMAIN: Final = "iob/v1/hotspot-passphrase"
_HOTSPOT_PASSPHRASE_BYTES: Final = 10
_QR_SCALE: Final = 8


@dataclass(frozen=True, slots=True)
class FactoryInfo:
    """Public facts about the device, written at the factory (model, key, firmware)."""

    device_id: str
    model: str
    public_key: bytes
    created_at: int
    firmware_version: str

    def to_json(self) -> bytes:
        """The factory file's bytes."""
        return (
            json.dumps(
                {
                    "created_at": self.created_at,
                    "device_id": self.device_id,
                    "firmware_version": self.firmware_version,
                    "format": FACTORY_FORMAT,
                    "model": self.model,
                    "public_key": b64url_encode(self.public_key),
                },
                sort_keys=True,
                indent=1,
            ).encode()
            + b"\n"
        )

    @classmethod
    def load(cls, path: Path) -> Self:
        """Read the factory file."""
        try:
            data = read_small_file(path)
        except StateError as err:
            raise NotProvisionedError(str(err)) from err
        if data is None:
            raise NotProvisionedError(
                f"{path} not found: this device has no identity yet; run "
                "'python -m device_firmware factory-provision'"
            )
        try:
            document = json.loads(data)
            if document["format"] != FACTORY_FORMAT:
                raise NotProvisionedError(f"{path} is not an {FACTORY_FORMAT} file")
            return cls(
                device_id=str(document["device_id"]),
                model=str(document["model"]),
                public_key=b64url_decode(str(document["public_key"])),
                created_at=int(document["created_at"]),
                firmware_version=str(document["firmware_version"]),
            )
        except (ValueError, KeyError, TypeError, ProtocolError) as err:
            raise NotProvisionedError(f"{path} is damaged: {err}") from err


@dataclass(frozen=True, slots=True)
class ProvisionedDevice:
    """What the agent loads at start: who it is and the secrets of its label."""

    identity: DeviceIdentity
    setup_code: SetupCode
    verifier: SetupVerifier
    info: FactoryInfo

    @classmethod
    def load(cls, config: DeviceConfig) -> Self:
        """Load identity, setup code, verifier and factory facts; refuse a mismatched set."""
        info = FactoryInfo.load(config.factory_file)
        try:
            identity = DeviceIdentity.load(config.identity_file)
            code_data = read_small_file(config.setup_code_file)
            verifier_data = read_small_file(config.verifier_file)
            if code_data is None or verifier_data is None:
                raise NotProvisionedError(
                    f"setup code or verifier missing in {config.data_dir}; run factory-provision"
                )
            setup_code = SetupCode.from_json(code_data)
            verifier = SetupVerifier.decode(verifier_data.decode("ascii").strip())
        except (ProtocolError, StateError, UnicodeDecodeError) as err:
            raise NotProvisionedError(f"cannot load the device identity: {err}") from err
        if not (identity.device_id == setup_code.device_id == info.device_id) or (
            identity.public_key != info.public_key
        ):
            raise NotProvisionedError(
                f"identity, setup code and factory record in {config.data_dir} belong to "
                "different devices; run factory-provision --force"
            )
        return cls(identity=identity, setup_code=setup_code, verifier=verifier, info=info)


@dataclass(frozen=True, slots=True)
class FactoryResult:
    """What ``factory-provision`` produced (paths for the operator's printout)."""

    device_id: str
    manual_code: str
    qr_payload: str
    record_file: Path
    label_files: tuple[Path, ...]
    self_test: SelfTestReport | None = None


def hotspot_ssid(device_id: str) -> str:
    """The setup hotspot's name: recognisable, and unique enough among neighbours."""
    return f"IoT-Onboard-{device_id[-4:]}"


def hotspot_passphrase(setup_code: SetupCode) -> str:
    """WPA2 passphrase of the setup hotspot, derived from the label's 120-bit QR secret.

    Derived rather than stored, so there is nothing more to leak; 80 bits, so a recorded
    WPA handshake cannot be cracked offline (an open hotspot would show the household's Wi-Fi
    password, typed on the captive page, to anyone in radio range).
    """
    digest = hashlib.sha256(encode_fields(HOTSPOT_DOMAIN, {"secret": setup_code.setup_secret}))
    return base32_encode(digest.digest()[:_HOTSPOT_PASSPHRASE_BYTES])


def _wifi_uri(ssid: str, passphrase: str) -> str:
    """The ``WIFI:`` QR payload phones join from the camera app."""

    def escape(text: str) -> str:
        return "".join("\\" + char if char in '\\;,":' else char for char in text)

    return f"WIFI:T:WPA;S:{escape(ssid)};P:{escape(passphrase)};;"


def factory_provision(
    config: DeviceConfig,
    *,
    model: str,
    output_dir: Path,
    force: bool = False,
    random_bytes: RandomSource = system_random,
    verifier_log2_n: int | None = None,
    self_test: bool = False,
    hardware: HardwareAccess | None = None,
) -> FactoryResult:
    """Create the identity and the setup code, and write record and label.

    Refuses to replace an existing identity unless ``force``: the old key is in the registry
    and on a printed label, and a silent overwrite would make that device unclaimable.
    """
    if not model or len(model) > 64 or not model.isprintable():  # noqa: PLR2004
        raise FactoryError("model must be 1-64 printable characters")
    if config.identity_file.exists() and not force:
        raise IdentityExistsError(
            f"{config.identity_file} already exists; replacing it makes the printed label and "
            "the registry record useless. Use --force to create a new identity anyway."
        )
    identity = DeviceIdentity.generate(random_bytes=random_bytes)
    setup_code = SetupCode.generate(identity.device_id, random_bytes=random_bytes)
    verifier = (
        SetupVerifier.create(setup_code, random_bytes=random_bytes)
        if verifier_log2_n is None
        else SetupVerifier.create(setup_code, random_bytes=random_bytes, log2_n=verifier_log2_n)
    )
    info = FactoryInfo(
        device_id=identity.device_id,
        model=model,
        public_key=identity.public_key,
        created_at=unix_time(),
        firmware_version=__version__,
    )
    try:
        config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        output_dir.mkdir(parents=True, exist_ok=True)
        # The state of a previous identity must not survive it.
        config.state_file.unlink(missing_ok=True)
        identity.save(config.identity_file)
        atomic_write(config.setup_code_file, setup_code.to_json(), mode=SECRET_MODE)
        atomic_write(config.verifier_file, verifier.encode().encode() + b"\n", mode=SECRET_MODE)
        atomic_write(config.factory_file, info.to_json(), mode=PUBLIC_MODE)
        record_file = output_dir / RECORD_FILE
        labels = write_label(output_dir, identity, setup_code, model)
        result = FactoryResult(
            device_id=identity.device_id,
            manual_code=setup_code.manual_code().format(),
            qr_payload=setup_code.qr_payload(identity.fingerprint).format(),
            record_file=record_file,
            label_files=labels,
        )
        if self_test:
            result = replace(result, self_test=run_self_test(config, result, hardware))
        record: dict[str, object] = {
            "device_id": identity.device_id,
            "model": model,
            "public_key": b64url_encode(identity.public_key),
            "setup_verifier": verifier.encode(),
        }
        if result.self_test is not None:
            record["self_test"] = result.self_test.to_json()
        with record_file.open("a", encoding="utf-8") as stream:
            stream.write(json.dumps(record, sort_keys=True) + "\n")
    except (OSError, StateError, ProtocolError) as err:
        raise FactoryError(f"factory provisioning failed: {err}") from err
    return result


def write_label(
    output_dir: Path, identity: DeviceIdentity, setup_code: SetupCode, model: str
) -> tuple[Path, ...]:
    """QR code (SVG, PNG), the text label and the setup-hotspot QR code."""
    device_id = identity.device_id
    payload = setup_code.qr_payload(identity.fingerprint).format()
    # A full QR code (never a Micro QR: phone cameras do not read those), error level M.
    code = segno.make_qr(payload, error="m")
    svg = output_dir / f"{device_id}-qr.svg"
    png = output_dir / f"{device_id}-qr.png"
    code.save(str(svg), kind="svg", scale=_QR_SCALE, border=4)
    code.save(str(png), kind="png", scale=_QR_SCALE, border=4)
    ssid = hotspot_ssid(device_id)
    passphrase = hotspot_passphrase(setup_code)
    hotspot = segno.make_qr(_wifi_uri(ssid, passphrase), error="m")
    hotspot_svg = output_dir / f"{device_id}-hotspot.svg"
    hotspot_png = output_dir / f"{device_id}-hotspot.png"
    hotspot.save(str(hotspot_svg), kind="svg", scale=_QR_SCALE, border=4)
    hotspot.save(str(hotspot_png), kind="png", scale=_QR_SCALE, border=4)
    text = output_dir / f"{device_id}-label.txt"
    text.write_text(
        f"Model:        {model}\n"
        f"Device ID:    {device_id}\n"
        f"Setup code:   {setup_code.manual_code().format()}\n"
        f"QR text:      {payload}\n"
        f"Key:          {format_fingerprint(identity.fingerprint)}\n"
        f"Setup Wi-Fi:  {ssid}\n"
        f"Wi-Fi key:    {passphrase}\n",
        encoding="utf-8",
    )
    return (svg, png, text, hotspot_svg, hotspot_png)
