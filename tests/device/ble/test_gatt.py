"""The provisioning GATT service driven by the protocol's client session over the loopback link.

Everything here is the device's real code (session host, controller, simulated Wi-Fi); only the
radio is the in-process link, with BlueZ's MTU, write and notification rules.
"""

from __future__ import annotations

import math

import pytest
from iob_protocol.ble import parse_features
from iob_protocol.commands import (
    FEATURE_WPS,
    AckResult,
    InfoRequest,
    InfoResult,
    OkResponse,
    ScanWifiRequest,
    ScanWifiResult,
    SetWifiRequest,
    StatusRequest,
    StatusResult,
    encode_request,
)
from iob_protocol.diagnostics import DiagnosticCode
from iob_protocol.errors import OutOfOrderFrameError, WrongSetupCodeError
from iob_protocol.framing import (
    CHUNK_FIRST,
    CHUNK_LAST,
    MAX_FRAME_SIZE,
    FrameType,
    chunk_frame,
    encode_error_frame,
    encode_frame,
)
from iob_protocol.limiter import LimiterState

from device_firmware.ble.errors import AttError, GattError
from device_firmware.ble.gatt import OWNER_IDLE_SECONDS, Access, ProvisioningService
from device_firmware.ble.loopback import LoopbackCentral, LoopbackPeripheral
from device_firmware.ble.wire import (
    FEATURES_UUID,
    RX_UUID,
    STATE_UUID,
    TX_UUID,
    BlePhase,
    BleStatus,
    parse_state_value,
)
from tests.device.conftest import HOME_PASSPHRASE, HOME_SSID
from tests.device.test_session_server import wrong_code

from .client import BleClient, error_code
from .conftest import Device, Loopback


def ble_client(device: Device, central: LoopbackCentral) -> BleClient:
    return BleClient(device.qr_client(), central.send_frame, central.receive_frame)


async def connected(loopback: Loopback, *, mtu: int, link: str | None = None) -> LoopbackCentral:
    central = loopback.peripheral.connect(link, mtu=mtu)
    await central.subscribe(TX_UUID)
    return central


@pytest.mark.parametrize("mtu", [23, 185])
async def test_handshake_and_commands_over_chunks(
    loopback: Loopback, device: Device, mtu: int
) -> None:
    central = await connected(loopback, mtu=mtu)
    client = ble_client(device, central)
    hello = client.session.start()
    await central.send_frame(hello)
    chunks = []
    while True:
        chunks.append(await central.notification(TX_UUID))
        if chunks[-1][0] & CHUNK_LAST:
            break
    # DEVICE_HELLO (168 bytes) in notifications of at most MTU - 3 bytes each.
    assert all(len(chunk) <= mtu - 3 for chunk in chunks)
    assert len(chunks) == math.ceil((6 + 162) / (mtu - 6))
    reply = b"".join(chunk[3:] for chunk in chunks)
    await central.send_frame(client.session.handle_device_hello(reply))

    info = await client.call(InfoRequest(request_id=1))
    assert isinstance(info, OkResponse)
    assert isinstance(info.result, InfoResult)
    assert info.result.device_id == device.provisioned.device.identity.device_id
    assert info.result.claimed is False

    scan = await client.call(ScanWifiRequest(request_id=2))
    assert isinstance(scan, OkResponse)
    assert isinstance(scan.result, ScanWifiResult)
    assert [net.ssid for net in scan.result.networks] == [b"HomeNet", b"Cafe"]

    wifi = SetWifiRequest(request_id=3, ssid=HOME_SSID, passphrase=HOME_PASSPHRASE, hidden=False)
    answer = await client.call(wifi)
    assert isinstance(answer, OkResponse)
    assert isinstance(answer.result, AckResult)
    status = await client.call(StatusRequest(request_id=4))
    assert isinstance(status, OkResponse)
    assert isinstance(status.result, StatusResult)
    assert status.result.state.value == "provisioning"
    assert device.host.has_session
    assert loopback.provisioning.owner == central.link


async def test_manual_code_handshake(loopback: Loopback, device: Device) -> None:
    central = await connected(loopback, mtu=23)
    client = BleClient(
        device.provisioned.manual_client(), central.send_frame, central.receive_frame
    )
    await client.handshake()
    response = await client.call(InfoRequest(request_id=9))
    assert response.ok


