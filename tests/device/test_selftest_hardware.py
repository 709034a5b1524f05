"""``factory-provision --self-test``'s hardware checks against python-dbusmock's NetworkManager
and BlueZ (the project's bluez5 extension) on a private system bus, a sysfs LED in files and a
fake button line: each part passes, fails with a next step or is skipped with the reason, and
the manufacturing record carries every check.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

from device_firmware.config import DeviceConfig
from device_firmware.selftest import Check, SelfTestReport, run_self_test
from device_firmware.selftest_hardware import HardwareAccess

from .conftest import UnitHardware

UNAVAILABLE = 20


class FakeButton:
    """The button's line as the agent requests it; remembers being released."""

    opened: list[tuple[str, int]]
    released: int

    def __init__(self) -> None:
        self.opened, self.released = [], 0

    def __call__(self, chip: str, offset: int) -> FakeButton:
        self.opened.append((chip, offset))
        return self

    def fileno(self) -> int:
        return -1

    def read_events(self) -> list[bool]:
        return []

    def release(self) -> None:
        self.released += 1


def busy_line(chip: str, _offset: int) -> Any:
    raise OSError(errno.EBUSY, "Device or resource busy", chip)


def by_name(report: SelfTestReport) -> dict[str, Check]:
    return {check.name: check for check in report.checks}


def test_a_working_unit_passes_every_check(unit_hardware: UnitHardware, tmp_path: Path) -> None:
    unit_hardware.network_manager()
    unit_hardware.bluez()
    led = unit_hardware.status_led()
    button = FakeButton()
    access = HardwareAccess(sysfs_root=unit_hardware.sysfs_root, open_button=button)
    result, record = unit_hardware.provision(tmp_path, access, button_gpio=17)

    assert result.self_test is not None
    checks = {check["name"]: check for check in record["self_test"]["checks"]}
    assert list(checks) == [
        "key",
        "label",
        "wifi_radio",
        "network_manager",
        "ble_adapter",
        "led",
        "button",
    ]
    assert {check["result"] for check in checks.values()} == {"pass"}, checks
    assert record["self_test"]["passed"] is True
    assert checks["wifi_radio"]["reason"] == "wlan0 managed by NetworkManager"
    assert checks["network_manager"]["reason"].startswith("NetworkManager ")
    assert checks["ble_adapter"]["reason"] == "hci0 is an LE adapter, powered"
    assert checks["led"]["reason"] == "ACT switched on and off"
    assert checks["button"]["reason"].startswith("line 17 of /dev/gpiochip0")
    # The LED went back to its own trigger, the button's line back to the kernel.
    assert (led / "trigger").read_text() == "mmc0"
    assert (led / "brightness").read_text() == "0"
    assert (button.opened, button.released) == ([("/dev/gpiochip0", 17)], 1)


def test_parts_the_unit_does_not_have_are_skipped_with_the_reason(
    unit_hardware: UnitHardware, tmp_path: Path
) -> None:
    unit_hardware.network_manager()
    _, record = unit_hardware.provision(
        tmp_path, HardwareAccess(sysfs_root=unit_hardware.sysfs_root), ble=False
    )
    checks = {check["name"]: check for check in record["self_test"]["checks"]}
    assert checks["ble_adapter"] == {
        "name": "ble_adapter",
        "result": "skipped",
        "reason": "ble = false in the device configuration",
    }
    assert checks["led"]["result"] == "skipped"
    assert "no status LED" in checks["led"]["reason"]
    assert checks["button"]["result"] == "skipped"
    assert "button_gpio is unset" in checks["button"]["reason"]
    # Skipped parts do not fail the unit.
    assert record["self_test"]["passed"] is True


def test_without_network_manager_the_unit_fails_with_the_next_step(
    unit_hardware: UnitHardware, tmp_path: Path
) -> None:
    unit_hardware.bluez()
    result, _ = unit_hardware.provision(
        tmp_path, HardwareAccess(sysfs_root=unit_hardware.sysfs_root)
    )
    assert result.self_test is not None
    checks = by_name(result.self_test)
    assert checks["network_manager"].result == "fail"
    assert "ServiceUnknown" in checks["network_manager"].reason
    assert "systemctl enable --now NetworkManager" in checks["network_manager"].next_step
    assert (checks["wifi_radio"].result, checks["wifi_radio"].reason) == (
        "skipped",
        "NetworkManager is unreachable",
    )
    assert checks["ble_adapter"].result == "pass"
    assert not result.self_test.passed


