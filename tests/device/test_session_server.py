"""The LAN provisioning server over real HTTP on loopback: handshake, commands, bad input,
the attempt limiter."""

from __future__ import annotations

import asyncio
import logging

import pytest
from iob_protocol import AckResult, QrPayload
from iob_protocol.canonical import JsonValue, canonical_json
from iob_protocol.commands import (
    CommitRequest,
    ErrorResponse,
    InfoRequest,
    InfoResult,
    OkResponse,
    ScanWifiRequest,
    ScanWifiResult,
    SetWifiRequest,
    StatusRequest,
    StatusResult,
    WifiSecurity,
    decode_response,
)
from iob_protocol.errors import WrongSetupCodeError
from iob_protocol.framing import MAX_FRAME_SIZE, FrameType, encode_error_frame, encode_frame
from iob_protocol.payload import ManualCode
from iob_protocol.session import ClientSession, SessionState

from device_firmware.actions import Action
from device_firmware.decide import WindowReason
from device_firmware.provisioning.session_host import ReplyKind, SessionHost
from device_firmware.state import Phase
from tests.raw_http import assert_one_quiet_line_each

from .conftest import AgentStarter, Provisioned

WRONG_CODE = "12345-67890"


def wrong_code(provisioned: Provisioned) -> str:
    """A well-formed manual code that is not this device's."""
    for candidate in ("31415-92653", "27182-81828", "16180-33988"):
        digits = candidate.replace("-", "")[:9]
        code = ManualCode(digits).format()
        if code != provisioned.result.manual_code:
            return code
    raise AssertionError("unreachable")


async def test_qr_and_manual_handshakes_then_commands(start_agent: AgentStarter) -> None:
    async with start_agent() as running:
        client = await running.connected_client()
        response = await client.call(InfoRequest(request_id=client.next_id()))
        assert isinstance(response, OkResponse)
        assert isinstance(response.result, InfoResult)
        assert response.result.device_id == running.provisioned.device.identity.device_id
        assert response.result.model == "pi-test"
        assert response.result.claimed is False

        scan = await client.call(ScanWifiRequest(request_id=client.next_id()))
        assert isinstance(scan, OkResponse)
        assert isinstance(scan.result, ScanWifiResult)
        names = [network.ssid for network in scan.result.networks]
        assert names == [b"HomeNet", b"Cafe"]  # strongest first, the hidden one absent
        assert scan.result.networks[0].security is WifiSecurity.WPA_PERSONAL
        assert scan.result.networks[1].security is WifiSecurity.OPEN

        ack = await client.call(
            SetWifiRequest(request_id=client.next_id(), ssid=b"HomeNet", passphrase="x" * 8)
        )
        assert isinstance(ack, OkResponse)
        assert running.agent.store.current.phase is Phase.PROVISIONING

        # A second handshake (manual code) replaces the first session.
        manual = await running.connected_client(manual=True)
        status = await manual.call(StatusRequest(request_id=1))
        assert isinstance(status, OkResponse)
        assert isinstance(status.result, StatusResult)
        assert status.result.state.value == "provisioning"
        stale = await client.send_raw(client.session.seal(b"{}"))  # type: ignore[union-attr]
        assert (stale.status, stale.error) == (409, "no_session")


async def test_info_endpoint_is_public_and_secret_free(start_agent: AgentStarter) -> None:
    async with start_agent() as running:
        async with running.http.get(running.url + "/iob/v1/info") as response:
            info = await response.json()
        assert info["device_id"] == running.provisioned.device.identity.device_id
        assert info["state"] == "unclaimed"
        assert info["window"] == "open"
        assert running.provisioned.result.manual_code.replace("-", "")[:9] not in str(info)


async def test_info_names_the_device_only_when_it_has_a_name(start_agent: AgentStarter) -> None:
    # The flow shows the device's own name before the claim (the discovery card, the name
    # field's default); a device without a name leaves the field out (optional, never null).
    async with start_agent() as running, running.http.get(running.url + "/iob/v1/info") as got:
        assert "name" not in await got.json()
    async with (
        start_agent(name="Kitchen sensor") as running,
        running.http.get(running.url + "/iob/v1/info") as got,
    ):
        assert (await got.json())["name"] == "Kitchen sensor"