async def test_wrong_code_is_answered_with_an_error_frame_and_counts(
    loopback: Loopback, device: Device
) -> None:
    central = await connected(loopback, mtu=185)
    before = device.host.remaining_attempts()
    client = device.provisioned.manual_client(wrong_code(device.provisioned))
    await central.send_frame(client.start())
    with pytest.raises(WrongSetupCodeError):
        client.handle_device_hello(await central.receive_frame())
    # A guesser sends CLIENT_FINISH anyway: refused with the protocol's code, and counted.
    await central.send_frame(encode_frame(FrameType.CLIENT_FINISH, bytes(32)))
    assert error_code(await central.receive_frame()) == "wrong_setup_code"
    assert device.host.remaining_attempts() == before - 1
    # The link still works: the right code now.
    good = ble_client(device, central)
    await good.handshake()
    assert (await good.call(InfoRequest(request_id=1))).ok


async def test_client_error_frame_frees_the_slot_for_an_immediate_retry(
    loopback: Loopback, device: Device
) -> None:
    central = await connected(loopback, mtu=185)
    before = device.host.remaining_attempts()
    client = device.provisioned.manual_client(wrong_code(device.provisioned))
    await central.send_frame(client.start())
    with pytest.raises(WrongSetupCodeError):
        client.handle_device_hello(await central.receive_frame())
    # An honest client says so: the handshake ends now (counted), nothing is answered.
    await central.send_frame(encode_error_frame("wrong_setup_code"))
    good = ble_client(device, central)
    await good.handshake()  # not ``busy``
    assert (await good.call(InfoRequest(request_id=1))).ok
    assert device.host.remaining_attempts() == before - 1


# --- bad chunks and frames ----------------------------------------------------------------------


async def test_bad_chunks_get_specific_error_frames_and_the_link_recovers(
    loopback: Loopback, device: Device
) -> None:
    central = await connected(loopback, mtu=23)
    hello = device.qr_client().start()
    chunks = chunk_frame(hello, central.payload_size)
    assert len(chunks) >= 3

    async def write(chunk: bytes) -> None:
        await central.write(RX_UUID, chunk, response=False)

    # A lost chunk: sequence 2 follows 0.
    await write(chunks[0])
    await write(chunks[2])
    assert error_code(await central.receive_frame()) == "chunk_sequence"
    # A continuation without a start.
    await write(chunks[1])
    assert error_code(await central.receive_frame()) == "chunk_sequence"
    # A new frame before the last one ended (the new FIRST chunk is dropped too).
    await write(chunks[0])
    await write(chunks[0])
    assert error_code(await central.receive_frame()) == "incomplete_frame"
    # A duplicate.
    await write(chunks[0])
    await write(chunks[1])
    await write(chunks[1])
    assert error_code(await central.receive_frame()) == "chunk_sequence"
    # Unknown flag bits, an empty chunk.
    await write(bytes([0x80, 0, 0, 1]))
    assert error_code(await central.receive_frame()) == "chunk_error"
    await write(bytes([CHUNK_FIRST | CHUNK_LAST, 0, 0]))
    assert error_code(await central.receive_frame()) == "chunk_error"
    # Whole frames that are not protocol frames.
    await central.send_frame(b"GET / HTTP/1.1")
    assert error_code(await central.receive_frame()) == "bad_magic"
    await central.send_frame(b"IB\x02\x01\x00\x00")
    assert error_code(await central.receive_frame()) == "unsupported_version"
    await central.send_frame(b"IB\x01\x01\x00\x05abc")
    assert error_code(await central.receive_frame()) == "truncated_frame"
    # A frame type only the device sends.
    await central.send_frame(encode_frame(FrameType.DEVICE_HELLO, b"x"))
    assert error_code(await central.receive_frame()) == "unexpected_message"
    # Nothing above started a handshake or cost an attempt; a real one works now.
    assert device.host.limiter_state is LimiterState.OPEN
    client = ble_client(device, central)
    await client.handshake()
    assert (await client.call(InfoRequest(request_id=1))).ok


async def test_oversize_frame_is_refused_while_it_arrives(loopback: Loopback) -> None:
    central = await connected(loopback, mtu=517)
    piece = bytes(central.payload_size - 3)
    sequence = 0
    await central.write(RX_UUID, bytes([CHUNK_FIRST, 0, 0]) + b"IB\x01\x10" + piece[4:])
    sent = central.payload_size - 3
    while sent <= MAX_FRAME_SIZE:
        sequence += 1
        await central.write(RX_UUID, bytes([0]) + sequence.to_bytes(2, "big") + piece)
        sent += len(piece)
    assert error_code(await central.receive_frame()) == "frame_too_large"


async def test_long_write_to_rx_is_refused_with_one_error_frame(
    loopback: Loopback, device: Device
) -> None:
    central = await connected(loopback, mtu=23)
    hello = device.qr_client().start()
    # A central that ignores the MTU: its Write Request becomes a long write whose pieces
    # arrive with offsets; the first looks like a chunk, the rest are refused once.
    await central.write(RX_UUID, bytes([CHUNK_FIRST, 0, 0]) + hello[:60])
    assert error_code(await central.receive_frame()) == "chunk_error"
    await central.send_frame(encode_frame(FrameType.DATA, bytes(40)))
    assert error_code(await central.receive_frame()) == "no_session"


