"""The OpenAPI 3.1 document served at ``/openapi.json``.

Kept next to the handlers and checked against them: the test suite validates every real
response it sees against this document (jsonschema), and schemathesis drives the API from it.
Response objects forbid unknown properties, so a field added to a handler without being
documented here fails the tests.
"""

from __future__ import annotations

from functools import cache
from typing import Any, Final

ID: Final = {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"}
HEX_ID: Final = {"type": "string", "pattern": "^[0-9a-f]{32}$"}
DEVICE_ID: Final = {
    "type": "string",
    "pattern": "^[0-9A-HJKMNP-TV-Z]{16}$",
    "description": "16 Crockford base32 characters (the device's factory id).",
}
TIME: Final = {"type": "integer", "description": "Unix seconds."}
ROLE: Final = {"type": "string", "enum": ["owner", "admin", "member", "viewer"]}
TOKEN: Final = {"type": "string", "pattern": "^[A-Za-z0-9_-]{43}$"}
NAME: Final = {"type": "string", "minLength": 1, "maxLength": 100}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"oneOf": [schema, {"type": "null"}]}


def _obj(
    properties: dict[str, Any], required: list[str] | None = None, *, closed: bool = True
) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
    }
    if closed:
        schema["additionalProperties"] = False
    return schema


def _list(key: str, item: str) -> dict[str, Any]:
    return _obj({key: {"type": "array", "items": _ref(item)}})


