"""DeviceClient against a small aiohttp server that runs the protocol's real DeviceSession.

The server has the device agent's HTTP shape (docs/protocol.md, device_firmware's
provisioning server): handshake frames on /iob/v1/session, encrypted commands on
/iob/v1/frame with X-IOB-Session, public facts on /iob/v1/info. The full agent runs in
test_onboarding_e2e.py; here every refusal and every command is pinned.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from custom_components.iot_onboard.device_client import (
    SESSION_HEADER,
    CredentialRefusedClientError,
    DeviceClient,
    DeviceCommandError,
    DeviceConnectionError,
    DeviceKeyMismatchClientError,
    DeviceProtocolError,
    HandshakeRefusedError,
    SessionLostError,
    SetupCodeRejectedError,
    parse_setup_credential,
)
from custom_components.iot_onboard.iob_protocol import (
    FEATURE_STATUS_WAIT,
    FEATURE_WPS,
    FEATURES_HEADER,
    AckResult,
    CommandResult,
    CommitResult,
    DeviceIdentity,
    DeviceSession,
    DeviceState,
    DiagnosticCode,
    ErrorResponse,
    FrameType,
    InfoResult,
    ManualCode,
    OkResponse,
    OwnerSecret,
    ProtocolError,
    QrPayload,
    Request,
    ScanWifiResult,
    SetClaimRequest,
    SetOwnerSecretRequest,
    SetupCode,
    SetWifiRequest,
    StatusResult,
    WifiNetwork,
    WifiSecurity,
    decode_frame,
    decode_request,
    encode_error_frame,
    encode_response,
)

pytestmark = pytest.mark.usefixtures("socket_enabled")

type Http = aiohttp.ClientSession


@dataclass
class FakeDevice:
    """One device: identity, setup code, and scripted answers."""

    identity: DeviceIdentity = field(default_factory=DeviceIdentity.generate)
    setup_code: SetupCode | None = None
    url: str = ""
    host: str = "127.0.0.1"
    port: int = 0
    refuse: tuple[int, str, dict[str, str]] | None = None
    session: DeviceSession | None = None
    tag: str = ""
    frames: list[bytes] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    answer: Callable[[Request], CommandResult | ErrorResponse] | None = None
    info_answer: tuple[int, Any] | None = None
    frame_status: int | None = None
    tamper: bool = False
    owner_secret: OwnerSecret | None = None
    #: The session-finish reply's ``X-IOB-Features`` (None: an older device, no header).
    features: str | None = None
    #: Awaited before a request is answered (a device that holds a long poll).
    hold: Callable[[Request], Awaitable[None]] | None = None

    def __post_init__(self) -> None:
        self.setup_code = SetupCode.generate(self.identity.device_id)

    @property
    def code(self) -> SetupCode:
        assert self.setup_code is not None
        return self.setup_code

    @property
    def qr(self) -> QrPayload:
        return self.code.qr_payload(self.identity.fingerprint)

    @property
    def manual(self) -> ManualCode:
        return self.code.manual_code()

    async def handle_session(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.frames.append(body)
        if self.refuse is not None:
            status, code, headers = self.refuse
            return web.Response(status=status, body=encode_error_frame(code), headers=headers)
        frame = decode_frame(body)
        if frame.type is FrameType.CLIENT_HELLO:
            self.session = (
                DeviceSession(self.identity, self.code)
                if self.owner_secret is None
                else DeviceSession(self.identity, owner_secret=self.owner_secret.secret)
            )
            try:
                return web.Response(body=self.session.handle_client_hello(body))
            except ProtocolError as err:
                return web.Response(status=400, body=encode_error_frame(err.code))
        if frame.type is FrameType.ERROR:
            return web.Response(status=400, body=encode_error_frame("unexpected_message"))
        assert self.session is not None
        try:
            self.session.handle_client_finish(body)
        except ProtocolError as err:
            return web.Response(status=401, body=encode_error_frame(err.code))
        assert self.session.session_id is not None
        self.tag = self.session.session_id.hex()
        headers = {SESSION_HEADER: self.tag}
        if self.features is not None:
            headers[FEATURES_HEADER] = self.features
        return web.Response(status=204, headers=headers)

    async def handle_frame(self, request: web.Request) -> web.Response:
        if self.frame_status is not None:
            return web.Response(status=self.frame_status, body=encode_error_frame("no_session"))
        if request.headers.get(SESSION_HEADER) != self.tag or self.session is None:
            return web.Response(status=409, body=encode_error_frame("no_session"))
        command = decode_request(self.session.open(await request.read()), allow_insecure_http=True)
        self.requests.append(command)
        if self.hold is not None:
            await self.hold(command)
        assert self.answer is not None
        answer = self.answer(command)
        response = (
            answer
            if isinstance(answer, ErrorResponse)
            else OkResponse(request_id=command.request_id, command=command.command, result=answer)
        )
        sealed = self.session.seal(encode_response(response))
        if self.tamper:
            sealed = sealed[:-1] + bytes([sealed[-1] ^ 1])
        return web.Response(body=sealed)

    async def handle_info(self, _request: web.Request) -> web.Response:
        if self.info_answer is not None:
            status, document = self.info_answer
            return web.json_response(document, status=status)
        return web.json_response(self.info())

    def info(self, **extra: object) -> dict[str, object]:
        """What ``GET /iob/v1/info`` answers (``extra`` added or replaced)."""
        return {
            "device_id": self.identity.device_id,
            "model": "pi-test",
            "firmware_version": "1.0",
            "protocol_version": 1,
            "state": "unclaimed",
            "window": "open",
            **extra,
        }


def default_answer(device: FakeDevice) -> Callable[[Request], CommandResult]:
    def answer(request: Request) -> CommandResult:
        match request.command.value:
            case "info":
                return InfoResult(
                    device_id=device.identity.device_id,
                    model="pi-test",
                    firmware_version="1.0",
                    protocol_version=1,
                    claimed=False,
                )
            case "scan_wifi":
                return ScanWifiResult(
                    networks=(
                        WifiNetwork(ssid=b"HomeNet", rssi=-40, security=WifiSecurity.WPA_PERSONAL),
                    )
                )
            case "commit":
                return CommitResult(timeout_seconds=180)
            case "status":
                return StatusResult(state=DeviceState.COMMITTING)
        return AckResult()

    return answer


def ok_answer(device: FakeDevice) -> Callable[[Request], CommandResult | ErrorResponse]:
    return default_answer(device)


@contextlib.asynccontextmanager
async def serving(
    answer: Callable[[FakeDevice], Callable[[Request], Any]],
) -> AsyncIterator[FakeDevice]:
    """A fake device answering with ``answer(device)``, on a free loopback port (``.port``)."""
    fake = FakeDevice()
    fake.answer = answer(fake)
    app = web.Application()
    app.router.add_post("/iob/v1/session", fake.handle_session)
    app.router.add_post("/iob/v1/frame", fake.handle_frame)
    app.router.add_get("/iob/v1/info", fake.handle_info)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    fake.port = runner.addresses[0][1]
    try:
        yield fake
    finally:
        await runner.cleanup()


@pytest.fixture
async def device() -> AsyncIterator[FakeDevice]:
    async with serving(ok_answer) as fake:
        yield fake


@pytest.fixture
async def http() -> AsyncIterator[Http]:
    async with aiohttp.ClientSession() as session:
        yield session


def client(device: FakeDevice, http: Http, **kwargs: Any) -> DeviceClient:
    return DeviceClient(device.host, device.port, session=http, **kwargs)


async def test_fetch_info(device: FakeDevice, http: Http) -> None:
    info = await client(device, http).fetch_info()
    assert info.device_id == device.identity.device_id
    assert (info.model, info.protocol_version, info.state, info.window) == (
        "pi-test",
        1,
        "unclaimed",
        "open",
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [("Kitchen sensor", "Kitchen sensor"), ("  ", None), (None, None)],
)
async def test_fetch_info_with_the_devices_own_name(
    device: FakeDevice, http: Http, name: str | None, expected: str | None
) -> None:
    """``name`` is optional (a device without one leaves it out); blank counts as none."""
    device.info_answer = (200, device.info() if name is None else device.info(name=name))
    assert (await client(device, http).fetch_info()).name == expected


async def test_fetch_info_with_a_name_that_is_no_text(device: FakeDevice, http: Http) -> None:
    device.info_answer = (200, device.info(name=7))
    with pytest.raises(DeviceProtocolError):
        await client(device, http).fetch_info()


@pytest.mark.parametrize(
    "answer",
    [(404, {"error": "not found"}), (200, {"device_id": 5}), (200, ["x"]), (200, {"model": "m"})],
)
async def test_fetch_info_from_something_else(
    device: FakeDevice, http: Http, answer: tuple[int, Any]
) -> None:
    device.info_answer = answer
    with pytest.raises(DeviceProtocolError) as caught:
        await client(device, http).fetch_info()
    assert caught.value.code == "not_a_device"


async def test_unreachable_device(http: Http) -> None:
    dead = DeviceClient("127.0.0.1", 1, session=http)
    with pytest.raises(DeviceConnectionError):
        await dead.fetch_info()
    fake = FakeDevice()
    with pytest.raises(DeviceConnectionError):
        await dead.connect(fake.qr, device_id=fake.identity.device_id)


async def test_slow_device_times_out(http: Http) -> None:
    async def slow(_request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response()  # pragma: no cover - the client gave up

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", slow)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        sluggish = DeviceClient("127.0.0.1", runner.addresses[0][1], session=http, timeout=0.05)
        with pytest.raises(DeviceConnectionError):
            await sluggish.fetch_info()
        fake = FakeDevice()
        with pytest.raises(DeviceConnectionError):
            await sluggish.connect(fake.qr, device_id=fake.identity.device_id)
    finally:
        await runner.cleanup()


async def test_qr_session_and_every_command(device: FakeDevice, http: Http) -> None:
    link = await client(device, http).connect(device.qr, device_id=device.identity.device_id)
    assert link.device_public_key == device.identity.public_key
    assert (link.host, link.port, link.device_id) == (
        device.host,
        device.port,
        device.identity.device_id,
    )
    assert (await link.info()).model == "pi-test"
    networks = await link.scan_wifi()
    assert networks[0].ssid == b"HomeNet"
    await link.set_wifi(b"HomeNet", "correct horse battery", hidden=False)
    await link.set_claim("http://127.0.0.1:9/", "t" * 43, allow_insecure_http=True)
    assert await link.commit() == 180
    assert (await link.status()).state is DeviceState.COMMITTING
    await link.identify()
    await link.factory_reset()
    sent = device.requests
    assert [r.command.value for r in sent] == [
        "info",
        "scan_wifi",
        "set_wifi",
        "set_claim",
        "commit",
        "status",
        "identify",
        "factory_reset",
    ]
    assert [r.request_id for r in sent] == list(range(1, 9))
    wifi = sent[2]
    assert isinstance(wifi, SetWifiRequest)
    assert wifi.passphrase == "correct horse battery"  # noqa: S105 - the test network
    claim = sent[3]
    assert isinstance(claim, SetClaimRequest)
    assert claim.claim_token == "t" * 43
    # Secrets only ever travelled encrypted: neither appears in any raw frame or body.
    assert all(b"correct horse" not in frame for frame in device.frames)
    link.close()
    assert not link.usable
    with pytest.raises(SessionLostError):
        await link.info()


async def test_owner_session_of_a_claimed_device(device: FakeDevice, http: Http) -> None:
    """Claimed: the owner secret sent with set_claim opens the session, checked like a code."""
    owner = OwnerSecret.generate()
    link = await client(device, http).connect(device.qr, device_id=device.identity.device_id)
    await link.set_claim(
        "http://127.0.0.1:9/", "t" * 43, owner_secret=owner, allow_insecure_http=True
    )
    claim = device.requests[-1]
    assert isinstance(claim, SetClaimRequest)
    assert claim.owner_secret == owner.secret
    device.owner_secret = owner  # the device committed the claim
    device_id = device.identity.device_id
    with pytest.raises(DeviceProtocolError) as caught:
        await client(device, http).connect(owner, device_id=device_id)
    assert caught.value.code == "registry_key_missing"
    link = await client(device, http).connect(
        owner, device_id=device_id, device_public_key=device.identity.public_key
    )
    rotated = OwnerSecret.generate()
    await link.set_owner_secret(rotated)
    request = device.requests[-1]
    assert isinstance(request, SetOwnerSecretRequest)
    assert request.owner_secret == rotated.secret
    with pytest.raises(SetupCodeRejectedError):  # another household's secret
        await client(device, http).connect(
            OwnerSecret.generate(),
            device_id=device_id,
            device_public_key=device.identity.public_key,
        )


@pytest.mark.parametrize(
    "code", ["owner_session_required", "setup_code_required", "no_owner_secret"]
)
async def test_credential_refused_for_the_device_state(
    device: FakeDevice, http: Http, code: str
) -> None:
    device.refuse = (403, code, {})
    with pytest.raises(CredentialRefusedClientError) as caught:
        await client(device, http).connect(device.qr, device_id=device.identity.device_id)
    assert caught.value.code == code


async def test_manual_code_needs_and_checks_the_registry_key(
    device: FakeDevice, http: Http
) -> None:
    device_id = device.identity.device_id
    with pytest.raises(DeviceProtocolError) as caught:
        await client(device, http).connect(device.manual, device_id=device_id)
    assert caught.value.code == "registry_key_missing"
    with pytest.raises(DeviceProtocolError) as caught:
        await client(device, http).connect(
            device.manual, device_id=device_id, device_public_key=b"not a key"
        )
    assert caught.value.code == "invalid_key"
    assert device.frames == []
    link = await client(device, http).connect(
        device.manual, device_id=device_id, device_public_key=device.identity.public_key
    )
    assert (await link.info()).device_id == device_id


async def test_evil_twin_gets_nothing_but_the_hello(device: FakeDevice, http: Http) -> None:
    """A device with another key answering for this id: the client stops before finishing."""
    genuine = FakeDevice()
    twin_key = device.identity.public_key
    with pytest.raises(DeviceKeyMismatchClientError):
        await client(device, http).connect(
            device.manual,
            device_id=device.identity.device_id,
            device_public_key=genuine.identity.public_key,
        )
    assert len(device.frames) == 1
    assert decode_frame(device.frames[0]).type is FrameType.CLIENT_HELLO
    assert twin_key != genuine.identity.public_key


async def test_wrong_code_is_reported_and_the_device_told(device: FakeDevice, http: Http) -> None:
    other = FakeDevice(identity=device.identity)  # same device, another code
    with pytest.raises(SetupCodeRejectedError):
        await client(device, http).connect(
            other.manual,
            device_id=device.identity.device_id,
            device_public_key=device.identity.public_key,
        )
    assert decode_frame(device.frames[-1]).type is FrameType.ERROR


async def test_qr_of_another_device(device: FakeDevice, http: Http) -> None:
    with pytest.raises(DeviceProtocolError) as caught:
        await client(device, http).connect(FakeDevice().qr, device_id=device.identity.device_id)
    assert caught.value.code == "device_id_mismatch"


@pytest.mark.parametrize(
    ("status", "code", "headers", "retry"),
    [
        (403, "window_closed", {}, None),
        (429, "locked_out", {}, None),
        (429, "busy", {"Retry-After": "60"}, 60),
    ],
)
async def test_refused_handshakes(  # noqa: PLR0917 - parametrized
    device: FakeDevice,
    http: Http,
    status: int,
    code: str,
    headers: dict[str, str],
    retry: int | None,
) -> None:
    device.refuse = (status, code, headers)
    with pytest.raises(HandshakeRefusedError) as caught:
        await client(device, http).connect(device.qr, device_id=device.identity.device_id)
    assert (caught.value.code, caught.value.retry_after) == (code, retry)


async def test_other_handshake_failures(device: FakeDevice, http: Http) -> None:
    device.refuse = (400, "malformed_handshake", {})
    with pytest.raises(DeviceProtocolError) as caught:
        await client(device, http).connect(device.qr, device_id=device.identity.device_id)
    assert caught.value.code == "malformed_handshake"
    device.refuse = (401, "wrong_setup_code", {})
    with pytest.raises(SetupCodeRejectedError):
        await client(device, http).connect(device.qr, device_id=device.identity.device_id)


async def test_something_else_answering(http: Http) -> None:
    async def teapot(_request: web.Request) -> web.Response:
        return web.Response(status=418, text="I am not a device")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", teapot)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    fake = FakeDevice()
    try:
        with pytest.raises(DeviceProtocolError) as caught:
            await DeviceClient("127.0.0.1", runner.addresses[0][1], session=http).connect(
                fake.qr, device_id=fake.identity.device_id
            )
        assert caught.value.code == "http_418"
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(
    ("code", "expected"),
    [("handshake_timeout", DeviceProtocolError), ("wrong_setup_code", SetupCodeRejectedError)],
)
async def test_device_refusing_the_finish(
    device: FakeDevice, http: Http, code: str, expected: type[Exception]
) -> None:
    original = device.handle_session

    async def refuse_finish(request: web.Request) -> web.Response:
        response = await original(request)
        if response.status == 204:
            return web.Response(status=401, body=encode_error_frame(code))
        return response

    device.handle_session = refuse_finish  # type: ignore[method-assign]
    app = web.Application()
    app.router.add_post("/iob/v1/session", device.handle_session)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        with pytest.raises(expected):
            await DeviceClient("127.0.0.1", runner.addresses[0][1], session=http).connect(
                device.qr, device_id=device.identity.device_id
            )
    finally:
        await runner.cleanup()


async def test_command_errors_carry_the_diagnostic(device: FakeDevice, http: Http) -> None:
    def failing(request: Request) -> ErrorResponse:
        return ErrorResponse(
            request_id=request.request_id,
            command=request.command,
            error="failed",
            diagnostic=DiagnosticCode.WIFI_AUTH_FAILED,
            message="password rejected",
        )

    link = await client(device, http).connect(device.qr, device_id=device.identity.device_id)
    device.answer = failing
    with pytest.raises(DeviceCommandError) as caught:
        await link.commit()
    assert caught.value.diagnostic is DiagnosticCode.WIFI_AUTH_FAILED
    assert (caught.value.error, caught.value.message) == ("failed", "password rejected")
    assert link.usable  # a refused command leaves the session usable


async def test_answers_to_other_requests_are_refused(device: FakeDevice, http: Http) -> None:
    link = await client(device, http).connect(device.qr, device_id=device.identity.device_id)
    device.answer = lambda _request: StatusResult(state=DeviceState.COMMITTED)
    with pytest.raises(DeviceProtocolError):  # a status result for an info request
        await link.info()

    def wrong_id(request: Request) -> ErrorResponse:
        return ErrorResponse(request_id=request.request_id + 1, command=None, error="failed")

    device.answer = wrong_id
    with pytest.raises(DeviceProtocolError) as caught:
        await link.status()
    assert caught.value.code == "unexpected_message"


async def test_invalid_values_never_leave(device: FakeDevice, http: Http) -> None:
    link = await client(device, http).connect(device.qr, device_id=device.identity.device_id)
    with pytest.raises(DeviceProtocolError) as caught:
        await link.set_wifi(b"HomeNet", "short")
    assert caught.value.code == "invalid_passphrase"
    with pytest.raises(DeviceProtocolError) as caught:
        await link.set_claim("http://127.0.0.1/", "t" * 43)
    assert caught.value.code == "insecure_url"
    assert device.requests == []


async def test_a_device_that_names_wps_joins_by_its_push_button(
    device: FakeDevice, http: Http
) -> None:
    device.features = f"{FEATURE_STATUS_WAIT}, {FEATURE_WPS}"
    link = await client(device, http).connect(device.qr, device_id=device.identity.device_id)
    assert link.supports_wps
    await link.set_wifi(b"HomeNet", None, wps=True)
    (sent,) = device.requests
    assert isinstance(sent, SetWifiRequest)
    assert (sent.ssid, sent.passphrase, sent.hidden, sent.wps) == (b"HomeNet", None, False, True)
    # A WPS join takes no password and needs a network that shows its name: never sent.
    for passphrase, hidden in (("correct horse battery", False), (None, True)):
        with pytest.raises(DeviceProtocolError):
            await link.set_wifi(b"HomeNet", passphrase, hidden=hidden, wps=True)
    assert len(device.requests) == 1
    await link.set_wifi(b"HomeNet", "correct horse battery")
    plain = device.requests[-1]
    assert isinstance(plain, SetWifiRequest)
    assert not plain.wps


@pytest.mark.parametrize("features", [None, FEATURE_STATUS_WAIT, "wps-2"])
async def test_wps_is_refused_here_for_a_device_that_does_not_name_it(
    device: FakeDevice, http: Http, features: str | None
) -> None:
    """An older device would reject the unknown field: nothing leaves, the session stays."""
    device.features = features
    link = await client(device, http).connect(device.qr, device_id=device.identity.device_id)
    assert not link.supports_wps
    with pytest.raises(DeviceProtocolError) as caught:
        await link.set_wifi(b"HomeNet", None, wps=True)
    assert caught.value.code == "wps_unsupported"
    assert device.requests == []
    assert link.usable
    await link.set_wifi(b"HomeNet", "correct horse battery")
    assert [request.command.value for request in device.requests] == ["set_wifi"]


@pytest.mark.parametrize("status", [409, 401])
async def test_lost_session(device: FakeDevice, http: Http, status: int) -> None:
    link = await client(device, http).connect(device.qr, device_id=device.identity.device_id)
    device.frame_status = status
    with pytest.raises(SessionLostError):
        await link.info()
    assert not link.usable


async def test_unexpected_frame_status(device: FakeDevice, http: Http) -> None:
    link = await client(device, http).connect(device.qr, device_id=device.identity.device_id)
    device.frame_status = 400
    with pytest.raises(DeviceProtocolError):
        await link.info()
    assert link.usable


async def test_tampered_answer_ends_the_session(device: FakeDevice, http: Http) -> None:
    link = await client(device, http).connect(device.qr, device_id=device.identity.device_id)
    device.tamper = True
    with pytest.raises(DeviceProtocolError) as caught:
        await link.info()
    assert caught.value.code == "frame_authentication"
    assert not link.usable


def test_parse_setup_credential() -> None:
    fake = FakeDevice()
    assert parse_setup_credential("  " + fake.qr.format() + "\n") == fake.qr
    assert parse_setup_credential(fake.manual.format()) == fake.manual
    with pytest.raises(ProtocolError):
        parse_setup_credential("iob1:lower")
    with pytest.raises(ProtocolError):
        parse_setup_credential("12345")