async def test_a_lan_session_cannot_be_used_or_ended_over_ble(
    loopback: Loopback, device: Device
) -> None:
    lan = device.qr_client()
    reply = await device.host.handshake(lan.start())
    finished = await device.host.handshake(lan.handle_device_hello(reply.frame))
    tag = finished.session_tag
    central = await connected(loopback, mtu=185)
    await central.send_frame(encode_frame(FrameType.DATA, bytes(40)))  # a stranger's frame
    assert error_code(await central.receive_frame()) == "no_session"
    # The LAN client's session is untouched (the frame above was not even decrypted).
    answer = await device.host.exchange(lan.seal(encode_request(InfoRequest(request_id=2))), tag)
    assert answer.kind.value == "ok"
    # A BLE session replaced by a later LAN one: its frames are refused by the host (the
    # session tag no longer matches) and the LAN session goes on.
    ble = ble_client(device, central)
    await ble.handshake()
    lan = device.qr_client()
    reply = await device.host.handshake(lan.start())
    tag = (await device.host.handshake(lan.handle_device_hello(reply.frame))).session_tag
    await central.send_frame(ble.seal(InfoRequest(request_id=1)))
    assert error_code(await central.receive_frame()) == "no_session"
    answer = await device.host.exchange(lan.seal(encode_request(InfoRequest(request_id=1))), tag)
    assert answer.kind.value == "ok"


async def test_data_before_any_session_is_no_session(loopback: Loopback, device: Device) -> None:
    central = await connected(loopback, mtu=185)
    await central.send_frame(encode_frame(FrameType.DATA, bytes(40)))
    assert error_code(await central.receive_frame()) == "no_session"
    assert not device.host.has_session


# --- links: disconnect, reconnect, resume, a second central ---------------------------------------


async def test_disconnect_mid_frame_drops_the_partial_frame(
    loopback: Loopback, device: Device
) -> None:
    first = await connected(loopback, mtu=23, link="/org/bluez/hci0/dev_AA")
    hello = device.qr_client().start()
    for chunk in chunk_frame(hello, first.payload_size)[:2]:
        await first.write(RX_UUID, chunk, response=False)
    first.disconnect()
    # Same central, new connection: it starts over without an incomplete_frame error.
    again = await connected(loopback, mtu=23, link="/org/bluez/hci0/dev_AA")
    client = ble_client(device, again)
    await client.handshake()
    assert (await client.call(InfoRequest(request_id=1))).ok
    assert again.link == loopback.provisioning.owner


async def test_a_request_cut_off_by_a_disconnect_is_resent_on_a_new_link(
    loopback: Loopback, device: Device
) -> None:
    first = await connected(loopback, mtu=23)
    client = ble_client(device, first)
    await client.handshake()
    assert (await client.call(InfoRequest(request_id=1))).ok
    sealed = client.seal(ScanWifiRequest(request_id=2))
    for chunk in chunk_frame(sealed, first.payload_size)[:-1]:
        await first.write(RX_UUID, chunk, response=False)
    first.disconnect()

    second = await connected(loopback, mtu=185)
    await second.send_frame(sealed)  # the device never saw it: same counter, same bytes
    response = client.session.open(await second.receive_frame())
    assert b'"networks"' in response
    client.send, client.receive = second.send_frame, second.receive_frame
    assert (await client.call(StatusRequest(request_id=3))).ok


async def test_a_reply_lost_with_the_link_means_starting_over(
    loopback: Loopback, device: Device
) -> None:
    first = await connected(loopback, mtu=185)
    client = ble_client(device, first)
    await client.handshake()
    await first.send_frame(client.seal(InfoRequest(request_id=1)))
    await first.notification(TX_UUID)  # the device answered; the central never read it
    first.disconnect()

    second = await connected(loopback, mtu=185)
    await second.send_frame(client.seal(StatusRequest(request_id=2)))
    with pytest.raises(OutOfOrderFrameError):
        client.session.open(await second.receive_frame())
    # Fail closed on the client; a new handshake on the new link replaces the session.
    fresh = ble_client(device, second)
    await fresh.handshake()
    assert (await fresh.call(InfoRequest(request_id=1))).ok