async def test_malformed_frames_are_refused_without_counting(start_agent: AgentStarter) -> None:
    async with start_agent() as running:
        client = running.client()
        for garbage in (b"", b"GET / HTTP/1.1", b"IB\x01\x10\x00\x05abc", b"IB\x09\x01\x00\x00"):
            reply = await client.post("/iob/v1/session", garbage)
            assert reply.status == 400
            assert reply.error in {
                "truncated_frame",
                "bad_magic",
                "unexpected_message",
                "unsupported_version",
            }
        assert running.agent.session_host.remaining_attempts() == 20
        # A CLIENT_HELLO of the wrong size is a failed attempt (it took the slot).
        reply = await client.post("/iob/v1/session", encode_frame(FrameType.CLIENT_HELLO, b"x"))
        assert (reply.status, reply.error) == (400, "malformed_handshake")
        assert running.agent.session_host.remaining_attempts() == 19
        # CLIENT_FINISH without a hello.
        reply = await client.post(
            "/iob/v1/session", encode_frame(FrameType.CLIENT_FINISH, b"0" * 32)
        )
        assert (reply.status, reply.error) == (400, "unexpected_message")


async def test_oversized_bodies_are_refused_before_reading(start_agent: AgentStarter) -> None:
    async with start_agent() as running:
        client = running.client()
        reply = await client.post("/iob/v1/session", b"IB" + b"\x00" * (MAX_FRAME_SIZE + 10))
        assert reply.status == 413
        established = await running.connected_client()
        reply = await established.send_raw(b"x" * (MAX_FRAME_SIZE * 4))
        assert reply.status == 413
        # The session survives: the oversized body never reached the channel.
        response = await established.call(StatusRequest(request_id=1))
        assert isinstance(response, OkResponse)


async def test_replayed_and_tampered_frames_end_the_session(start_agent: AgentStarter) -> None:
    async with start_agent() as running:
        client = await running.connected_client()
        assert client.session is not None
        frame = client.session.seal(canonical_json({"id": 1, "type": "status"}))
        first = await client.send_raw(frame)
        assert first.status == 200
        client.session.open(first.body)
        replay = await client.send_raw(frame)
        assert (replay.status, replay.error) == (401, "replayed_frame")
        # The device closed the session: even a fresh, valid frame is refused now.
        after = await client.send_raw(client.session.seal(b"{}"))
        assert (after.status, after.error) == (409, "no_session")

        client = await running.connected_client()
        assert client.session is not None
        raw = bytearray(client.session.seal(canonical_json({"id": 1, "type": "status"})))
        raw[-1] ^= 0x01
        tampered = await client.send_raw(bytes(raw))
        assert (tampered.status, tampered.error) == (401, "frame_authentication")


async def test_deeply_nested_json_in_a_frame_is_one_clean_error(
    start_agent: AgentStarter, caplog: pytest.LogCaptureFixture
) -> None:
    """An authenticated frame nested 5,000 deep is answered with a stable code, no traceback."""
    async with start_agent() as running:
        client = await running.connected_client()
        assert client.session is not None
        caplog.set_level(logging.DEBUG)
        caplog.clear()
        for depth in (5000, 800):
            deep = b"[" * depth + b"]" * depth
            reply = await client.send_raw(client.session.seal(deep))
            assert reply.status == 200, reply.status
            response = decode_response(client.session.open(reply.body))
            assert isinstance(response, ErrorResponse)
            assert (response.error, response.request_id) == ("json_too_deep", 0)
        assert "Traceback" not in caplog.text
        assert all(record.exc_info is None for record in caplog.records)
        # The session is still good.
        ok = await client.call(StatusRequest(request_id=client.next_id()))
        assert isinstance(ok, OkResponse)


async def test_malformed_http_is_one_quiet_line(
    start_agent: AgentStarter, caplog: pytest.LogCaptureFixture
) -> None:
    async with start_agent() as running:
        await assert_one_quiet_line_each(running.agent.lan_ports()[0], caplog)
        # The server still serves.
        ok = await (await running.connected_client()).call(StatusRequest(request_id=1))
        assert isinstance(ok, OkResponse)


