"""Errors of the BLE transport.

:class:`BleError` is the one base of this subpackage (itself a
:class:`~device_firmware.errors.DeviceError`). :class:`GattError` is what a characteristic
handler raises to refuse a read or write at the ATT level; the BlueZ layer turns its ``kind``
into the ``org.bluez.Error.*`` name BlueZ maps to an ATT error code. :class:`BluezError` is a
failure to use BlueZ at all, with the next step for the person at the device.
"""

from __future__ import annotations

from enum import StrEnum

from device_firmware.errors import DeviceError


class BleError(DeviceError):
    """Base of every error in ``device_firmware.ble``."""


class AttError(StrEnum):
    """ATT-level refusals, named as BlueZ's D-Bus errors (``org.bluez.Error.<value>``)."""

    NOT_PERMITTED = "NotPermitted"
    NOT_AUTHORIZED = "NotAuthorized"
    INVALID_OFFSET = "InvalidOffset"
    INVALID_VALUE_LENGTH = "InvalidValueLength"
    NOT_SUPPORTED = "NotSupported"
    FAILED = "Failed"

    @property
    def dbus_name(self) -> str:
        """The D-Bus error name BlueZ understands."""
        return f"org.bluez.Error.{self.value}"


class GattError(BleError):
    """A characteristic refuses a read or write; the central sees the ATT error ``kind``."""

    def __init__(self, kind: AttError, detail: str) -> None:
        """Keep the ATT error and a detail for logs."""
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


class BluezError(BleError):
    """BlueZ cannot be used (not running, no adapter, refused a registration)."""

    def __init__(self, message: str, next_step: str, *, dbus_error: str = "") -> None:
        """Keep what failed, what to do about it, and BlueZ's error name if there was one."""
        super().__init__(f"{message} ({next_step})")
        self.message = message
        self.next_step = next_step
        self.dbus_error = dbus_error
