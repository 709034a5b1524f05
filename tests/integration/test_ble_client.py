"""The BLE transport alone: connection failures, refusals, broken links, each with its error.

The device is the scripted GATT device of fake_ble.py (the shared package's real
DeviceSession); the full flows over it are in test_config_flow.py, the real device in
test_ble_onboarding_e2e.py.
"""

from __future__ import annotations

from collections.abc import Generator
from unittest.mock import AsyncMock, patch

import pytest
from bleak.exc import BleakError
from bleak_retry_connector import BleakOutOfConnectionSlotsError

from custom_components.iot_onboard import ble_client
from custom_components.iot_onboard.ble_client import BleTransport, error_code
from custom_components.iot_onboard.device_client import (
    CredentialRefusedClientError,
    DeviceClientError,
    DeviceConnectionError,
    DeviceLink,
    DeviceProtocolError,
    HandshakeRefusedError,
    SessionLostError,
    SetupCodeRejectedError,
    open_link,
)
from custom_components.iot_onboard.iob_protocol import (
    DeviceIdentity,
    SetupCode,
    encode_error_frame,
)
from tests.integration.fake_ble import ADDRESS, FakeConnector, FakeGattDevice, ble_device

IDENTITY = DeviceIdentity.generate()
SETUP = SetupCode.generate(IDENTITY.device_id)
QR = SETUP.qr_payload(IDENTITY.fingerprint)


@pytest.fixture
def device() -> FakeGattDevice:
    return FakeGattDevice(IDENTITY, SETUP)


@pytest.fixture
def connector(device: FakeGattDevice) -> Generator[FakeConnector]:
    fake = FakeConnector(device)
    with patch.object(ble_client, "establish_connection", fake):
        yield fake


def transport(*, in_range: bool = True, timeout: float = 5.0) -> BleTransport:
    found = ble_device(ADDRESS, "IoT Onboard")
    return BleTransport(
        ADDRESS, lambda: found if in_range else None, name="IoT Onboard", timeout=timeout
    )


def is_connected(link_transport: BleTransport) -> bool:
    return link_transport.connected


async def connect(link_transport: BleTransport) -> DeviceLink:
    return await open_link(link_transport, QR, device_id=IDENTITY.device_id)


async def test_a_session_over_ble(connector: FakeConnector) -> None:
    link_transport = transport()
    link = await connect(link_transport)
    assert (link_transport.address, link.host, link.port) == (ADDRESS, "", 0)
    # Its features characteristic names the WPS join; no long poll, no relay over Bluetooth.
    assert (link.waits_for_status, link.relays_claims, link.supports_wps) == (False, False, True)
    assert is_connected(link_transport)
    assert (await link.info()).device_id == IDENTITY.device_id
    await link.release()
    assert not is_connected(link_transport)
    assert (await link.status()).diagnostic is None  # reconnected, session resumed
    await link.aclose()
    assert connector.all_closed


async def test_not_in_range_or_no_free_slot(connector: FakeConnector) -> None:
    with pytest.raises(DeviceConnectionError, match="not in Bluetooth range"):
        await connect(transport(in_range=False))
    with (
        patch.object(
            ble_client,
            "establish_connection",
            AsyncMock(side_effect=BleakOutOfConnectionSlotsError("proxy full")),
        ),
        pytest.raises(DeviceConnectionError, match="no free Bluetooth connection slot"),
    ):
        await connect(transport())
    assert connector.device.connections == 0


async def test_a_device_without_the_service(
    connector: FakeConnector, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def no_service(*_: object, **__: object) -> None:
        raise BleakError("characteristic not found")

    monkeypatch.setattr("tests.integration.fake_ble.FakeBleakClient.start_notify", no_service)
    with pytest.raises(DeviceConnectionError, match="does not offer the IoT Onboard service"):
        await connect(transport())
    assert connector.all_closed


@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("window_closed", HandshakeRefusedError),
        ("busy", HandshakeRefusedError),
        ("owner_session_required", CredentialRefusedClientError),
        ("wrong_setup_code", SetupCodeRejectedError),
        ("unsupported_version", DeviceProtocolError),
    ],
)
async def test_handshake_refusals(
    device: FakeGattDevice,
    connector: FakeConnector,
    code: str,
    error: type[DeviceClientError],
) -> None:
    def refuse(frame: bytes) -> bytes:
        del frame
        return encode_error_frame(code)

    device.script = refuse
    with pytest.raises(error):
        await connect(transport())
    assert connector.all_closed  # a failed handshake leaves no connection


