"""Client of a device's provisioning session, over the LAN or Bluetooth (no Home Assistant import).

Drives the protocol's sans-I/O :class:`ClientSession` over a :class:`DeviceTransport`: the
device's HTTP endpoints here (``device_firmware/provisioning/server.py``: ``POST
/iob/v1/session`` for the handshake, one frame per body, ``POST /iob/v1/frame`` with the
``X-IOB-Session`` header for each encrypted command, ``GET /iob/v1/info`` for the public facts
also found in the zeroconf TXT record), or its GATT service (``ble_client.py``). The handshake
(:func:`open_link`) and the commands (:class:`DeviceLink`) are the same code for both.

The device key is checked inside the handshake, against the QR code's fingerprint or the
registry key, before any secret leaves Home Assistant; Wi-Fi credentials and the claim token
only ever travel in encrypted DATA frames. SPAKE2 in pure Python costs a few milliseconds of
CPU per message, so those steps run in the default executor to keep the event loop free.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp

from .account_client import read_limited
from .iob_protocol import (
    FEATURE_CLAIM_RELAY,
    FEATURE_STATUS_WAIT,
    FEATURE_WPS,
    FEATURES_HEADER,
    AckResult,
    ClaimAnswerRequest,
    ClientSession,
    CommandResult,
    CommitRequest,
    CommitResult,
    DeviceKeyMismatchError,
    DiagnosticCode,
    ErrorResponse,
    FactoryResetRequest,
    FrameType,
    IdentifyRequest,
    InfoRequest,
    InfoResult,
    MalformedMessageError,
    ManualCode,
    OwnerSecret,
    ProtocolError,
    QrPayload,
    Request,
    ScanWifiRequest,
    ScanWifiResult,
    SetClaimRequest,
    SetOwnerSecretRequest,
    SetupCredential,
    SetWifiRequest,
    StatusRequest,
    StatusResult,
    WifiNetwork,
    WrongSetupCodeError,
    decode_error_body,
    decode_frame,
    decode_response,
    encode_error_frame,
    encode_request,
    load_json,
)

DEFAULT_TIMEOUT: Final = 15.0
SESSION_HEADER: Final = "X-IOB-Session"
FRAME_CONTENT_TYPE: Final = "application/octet-stream"
SESSION_PATH: Final = "/iob/v1/session"
FRAME_PATH: Final = "/iob/v1/frame"
INFO_PATH: Final = "/iob/v1/info"
#: Largest body read from a device (one protocol frame, or the small info document).
MAX_BODY: Final = 16 * 1024
_HTTP_OK: Final = 200
_HTTP_NO_CONTENT: Final = 204
_HTTP_UNAUTHORIZED: Final = 401
_HTTP_CONFLICT: Final = 409
#: Refusals of a new handshake that say nothing about the code (see docs/protocol.md §7).
REFUSAL_CODES: Final = frozenset({"window_closed", "locked_out", "busy"})
#: Refusals of the credential's kind for the device's state (claimed or not), before any secret.
CREDENTIAL_REFUSAL_CODES: Final = frozenset(
    {"owner_session_required", "setup_code_required", "no_owner_secret"}
)

type Credential = SetupCredential | OwnerSecret


# --- errors -----------------------------------------------------------------------------------


class DeviceClientError(Exception):
    """Base of every error of this client."""

    #: The onboarding diagnostic this error means for a user, where one fits.
    diagnostic: DiagnosticCode | None = None


class DeviceConnectionError(DeviceClientError):
    """The device did not answer (wrong address, powered off, other network, timeout)."""


class DeviceProtocolError(DeviceClientError):
    """The device's answer broke the protocol (or a handshake step failed); ``code`` says how."""

    def __init__(self, code: str, message: str) -> None:
        """Keep the stable code (a protocol error code, or an HTTP-level one)."""
        super().__init__(f"{code}: {message}")
        self.code = code


class HandshakeRefusedError(DeviceClientError):
    """The device refused a new handshake: ``window_closed``, ``locked_out`` or ``busy``."""

    def __init__(self, code: str, retry_after: int | None = None) -> None:
        """``retry_after`` seconds when the device said (``busy``)."""
        super().__init__(f"device refused the handshake: {code}")
        self.code = code
        self.retry_after = retry_after