async def test_missing_or_wrong_session_header(start_agent: AgentStarter) -> None:
    async with start_agent() as running:
        client = await running.connected_client()
        assert client.session is not None
        async with running.http.post(
            running.url + "/iob/v1/frame", data=b"IB\x01\x10\x00\x00"
        ) as response:
            assert response.status == 400
        wrong = await client.send_raw(b"IB\x01\x10\x00\x00", tag="00" * 16)
        assert (wrong.status, wrong.error) == (409, "no_session")
        # Nothing reached the channel: the counter is still 0 and the session works.
        ok = await client.call(StatusRequest(request_id=2))
        assert isinstance(ok, OkResponse)


async def test_invalid_requests_get_specific_errors(start_agent: AgentStarter) -> None:
    async with start_agent() as running:
        client = await running.connected_client()
        assert client.session is not None
        cases: list[tuple[dict[str, JsonValue], str]] = [
            ({"hidden": False, "id": 3, "ssid": "", "type": "set_wifi"}, "invalid_ssid"),
            (
                {
                    "hidden": False,
                    "id": 4,
                    "ssid": "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB",
                    "type": "set_wifi",
                },
                "invalid_ssid",
            ),
            (
                {
                    "hidden": False,
                    "id": 5,
                    "passphrase": "short",
                    "ssid": "SG9tZQ",
                    "type": "set_wifi",
                },
                "invalid_passphrase",
            ),
            (
                {
                    "hidden": False,
                    "id": 6,
                    "passphrase": "z" * 64,
                    "ssid": "SG9tZQ",
                    "type": "set_wifi",
                },
                "invalid_passphrase",
            ),
            (
                {
                    "hidden": False,
                    "id": 7,
                    "passphrase": "pässwörter",
                    "ssid": "SG9tZQ",
                    "type": "set_wifi",
                },
                "invalid_passphrase",
            ),
            ({"id": 8, "type": "reboot"}, "unknown_type"),
            ({"id": 9, "type": "status", "extra": 1}, "unknown_field"),
            (
                {
                    "claim_token": "short",
                    "id": 10,
                    "service_url": "https://relay.example",
                    "type": "set_claim",
                },
                "invalid_field",
            ),
            (
                {
                    "claim_token": "A" * 30,
                    "id": 11,
                    "service_url": "ftp://relay.example",
                    "type": "set_claim",
                },
                "invalid_url",
            ),
        ]
        for document, code in cases:
            reply = await client.send_raw(client.session.seal(canonical_json(document)))
            assert reply.status == 200

            response = decode_response(client.session.open(reply.body))
            assert isinstance(response, ErrorResponse), document
            assert response.error == code, (document, response)
            # The refusal answers that request (a client matches answers by id).
            assert response.request_id == document["id"], (document, response)
            known = document["type"] != "reboot"
            assert (response.command is not None) == known, (document, response)
        # Not canonical JSON at all.
        reply = await client.send_raw(client.session.seal(b'{"id": 1, "type": "status"}'))

        response = decode_response(client.session.open(reply.body))
        assert isinstance(response, ErrorResponse)
        assert response.error == "non_canonical_message"
        assert response.request_id == 0
        # Commit before set_claim is refused with a reason.

        refused = await client.call(CommitRequest(request_id=client.next_id()))
        assert isinstance(refused, ErrorResponse)
        assert refused.error == "not_ready"


async def test_wrong_codes_count_and_the_21st_is_locked_out(start_agent: AgentStarter) -> None:
    async with start_agent() as running:
        code = wrong_code(running.provisioned)
        http = running.client()
        for attempt in range(20):
            session = running.provisioned.manual_client(code)
            hello = await http.post("/iob/v1/session", session.start())
            assert hello.status == 200, attempt
            # The client sees the wrong code; an attacker sends a finish anyway.
            with pytest.raises(WrongSetupCodeError):
                session.handle_device_hello(hello.body)
            finish = await http.post(
                "/iob/v1/session", encode_frame(FrameType.CLIENT_FINISH, b"\x00" * 32)
            )
            assert (finish.status, finish.error) == (401, "wrong_setup_code"), attempt
        assert running.agent.session_host.remaining_attempts() == 0
        # The 21st attempt - even with the right code - is locked out.
        reply = await http.handshake(running.provisioned.qr_client())
        assert (reply.status, reply.error) == (429, "locked_out")
        # A button press opens a new window with a fresh budget.

        running.agent.request(Action.BUTTON)
        for _ in range(50):
            if running.agent.session_host.remaining_attempts() == 20:
                break
            await asyncio.sleep(0.01)
        client = await running.connected_client()
        assert client.session is not None
        assert client.session.state is SessionState.ESTABLISHED


