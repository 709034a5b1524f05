"""The account service's wire model: strict parsing, one error-code list, one credentials type."""

from __future__ import annotations

from typing import Any

import pytest
from iob_protocol.account_api import (
    RESPONSE_MODELS,
    AuditPage,
    Device,
    ErrorBody,
    ErrorCode,
    MqttCredentials,
    Owned,
    Role,
    TokenPair,
    UpdateMemberRequest,
    WireFormatError,
)

HID = "a" * 32
DEVICE = "0123456789ABCDEF"
MQTT: dict[str, Any] = {
    "host": "broker.example",
    "port": 8883,
    "tls": True,
    "username": DEVICE,
    "password": "s3cret",
    "client_id": DEVICE,
}
OWNED: dict[str, Any] = {"status": "owned", "device_id": DEVICE, "household_id": HID, "mqtt": MQTT}


def test_an_answer_round_trips_through_its_model() -> None:
    owned = Owned.parse(OWNED)
    assert owned.mqtt == MqttCredentials(**MQTT)
    assert owned.to_dict() == OWNED
    assert "s3cret" not in repr(owned)


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"port": "8883"}, "port must be an integer"),
        ({"port": True}, "port must be an integer"),
        ({"port": 0}, "port must be at least 1"),
        ({"port": 65536}, "port must be at most 65535"),
        ({"tls": 1}, "tls must be true or false"),
        ({"host": 5}, "host must be a string"),
        ({"extra": 1}, "keys that are not defined"),
    ],
)
def test_wrong_json_types_are_refused_not_coerced(change: dict[str, Any], problem: str) -> None:
    with pytest.raises(WireFormatError, match=problem):
        MqttCredentials.parse({**MQTT, **change})


def test_missing_fields_unknown_enums_and_non_objects_are_refused() -> None:
    with pytest.raises(WireFormatError, match="password"):
        MqttCredentials.parse({k: v for k, v in MQTT.items() if k != "password"})
    with pytest.raises(WireFormatError, match="status"):
        Owned.parse({**OWNED, "status": "unowned"})
    with pytest.raises(WireFormatError, match="expected a JSON object"):
        Owned.parse([OWNED])
    device = {
        "device_id": DEVICE,
        "model": "pi",
        "access": "superuser",
        "owner_household_id": HID,
        "since": None,
        "model_info": None,
    }
    with pytest.raises(WireFormatError, match="access"):
        Device.parse(device)
    assert Device.parse({**device, "access": "read"}).model_info is None


def test_nested_lists_and_nullables_are_checked() -> None:
    page = {"events": [{"seq": 0}], "next_cursor": None}
    with pytest.raises(WireFormatError):
        AuditPage.parse(page)
    assert AuditPage.parse({"events": [], "next_cursor": "5"}).next_cursor == "5"


def test_tokens_are_never_in_a_repr() -> None:
    pair = TokenPair.parse(
        {
            "token_type": "Bearer",
            "access_token": "A" * 43,
            "expires_in": 900,
            "refresh_token": "R" * 43,
            "refresh_expires_in": 86400,
            "account": {
                "account_id": HID,
                "email": "a@example.com",
                "display_name": "",
                "is_admin": False,
            },
        }
    )
    assert "A" * 43 not in repr(pair)
    assert "R" * 43 not in repr(pair)


def test_error_codes_cover_every_code_the_service_raises() -> None:
    from cloud_relay import errors  # noqa: PLC0415 - the service is only a test dependency here

    raised = {
        cls.code
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.RelayError)
    }
    # already_owned: only older services answer it (clients still map it).
    assert raised == {code.value for code in ErrorCode} - {ErrorCode.ALREADY_OWNED}
    assert ErrorBody.of(ErrorCode.CLAIM_EXPIRED, "late").to_dict() == {
        "error": {"code": "claim_expired", "message": "late"}
    }


def test_every_model_is_closed() -> None:
    for model in RESPONSE_MODELS:
        assert model.Config.forbid_extra_keys, model.__name__
    assert Role.ADMIN.can_manage
    assert not Role.MEMBER.can_manage


def test_request_bodies_leave_unset_fields_out() -> None:
    """The API never takes null: an optional field the caller did not set is absent."""
    assert UpdateMemberRequest(role="admin").body() == {"role": "admin"}
    assert UpdateMemberRequest().body() == {}
    with pytest.raises(WireFormatError, match="role"):
        UpdateMemberRequest.parse({"role": "owner"})