class CredentialRefusedClientError(DeviceClientError):
    """The device does not take this kind of credential now; ``code`` says which case.

    ``owner_session_required``: it is claimed (only its owner's Home Assistant may connect);
    ``setup_code_required``: it has no owner any more (reset or released: use the label);
    ``no_owner_secret``: it was claimed without an owner secret (only a factory reset helps).
    """

    def __init__(self, code: str) -> None:
        """Keep the device's code."""
        super().__init__(f"device refused the credential: {code}")
        self.code = code


class SetupCodeRejectedError(DeviceClientError):
    """Key confirmation failed: the setup code does not belong to this device (or a typo)."""


class DeviceKeyMismatchClientError(DeviceClientError):
    """The device's key does not match the QR code or the registry: possibly an evil twin."""


class SessionLostError(DeviceClientError):
    """The device no longer knows the session (restart, idle timeout, or a failed frame)."""


class DeviceCommandError(DeviceClientError):
    """The device answered a command with an error (``error``; ``diagnostic`` if it has one)."""

    def __init__(self, error: str, diagnostic: DiagnosticCode | None, message: str | None) -> None:
        """Keep the device's error code, diagnostic code and message."""
        super().__init__(f"{error}: {message or (diagnostic.message if diagnostic else '')}")
        self.error = error
        self.diagnostic = diagnostic
        self.message = message


# --- models -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceAdvertisement:
    """What ``GET /iob/v1/info`` (and the zeroconf TXT record) says, unauthenticated."""

    device_id: str
    model: str
    firmware_version: str
    protocol_version: int
    state: str
    window: str
    #: The device's own name (its ``name`` setting), when it has one.
    name: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class _HttpReply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    def error_code(self) -> str | None:
        """The code of an ERROR frame body, if it is one."""
        try:
            frame = decode_frame(self.body)
            return decode_error_body(frame.body) if frame.type is FrameType.ERROR else None
        except ProtocolError:
            return None


# --- transports -------------------------------------------------------------------------------


class DeviceTransport(abc.ABC):
    """How protocol frames reach one device; raises this module's errors, nothing else."""

    @property
    def host(self) -> str:
        """The device's LAN address ("" when it is reached otherwise)."""
        return ""

    @property
    def port(self) -> int:
        """The LAN provisioning server's port (0 when it is reached otherwise)."""
        return 0

    @property
    def features(self) -> frozenset[str]:
        """What the device said it supports at the last handshake (none: version 1 only)."""
        return frozenset()

    @abc.abstractmethod
    async def hello(self, frame: bytes) -> bytes:
        """Send CLIENT_HELLO; the DEVICE_HELLO frame, or the refusal as an error."""

    @abc.abstractmethod
    async def finish(self, frame: bytes) -> str:
        """Send CLIENT_FINISH; the tag naming the session (a transport without one: "")."""

    @abc.abstractmethod
    async def give_up(self, frame: bytes) -> None:
        """Send the ERROR frame that ends a handshake the client refuses (best effort)."""

    @abc.abstractmethod
    async def exchange(self, sealed: bytes, tag: str) -> bytes:
        """Send an encrypted request; the encrypted response frame."""

    async def release(self) -> None:  # noqa: B027 - optional: nothing to let go by default
        """Let go of the connection while the user fills in a form (the session stays)."""

    async def aclose(self) -> None:  # noqa: B027 - optional: nothing to close by default
        """Close the connection for good."""


async def open_link(
    transport: DeviceTransport,
    credential: Credential,
    *,
    device_id: str,
    device_public_key: bytes | None = None,
) -> DeviceLink:
    """Run the handshake over ``transport`` and return the established encrypted link.

    With a QR payload the key is checked against its fingerprint; with a manual code
    ``device_public_key`` (from the registry, via the account service) is required, and
    with an :class:`OwnerSecret` (a device this Home Assistant claimed) the key the device
    proved at claim time.
    """
    client = _client_session(credential, device_id, device_public_key)
    try:
        tag = await _handshake(transport, client)
    except BaseException:
        await transport.aclose()  # a failed handshake leaves no connection behind
        raise
    return DeviceLink(transport, client, device_id=device_id, session_tag=tag)


