"""The device's provisioning session over Bluetooth LE (no Home Assistant import).

A :class:`BleTransport` carries the same protocol frames as the LAN client, chunked over the
device's GATT service (``iob_protocol.ble``: RX write, TX notify; docs/ble.md), so
:func:`device_client.open_link` and :class:`device_client.DeviceLink` run unchanged over it.

Connections go through bleak-retry-connector's ``establish_connection`` with
``BleakClientWithServiceCache`` on the ``BLEDevice`` the caller gets from Home Assistant's
Bluetooth integration (``bluetooth.async_ble_device_from_address(hass, address,
connectable=True)``): that is what makes local adapters and active ESPHome proxies work alike.
The link is let go while the user fills in a form (:meth:`BleTransport.release`) and always
closed at the end; the device keeps the session across connections (it resumes when no frame
was lost after reaching it), and a request cut off by a disconnect is sent again over a new
connection because the device never saw it whole. The first connection reads the device's
features characteristic (what the LAN names in a header; an older device has none).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Final

from bleak import BleakClient
from bleak.backends.characteristic import BleakGATTCharacteristic
from bleak.backends.device import BLEDevice
from bleak.exc import BleakCharacteristicNotFoundError, BleakError
from bleak_retry_connector import (
    BleakClientWithServiceCache,
    BleakOutOfConnectionSlotsError,
    establish_connection,
)

from .device_client import (
    CREDENTIAL_REFUSAL_CODES,
    REFUSAL_CODES,
    CredentialRefusedClientError,
    DeviceClientError,
    DeviceConnectionError,
    DeviceProtocolError,
    DeviceTransport,
    HandshakeRefusedError,
    SessionLostError,
    SetupCodeRejectedError,
)
from .iob_protocol import (
    FEATURE_WPS,
    BleDisconnectedError,
    BleLinkError,
    FrameChannel,
    FrameType,
    ProtocolError,
    WrongSetupCodeError,
    chunk_payload_size,
    decode_error_body,
    decode_frame,
)
from .iob_protocol.ble import FEATURES_UUID, RX_UUID, TX_UUID, parse_features

_LOGGER = logging.getLogger(__name__)

#: Seconds to wait for one reply frame (a DEVICE_HELLO at MTU 23 is ten notifications).
REPLY_TIMEOUT: Final = 20.0
#: The session tag a BLE session goes by (the device binds it to its BLE side, not a tag).
BLE_SESSION_TAG: Final = "ble"
#: The device's features this transport honours. Not ``status-wait``: a long-polled status
#: would outlast :data:`REPLY_TIMEOUT`; not ``claim-relay``: not relayed over Bluetooth.
BLE_FEATURES: Final = frozenset({FEATURE_WPS})

type BleDeviceLookup = Callable[[], BLEDevice | None]
type ClientFactory = type[BleakClientWithServiceCache]


def error_code(frame: bytes) -> str | None:
    """The code of an ERROR frame, or None for any other frame."""
    try:
        decoded = decode_frame(frame)
        return decode_error_body(decoded.body) if decoded.type is FrameType.ERROR else None
    except ProtocolError:
        return None


def _refusal(code: str) -> DeviceClientError:
    """The client error for an ERROR frame answering CLIENT_HELLO."""
    if code in REFUSAL_CODES:
        return HandshakeRefusedError(code)
    if code in CREDENTIAL_REFUSAL_CODES:
        return CredentialRefusedClientError(code)
    if code == WrongSetupCodeError.code:
        return SetupCodeRejectedError("the device refused the setup code")
    return DeviceProtocolError(code, "device refused the handshake over Bluetooth")


class BleTransport(DeviceTransport):
    """One device's GATT provisioning service, connected on demand."""

    def __init__(
        self,
        address: str,
        lookup: BleDeviceLookup,
        *,
        name: str,
        timeout: float = REPLY_TIMEOUT,
        client_class: ClientFactory = BleakClientWithServiceCache,
    ) -> None:
        """``lookup`` returns the current connectable ``BLEDevice`` (None: out of range)."""
        self._address = address
        self._lookup = lookup
        self._name = name
        self._timeout = timeout
        self._client_class = client_class
        self._client: BleakClient | None = None
        self._channel: FrameChannel | None = None
        self._lock = asyncio.Lock()
        #: Read once, at the first connection that could read it.
        self._features: frozenset[str] | None = None

    @property
    def address(self) -> str:
        """The device's Bluetooth address (as Home Assistant's Bluetooth integration has it)."""
        return self._address

    @property
    def connected(self) -> bool:
        """Whether a connection is up now."""
        return self._channel is not None and self._channel.connected

    @property
    def features(self) -> frozenset[str]:
        """What the device's features characteristic names (none yet, or an older device)."""
        return self._features or frozenset()

    async def _read_features(self, client: BleakClient) -> None:
        """Read the features characteristic, unless an earlier connection did."""
        if self._features is not None:
            return
        try:
            value = await client.read_gatt_char(FEATURES_UUID)
        except BleakCharacteristicNotFoundError:
            self._features = frozenset()  # a device from before the characteristic
        except (BleakError, TimeoutError) as err:
            _LOGGER.debug(
                "Reading %s's features failed (read again next time): %s", self._name, err
            )
        else:
            self._features = parse_features(bytes(value)) & BLE_FEATURES

    async def _connect(self) -> FrameChannel:
        if self._channel is not None and self._channel.connected:
            return self._channel
        await self._disconnect()
        device = self._lookup()
        if device is None:
            raise DeviceConnectionError(
                f"{self._name} ({self._address}) is not in Bluetooth range of a connectable "
                "adapter or proxy"
            )
        channel: FrameChannel | None = None

        def dropped(_client: BleakClient) -> None:
            if channel is not None:
                channel.disconnected(f"the Bluetooth link to {self._name} dropped")

        try:
            client = await establish_connection(
                self._client_class, device, self._name, disconnected_callback=dropped
            )
        except BleakOutOfConnectionSlotsError as err:
            raise DeviceConnectionError(
                f"no free Bluetooth connection slot to reach {self._name}: {err}"
            ) from err
        except (BleakError, TimeoutError) as err:
            raise DeviceConnectionError(f"cannot connect to {self._name}: {err}") from err

        async def write(chunk: bytes) -> None:
            await client.write_gatt_char(RX_UUID, chunk, response=True)

        channel = FrameChannel(
            write, payload_size=chunk_payload_size(client.mtu_size), timeout=self._timeout
        )
        self._client, self._channel = client, channel

        def notified(_characteristic: BleakGATTCharacteristic, data: bytearray) -> None:
            channel.notified(bytes(data))

        try:
            await client.start_notify(TX_UUID, notified)
        except (BleakError, TimeoutError) as err:
            await self._disconnect()
            raise DeviceConnectionError(
                f"{self._name} does not offer the IoT Onboard service: {err}"
            ) from err
        await self._read_features(client)
        _LOGGER.debug("Connected to %s over BLE (MTU %s)", self._name, client.mtu_size)
        return channel

    async def _send(self, frame: bytes) -> FrameChannel:
        """Send a whole frame; a drop part-way resends it once over a new connection."""
        for attempt in range(2):
            channel = await self._connect()
            try:
                await channel.send(frame)
            except BleDisconnectedError as err:
                if attempt:
                    raise DeviceConnectionError(str(err)) from err
                _LOGGER.debug("%s; sending the frame again", err)
                continue
            except (BleakError, TimeoutError) as err:
                if channel.connected and self._client is not None and self._client.is_connected:
                    raise DeviceConnectionError(f"write to {self._name} failed: {err}") from err
                channel.disconnected(f"write to {self._name} failed: {err}")
                if attempt:
                    raise DeviceConnectionError(str(err)) from err
                continue
            return channel
        raise DeviceConnectionError("unreachable")  # pragma: no cover - the loop returns

    async def _request(self, frame: bytes) -> bytes:
        async with self._lock:
            channel = await self._send_fresh(frame)
            try:
                return await channel.receive()
            except BleDisconnectedError as err:
                # The request reached the device; its reply did not come back. Resending
                # would be a replay: the caller starts over (a new handshake).
                raise SessionLostError(f"{err}; the reply was lost") from err
            except BleLinkError as err:
                raise DeviceConnectionError(str(err)) from err
            except ProtocolError as err:
                raise DeviceProtocolError(err.code, f"bad chunk from {self._name}: {err}") from err

    async def _send_fresh(self, frame: bytes) -> FrameChannel:
        channel = await self._connect()
        channel.discard_pending()
        return await self._send(frame)

    async def hello(self, frame: bytes) -> bytes:
        """CLIENT_HELLO over RX; DEVICE_HELLO or an ERROR frame back over TX."""
        try:
            reply = await self._request(frame)
        except SessionLostError as err:
            raise DeviceConnectionError(str(err)) from err
        code = error_code(reply)
        if code is not None:
            raise _refusal(code)
        return reply

    async def finish(self, frame: bytes) -> str:
        """CLIENT_FINISH; the device answers only a failure (seen by the first command)."""
        async with self._lock:
            await self._send(frame)
        return BLE_SESSION_TAG

    async def give_up(self, frame: bytes) -> None:
        """The ERROR frame that ends this handshake on the device."""
        async with self._lock:
            await self._send(frame)

    async def exchange(self, sealed: bytes, tag: str) -> bytes:
        """A DATA frame and its answer.

        Any ERROR frame in reply means the device did not run the request and the session
        cannot go on (``no_session``; a failed CLIENT_FINISH; a frame it could not read, whose
        counter is now spent): the caller starts over with a new handshake.
        """
        del tag  # the device keeps one BLE session; the frame's keys name it
        reply = await self._request(sealed)
        code = error_code(reply)
        if code is not None:
            raise SessionLostError(f"{self._name} ended the session over Bluetooth ({code})")
        return reply

    async def release(self) -> None:
        """Disconnect until the next frame (frees an adapter or proxy slot meanwhile)."""
        async with self._lock:
            await self._disconnect()

    async def aclose(self) -> None:
        """Disconnect."""
        async with self._lock:
            await self._disconnect()

    async def _disconnect(self) -> None:
        client, channel = self._client, self._channel
        self._client = self._channel = None
        if channel is not None:
            channel.disconnected("closed by Home Assistant")
        if client is not None:
            try:
                await client.disconnect()
            except (BleakError, TimeoutError) as err:
                _LOGGER.debug("Disconnecting from %s: %s", self._name, err)
