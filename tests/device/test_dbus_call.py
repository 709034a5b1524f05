"""The one D-Bus call helper, against a real (private) dbus-daemon."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from device_firmware.dbus_call import DBUS_BUS, DBUS_PATH, DBusCallError, call
from device_firmware.errors import DeviceError


@pytest.fixture
async def bus(system_bus: str) -> AsyncIterator[MessageBus]:
    connection = await MessageBus(bus_address=system_bus).connect()
    try:
        yield connection
    finally:
        connection.disconnect()


async def test_a_call_returns_the_reply_body(bus: MessageBus) -> None:
    (owner,) = await call(
        bus, DBUS_BUS, DBUS_PATH, DBUS_BUS, "GetNameOwner", signature="s", body=[DBUS_BUS]
    )
    assert owner == DBUS_BUS
    (has_owner,) = await call(
        bus, DBUS_BUS, DBUS_PATH, DBUS_BUS, "NameHasOwner", signature="s", body=["org.bluez"]
    )
    assert has_owner is False


async def test_an_error_reply_carries_its_dbus_name(bus: MessageBus) -> None:
    with pytest.raises(DBusCallError) as caught:
        await call(bus, "org.bluez", "/", "org.freedesktop.DBus.ObjectManager", "GetManagedObjects")
    assert caught.value.error_name == "org.freedesktop.DBus.Error.ServiceUnknown"
    assert caught.value.member == "GetManagedObjects"
    assert "org.bluez" in caught.value.detail
    assert isinstance(caught.value, DeviceError)


async def test_a_broken_connection_has_no_error_name(bus: MessageBus) -> None:
    bus.disconnect()
    with pytest.raises(DBusCallError) as caught:
        await call(bus, DBUS_BUS, DBUS_PATH, DBUS_BUS, "GetId", timeout=5)
    assert caught.value.error_name == ""
    assert caught.value.member == "GetId"


async def test_the_timeout_bounds_the_wait(bus: MessageBus, system_bus: str) -> None:
    """A peer that takes the call and never answers: the call ends as a DBusCallError."""
    silent = await MessageBus(bus_address=system_bus).connect()
    received: list[str] = []

    def swallow(message: Message) -> bool | None:
        if message.message_type is MessageType.METHOD_CALL and message.member == "Wait":
            received.append(message.member)
            return True  # handled, and no reply is ever sent
        return None

    silent.add_message_handler(swallow)
    try:
        await silent.request_name("org.iot_onboard.Silent")
        with pytest.raises(DBusCallError) as caught:
            await call(
                bus, "org.iot_onboard.Silent", "/", "org.iot_onboard.Test", "Wait", timeout=0.2
            )
    finally:
        silent.disconnect()
    assert received == ["Wait"]
    assert caught.value.error_name == ""
    assert caught.value.member == "Wait"