async def _handshake(transport: DeviceTransport, client: ClientSession) -> str:
    hello = await _offload(client.start)
    reply = await transport.hello(hello)
    try:
        finish = await _offload(lambda: client.handle_device_hello(reply))
    except DeviceKeyMismatchError as err:
        raise DeviceKeyMismatchClientError(str(err)) from err
    except WrongSetupCodeError as err:
        # Tell the device at once, so it frees the one handshake slot (docs/protocol.md §5).
        with contextlib.suppress(DeviceClientError):
            await transport.give_up(encode_error_frame(WrongSetupCodeError.code))
        raise SetupCodeRejectedError(str(err)) from err
    except ProtocolError as err:
        raise DeviceProtocolError(err.code, str(err)) from err
    return await transport.finish(finish)


# --- client -----------------------------------------------------------------------------------


class DeviceClient(DeviceTransport):
    """Reaches one device's LAN provisioning server at ``host``:``port``."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        session: aiohttp.ClientSession,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        """``session`` is shared (in Home Assistant: ``async_get_clientsession``)."""
        self._host = host
        self._port = port
        self._session = session
        self._timeout = timeout
        self._features: frozenset[str] = frozenset()
        literal = f"[{host}]" if ":" in host else host
        self._base_url = f"http://{literal}:{port}"

    @property
    def host(self) -> str:
        """The device's address."""
        return self._host

    @property
    def port(self) -> int:
        """The provisioning server's port."""
        return self._port

    @property
    def features(self) -> frozenset[str]:
        """The session-finish reply's ``X-IOB-Features`` (an older device sends none)."""
        return self._features

    async def _post(
        self, path: str, body: bytes, headers: dict[str, str] | None = None
    ) -> _HttpReply:
        url = self._base_url + path
        try:
            async with (
                asyncio.timeout(self._timeout),
                self._session.post(
                    url,
                    data=body,
                    headers={"Content-Type": FRAME_CONTENT_TYPE, **(headers or {})},
                    allow_redirects=False,
                ) as response,
            ):
                data = await read_limited(response, MAX_BODY)
                return _HttpReply(status=response.status, body=data, headers=dict(response.headers))
        except TimeoutError as err:
            raise DeviceConnectionError(f"{url}: no answer within {self._timeout:g} s") from err
        except (aiohttp.ClientError, OSError) as err:
            raise DeviceConnectionError(f"{url}: {err}") from err

    async def fetch_info(self) -> DeviceAdvertisement:
        """The device's public facts (to learn its id when it was not discovered)."""
        url = self._base_url + INFO_PATH
        try:
            async with (
                asyncio.timeout(self._timeout),
                self._session.get(url, allow_redirects=False) as response,
            ):
                raw = await read_limited(response, MAX_BODY)
                status = response.status
        except TimeoutError as err:
            raise DeviceConnectionError(f"{url}: no answer within {self._timeout:g} s") from err
        except (aiohttp.ClientError, OSError) as err:
            raise DeviceConnectionError(f"{url}: {err}") from err
        if status != _HTTP_OK or len(raw) > MAX_BODY:
            raise DeviceProtocolError("not_a_device", f"{url}: HTTP {status}")
        try:
            document: Any = load_json(raw, max_bytes=MAX_BODY)
            advertisement = DeviceAdvertisement(
                device_id=_string(document, "device_id"),
                model=_string(document, "model"),
                firmware_version=_string(document, "firmware_version"),
                protocol_version=_integer(document, "protocol_version"),
                state=_string(document, "state"),
                window=_string(document, "window"),
                name=_string(document, "name").strip() or None if "name" in document else None,
            )
        except (MalformedMessageError, ValueError, TypeError, KeyError) as err:
            raise DeviceProtocolError("not_a_device", f"{url}: unexpected answer") from err
        return advertisement

    async def connect(
        self,
        credential: Credential,
        *,
        device_id: str,
        device_public_key: bytes | None = None,
    ) -> DeviceLink:
        """Run the handshake (:func:`open_link`) and return the established encrypted link."""
        return await open_link(
            self, credential, device_id=device_id, device_public_key=device_public_key
        )

    async def hello(self, frame: bytes) -> bytes:
        """``POST /iob/v1/session`` with CLIENT_HELLO; HTTP 200 carries DEVICE_HELLO."""
        reply = await self._post(SESSION_PATH, frame)
        if reply.status != _HTTP_OK:
            raise _handshake_refusal(reply)
        return reply.body

    async def give_up(self, frame: bytes) -> None:
        """The ERROR frame goes where the handshake did."""
        await self._post(SESSION_PATH, frame)

    async def finish(self, frame: bytes) -> str:
        """HTTP 204 with the session header: established."""
        done = await self._post(SESSION_PATH, frame)
        tag = done.headers.get(SESSION_HEADER)
        if done.status != _HTTP_NO_CONTENT or not tag:
            code = done.error_code()
            if code == WrongSetupCodeError.code:
                raise SetupCodeRejectedError("the device refused the setup code")
            raise DeviceProtocolError(code or f"http_{done.status}", "handshake not finished")
        named = done.headers.get(FEATURES_HEADER, "").split(",")
        self._features = frozenset(feature.strip() for feature in named) - {""}
        return tag

    async def exchange(self, sealed: bytes, tag: str) -> bytes:
        """``POST /iob/v1/frame``: 409/401 mean the device no longer has this session."""
        reply = await self._post(FRAME_PATH, sealed, {SESSION_HEADER: tag})
        if reply.status in {_HTTP_CONFLICT, _HTTP_UNAUTHORIZED}:
            raise SessionLostError(reply.error_code() or f"http_{reply.status}")
        if reply.status != _HTTP_OK:
            raise DeviceProtocolError(
                reply.error_code() or f"http_{reply.status}", "command not delivered"
            )
        return reply.body