async def test_a_handshake_cut_off_by_a_disconnect_frees_the_slot(
    loopback: Loopback, device: Device
) -> None:
    """The retry on a new link is not ``busy`` for 60 s; the dropped attempt counts."""
    before = device.host.remaining_attempts()
    first = await connected(loopback, mtu=23)
    session = device.qr_client()
    await first.send_frame(session.start())
    finish = session.handle_device_hello(await first.receive_frame())
    assert device.host.limiter_state is LimiterState.BUSY
    first.disconnect()
    second = await connected(loopback, mtu=23)
    # The old handshake is gone: its finish is unexpected now.
    await second.send_frame(finish)
    assert error_code(await second.receive_frame()) == "unexpected_message"
    retry = ble_client(device, second)
    await retry.handshake()
    assert (await retry.call(InfoRequest(request_id=1))).ok
    assert device.host.remaining_attempts() == before - 1


async def test_a_second_central_is_refused_while_the_first_is_served(
    loopback: Loopback, device: Device
) -> None:
    first = await connected(loopback, mtu=185)
    second = await connected(loopback, mtu=185)
    client = ble_client(device, first)
    await first.send_frame(client.session.start())
    # The other central's hello is refused at the ATT layer (BlueZ does not report errors of
    # write-without-response characteristics, so it simply goes nowhere).
    await second.send_frame(device.qr_client().start())
    write = loopback.provisioning.characteristic(RX_UUID).write
    assert write is not None
    with pytest.raises(GattError) as refused:
        write(b"\x03\x00\x00x", Access(link=second.link))
    assert refused.value.kind is AttError.NOT_PERMITTED
    reply = await first.receive_frame()
    await first.send_frame(client.session.handle_device_hello(reply))
    assert (await client.call(InfoRequest(request_id=1))).ok
    # Notifications reach every subscribed central (BlueZ cannot address one): the second
    # overheard the first one's frames, encrypted after the handshake.
    assert second.drain(TX_UUID)
    first.disconnect()
    other = ble_client(device, second)
    await other.handshake()
    assert (await other.call(InfoRequest(request_id=1))).ok


async def test_a_quiet_owner_gives_way_and_a_stray_data_frame_cannot_end_its_session(
    device: Device,
) -> None:
    now = [1000.0]
    service = ProvisioningService(device.host, clock=lambda: now[0])
    peripheral = LoopbackPeripheral([service])
    await peripheral.start()
    try:
        first = peripheral.connect("first", mtu=185)
        await first.subscribe(TX_UUID)
        client = ble_client(device, first)
        await client.handshake()
        assert (await client.call(InfoRequest(request_id=1))).ok

        second = peripheral.connect("second", mtu=185)
        await second.subscribe(TX_UUID)
        now[0] += OWNER_IDLE_SECONDS + 1
        await second.send_frame(encode_frame(FrameType.DATA, bytes(40)))
        assert error_code(await second.receive_frame()) == "no_session"
        assert service.owner == "second"
        first.drain(TX_UUID)  # it overheard the answer to the second central

        now[0] += OWNER_IDLE_SECONDS + 1
        assert (await client.call(StatusRequest(request_id=2))).ok  # the session survived
    finally:
        await peripheral.stop()


# --- features characteristic --------------------------------------------------------------------


async def test_features_characteristic_names_wps(loopback: Loopback) -> None:
    """What Home Assistant reads to offer the join by the router's WPS button over Bluetooth
    (the LAN names it in a header); read only, in pieces at an offset like any value."""
    central = await connected(loopback, mtu=23)
    assert parse_features(await central.read(FEATURES_UUID)) == {FEATURE_WPS}
    features = loopback.provisioning.characteristic(FEATURES_UUID)
    assert features.read is not None
    assert features.write is None
    assert features.read(Access(link=central.link, offset=1)) == b"ps"


# --- state characteristic -----------------------------------------------------------------------


async def test_state_characteristic_reads_and_notifies(loopback: Loopback) -> None:
    central = await connected(loopback, mtu=23)
    await central.subscribe(STATE_UUID)
    assert await central.read(STATE_UUID) == loopback.provisioning.status.state_value()
    failed = BleStatus(
        phase=BlePhase.PROVISIONING, window_open=True, diagnostic=DiagnosticCode.WIFI_AUTH_FAILED
    )
    await loopback.provisioning.set_status(failed)
    value = await central.notification(STATE_UUID)
    assert value == bytes([1, 0x19, 1])
    parsed = parse_state_value(value)
    assert (parsed.phase, parsed.failed, parsed.diagnostic) == (
        BlePhase.PROVISIONING,
        True,
        DiagnosticCode.WIFI_AUTH_FAILED,
    )
    await loopback.provisioning.set_status(failed)  # unchanged: no notification
    assert central.drain(STATE_UUID) == []
    read = loopback.provisioning.characteristic(STATE_UUID).read
    assert read is not None
    with pytest.raises(GattError) as error:
        read(Access(link=central.link, offset=4))
    assert error.value.kind is AttError.INVALID_OFFSET
