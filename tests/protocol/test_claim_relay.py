"""Commands for a claim relayed by Home Assistant (docs/protocol.md §8, §9): the device that
cannot reach the account service hands its signed confirmation over the session (``status``'s
``relay``) and takes the service's answer back (``claim_answer``), whose grant it checks."""

from __future__ import annotations

import pytest
from iob_protocol import (
    ClaimAnswerRequest,
    ClaimConfirmation,
    ClaimError,
    ClaimGrant,
    CommandType,
    DeviceIdentity,
    DeviceState,
    DiagnosticCode,
    FieldTypeError,
    InvalidFieldError,
    OkResponse,
    SetClaimRequest,
    StatusResult,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)
from iob_protocol.account_api import MqttCredentials, Owned, RelayedOwned

TOKEN = "t" * 43
NOW = 1_750_000_000


@pytest.fixture
def confirmation() -> ClaimConfirmation:
    identity = DeviceIdentity.generate()
    return ClaimConfirmation.create(identity, TOKEN, clock=lambda: NOW)


def _owned(device_id: str) -> Owned:
    return Owned(
        device_id=device_id,
        household_id="a" * 32,
        mqtt=MqttCredentials(
            host="broker.lan", port=8883, tls=True, username=device_id, password="p" * 20
        ),
    )


def test_set_claim_offers_the_relay_only_when_true() -> None:
    plain = SetClaimRequest(request_id=1, service_url="https://x.example", claim_token=TOKEN)
    assert b"hub_relay" not in encode_request(plain)  # what an older device parses
    offered = SetClaimRequest(
        request_id=1, service_url="https://x.example", claim_token=TOKEN, hub_relay=True
    )
    wire = encode_request(offered)
    assert b'"hub_relay":true' in wire
    assert decode_request(wire) == offered
    with pytest.raises(FieldTypeError):
        decode_request(wire.replace(b'"hub_relay":true', b'"hub_relay":1'))


def test_status_carries_the_signed_confirmation(confirmation: ClaimConfirmation) -> None:
    result = StatusResult(state=DeviceState.COMMITTING, relay=confirmation)
    response = OkResponse(request_id=4, command=CommandType.STATUS, result=result)
    decoded = decode_response(encode_response(response))
    assert isinstance(decoded, OkResponse)
    assert decoded.result == result
    # Exactly the statement the device signed: the service verifies it as if posted directly.
    assert isinstance(decoded.result, StatusResult)
    assert decoded.result.relay is not None
    assert decoded.result.relay.to_json() == confirmation.to_json()
    assert b"relay" not in encode_response(
        OkResponse(
            request_id=4, command=CommandType.STATUS, result=StatusResult(state=result.state)
        )
    )


def test_claim_answer_carries_one_of_answer_and_diagnostic(
    confirmation: ClaimConfirmation,
) -> None:
    sealed = RelayedOwned.sealed(_owned(confirmation.device_id), confirmation).to_dict()
    answer = ClaimAnswerRequest(request_id=9, answer=sealed)
    assert decode_request(encode_request(answer)) == answer
    refused = ClaimAnswerRequest(request_id=9, diagnostic=DiagnosticCode.CLAIM_EXPIRED)
    assert decode_request(encode_request(refused)) == refused
    with pytest.raises(InvalidFieldError):
        ClaimAnswerRequest(request_id=9)
    with pytest.raises(InvalidFieldError):
        ClaimAnswerRequest(request_id=9, answer=sealed, diagnostic=DiagnosticCode.TIMEOUT)
    with pytest.raises(InvalidFieldError):
        decode_request(b'{"diagnostic":"NOT_A_CODE","id":9,"type":"claim_answer"}')


def test_the_grant_is_bound_to_token_nonce_and_every_field(
    confirmation: ClaimConfirmation,
) -> None:
    owned = _owned(confirmation.device_id)
    sealed = RelayedOwned.sealed(owned, confirmation)
    assert sealed.opened(confirmation) == owned
    grant = RelayedOwned.grant_of(owned)
    mac = grant.mac(TOKEN, confirmation.nonce)
    assert len(mac) == 32
    assert grant.mac("u" * 43, confirmation.nonce) != mac  # another token
    assert grant.mac(TOKEN, bytes(16)) != mac  # another confirmation
    for changed in (
        {"household_id": "b" * 32},
        {"password": "q" * 20},
        {"host": "evil.example"},
        {"port": 1883},
        {"tls": False},
        {"username": "someone"},
    ):
        fields = {
            "device_id": grant.device_id,
            "household_id": grant.household_id,
            "host": grant.host,
            "port": grant.port,
            "tls": grant.tls,
            "username": grant.username,
            "password": grant.password,
            **changed,
        }
        with pytest.raises(ClaimError):
            ClaimGrant(**fields).check(mac, confirmation)  # type: ignore[arg-type]