def _client_session(
    credential: Credential, device_id: str, device_public_key: bytes | None
) -> ClientSession:
    """The protocol client for ``credential``, always with a key to check the device against."""
    if isinstance(credential, QrPayload) and credential.device_id != device_id:
        raise DeviceProtocolError("device_id_mismatch", "the QR code belongs to another device")
    try:
        if isinstance(credential, QrPayload):
            return ClientSession.for_qr(credential)
        if device_public_key is None:
            raise DeviceProtocolError("registry_key_missing", "this credential needs the key")
        if isinstance(credential, OwnerSecret):
            return ClientSession.for_owner(
                device_id=device_id,
                device_public_key=device_public_key,
                owner_secret=credential.secret,
            )
        return ClientSession.for_manual_code(
            credential, device_id=device_id, device_public_key=device_public_key
        )
    except ProtocolError as err:
        raise DeviceProtocolError(err.code, str(err)) from err


def _string(document: Any, name: str) -> str:
    value = document[name]
    if not isinstance(value, str):
        raise TypeError(name)
    return value


def _integer(document: Any, name: str) -> int:
    value = document[name]
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(name)
    return value


async def _offload[T](work: Callable[[], T]) -> T:
    """Run a CPU-bound protocol step (SPAKE2, signature checks) off the event loop."""
    return await asyncio.get_running_loop().run_in_executor(None, work)


def _handshake_refusal(reply: _HttpReply) -> DeviceClientError:
    code = reply.error_code()
    if code in REFUSAL_CODES:
        retry = reply.headers.get("Retry-After", "")
        return HandshakeRefusedError(code, int(retry) if retry.isdigit() else None)
    if code in CREDENTIAL_REFUSAL_CODES:
        return CredentialRefusedClientError(code)
    if code == WrongSetupCodeError.code:
        return SetupCodeRejectedError("the device refused the setup code")
    if code is None:
        return DeviceProtocolError(f"http_{reply.status}", "not an IoT Onboard device")
    return DeviceProtocolError(code, f"device refused the handshake (HTTP {reply.status})")