_SCHEMAS: Final[dict[str, Any]] = {
    "Error": _obj(
        {
            "error": _obj(
                {
                    "code": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
                    "message": {"type": "string"},
                }
            )
        }
    ),
    "Health": _obj({"status": {"const": "ok"}, "time": TIME}),
    "Account": _obj(
        {
            "account_id": HEX_ID,
            "email": {"type": "string"},
            "display_name": {"type": "string"},
            "is_admin": {"type": "boolean"},
        }
    ),
    "TokenPair": _obj(
        {
            "token_type": {"const": "Bearer"},
            "access_token": TOKEN,
            "expires_in": {"type": "integer", "description": "Seconds the access token lives."},
            "refresh_token": TOKEN,
            "refresh_expires_in": {"type": "integer"},
            "account": _ref("Account"),
        }
    ),
    "Household": _obj(
        {"household_id": HEX_ID, "name": {"type": "string"}, "role": ROLE, "created_at": TIME}
    ),
    "HouseholdList": _list("households", "Household"),
    "Member": _obj(
        {
            "member_id": HEX_ID,
            "household_id": HEX_ID,
            "account_id": _nullable(HEX_ID),
            "external_id": _nullable({"type": "string"}),
            "display_name": {"type": "string"},
            "role": ROLE,
            "created_at": TIME,
        }
    ),
    "MemberList": _list("members", "Member"),
    "Invitation": _obj(
        {
            "invitation_id": HEX_ID,
            "household_id": HEX_ID,
            "token": {**TOKEN, "description": "Shown once; give it to the invitee."},
            "role": ROLE,
            "email": _nullable({"type": "string"}),
            "external_id": _nullable({"type": "string"}),
            "expires_at": TIME,
        }
    ),
    "InvitationSummary": _obj(
        {
            "invitation_id": HEX_ID,
            "household_id": HEX_ID,
            "role": ROLE,
            "email": _nullable({"type": "string"}),
            "external_id": _nullable({"type": "string"}),
            "created_at": TIME,
            "expires_at": TIME,
        }
    ),
    "InvitationList": _list("invitations", "InvitationSummary"),
    "Claim": _obj(
        {
            "claim_id": HEX_ID,
            "device_id": DEVICE_ID,
            "household_id": HEX_ID,
            "token": {**TOKEN, "description": "Single use, 256 bits; hand it to the device."},
            "expires_at": TIME,
        }
    ),
    "ClaimStatus": _obj(
        {
            "claim_id": HEX_ID,
            "status": {"type": "string", "enum": ["pending", "owned", "expired", "rejected"]},
            "device_id": DEVICE_ID,
            "household_id": HEX_ID,
            "expires_at": TIME,
            "completed_at": _nullable(TIME),
        }
    ),
    "MqttCredentials": _obj(
        {
            "host": {"type": "string"},
            "port": {"type": "integer", "minimum": 1, "maximum": 65535},
            "tls": {"type": "boolean"},
            "username": {"type": "string"},
            "password": {"type": "string"},
        }
    ),
    "Owned": _obj(
        {
            "status": {"const": "owned"},
            "device_id": DEVICE_ID,
            "household_id": HEX_ID,
            "mqtt": _ref("MqttCredentials"),
        }
    ),
    "Unowned": _obj({"status": {"const": "unowned"}, "device_id": DEVICE_ID}),
    "CredentialAnswer": {"oneOf": [_ref("Owned"), _ref("Unowned")]},
    "Released": _obj({"status": {"const": "released"}}),
    "DeviceCredentials": _obj({"device_id": DEVICE_ID, "mqtt": _ref("MqttCredentials")}),
    "DeviceSummary": _obj(
        {
            "device_id": DEVICE_ID,
            "model": {"type": "string"},
            "access": {"type": "string", "enum": ["owner", "control", "read"]},
            "owner_household_id": HEX_ID,
            "since": _nullable(TIME),
        }
    ),
    "DeviceList": _list("devices", "DeviceSummary"),
    "Device": _obj(
        {
            "device_id": DEVICE_ID,
            "model": {"type": "string"},
            "access": {"type": "string", "enum": ["owner", "control", "read"]},
            "owner_household_id": HEX_ID,
            "since": _nullable(TIME),
            "model_info": _nullable(_ref("Model")),
        }
    ),
    "Share": _obj(
        {
            "device_id": DEVICE_ID,
            "household_id": HEX_ID,
            "access": {"type": "string", "enum": ["read", "control"]},
            "created_at": TIME,
        }
    ),
    "ShareList": _list("shares", "Share"),
    "Transfer": _obj(
        {
            "transfer_id": HEX_ID,
            "device_id": DEVICE_ID,
            "from_household_id": HEX_ID,
            "to_household_id": HEX_ID,
            "status": {
                "type": "string",
                "enum": ["pending", "accepted", "declined", "cancelled"],
            },
            "created_at": TIME,
            "expires_at": TIME,
        }
    ),
    "TransferList": _list("transfers", "Transfer"),
    "AuditEvent": _obj(
        {
            "seq": {"type": "integer", "minimum": 1},
            "at": TIME,
            "actor": {"type": "string"},
            "action": {"type": "string"},
            "household_id": _nullable({"type": "string"}),
            "device_id": _nullable({"type": "string"}),
            "details": {"type": "object"},
            "hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        }
    ),
    "AuditPage": _obj(
        {
            "events": {"type": "array", "items": _ref("AuditEvent")},
            "next_cursor": _nullable({"type": "string"}),
        }
    ),
    "Model": _obj(
        {
            "model": {"type": "string"},
            "name": {"type": "string"},
            "manufacturer": {"type": "string"},
            "metadata": {"type": "object"},
            "updated_at": TIME,
        }
    ),
    "ModelList": _list("models", "Model"),
    "RegistryDevice": _obj(
        {
            "device_id": DEVICE_ID,
            "model": {"type": "string"},
            "public_key": {"type": "string"},
            "fingerprint": {"type": "string"},
            "imported_at": TIME,
            "household_id": _nullable(HEX_ID),
            "owned_since": _nullable(TIME),
            "preassigned_household_id": _nullable(HEX_ID),
            "order_ref": _nullable({"type": "string"}),
        }
    ),
    "DeviceKey": _obj(
        {
            "device_id": DEVICE_ID,
            "public_key": {
                "type": "string",
                "pattern": "^[A-Za-z0-9_-]{43}$",
                "description": "The raw 32-byte Ed25519 identity key, base64url.",
            },
            "fingerprint": {
                "type": "string",
                "pattern": "^[0-9A-HJKMNP-TV-Z]{32}$",
                "description": "The key's fingerprint as on the QR code (docs/protocol.md §2).",
            },
            "model": {"type": "string"},
        }
    ),
    "ImportReport": _obj({"imported": {"type": "integer"}, "unchanged": {"type": "integer"}}),
    "RevokedSessions": _obj({"revoked_sessions": {"type": "integer"}}),
    "SignedStatement": {
        "description": (
            "A device-signed statement from iob_protocol (canonical JSON): as a JSON object, or "
            "as its canonical JSON text."
        ),
        "oneOf": [
            {"type": "object", "additionalProperties": True},
            {"type": "string", "maxLength": 4096},
        ],
    },
    "ClaimConfirmation": _obj(
        {
            "device_id": DEVICE_ID,
            "claim_token": {"type": "string"},
            "nonce": {"type": "string", "description": "16 bytes, base64url."},
            "timestamp": TIME,
            "signature": {"type": "string", "description": "Ed25519, base64url."},
        }
    ),
    "FactoryRecord": _obj(
        {
            "device_id": DEVICE_ID,
            "model": {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"},
            "public_key": {"type": "string", "description": "Raw Ed25519 key, base64url."},
            "setup_verifier": {"type": "string", "pattern": "^iob-verifier-v1\\$"},
        },
        ["device_id", "model", "public_key", "setup_verifier"],
        closed=False,
    ),
}

_ERROR: Final = {"content": {"application/json": {"schema": _ref("Error")}}}
_DESCRIPTIONS: Final = {
    "400": "Invalid request (`invalid_request`, `weak_password`, ...).",
    "401": "Not signed in, or the token expired or was revoked.",
    "403": "Your role in the household does not allow this (`forbidden`).",
    "404": "No such resource among yours (strangers get the same answer for any id).",
    "409": "Conflicts with the current state.",
    "410": "Expired (`claim_expired`).",
    "413": "Body too large (`request_too_large`).",
    "429": "Rate limited (`rate_limited`); see Retry-After.",
    "503": "The broker or database is unavailable; nothing was changed.",
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _op(
    summary: str,
    *,
    tag: str,
    ok: tuple[int, str | None],
    errors: tuple[int, ...] = (),
    body: dict[str, Any] | None = None,
    auth: bool = True,
    description: str | None = None,
    parameters: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    status, schema_name = ok
    responses: dict[str, Any] = {
        str(status): _json(_ref(schema_name), "Success.")
        if schema_name
        else {"description": "Success (no body)."}
    }
    all_errors = set(errors) | {400, 413} if body is not None else set(errors)
    if auth:
        all_errors |= {401}
    for code in sorted(all_errors):
        responses[str(code)] = {"description": _DESCRIPTIONS[str(code)], **_ERROR}
    responses["default"] = {"description": "Any other error.", **_ERROR}
    operation: dict[str, Any] = {
        "summary": summary,
        "tags": [tag],
        "operationId": "",
        "responses": responses,
    }
    if description:
        operation["description"] = description
    if body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": body}},
        }
    if not auth:
        operation["security"] = []
    if parameters:
        operation["parameters"] = parameters
    return operation


def _path(name: str, schema: dict[str, Any] = ID) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema}


_PAGE: Final = [
    {
        "name": "cursor",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
    },
    {
        "name": "limit",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
    },
]

_H: Final = "/v1/households/{household_id}"
_D: Final = _H + "/devices/{device_id}"
_HP: Final = [_path("household_id")]
_DP: Final = [_path("household_id"), _path("device_id")]


def _paths() -> dict[str, dict[str, Any]]:
    signed = {"confirmation": _ref("SignedStatement")}
    return {
        "/v1/health": {
            "get": _op(
                "Reachability and the service's clock",
                tag="service",
                ok=(200, "Health"),
                auth=False,
                description="Devices use `time` to detect clock skew before confirming a claim.",
            )
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "tags": ["service"],
                "operationId": "",
                "security": [],
                "responses": {
                    "200": _json({"type": "object"}, "The OpenAPI 3.1 document."),
                },
            }
        },
        "/v1/auth/sign-up": {
            "post": _op(
                "Create an account (signed in)",
                tag="auth",
                ok=(201, "TokenPair"),
                errors=(409, 429),
                auth=False,
                body=_obj(
                    {
                        "email": {"type": "string", "format": "email", "maxLength": 254},
                        "password": {"type": "string", "minLength": 10, "maxLength": 1024},
                        "display_name": NAME,
                    },
                    ["email", "password"],
                ),
            )
        },
        "/v1/auth/sign-in": {
            "post": _op(
                "Sign in with e-mail and password (argon2id; rate-limited)",
                tag="auth",
                ok=(200, "TokenPair"),
                errors=(429,),
                auth=False,
                body=_obj(
                    {
                        "email": {"type": "string", "maxLength": 254},
                        "password": {"type": "string", "maxLength": 1024},
                    }
                ),
            )
        },
        "/v1/auth/refresh": {
            "post": _op(
                "Rotate a refresh token",
                tag="auth",
                ok=(200, "TokenPair"),
                auth=False,
                description=(
                    "Each refresh token works once. Presenting a rotated one revokes the whole "
                    "session (`refresh_token_reused`)."
                ),
                errors=(401,),
                body=_obj({"refresh_token": {"type": "string", "maxLength": 128}}),
            )
        },
        "/v1/auth/sign-out": {"post": _op("Revoke this session", tag="auth", ok=(204, None))},
        "/v1/auth/me": {"get": _op("The signed-in account", tag="auth", ok=(200, "Account"))},
        "/v1/invitations/accept": {
            "post": _op(
                "Join a household with an invitation token",
                tag="households",
                ok=(201, "Member"),
                errors=(404, 409),
                body=_obj({"token": {"type": "string", "maxLength": 128}}),
            )
        },
        "/v1/claims/confirm": {
            "post": _op(
                "The device's signed claim confirmation",
                tag="claims",
                ok=(200, "Owned"),
                errors=(409, 410, 429, 503),
                auth=False,
                description=(
                    "Posted by the device or relayed by Home Assistant; the signature is the "
                    "authentication. Errors: 409 `claim_rejected` (also for a replayed token), "
                    "410 `claim_expired`, 400 `clock_skew`, `bad_signature`, `invalid_request`."
                ),
                body=_obj(signed),
            )
        },
        "/v1/zero-touch/confirm": {
            "post": _op(
                "A pre-assigned device asks to be owned",
                tag="claims",
                ok=(200, "Owned"),
                errors=(409, 410, 429, 503),
                auth=False,
                body=_obj(signed),
            )
        },
        "/v1/devices/release-by-device": {
            "post": _op(
                "The device's signed release after a factory reset (idempotent)",
                tag="devices",
                ok=(200, "Released"),
                errors=(409, 410, 429, 503),
                auth=False,
                body=_obj({"release": _ref("SignedStatement")}),
            )
        },
        "/v1/device/mqtt-credential": {
            "post": _op(
                "A device's signed request for its current MQTT credential",
                tag="devices",
                ok=(200, "CredentialAnswer"),
                errors=(403, 429, 503),
                auth=False,
                description=(
                    "Posted by the device when the broker refuses its saved password (after a "
                    "rotation); the signature (domain `iob/v1/mqtt-credential`, at most 120 s "
                    "old, nonce single-use) is the authentication. 200 `owned` with the "
                    "current credential, or 200 `unowned` (released or never claimed: the "
                    "device returns to unclaimed) to the genuine device only; 403 "
                    "`credential_refused` alike for an unknown device, a bad signature and a "
                    "replayed request; 400 `clock_skew`, `invalid_request`."
                ),
                body=_obj({"request": _ref("SignedStatement")}),
            )
        },
        "/v1/claims/{claim_id}": {
            "get": _op(
                "A claim's status (poll until owned)",
                tag="claims",
                ok=(200, "ClaimStatus"),
                errors=(404,),
                parameters=[_path("claim_id")],
            )
        },
        "/v1/models": {"get": _op("Device models", tag="registry", ok=(200, "ModelList"))},
        "/v1/models/{model}": {
            "get": _op(
                "One device model",
                tag="registry",
                ok=(200, "Model"),
                errors=(404,),
                parameters=[_path("model")],
            )
        },
        "/v1/households": {
            "get": _op("Your households", tag="households", ok=(200, "HouseholdList")),
            "post": _op(
                "Create a household (you become its owner)",
                tag="households",
                ok=(201, "Household"),
                body=_obj({"name": NAME}),
            ),
        },
        _H: {
            "get": _op(
                "One household",
                tag="households",
                ok=(200, "Household"),
                errors=(404,),
                parameters=_HP,
            ),
            "patch": _op(
                "Rename (admin)",
                tag="households",
                ok=(200, "Household"),
                errors=(403, 404),
                body=_obj({"name": NAME}),
                parameters=_HP,
            ),
        },
        _H + "/members": {
            "get": _op(
                "Members (any member)",
                tag="households",
                ok=(200, "MemberList"),
                errors=(404,),
                parameters=_HP,
            ),
            "post": _op(
                "Add a member standing for a Home Assistant user (admin)",
                tag="households",
                ok=(201, "Member"),
                errors=(403, 404, 409),
                body=_obj(
                    {
                        "external_id": {"type": "string", "minLength": 1, "maxLength": 200},
                        "display_name": NAME,
                        "role": {"type": "string", "enum": ["admin", "member", "viewer"]},
                    }
                ),
                parameters=_HP,
            ),
        },
        _H + "/members/{member_id}": {
            "patch": _op(
                "Change a member's role, name or external id (admin; admins by the owner)",
                tag="households",
                ok=(200, "Member"),
                errors=(403, 404, 409),
                body=_obj(
                    {
                        "role": {"type": "string", "enum": ["admin", "member", "viewer"]},
                        "display_name": NAME,
                        "external_id": {"type": "string", "minLength": 1, "maxLength": 200},
                    },
                    [],
                ),
                parameters=[*_HP, _path("member_id")],
            ),
            "delete": _op(
                "Remove a member (admin; admins by the owner)",
                tag="households",
                ok=(204, None),
                errors=(403, 404),
                parameters=[*_HP, _path("member_id")],
            ),
        },
        _H + "/invitations": {
            "get": _op(
                "Open invitations (admin)",
                tag="households",
                ok=(200, "InvitationList"),
                errors=(403, 404),
                parameters=_HP,
            ),
            "post": _op(
                "Invite an account (admin; admin role by the owner)",
                tag="households",
                ok=(201, "Invitation"),
                errors=(403, 404),
                body=_obj(
                    {
                        "role": {"type": "string", "enum": ["admin", "member", "viewer"]},
                        "email": {"type": "string", "maxLength": 254},
                        "external_id": {"type": "string", "minLength": 1, "maxLength": 200},
                    },
                    ["role"],
                ),
                parameters=_HP,
            ),
        },
        _H + "/invitations/{invitation_id}": {
            "delete": _op(
                "Revoke an invitation (admin)",
                tag="households",
                ok=(204, None),
                errors=(403, 404),
                parameters=[*_HP, _path("invitation_id")],
            )
        },
        _H + "/claims": {
            "post": _op(
                "Start a claim: a single-use token bound to device and household (admin)",
                tag="claims",
                ok=(201, "Claim"),
                errors=(403, 404, 409, 429),
                description=(
                    "409 `claim_rejected` for an unknown device, one owned elsewhere or "
                    "pre-assigned elsewhere (indistinguishable); 409 `already_owned` when "
                    "your household owns it."
                ),
                body=_obj({"device_id": {"type": "string", "maxLength": 64}}),
                parameters=_HP,
            )
        },
        _H + "/device-keys": {
            "post": _op(
                "A device's identity key, for a member who holds its manual code (member)",
                tag="devices",
                ok=(200, "DeviceKey"),
                errors=(403, 404, 429),
                description=(
                    "Home Assistant pins this key before a manual-code handshake "
                    "(DESIGN: the device key is checked against the registry before anything "
                    "secret is sent). 200 only when `manual_code` verifies against the "
                    "registry's setup verifier and the device is free or already this "
                    "household's. An unknown id, a wrong code and a device owned by or "
                    "pre-assigned to another household all answer the same 404 "
                    "`device_not_found_or_code_wrong`; every refusal is audited "
                    "(`device.key_lookup_refused`). Every attempt counts against per-account, "
                    "per-address and per-device budgets (default 20 per 15 min per device): "
                    "429 `rate_limited` with Retry-After. 400 `invalid_request` for a "
                    "malformed device id or code (bad check digit, trivial code)."
                ),
                body=_obj(
                    {
                        "device_id": {
                            "type": "string",
                            "maxLength": 64,
                            "description": "16 Crockford base32 characters.",
                        },
                        "manual_code": {
                            "type": "string",
                            "maxLength": 64,
                            "description": (
                                "The 10 digits from the label, e.g. `27182-81821`; hyphens and "
                                "spaces are ignored."
                            ),
                        },
                    }
                ),
                parameters=_HP,
            )
        },
        _H + "/devices": {
            "get": _op(
                "Owned and shared devices (any member)",
                tag="devices",
                ok=(200, "DeviceList"),
                errors=(404,),
                parameters=_HP,
            )
        },
        _D: {
            "get": _op(
                "One device (any member)",
                tag="devices",
                ok=(200, "Device"),
                errors=(404,),
                parameters=_DP,
            )
        },
        _D + "/release": {
            "post": _op(
                "Release (unclaim): credentials revoked, live session kicked (admin)",
                tag="devices",
                ok=(200, "Released"),
                errors=(403, 404, 503),
                parameters=_DP,
            )
        },
        _D + "/credentials": {
            "post": _op(
                "Rotate the device's MQTT password (admin)",
                tag="devices",
                ok=(200, "DeviceCredentials"),
                errors=(403, 404, 503),
                parameters=_DP,
            )
        },
        _D + "/shares": {
            "get": _op(
                "Shares of the device (admin)",
                tag="devices",
                ok=(200, "ShareList"),
                errors=(403, 404),
                parameters=_DP,
            )
        },
        _D + "/shares/{target_household_id}": {
            "put": _op(
                "Share with another household, read-only or with control (admin)",
                tag="devices",
                ok=(200, "Share"),
                errors=(403, 404, 503),
                body=_obj({"access": {"type": "string", "enum": ["read", "control"]}}),
                parameters=[*_DP, _path("target_household_id")],
            ),
            "delete": _op(
                "End a share (admin)",
                tag="devices",
                ok=(204, None),
                errors=(403, 404, 503),
                parameters=[*_DP, _path("target_household_id")],
            ),
        },
        _D + "/transfers": {
            "post": _op(
                "Offer the device to another household (owner)",
                tag="devices",
                ok=(201, "Transfer"),
                errors=(403, 404),
                body=_obj({"to_household_id": {"type": "string", "maxLength": 64}}),
                parameters=_DP,
            )
        },
        _D + "/audit": {
            "get": _op(
                "Audit events of one device in this household (admin)",
                tag="audit",
                ok=(200, "AuditPage"),
                errors=(403, 404),
                parameters=[*_DP, *_PAGE],
            )
        },
        _H + "/transfers": {
            "get": _op(
                "Pending transfers to and from the household (admin)",
                tag="devices",
                ok=(200, "TransferList"),
                errors=(403, 404),
                parameters=_HP,
            )
        },
        _H + "/transfers/{transfer_id}/accept": {
            "post": _op(
                "Accept a device offered to this household (admin)",
                tag="devices",
                ok=(200, "Transfer"),
                errors=(403, 404, 503),
                parameters=[*_HP, _path("transfer_id")],
            )
        },
        _H + "/transfers/{transfer_id}/decline": {
            "post": _op(
                "Decline an offer (admin of the recipient)",
                tag="devices",
                ok=(204, None),
                errors=(403, 404, 409),
                parameters=[*_HP, _path("transfer_id")],
            )
        },
        _H + "/transfers/{transfer_id}/cancel": {
            "post": _op(
                "Withdraw an offer (owner of the offering household)",
                tag="devices",
                ok=(204, None),
                errors=(403, 404, 409),
                parameters=[*_HP, _path("transfer_id")],
            )
        },
        _H + "/hub": {
            "get": _op(
                "The household hub's MQTT credentials for Home Assistant (admin)",
                tag="devices",
                ok=(200, "MqttCredentials"),
                errors=(403, 404, 503),
                description="Created on first use: username `hub-<household_id>`.",
                parameters=_HP,
            )
        },
        _H + "/hub/rotate": {
            "post": _op(
                "Rotate the hub's password (admin)",
                tag="devices",
                ok=(200, "MqttCredentials"),
                errors=(403, 404, 503),
                parameters=_HP,
            )
        },
        _H + "/audit": {
            "get": _op(
                "The household's audit events, newest first (admin)",
                tag="audit",
                ok=(200, "AuditPage"),
                errors=(403, 404),
                parameters=[*_HP, *_PAGE],
            )
        },
        "/v1/admin/registry/import": {
            "post": _op(
                "Import factory-provision records, all or nothing (service admin)",
                tag="admin",
                ok=(200, "ImportReport"),
                errors=(403,),
                body=_obj(
                    {
                        "records": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": 10000,
                            "items": _ref("FactoryRecord"),
                        }
                    }
                ),
            )
        },
        "/v1/admin/registry/devices/{device_id}": {
            "get": _op(
                "A registry entry (service admin)",
                tag="admin",
                ok=(200, "RegistryDevice"),
                errors=(403, 404),
                parameters=[_path("device_id")],
            )
        },
        "/v1/admin/registry/devices/{device_id}/preassignment": {
            "put": _op(
                "Pre-assign to a household for zero-touch (service admin)",
                tag="admin",
                ok=(200, "RegistryDevice"),
                errors=(403, 404),
                body=_obj(
                    {
                        "household_id": {"type": "string", "maxLength": 64},
                        "order_ref": {"type": "string", "minLength": 1, "maxLength": 200},
                    },
                    ["household_id"],
                ),
                parameters=[_path("device_id")],
            ),
            "delete": _op(
                "Clear a pre-assignment (service admin)",
                tag="admin",
                ok=(204, None),
                errors=(403, 404),
                parameters=[_path("device_id")],
            ),
        },
        "/v1/admin/models": {
            "get": _op(
                "Device models (service admin)", tag="admin", ok=(200, "ModelList"), errors=(403,)
            )
        },
        "/v1/admin/models/{model}": {
            "put": _op(
                "Create or replace a device model (service admin)",
                tag="admin",
                ok=(200, "Model"),
                errors=(403,),
                body=_obj(
                    {
                        "name": NAME,
                        "manufacturer": {"type": "string", "maxLength": 100},
                        "metadata": {"type": "object"},
                    },
                    ["name"],
                ),
                parameters=[_path("model")],
            )
        },
        "/v1/admin/audit": {
            "get": _op(
                "The whole audit log (service admin)",
                tag="admin",
                ok=(200, "AuditPage"),
                errors=(403,),
                parameters=[
                    {"name": "household_id", "in": "query", "required": False, "schema": ID},
                    {"name": "device_id", "in": "query", "required": False, "schema": ID},
                    *_PAGE,
                ],
            )
        },
        "/v1/admin/accounts/{account_id}/revoke-sessions": {
            "post": _op(
                "Revoke every session of an account (service admin)",
                tag="admin",
                ok=(200, "RevokedSessions"),
                errors=(403,),
                parameters=[_path("account_id")],
            )
        },
    }


@cache
def _document() -> dict[str, Any]:
    paths = _paths()
    for path, item in paths.items():
        for method, operation in item.items():
            slug = (
                path.removeprefix("/v1/")
                .removeprefix("/")
                .replace(".", "_")
                .replace("/", "_")
                .replace("{", "")
                .replace("}", "")
            )
            operation["operationId"] = f"{method}_{slug.replace('-', '_')}"
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "IoT Onboard account service",
            "version": "1.0.0",
            "description": (
                "Accounts, manufacturing registry, claims, households and roles, sharing, "
                "transfer, release and audit. Errors are always "
                '`{"error": {"code", "message"}}` with stable snake_case codes.'
            ),
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def document() -> dict[str, Any]:
    """The document (built once)."""
    return _document()