async def test_one_handshake_at_a_time(start_agent: AgentStarter) -> None:
    async with start_agent() as running:
        first = running.provisioned.qr_client()
        http = running.client()
        hello = await http.post("/iob/v1/session", first.start())
        assert hello.status == 200
        second = running.provisioned.qr_client()
        busy = await http.post("/iob/v1/session", second.start())
        assert (busy.status, busy.error) == (429, "busy")
        assert busy.headers["Retry-After"] == "60"
        finish = await http.post("/iob/v1/session", first.handle_device_hello(hello.body))
        assert finish.status == 204


async def test_client_error_frame_frees_the_slot_for_an_immediate_retry(
    start_agent: AgentStarter,
) -> None:
    """Wrong code seen client-side → the client's ERROR frame → the right code works at once."""
    async with start_agent() as running:
        host = running.agent.session_host
        before = host.remaining_attempts()
        http = running.client()
        wrong = running.provisioned.manual_client(wrong_code(running.provisioned))
        hello = await http.post("/iob/v1/session", wrong.start())
        assert hello.status == 200
        with pytest.raises(WrongSetupCodeError):
            wrong.handle_device_hello(hello.body)
        gave_up = await http.post("/iob/v1/session", encode_error_frame("wrong_setup_code"))
        assert (gave_up.status, gave_up.body) == (204, b"")
        # The PAKE exchange was spent: counted like a wrong CLIENT_FINISH.
        assert host.remaining_attempts() == before - 1
        retry = await http.handshake(running.provisioned.manual_client())
        assert retry.status == 204, retry.error
        assert host.has_session
        assert host.remaining_attempts() == before - 1


async def test_only_the_origin_that_said_hello_can_abort(provisioned: Provisioned) -> None:
    """A stranger on another transport cannot end someone else's handshake."""

    async def dispatch(_request: object) -> AckResult:
        return AckResult()

    host = SessionHost(provisioned.device, dispatch)
    host.open_window(WindowReason.BOOT_UNCLAIMED)
    client = provisioned.qr_client()
    hello = await host.handshake(client.start(), origin="lan:192.0.2.7")
    assert hello.kind is ReplyKind.OK
    stray = await host.handshake(encode_error_frame("wrong_setup_code"), origin="ble:stranger")
    assert (stray.kind, stray.error) == (ReplyKind.REFUSED, "handshake_origin_mismatch")
    assert not await host.abort_handshake("ble:stranger")
    assert host.limiter_state.value == "busy"
    assert host.remaining_attempts() == 20
    assert await host.abort_handshake("lan:192.0.2.7")
    assert host.limiter_state.value == "open"
    assert host.remaining_attempts() == 19


def clocked_host_and_client(
    provisioned: Provisioned, now: list[float]
) -> tuple[SessionHost, ClientSession]:
    """A session host (window open, every command acked) and a QR client, both on the clock
    ``now[0]``."""

    async def dispatch(_request: object) -> AckResult:
        return AckResult()

    host = SessionHost(provisioned.device, dispatch, clock=lambda: now[0])
    host.open_window(WindowReason.BOOT_UNCLAIMED)
    client = ClientSession.for_qr(
        QrPayload.parse(provisioned.result.qr_payload), clock=lambda: now[0], timeout=120
    )
    return host, client


async def test_handshake_deadline_counts_as_failure(provisioned: Provisioned) -> None:
    """A client that walks away mid-handshake gets no free guess: the slot frees after 60 s
    and the attempt counts; its late finish is refused."""

    now = [1000.0]
    host, client = clocked_host_and_client(provisioned, now)
    hello = await host.handshake(client.start())
    assert hello.kind is ReplyKind.OK
    assert host.limiter_state.value == "busy"
    now[0] += 61
    assert host.limiter_state.value == "open"
    assert host.remaining_attempts() == 19
    late = await host.handshake(client.handle_device_hello(hello.frame))
    assert (late.kind, late.error) == (ReplyKind.AUTH_FAILED, "handshake_timeout")
    assert not host.has_session


async def test_window_closed_when_claimed(start_agent: AgentStarter) -> None:
    async with start_agent() as running:
        running.agent.session_host.close_window()
        reply = await running.client().handshake(running.provisioned.qr_client())
        assert (reply.status, reply.error) == (403, "window_closed")