class DeviceLink:
    """An established, encrypted session with one device; one command at a time."""

    def __init__(
        self,
        transport: DeviceTransport,
        session: ClientSession,
        *,
        device_id: str,
        session_tag: str,
    ) -> None:
        """Created by :func:`open_link`."""
        self._transport = transport
        self._session = session
        self._device_id = device_id
        self._tag = session_tag
        self._ids = itertools.count(1)
        self._lock = asyncio.Lock()
        self._lost = False

    @property
    def device_id(self) -> str:
        """The device this link was established with."""
        return self._device_id

    @property
    def device_public_key(self) -> bytes:
        """The key the device proved in the handshake (checked against QR or registry)."""
        key = self._session.device_public_key
        if key is None:  # pragma: no cover - set before a link exists
            raise SessionLostError("no verified key")
        return key

    @property
    def host(self) -> str:
        """The device's LAN address ("" over Bluetooth)."""
        return self._transport.host

    @property
    def port(self) -> int:
        """The LAN provisioning server's port (0 over Bluetooth)."""
        return self._transport.port

    @property
    def waits_for_status(self) -> bool:
        """Whether :meth:`status` can wait for the commit's end (a long poll)."""
        return FEATURE_STATUS_WAIT in self._transport.features

    @property
    def relays_claims(self) -> bool:
        """Whether the device can hand its confirmation to HA when the service is out of reach."""
        return FEATURE_CLAIM_RELAY in self._transport.features

    @property
    def supports_wps(self) -> bool:
        """Whether :meth:`set_wifi` can join by the router's WPS push button (``wps``).

        Named by a newer device: over the LAN in a header, over Bluetooth in its features
        characteristic.
        """
        return FEATURE_WPS in self._transport.features

    @property
    def usable(self) -> bool:
        """False once the session was lost or closed (connect again)."""
        return not self._lost

    def close(self) -> None:
        """Forget the session keys (:meth:`aclose` also ends the connection)."""
        self._lost = True
        self._session.close()

    async def release(self) -> None:
        """Let go of the connection until the next command (a BLE link is freed meanwhile)."""
        await self._transport.release()

    async def aclose(self) -> None:
        """Forget the session keys and close the connection (always disconnects BLE)."""
        self.close()
        await self._transport.aclose()

    async def _call[T](self, request_factory: Callable[[int], Request], result: type[T]) -> T:
        async with self._lock:
            if self._lost:
                raise SessionLostError("the session is closed; connect again")
            request = request_factory(next(self._ids))
            try:
                sealed = self._session.seal(encode_request(request))
            except ProtocolError as err:
                self._lost = True
                raise SessionLostError(str(err)) from err
            try:
                reply = await self._transport.exchange(sealed, self._tag)
            except (SessionLostError, DeviceConnectionError):
                # The request used up a counter the device may never have seen: the next
                # request would be refused as out of order, so start over (connect again).
                self._lost = True
                raise
            try:
                response = decode_response(self._session.open(reply))
            except ProtocolError as err:
                self._lost = True
                raise DeviceProtocolError(err.code, str(err)) from err
        if response.request_id != request.request_id or response.command is not request.command:
            raise DeviceProtocolError("unexpected_message", "answer to another request")
        if isinstance(response, ErrorResponse):
            raise DeviceCommandError(response.error, response.diagnostic, response.message)
        answer: CommandResult = response.result
        if not isinstance(answer, result):
            raise DeviceProtocolError("unexpected_message", "unexpected result type")
        return answer

    async def info(self) -> InfoResult:
        """Who the device is, and whether it already has an owner."""
        return await self._call(lambda rid: InfoRequest(request_id=rid), InfoResult)

    async def scan_wifi(self) -> tuple[WifiNetwork, ...]:
        """Networks the device sees, in its order (strongest first)."""
        result = await self._call(lambda rid: ScanWifiRequest(request_id=rid), ScanWifiResult)
        return result.networks

    async def set_wifi(
        self, ssid: bytes, passphrase: str | None, *, hidden: bool = False, wps: bool = False
    ) -> None:
        """The network to join at the next commit (``passphrase`` None: an open network).

        ``wps``: a secured network whose key the device asks the router for by WPS push
        button (no passphrase, not hidden). Only for a device that :attr:`supports_wps`: an
        older one rejects the unknown field, so it is refused here before anything is sent.
        """
        if wps and not self.supports_wps:
            raise DeviceProtocolError(
                "wps_unsupported", "the device does not offer a WPS join (it names no 'wps')"
            )
        try:
            await self._call(
                lambda rid: SetWifiRequest(
                    request_id=rid, ssid=ssid, passphrase=passphrase, hidden=hidden, wps=wps
                ),
                AckResult,
            )
        except ProtocolError as err:
            raise DeviceProtocolError(err.code, str(err)) from err

    async def set_claim(
        self,
        service_url: str,
        claim_token: str,
        *,
        broker_pin: bytes | None = None,
        broker_host: str | None = None,
        broker_port: int | None = None,
        owner_secret: OwnerSecret | None = None,
        allow_insecure_http: bool = False,
        hub_relay: bool = False,
    ) -> None:
        """Where to confirm the claim, with which token, and the owner secret (all encrypted).

        The device refuses to commit a claim without an owner secret: it becomes the only
        credential that opens a session with the claimed device. ``hub_relay``: HA relays the
        confirmation if the device cannot reach the service (sent only if it
        :attr:`relays_claims`).
        """
        try:
            await self._call(
                lambda rid: SetClaimRequest(
                    request_id=rid,
                    service_url=service_url,
                    claim_token=claim_token,
                    broker_pin=broker_pin,
                    broker_host=broker_host,
                    broker_port=broker_port,
                    owner_secret=None if owner_secret is None else owner_secret.secret,
                    hub_relay=hub_relay and self.relays_claims,
                    allow_insecure_http=allow_insecure_http,
                ),
                AckResult,
            )
        except ProtocolError as err:
            raise DeviceProtocolError(err.code, str(err)) from err

    async def set_owner_secret(self, owner_secret: OwnerSecret) -> None:
        """Replace the owner secret (owner sessions only: rotation, or before a transfer)."""
        await self._call(
            lambda rid: SetOwnerSecretRequest(request_id=rid, owner_secret=owner_secret.secret),
            AckResult,
        )

    async def commit(self) -> int:
        """Start the fail-safe commit; returns its timer in seconds (outcome via :meth:`status`)."""
        result = await self._call(lambda rid: CommitRequest(request_id=rid), CommitResult)
        return result.timeout_seconds

    async def status(self, *, wait: int = 0) -> StatusResult:
        """State (provisioning, committing, committed) and the last diagnostic code.

        ``wait`` seconds: while committing, the device answers when the commit ends or after
        ``wait`` (asked only of a device that :attr:`waits_for_status`; others answer at once).
        """
        wait = wait if self.waits_for_status else 0
        return await self._call(lambda rid: StatusRequest(request_id=rid, wait=wait), StatusResult)

    async def claim_answer(
        self, *, answer: dict[str, Any] | None = None, diagnostic: DiagnosticCode | None = None
    ) -> None:
        """The account service's answer to the confirmation HA relayed (or why there is none)."""
        await self._call(
            lambda rid: ClaimAnswerRequest(request_id=rid, answer=answer, diagnostic=diagnostic),
            AckResult,
        )

    async def identify(self) -> None:
        """Blink or beep."""
        await self._call(lambda rid: IdentifyRequest(request_id=rid), AckResult)

    async def factory_reset(self) -> None:
        """Wipe Wi-Fi, owner and MQTT credentials on the device."""
        await self._call(lambda rid: FactoryResetRequest(request_id=rid), AckResult)


def parse_setup_credential(text: str) -> SetupCredential:
    """A scanned QR payload (``IOB1:…``) or a typed manual code; raises ``ProtocolError``."""
    stripped = text.strip()
    if stripped.upper().startswith("IOB1:"):
        return QrPayload.parse(stripped)
    return ManualCode.parse(stripped)
