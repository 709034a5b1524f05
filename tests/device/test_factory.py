"""factory-provision: identity, secrets, manufacturing record, label."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from iob_protocol.canonical import b64url_decode
from iob_protocol.identity import DeviceIdentity
from iob_protocol.payload import ManualCode, QrPayload, SetupVerifier

from device_firmware.config import DeviceConfig
from device_firmware.errors import FactoryError, IdentityExistsError, NotProvisionedError
from device_firmware.factory import (
    ProvisionedDevice,
    factory_provision,
    hotspot_passphrase,
)
from device_firmware.selftest import run_self_test
from device_firmware.selftest_hardware import HardwareAccess

from .conftest import Provisioned, UnitHardware, provision


def test_files_and_modes(provisioned: Provisioned) -> None:
    config = provisioned.config
    for secret in (config.identity_file, config.setup_code_file, config.verifier_file):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
    identity = DeviceIdentity.load(config.identity_file)
    assert identity.device_id == provisioned.result.device_id


def test_record_has_no_code_and_matches_the_device(provisioned: Provisioned) -> None:
    lines = provisioned.result.record_file.read_text().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert set(record) == {"device_id", "model", "public_key", "setup_verifier"}
    device = provisioned.device
    assert record["device_id"] == device.identity.device_id
    assert b64url_decode(record["public_key"]) == device.identity.public_key
    passcode = device.setup_code.passcode
    assert passcode not in lines[0]
    assert provisioned.result.manual_code.replace("-", "") not in lines[0]
    verifier = SetupVerifier.decode(record["setup_verifier"])
    assert verifier.verify(
        device.identity.device_id, ManualCode.parse(provisioned.result.manual_code)
    )
    assert verifier.verify(
        device.identity.device_id, QrPayload.parse(provisioned.result.qr_payload)
    )
    assert not verifier.verify(device.identity.device_id, ManualCode("271828182"))


def test_label_files(provisioned: Provisioned) -> None:
    svg, png, text, hotspot_svg, hotspot_png = provisioned.result.label_files
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert hotspot_png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert b"<svg" in svg.read_bytes()
    assert b"<svg" in hotspot_svg.read_bytes()
    label = text.read_text()
    assert provisioned.result.manual_code in label
    assert hotspot_passphrase(provisioned.device.setup_code) in label
    qr = QrPayload.parse(provisioned.result.qr_payload)
    assert qr.trust_anchor.matches(provisioned.device.identity.public_key)


def test_refuses_to_overwrite_without_force(provisioned: Provisioned, tmp_path: Path) -> None:
    config = provisioned.config
    before = config.identity_file.read_bytes()
    with pytest.raises(IdentityExistsError):
        factory_provision(config, model="pi-test", output_dir=tmp_path / "again")
    assert config.identity_file.read_bytes() == before
    result = factory_provision(
        config, model="pi-test", output_dir=tmp_path / "again", force=True, verifier_log2_n=14
    )
    assert result.device_id != provisioned.result.device_id
    assert ProvisionedDevice.load(config).identity.device_id == result.device_id


def test_loading_refuses_mismatched_or_missing_files(tmp_path: Path) -> None:
    with pytest.raises(NotProvisionedError, match="factory-provision"):
        ProvisionedDevice.load(DeviceConfig(data_dir=tmp_path / "empty"))
    first = provision(tmp_path / "a")
    second = provision(tmp_path / "b")
    second.config.identity_file.write_bytes(first.config.identity_file.read_bytes())
    with pytest.raises(NotProvisionedError, match="different devices"):
        ProvisionedDevice.load(second.config)
    first.config.identity_file.chmod(0o644)
    with pytest.raises(NotProvisionedError):
        ProvisionedDevice.load(first.config)


def test_bad_model_names(tmp_path: Path) -> None:

    for model in ("", "x" * 65, "line\nbreak"):
        with pytest.raises(FactoryError):
            factory_provision(
                DeviceConfig(data_dir=tmp_path / "d"), model=model, output_dir=tmp_path / "o"
            )


def test_self_test_record_key_and_label(tmp_path: Path, unit_hardware: UnitHardware) -> None:
    unit_hardware.network_manager()
    result, record = unit_hardware.provision(tmp_path, ble=False)
    assert result.self_test is not None
    checks = {check["name"]: check for check in record["self_test"]["checks"]}
    assert checks["key"]["result"] == "pass"
    assert checks["label"]["result"] == "pass"
    assert record["self_test"]["passed"] is True
    assert isinstance(record["self_test"]["at"], int)
    code = DeviceIdentity.load(tmp_path / "data" / "identity.json").device_id
    assert code == record["device_id"]
    assert result.manual_code.replace("-", "") not in json.dumps(record)


def test_self_test_fails_on_a_missing_label(tmp_path: Path, unit_hardware: UnitHardware) -> None:
    config = DeviceConfig(data_dir=tmp_path / "data")
    result = factory_provision(
        config, model="plug-1", output_dir=tmp_path / "out", verifier_log2_n=14
    )
    result.label_files[0].unlink()
    report = run_self_test(config, result, HardwareAccess(sysfs_root=unit_hardware.sysfs_root))
    label = next(check for check in report.checks if check.name == "label")
    assert label.result == "fail"
    assert str(result.label_files[0]) in label.reason
    assert not report.passed