def test_a_missing_or_unavailable_radio_fails(unit_hardware: UnitHardware, tmp_path: Path) -> None:
    nm = unit_hardware.network_manager(wifi_state=None)
    access = HardwareAccess(sysfs_root=unit_hardware.sysfs_root)
    result, _ = unit_hardware.provision(tmp_path, access, ble=False)
    assert result.self_test is not None
    radio = by_name(result.self_test)["wifi_radio"]
    assert radio.result == "fail"
    assert radio.reason.startswith("NetworkManager manages no Wi-Fi device")
    assert "rfkill list" in radio.next_step

    nm.AddWiFiDevice("wlan0dev", "wlan0", UNAVAILABLE, dbus_interface="org.freedesktop.DBus.Mock")
    report = run_self_test(DeviceConfig(data_dir=tmp_path / "data", ble=False), result, access)
    radio = by_name(report)["wifi_radio"]
    assert (radio.result, radio.reason) == ("fail", "wlan0 is unavailable in NetworkManager")
    assert not report.passed


def test_an_adapter_that_is_off_is_powered_on_as_the_agent_does(
    unit_hardware: UnitHardware, tmp_path: Path
) -> None:
    unit_hardware.network_manager()
    unit_hardware.bluez(powered=False)
    result, _ = unit_hardware.provision(
        tmp_path, HardwareAccess(sysfs_root=unit_hardware.sysfs_root)
    )
    assert result.self_test is not None
    assert by_name(result.self_test)["ble_adapter"].result == "pass"
    adapter = unit_hardware.connection().get_object("org.bluez", "/org/bluez/hci0")
    assert adapter.Get(
        "org.bluez.Adapter1", "Powered", dbus_interface="org.freedesktop.DBus.Properties"
    )


def test_a_missing_adapter_or_bluetoothd_fails(unit_hardware: UnitHardware, tmp_path: Path) -> None:
    unit_hardware.network_manager()
    access = HardwareAccess(sysfs_root=unit_hardware.sysfs_root)
    result, _ = unit_hardware.provision(tmp_path, access)
    assert result.self_test is not None
    ble = by_name(result.self_test)["ble_adapter"]
    assert (ble.result, ble.reason) == ("fail", "BlueZ (bluetoothd) is not running")
    assert "systemctl enable --now bluetooth" in ble.next_step

    unit_hardware.bluez()
    config = DeviceConfig(data_dir=tmp_path / "data", ble_adapter="hci9")
    ble = by_name(run_self_test(config, result, access))["ble_adapter"]
    assert (ble.result, ble.reason) == ("fail", "no Bluetooth adapter hci9")
    assert "bluetoothctl list" in ble.next_step


def test_a_broken_led_or_busy_button_line_fails(
    unit_hardware: UnitHardware, tmp_path: Path
) -> None:
    unit_hardware.network_manager()
    led = unit_hardware.status_led("led0")
    (led / "brightness").unlink()
    # A file that exists (the LED is found) but refuses writes, as a LED without its udev rule.
    (led / "brightness").symlink_to("/proc/version")
    access = HardwareAccess(sysfs_root=unit_hardware.sysfs_root, open_button=busy_line)
    result, record = unit_hardware.provision(tmp_path, access, ble=False, button_gpio=4)
    assert result.self_test is not None
    checks = by_name(result.self_test)
    assert checks["led"].result == "fail"
    assert "cannot drive the LED" in checks["led"].reason
    assert "udev rule" in checks["led"].next_step
    assert checks["button"].result == "fail"
    assert checks["button"].reason.startswith("cannot request line 4 of /dev/gpiochip0")
    assert "gpio group" in checks["button"].next_step
    assert record["self_test"]["passed"] is False
    # The record has the reasons, never the operator's next steps.
    assert all(
        set(check) == {"name", "result", "reason"} for check in record["self_test"]["checks"]
    )