async def test_links_that_break(device: FakeGattDevice, connector: FakeConnector) -> None:
    """A request cut off before its last chunk is sent again once, then given up."""
    link = await connect(transport())
    device.drop_mid_request, device.drop_quietly = 1, True
    assert (await link.info()).device_id == IDENTITY.device_id
    device.drop_mid_request, device.drop_repeatedly = 1, True
    with pytest.raises(DeviceConnectionError, match="chunks"):
        await link.info()
    assert not link.usable
    assert connector.all_closed


async def test_write_errors_and_bad_replies(
    device: FakeGattDevice, connector: FakeConnector
) -> None:
    link = await connect(transport(timeout=0.05))
    client = connector.clients[-1]

    async def refused(*_: object, **__: object) -> None:
        raise BleakError("ATT error: write not permitted")

    with (
        patch.object(client, "write_gatt_char", refused),
        pytest.raises(DeviceConnectionError, match="write not permitted"),
    ):
        await link.info()
    link = await connect(transport(timeout=0.05))
    # A device that answers with a broken chunk: that frame fails, clearly.
    device.script = lambda _frame: None
    with pytest.raises(DeviceConnectionError, match="no reply"):
        await link.info()
    assert error_code(b"not a frame") is None


async def test_bad_chunk_and_session_end(device: FakeGattDevice, connector: FakeConnector) -> None:
    link = await connect(transport())
    client = connector.clients[-1]
    notify = client._notify

    def garbled(frame: bytes) -> None:
        del frame
        for callback in notify.values():
            callback(None, bytearray(b"\x02\x00\x05junk"))  # a LAST chunk out of nowhere

    device.script = garbled
    with pytest.raises(DeviceProtocolError, match="bad chunk"):
        await link.info()
    device.script = None  # the scripted device again
    link = await connect(transport())
    device.script = lambda _frame: encode_error_frame("no_session")
    with pytest.raises(SessionLostError, match="no_session"):
        await link.info()
    assert not link.usable


async def test_disconnect_errors_are_not_raised(connector: FakeConnector) -> None:
    link_transport = transport()
    await connect(link_transport)
    client = connector.clients[-1]

    async def failing() -> bool:
        raise BleakError("already gone")

    with patch.object(client, "disconnect", failing):
        await link_transport.aclose()
    assert not link_transport.connected


@pytest.mark.parametrize(
    ("features", "failures", "wps", "reads"),
    [
        (b"wps", 0, True, 1),  # read at the first connection only, not at each reconnect
        (None, 0, False, 1),  # a device from before the characteristic: no features, once
        (b"wps", 1, True, 2),  # a failed read is tried again at the next connection
        (b"wps,\xff", 0, False, 1),  # not ASCII: names nothing
        (b"status-wait,claim-relay,wps", 0, True, 1),  # only what Bluetooth can carry
    ],
    ids=["names-wps", "older-device", "read-failed-once", "unreadable", "lan-only-features"],
)
@pytest.mark.usefixtures("connector")
async def test_features_read_from_the_characteristic(
    device: FakeGattDevice,
    features: bytes | None,
    failures: int,
    *,
    wps: bool,
    reads: int,
) -> None:
    """What the LAN names in a header, Bluetooth names in the features characteristic."""
    device.features = features
    device.features_failures = failures
    link_transport = transport()
    link = await connect(link_transport)
    await link.release()
    await link.info()  # a new connection
    await link.release()
    await link.info()
    assert link.supports_wps is wps
    assert (link.waits_for_status, link.relays_claims) == (False, False)  # never over Bluetooth
    assert device.features_reads == reads
    await link.aclose()
