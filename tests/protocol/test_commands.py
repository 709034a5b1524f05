"""Command and result messages: strict schema, safe display."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from iob_protocol import (
    MAX_STATUS_WAIT,
    AckResult,
    ClaimAnswerRequest,
    CommandType,
    CommitRequest,
    CommitResult,
    DeviceState,
    DiagnosticCode,
    ErrorResponse,
    FieldTypeError,
    InfoRequest,
    InfoResult,
    InsecureUrlError,
    InvalidFieldError,
    InvalidPassphraseError,
    InvalidSsidError,
    InvalidUrlError,
    MalformedMessageError,
    MissingFieldError,
    NonCanonicalMessageError,
    OkResponse,
    Request,
    ScanWifiResult,
    SetClaimRequest,
    SetOwnerSecretRequest,
    SetWifiRequest,
    StatusRequest,
    StatusResult,
    UnknownFieldError,
    UnknownMessageTypeError,
    WifiNetwork,
    WifiSecurity,
    WrongSetupCodeError,
    decode_request,
    decode_response,
    display_ssid,
    encode_request,
    encode_response,
    validate_passphrase,
    validate_service_url,
)
from iob_protocol.commands import result_type

FAST = settings(max_examples=60, deadline=None)
TOKEN = "c" * 32
printable_ascii = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=8, max_size=63
)


@FAST
@given(
    st.integers(1, 2**32 - 1),
    st.binary(min_size=1, max_size=32),
    st.none() | printable_ascii | st.text("0123456789abcdefABCDEF", min_size=64, max_size=64),
    st.booleans(),
)
def test_set_wifi_round_trip(
    request_id: int, ssid: bytes, passphrase: str | None, hidden: bool
) -> None:
    request = SetWifiRequest(request_id=request_id, ssid=ssid, passphrase=passphrase, hidden=hidden)
    assert decode_request(encode_request(request)) == request


def test_set_wifi_by_wps_button() -> None:
    """``wps`` travels only when set (an older device's form otherwise), takes no passphrase
    and no hidden network (push-button joins a network that shows its name)."""
    request = SetWifiRequest(request_id=3, ssid=b"HomeNet", wps=True)
    wire = encode_request(request)
    assert b'"wps":true' in wire
    assert b"passphrase" not in wire
    assert decode_request(wire) == request
    assert b"wps" not in encode_request(SetWifiRequest(request_id=3, ssid=b"HomeNet"))
    with pytest.raises(InvalidFieldError, match="no passphrase"):
        SetWifiRequest(request_id=3, ssid=b"HomeNet", passphrase="secret123", wps=True)  # noqa: S106
    with pytest.raises(InvalidFieldError, match="shows its name"):
        SetWifiRequest(request_id=3, ssid=b"HomeNet", hidden=True, wps=True)
    with pytest.raises(InvalidFieldError):
        decode_request(
            b'{"hidden":false,"id":3,"passphrase":"secret123","ssid":"SG9tZU5ldA","type":'
            b'"set_wifi","wps":true}'
        )


@FAST
@given(st.binary(min_size=1, max_size=32))
def test_display_ssid_is_always_safe(ssid: bytes) -> None:
    shown = display_ssid(ssid)
    assert shown.isprintable()
    # Printable UTF-8 is shown as itself.
    try:
        text = ssid.decode()
    except UnicodeDecodeError:
        return
    if text.isprintable() and "\\" not in text:
        assert shown == text


def test_display_ssid_examples() -> None:
    assert display_ssid("Café 🏠".encode()) == "Café 🏠"
    assert display_ssid(b"\xff\x00ab") == "\\xff\\x00ab"
    assert display_ssid("evil\u202etxt".encode()) == "evil\\xe2\\x80\\xaetxt"
    assert display_ssid(b"back\\slash") == "back\\x5cslash"
    request = SetWifiRequest(request_id=1, ssid=b"\x07bell")
    assert request.ssid_display == "\\x07bell"
    hidden = SetWifiRequest(request_id=1, ssid=b"x", passphrase="secret123")  # noqa: S106
    assert "secret123" not in repr(hidden)


@pytest.mark.parametrize("ssid", [b"", bytes(33)])
def test_ssid_length(ssid: bytes) -> None:
    with pytest.raises(InvalidSsidError):
        SetWifiRequest(request_id=1, ssid=ssid)


@pytest.mark.parametrize(
    "passphrase", ["short", "x" * 64, "y" * 65, "tab\there!", "naïve-pass", ""]
)
def test_bad_passphrases(passphrase: str) -> None:
    with pytest.raises(InvalidPassphraseError):
        validate_passphrase(passphrase)


@pytest.mark.parametrize(
    "passphrase", [None, "12345678", "~" * 63, "a" * 64, "ABCDEF0123456789" * 4]
)
def test_good_passphrases(passphrase: str | None) -> None:
    assert validate_passphrase(passphrase) == passphrase


@pytest.mark.parametrize(
    "url",
    [
        "https://relay.example.com",
        "https://relay.example.com:8443/api?x=1",
        "https://192.168.1.2/",
        "https://[fd00::1]:443/",
    ],
)
def test_good_urls(url: str) -> None:
    assert validate_service_url(url) == url


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("http://relay.local", InsecureUrlError),
        ("ftp://relay.local", InvalidUrlError),
        ("https://", InvalidUrlError),
        ("https://user:pw@relay.local", InvalidUrlError),
        ("https://relay.local/#frag", InvalidUrlError),
        ("https://relay.local:99999/", InvalidUrlError),
        ("https://relay .local/", InvalidUrlError),
        ("https://-bad-.local/", InvalidUrlError),
        ("", InvalidUrlError),
        ("https://" + "a" * 2048, InvalidUrlError),
    ],
)
def test_bad_urls(url: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        validate_service_url(url)


def test_http_allowed_only_with_the_development_flag() -> None:
    data = encode_request(
        SetClaimRequest(
            request_id=1,
            service_url="http://relay.local:8080",
            claim_token=TOKEN,
            allow_insecure_http=True,
        )
    )
    with pytest.raises(InsecureUrlError):
        decode_request(data)
    request = decode_request(data, allow_insecure_http=True)
    assert isinstance(request, SetClaimRequest)
    assert request.service_url == "http://relay.local:8080"


def test_set_claim_round_trip_and_validation() -> None:
    full = SetClaimRequest(
        request_id=5,
        service_url="https://relay.example.com",
        claim_token=TOKEN,
        broker_pin=bytes(32),
        broker_host="2001:db8::1",
        broker_port=8883,
    )
    assert decode_request(encode_request(full)) == full
    assert TOKEN not in repr(full)
    for kwargs in (
        {"claim_token": "short"},
        {"broker_pin": bytes(31)},
        {"broker_port": 8883},
        {"broker_host": "mqtt", "broker_port": 0},
        {"broker_host": "bad_host!"},
        {"broker_host": "a" * 254},
    ):
        arguments = {
            "request_id": 1,
            "service_url": "https://r.example",
            "claim_token": TOKEN,
            **kwargs,
        }
        with pytest.raises(InvalidFieldError):
            SetClaimRequest(**arguments)  # type: ignore[arg-type]


@pytest.mark.parametrize("command", list(CommandType))
def test_every_command_type_decodes(command: CommandType) -> None:
    if command is CommandType.SET_WIFI:
        request: Request = SetWifiRequest(request_id=1, ssid=b"x")
    elif command is CommandType.SET_CLAIM:
        request = SetClaimRequest(request_id=1, service_url="https://r.example", claim_token=TOKEN)
    elif command is CommandType.SET_OWNER_SECRET:
        request = SetOwnerSecretRequest(request_id=1, owner_secret=bytes(range(32)))
    elif command is CommandType.CLAIM_ANSWER:
        request = ClaimAnswerRequest(request_id=1, diagnostic=DiagnosticCode.CLAIM_REJECTED)
    else:
        request = decode_request(f'{{"id":1,"type":"{command.value}"}}'.encode())
    assert decode_request(encode_request(request)) == request
    assert request.command is command


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b'{"id":1,"type":"reboot"}', UnknownMessageTypeError),
        (b'{"type":"info","id":1}', NonCanonicalMessageError),
        (b'{"id":1,"type":"info","zz":1}', UnknownFieldError),
        (b'{"type":"info"}', MissingFieldError),
        (b'{"id":1}', MissingFieldError),
        (b'{"id":true,"type":"info"}', FieldTypeError),
        (b'{"id":"1","type":"info"}', FieldTypeError),
        (b'{"id":0,"type":"info"}', InvalidFieldError),
        (b'{"id":4294967296,"type":"info"}', InvalidFieldError),
        (b"[]", FieldTypeError),
        (b"{", MalformedMessageError),
        (b'{"hidden":1,"id":1,"ssid":"eA","type":"set_wifi"}', FieldTypeError),
        (b'{"hidden":false,"id":1,"ssid":"eA=","type":"set_wifi"}', FieldTypeError),
        (b'{"hidden":false,"id":1,"ssid":"","type":"set_wifi"}', InvalidSsidError),
        (
            b'{"hidden":false,"id":1,"passphrase":null,"ssid":"eA","type":"set_wifi"}',
            FieldTypeError,
        ),
        (b'{"hidden":false,"id":1,"ssid":"eA","type":"set_wifi","x":1}', UnknownFieldError),
        (b'{"id":1,"type":"status","wait":31}', InvalidFieldError),
        (b'{"id":1,"type":"status","wait":-1}', InvalidFieldError),
        (b'{"id":1,"type":"status","wait":true}', FieldTypeError),
    ],
)
def test_request_errors(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        decode_request(data)


RESPONSES: list[OkResponse | ErrorResponse] = [
    OkResponse(
        request_id=1,
        command=CommandType.INFO,
        result=InfoResult(
            device_id="0123456789ABCDEF",
            model="M",
            firmware_version="1",
            protocol_version=1,
            claimed=True,
        ),
    ),
    OkResponse(request_id=2, command=CommandType.SCAN_WIFI, result=ScanWifiResult(networks=())),
    OkResponse(
        request_id=2,
        command=CommandType.SCAN_WIFI,
        result=ScanWifiResult(
            networks=(WifiNetwork(ssid=b"\x00", rssi=-127, security=WifiSecurity.WEP),)
        ),
    ),
    OkResponse(request_id=3, command=CommandType.FACTORY_RESET, result=AckResult()),
    OkResponse(request_id=4, command=CommandType.COMMIT, result=CommitResult(timeout_seconds=180)),
    OkResponse(
        request_id=5, command=CommandType.STATUS, result=StatusResult(state=DeviceState.COMMITTED)
    ),
    OkResponse(
        request_id=5,
        command=CommandType.STATUS,
        result=StatusResult(state=DeviceState.PROVISIONING, diagnostic=DiagnosticCode.DHCP_TIMEOUT),
    ),
    ErrorResponse(
        request_id=6, command=CommandType.COMMIT, error="failed", diagnostic=DiagnosticCode.TIMEOUT
    ),
    ErrorResponse.from_error(WrongSetupCodeError()),
]


@pytest.mark.parametrize("response", RESPONSES)
def test_response_round_trip(response: OkResponse | ErrorResponse) -> None:
    assert decode_response(encode_response(response)) == response


def test_response_shapes() -> None:
    assert RESPONSES[0].ok
    assert not RESPONSES[-1].ok
    assert result_type(CommandType.STATUS) is StatusResult
    with pytest.raises(InvalidFieldError):
        OkResponse(request_id=1, command=CommandType.INFO, result=AckResult())
    with pytest.raises(InvalidFieldError):
        ErrorResponse(request_id=1, command=None, error="Not A Code")
    with pytest.raises(InvalidFieldError):
        ErrorResponse(request_id=1, command=None, error="x", message="\x00")
    info: dict[str, Any] = {
        "device_id": "0123456789ABCDEF",
        "model": "m",
        "firmware_version": "1",
        "protocol_version": 1,
        "claimed": True,
    }
    InfoResult(**info)  # valid as it stands: each change below alone makes it invalid
    for change in ({"model": ""}, {"protocol_version": 0}):
        with pytest.raises(InvalidFieldError):
            InfoResult(**{**info, **change})
    with pytest.raises(InvalidFieldError):
        WifiNetwork(ssid=b"x", rssi=5, security=WifiSecurity.OPEN)
    with pytest.raises(InvalidFieldError):
        ScanWifiResult(networks=(WifiNetwork(ssid=b"x", rssi=-1, security=WifiSecurity.OPEN),) * 65)
    with pytest.raises(InvalidFieldError):
        CommitResult(timeout_seconds=0)
    assert (
        WifiNetwork(ssid=b"\x1b[2J", rssi=-1, security=WifiSecurity.OPEN).ssid_display == "\\x1b[2J"
    )


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b'{"id":1,"ok":true,"result":{}}', MissingFieldError),
        (b'{"id":1,"ok":true,"result":{},"type":"info"}', MissingFieldError),
        (b'{"id":1,"ok":true,"result":{"extra":1},"type":"identify"}', UnknownFieldError),
        (b'{"id":1,"ok":true,"result":[],"type":"identify"}', FieldTypeError),
        (b'{"id":1,"ok":true,"result":{"state":"asleep"},"type":"status"}', InvalidFieldError),
        (
            b'{"id":1,"ok":true,"result":{"diagnostic":"OOPS","state":"committed"},"type":"status"}',
            InvalidFieldError,
        ),
        (b'{"id":1,"ok":true,"result":{"networks":[1]},"type":"scan_wifi"}', FieldTypeError),
        (b'{"id":1,"ok":true,"result":{"networks":{}},"type":"scan_wifi"}', FieldTypeError),
        (
            b'{"id":1,"ok":true,"result":{"networks":[{"rssi":-1,"security":"wpa9","ssid":"eA"}]},"type":"scan_wifi"}',
            InvalidFieldError,
        ),
        (
            b'{"id":1,"ok":true,"result":{"networks":[{"rssi":-1,"security":"open","ssid":"eA","x":0}]},"type":"scan_wifi"}',
            UnknownFieldError,
        ),
        (b'{"error":"busy","id":1,"ok":false,"x":1}', UnknownFieldError),
        (b'{"error":"busy","id":1,"ok":false,"type":"nope"}', UnknownMessageTypeError),
    ],
)
def test_response_errors(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        decode_response(data)


def test_simple_request_defaults() -> None:
    assert encode_request(InfoRequest(request_id=7)) == b'{"id":7,"type":"info"}'
    assert encode_request(CommitRequest(request_id=8)) == b'{"id":8,"type":"commit"}'


def test_status_wait_round_trip() -> None:
    """``wait`` travels only when set: a plain status is the form an older device knows."""
    plain = StatusRequest(request_id=3)
    assert encode_request(plain) == b'{"id":3,"type":"status"}'
    waiting = StatusRequest(request_id=4, wait=MAX_STATUS_WAIT)
    assert encode_request(waiting) == b'{"id":4,"type":"status","wait":30}'
    assert decode_request(encode_request(waiting)) == waiting
    assert decode_request(b'{"id":5,"type":"status","wait":0}') == StatusRequest(request_id=5)
