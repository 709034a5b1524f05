"""The OpenAPI 3.1 document served at ``/openapi.json``.

Kept next to the handlers and checked against them: the response schemas are generated from
the shared wire model (iob_protocol.account_api), the paths and request bodies are written
here. The test suite validates every real response it sees against this document
(jsonschema), and schemathesis drives the API from it. Response objects forbid unknown
properties, so a field a handler sends that its model lacks fails the tests.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass, field
from functools import cache
from typing import Any, Final, Literal

from iob_protocol.account_api import REQUEST_MODELS, RESPONSE_MODELS
from mashumaro.jsonschema import JSONSchemaBuilder

ID: Final = {"type": "string", "pattern": "^[A-Za-z0-9_.-]{1,64}$"}
DEVICE_ID: Final = {
    "type": "string",
    "pattern": "^[0-9A-HJKMNP-TV-Z]{16}$",
    "description": "16 Crockford base32 characters (the device's factory id).",
}
TIME: Final = {"type": "integer", "description": "Unix seconds."}
#: What the service keeps of a name: no control character (C0, DEL, C1), one visible at least.
_PRINTABLE: Final = r"[^\u0000-\u001f\u007f-\u009f]"
_VISIBLE: Final = rf"{_PRINTABLE}*[^\s\u0000-\u001f\u007f-\u009f]{_PRINTABLE}*"
TEXT_PATTERN: Final = f"^{_VISIBLE}$"
NAME: Final = {"type": "string", "minLength": 1, "maxLength": 100, "pattern": TEXT_PATTERN}
#: A caller's own label for something (a Home Assistant user id, an order reference).
LABEL: Final = {"type": "string", "minLength": 1, "maxLength": 200, "pattern": TEXT_PATTERN}
#: An id in a request body: only bounded here, so a malformed one gets the handler's own 400.
ID_INPUT: Final = {"type": "string", "maxLength": 64}
GRANTED_ROLE: Final = {"type": "string", "enum": ["admin", "member", "viewer"]}
SHARE_ACCESS: Final = {"type": "string", "enum": ["read", "control"]}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


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


def _generated_schemas() -> dict[str, Any]:
    """The bodies' schemas, generated from the wire model (iob_protocol.account_api).

    Every field of an answer is always sent, so every property of a response is required; a
    request's optional field is absent, never ``null``. ``title`` and the models' defaults are
    dropped (the document names schemas by their key).
    """
    schemas: dict[str, Any] = {}
    for models, answer in ((RESPONSE_MODELS, True), (REQUEST_MODELS, False)):
        builder = JSONSchemaBuilder(all_refs=True, ref_prefix="#/components/schemas")
        for model in models:
            builder.build(model)
        definitions: dict[str, Any] = builder.get_definitions().to_dict()
        for name, schema in definitions.items():
            strict = _strict(schema, all_required=answer)
            if not answer:
                strict = _never_null(strict)
            schemas[_SCHEMA_NAMES.get(name, name)] = strict
    return schemas


#: Schema names that differ from the model's class name.
_SCHEMA_NAMES: Final = {"ErrorBody": "Error"}


def _strict(schema: Any, *, all_required: bool = True) -> Any:
    if isinstance(schema, list):
        return [_strict(item, all_required=all_required) for item in schema]
    if not isinstance(schema, dict):
        return schema
    strict = {
        k: _strict(v, all_required=all_required)
        for k, v in schema.items()
        if k not in {"title", "default"}
    }
    if strict.get("type") == "object" and "properties" in strict and all_required:
        strict["required"] = list(strict["properties"])
    if "enum" in strict and "type" not in strict:
        strict = {"type": "string", **strict}
    return strict


def _never_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A request object whose optional properties are their type alone (absent, not null)."""
    properties = {}
    for name, prop in schema["properties"].items():
        options = prop.get("anyOf")
        if options and {"type": "null"} in options:
            [kind] = [option for option in options if option != {"type": "null"}]
            properties[name] = {**kind, **{k: v for k, v in prop.items() if k != "anyOf"}}
        else:
            properties[name] = prop
    return {**schema, "properties": properties, "required": schema.get("required", [])}


_SCHEMAS: Final[dict[str, Any]] = {
    **_generated_schemas(),
    "CredentialAnswer": {"oneOf": [_ref("Owned"), _ref("Unowned")]},
    "ClaimAnswer": {"oneOf": [_ref("Owned"), _ref("RelayedOwned")]},
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


def _content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    """A response with a JSON body."""
    return {"description": description, "content": _content(schema)}


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": _content(schema)}


def _ok(schema_name: str | None) -> dict[str, Any]:
    """The success response: the named schema, or no body."""
    if schema_name is None:
        return {"description": "Success (no body)."}
    return _json(_ref(schema_name), "Success.")


_ERROR: Final = {"content": _content(_ref("Error"))}
_DESCRIPTIONS: Final = {
    400: "Invalid request (`invalid_request`, `weak_password`, ...).",
    401: "Not signed in, or the token expired or was revoked.",
    403: "Your role in the household does not allow this (`forbidden`).",
    404: "No such resource among yours (strangers get the same answer for any id).",
    409: "Conflicts with the current state.",
    410: "Expired or deleted (`claim_expired`, `household_deleted`).",
    413: "Body too large (`request_too_large`).",
    415: "The body is not `application/json` in UTF-8 (`unsupported_media_type`).",
    429: "Rate limited (`rate_limited`); see Retry-After.",
    503: "The broker or database is unavailable; nothing was changed.",
}


def _errors(*codes: int) -> dict[str, Any]:
    """The error responses, one wording per status everywhere, then ``default``."""
    responses = {
        str(code): {"description": _DESCRIPTIONS[code], **_ERROR} for code in sorted(set(codes))
    }
    return {**responses, "default": {"description": "Any other error.", **_ERROR}}


def _parameter(
    name: str, where: Literal["path", "query"], schema: dict[str, Any]
) -> dict[str, Any]:
    return {"name": name, "in": where, "required": where == "path", "schema": schema}


_PAGE: Final = (
    _parameter("cursor", "query", {"type": "string", "pattern": "^[0-9]{1,18}$"}),
    _parameter("limit", "query", {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}),
)


def _operation_id(method: str, path: str) -> str:
    """``post_households_household_id_claims`` for ``POST /v1/households/{household_id}/claims``."""
    slug = re.sub(r"[{}]", "", path.removeprefix("/v1/").removeprefix("/"))
    return f"{method}_{re.sub(r'[./-]', '_', slug)}"


@dataclass(frozen=True, slots=True)
class _Op:
    """One operation as written in :func:`_paths`; :meth:`render` adds what the rest implies.

    Its path parameters are the path's ``{name}`` segments (every one an id); a body implies
    400, 413 and 415, signing in implies 401, and every operation has the ``default`` error.
    """

    summary: str
    _: KW_ONLY
    tag: str
    ok: tuple[int, str | None]
    errors: tuple[int, ...] = ()
    body: dict[str, Any] | None = None
    auth: bool = True
    description: str | None = None
    query: tuple[dict[str, Any], ...] = ()
    #: OpenAPI links from the success response: what a client (and schemathesis' stateful
    #: phase) can do next with what this operation returned.
    links: Mapping[str, dict[str, Any]] = field(default_factory=dict)

    def render(self, method: str, path: str) -> dict[str, Any]:
        status, schema_name = self.ok
        implied = (() if self.body is None else (400, 413, 415)) + ((401,) if self.auth else ())
        success = _ok(schema_name)
        if self.links:
            success["links"] = dict(self.links)
        operation: dict[str, Any] = {
            "summary": self.summary,
            "tags": [self.tag],
            "operationId": _operation_id(method, path),
            "responses": {str(status): success, **_errors(*self.errors, *implied)},
        }
        if self.description:
            operation["description"] = self.description
        if self.body is not None:
            operation["requestBody"] = _json_body(self.body)
        if not self.auth:
            operation["security"] = []
        names = re.findall(r"\{(\w+)\}", path)
        if parameters := [*(_parameter(name, "path", ID) for name in names), *self.query]:
            operation["parameters"] = parameters
        return operation


def _link(method: str, path: str, /, **parameters: str) -> dict[str, Any]:
    """An OpenAPI link to ``method path``; values are runtime expressions (``$response…``)."""
    link: dict[str, Any] = {"operationId": _operation_id(method, path)}
    if parameters:
        link["parameters"] = parameters
    return link


def _body_link(method: str, path: str, body: dict[str, str]) -> dict[str, Any]:
    """A link that fills the target's request body from this response."""
    return {**_link(method, path), "requestBody": body}


def _household_links(household_id: str) -> dict[str, dict[str, Any]]:
    """Everything a household's admin can do next, given the expression for its id."""
    h = "/v1/households/{household_id}"
    return {
        "GetHousehold": _link("get", h, household_id=household_id),
        "RenameHousehold": _link("patch", h, household_id=household_id),
        "ListMembers": _link("get", h + "/members", household_id=household_id),
        "AddMember": _link("post", h + "/members", household_id=household_id),
        "ListInvitations": _link("get", h + "/invitations", household_id=household_id),
        "Invite": _link("post", h + "/invitations", household_id=household_id),
        "StartClaim": _link("post", h + "/claims", household_id=household_id),
        "ListDevices": _link("get", h + "/devices", household_id=household_id),
        "ListTransfers": _link("get", h + "/transfers", household_id=household_id),
        "GetHub": _link("get", h + "/hub", household_id=household_id),
        "RotateHub": _link("post", h + "/hub/rotate", household_id=household_id),
        "ListMqttCredentials": _link("get", h + "/mqtt-credentials", household_id=household_id),
        "CreateMqttCredential": _link("post", h + "/mqtt-credentials", household_id=household_id),
        "HouseholdAudit": _link("get", h + "/audit", household_id=household_id),
    }


def _device_links(household_id: str, device_id: str) -> dict[str, dict[str, Any]]:
    """What an admin can do with a device of the household, given both ids' expressions."""
    d = "/v1/households/{household_id}/devices/{device_id}"
    ids = {"household_id": household_id, "device_id": device_id}
    return {
        "GetDevice": _link("get", d, **ids),
        "ListShares": _link("get", d + "/shares", **ids),
        "DeviceAudit": _link("get", d + "/audit", **ids),
        "RotateCredentials": _link("post", d + "/credentials", **ids),
        "OfferTransfer": _link("post", d + "/transfers", **ids),
        "Release": _link("post", d + "/release", **ids),
    }


_REFRESH: Final = {
    "Refresh": _body_link(
        "post", "/v1/auth/refresh", {"refresh_token": "$response.body#/refresh_token"}
    )
}
_SAME_DEVICE: Final = {
    "household_id": "$request.path.household_id",
    "device_id": "$request.path.device_id",
}


def _member_links(member_id: str) -> dict[str, dict[str, Any]]:
    path = "/v1/households/{household_id}/members/{member_id}"
    ids = {"household_id": "$request.path.household_id", "member_id": member_id}
    return {
        "UpdateMember": _link("patch", path, **ids),
        "RemoveMember": _link("delete", path, **ids),
    }


def _transfer_link(action: str, household: str) -> dict[str, Any]:
    return _link(
        "post",
        f"/v1/households/{{household_id}}/transfers/{{transfer_id}}/{action}",
        household_id=f"$response.body#/{household}",
        transfer_id="$response.body#/transfer_id",
    )


#: Served by the app itself, to anyone, with no error of its own.
_THIS_DOCUMENT: Final = {
    "summary": "This document",
    "tags": ["service"],
    "operationId": _operation_id("get", "/openapi.json"),
    "security": [],
    "responses": {"200": _json({"type": "object"}, "The OpenAPI 3.1 document.")},
}

_H: Final = "/v1/households/{household_id}"
_D: Final = _H + "/devices/{device_id}"


def _paths() -> dict[str, dict[str, _Op | dict[str, Any]]]:
    return {
        "/v1/health": {
            "get": _Op(
                "Reachability and the service's clock",
                tag="service",
                ok=(200, "Health"),
                auth=False,
                description="Devices use `time` to detect clock skew before confirming a claim.",
            )
        },
        "/openapi.json": {"get": _THIS_DOCUMENT},
        "/v1/auth/sign-up": {
            "post": _Op(
                "Create an account (signed in)",
                tag="auth",
                ok=(201, "TokenPair"),
                errors=(409, 429),
                auth=False,
                body=_ref("SignUpRequest"),
                links={
                    **_REFRESH,
                    "RevokeSessions": _link(
                        "post",
                        "/v1/admin/accounts/{account_id}/revoke-sessions",
                        account_id="$response.body#/account/account_id",
                    ),
                },
            )
        },
        "/v1/auth/sign-in": {
            "post": _Op(
                "Sign in with e-mail and password (argon2id; rate-limited)",
                tag="auth",
                ok=(200, "TokenPair"),
                errors=(429,),
                auth=False,
                body=_ref("SignInRequest"),
                links=_REFRESH,
            )
        },
        "/v1/auth/refresh": {
            "post": _Op(
                "Rotate a refresh token",
                tag="auth",
                ok=(200, "TokenPair"),
                auth=False,
                description=(
                    "Each refresh token works once. Presenting a rotated one revokes the whole "
                    "session (`refresh_token_reused`)."
                ),
                errors=(401,),
                body=_ref("RefreshRequest"),
                links=_REFRESH,
            )
        },
        "/v1/auth/sign-out": {"post": _Op("Revoke this session", tag="auth", ok=(204, None))},
        "/v1/auth/me": {"get": _Op("The signed-in account", tag="auth", ok=(200, "Account"))},
        "/v1/provisioning/redeem": {
            "post": _Op(
                "Redeem the add-on's one-time provisioning token (Home Assistant)",
                tag="auth",
                ok=(201, "Provisioned"),
                errors=(401, 429),
                auth=False,
                description=(
                    "The Home Assistant add-on announces the service's URL and a one-time token "
                    "through the Supervisor; Home Assistant spends it here for a new owner "
                    "account, signed in, with a household. A token works once and expires; "
                    "401 `provisioning_token_invalid` otherwise."
                ),
                body=_ref("ProvisioningRequest"),
                links={
                    "Refresh": _body_link(
                        "post",
                        "/v1/auth/refresh",
                        {"refresh_token": "$response.body#/tokens/refresh_token"},
                    )
                },
            )
        },
        "/v1/invitations/accept": {
            "post": _Op(
                "Join a household with an invitation token",
                tag="households",
                ok=(201, "Member"),
                errors=(404, 409),
                body=_ref("AcceptInvitationRequest"),
                links={
                    "ListMembers": _link(
                        "get", _H + "/members", household_id="$response.body#/household_id"
                    )
                },
            )
        },
        "/v1/claims/confirm": {
            "post": _Op(
                "The device's signed claim confirmation",
                tag="claims",
                ok=(200, "ClaimAnswer"),
                errors=(409, 410, 429, 503),
                auth=False,
                description=(
                    "Posted by the device or relayed by Home Assistant; the signature is the "
                    "authentication. A fresh signature by the same device over the same token "
                    "within its TTL (the device lost the answer) gets the same grant again. "
                    "A claim of a device the claim's household owns already (onboarded again "
                    "after its first onboarding's answers were lost) keeps the owner and "
                    "rotates the MQTT password: the answer carries the new one. "
                    "Errors: 409 `claim_rejected` (also for a replayed confirmation, or a spent "
                    "token after its TTL), 410 `claim_expired`, 400 `clock_skew`, "
                    "`bad_signature`, `invalid_request`. With `relayed: true` (Home Assistant "
                    "relays the confirmation of a device without internet) the answer is "
                    "RelayedOwned: the same grant plus `grant_mac`, which the device checks."
                ),
                body=_ref("ConfirmationRequest"),
            )
        },
        "/v1/zero-touch/confirm": {
            "post": _Op(
                "A pre-assigned device asks to be owned",
                tag="claims",
                ok=(200, "Owned"),
                errors=(409, 410, 429, 503),
                auth=False,
                body=_ref("ConfirmationRequest"),
            )
        },
        "/v1/devices/release-by-device": {
            "post": _Op(
                "The device's signed release after a factory reset (idempotent)",
                tag="devices",
                ok=(200, "Released"),
                errors=(409, 410, 429, 503),
                auth=False,
                body=_ref("ReleaseRequest"),
            )
        },
        "/v1/device/mqtt-credential": {
            "post": _Op(
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
                body=_ref("CredentialRequest"),
            )
        },
        "/v1/claims/{claim_id}": {
            "get": _Op(
                "A claim's status (poll until owned)",
                tag="claims",
                ok=(200, "ClaimStatus"),
                errors=(404,),
            )
        },
        "/v1/models": {"get": _Op("Device models", tag="registry", ok=(200, "ModelList"))},
        "/v1/models/{model}": {
            "get": _Op("One device model", tag="registry", ok=(200, "Model"), errors=(404,))
        },
        "/v1/households": {
            "get": _Op(
                "Your households",
                tag="households",
                ok=(200, "HouseholdList"),
                links=_household_links("$response.body#/households/0/household_id"),
            ),
            "post": _Op(
                "Create a household (you become its owner)",
                tag="households",
                ok=(201, "Household"),
                body=_ref("HouseholdRequest"),
                links=_household_links("$response.body#/household_id"),
            ),
        },
        _H: {
            "get": _Op("One household", tag="households", ok=(200, "Household"), errors=(404,)),
            "patch": _Op(
                "Rename (admin)",
                tag="households",
                ok=(200, "Household"),
                errors=(403, 404),
                body=_ref("HouseholdRequest"),
                links={"GetHousehold": _link("get", _H, household_id="$request.path.household_id")},
            ),
            "delete": _Op(
                "Delete the household, releasing every device (owner; confirm with its name)",
                tag="households",
                ok=(200, "HouseholdDeleted"),
                errors=(403, 404, 410, 503),
                body=_ref("DeleteHouseholdRequest"),
                description=(
                    "Every device is released as by its release (broker credentials revoked, "
                    "live sessions cut, unclaimed so it can be onboarded again), shares, "
                    "invitations, claims and members go, and the audit log records it. One "
                    "transaction: on 503 nothing changed; retry. `confirm_name` must be the "
                    "household's name (400 `confirmation_mismatch`). A second deletion by the "
                    "same account gets 410 `household_deleted`."
                ),
            ),
        },
        _H + "/owner": {
            "post": _Op(
                "Hand ownership to another member with an account (owner)",
                tag="households",
                ok=(200, "Member"),
                errors=(403, 404, 409),
                body=_ref("OwnerRequest"),
                description=(
                    "Atomic: the target becomes the owner and the old owner an admin. The "
                    "target must be a current member with an account (not only a Home "
                    "Assistant user). The answer is the new owner's membership."
                ),
            )
        },
        "/v1/account": {
            "delete": _Op(
                "Delete your account (password re-entered)",
                tag="auth",
                ok=(204, None),
                errors=(403, 409, 429, 503),
                body=_ref("DeleteAccountRequest"),
                description=(
                    "Refused (409 `owner_handover_required`) while you own a household other "
                    "accounts belong to: hand it over or delete it first. Otherwise the "
                    "households you own are deleted as by DELETE /v1/households/{id}, your "
                    "memberships and every session end, and the audit log keeps your events "
                    "under your account id only (docs/relay.md, Retention). 403 "
                    "`password_mismatch` for a wrong password."
                ),
            )
        },
        "/v1/account/export": {
            "get": _Op(
                "Your account's data: profile, memberships, owned households and devices, "
                "sessions, audit events",
                tag="auth",
                ok=(200, "AccountExport"),
            )
        },
        _H + "/members": {
            "get": _Op(
                "Members (any member)", tag="households", ok=(200, "MemberList"), errors=(404,)
            ),
            "post": _Op(
                "Add a member standing for a Home Assistant user (admin)",
                tag="households",
                ok=(201, "Member"),
                errors=(403, 404, 409),
                body=_ref("AddMemberRequest"),
                links=_member_links("$response.body#/member_id"),
            ),
        },
        _H + "/members/{member_id}": {
            "patch": _Op(
                "Change a member's role, name or external id (admin; admins by the owner)",
                tag="households",
                ok=(200, "Member"),
                errors=(403, 404, 409),
                body=_ref("UpdateMemberRequest"),
                links=_member_links("$request.path.member_id"),
            ),
            "delete": _Op(
                "Remove a member (admin; admins by the owner)",
                tag="households",
                ok=(204, None),
                errors=(403, 404),
            ),
        },
        _H + "/invitations": {
            "get": _Op(
                "Open invitations (admin)",
                tag="households",
                ok=(200, "InvitationList"),
                errors=(403, 404),
            ),
            "post": _Op(
                "Invite an account (admin; admin role by the owner)",
                tag="households",
                ok=(201, "Invitation"),
                errors=(403, 404),
                body=_ref("InviteRequest"),
                links={
                    "RevokeInvitation": _link(
                        "delete",
                        _H + "/invitations/{invitation_id}",
                        household_id="$response.body#/household_id",
                        invitation_id="$response.body#/invitation_id",
                    ),
                    "AcceptInvitation": _body_link(
                        "post", "/v1/invitations/accept", {"token": "$response.body#/token"}
                    ),
                },
            ),
        },
        _H + "/invitations/{invitation_id}": {
            "delete": _Op(
                "Revoke an invitation (admin)", tag="households", ok=(204, None), errors=(403, 404)
            )
        },
        _H + "/claims": {
            "post": _Op(
                "Start a claim: a single-use token bound to device and household (admin)",
                tag="claims",
                ok=(201, "Claim"),
                errors=(403, 404, 409, 429),
                description=(
                    "409 `claim_rejected` for an unknown device, one owned elsewhere or "
                    "pre-assigned elsewhere (indistinguishable). A device your household owns "
                    "already gets a claim too (onboarding it again, e.g. after it rolled back "
                    "when every answer to its confirmation was lost); its confirmation keeps "
                    "the household and rotates the device's MQTT password."
                ),
                body=_ref("ClaimRequest"),
                links={
                    "ClaimStatus": _link(
                        "get", "/v1/claims/{claim_id}", claim_id="$response.body#/claim_id"
                    )
                },
            )
        },
        _H + "/device-keys": {
            "post": _Op(
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
                body=_ref("DeviceKeyRequest"),
            )
        },
        _H + "/devices": {
            "get": _Op(
                "Owned and shared devices (any member)",
                tag="devices",
                ok=(200, "DeviceList"),
                errors=(404,),
                links=_device_links(
                    "$request.path.household_id", "$response.body#/devices/0/device_id"
                ),
            )
        },
        _D: {
            "get": _Op("One device (any member)", tag="devices", ok=(200, "Device"), errors=(404,))
        },
        _D + "/release": {
            "post": _Op(
                "Release (unclaim): credentials revoked, live session kicked (admin)",
                tag="devices",
                ok=(200, "Released"),
                errors=(403, 404, 503),
            )
        },
        _D + "/credentials": {
            "post": _Op(
                "Rotate the device's MQTT password (admin)",
                tag="devices",
                ok=(200, "DeviceCredentials"),
                errors=(403, 404, 503),
            )
        },
        _D + "/shares": {
            "get": _Op(
                "Shares of the device (admin)",
                tag="devices",
                ok=(200, "ShareList"),
                errors=(403, 404),
            )
        },
        _D + "/shares/{target_household_id}": {
            "put": _Op(
                "Share with another household, read-only or with control (admin)",
                tag="devices",
                ok=(200, "Share"),
                errors=(403, 404, 503),
                body=_ref("ShareRequest"),
                links={
                    "ListShares": _link("get", _D + "/shares", **_SAME_DEVICE),
                    "EndShare": _link(
                        "delete",
                        _D + "/shares/{target_household_id}",
                        **_SAME_DEVICE,
                        target_household_id="$request.path.target_household_id",
                    ),
                },
            ),
            "delete": _Op(
                "End a share (admin)", tag="devices", ok=(204, None), errors=(403, 404, 503)
            ),
        },
        _D + "/transfers": {
            "post": _Op(
                "Offer the device to another household (owner)",
                tag="devices",
                ok=(201, "Transfer"),
                errors=(403, 404),
                body=_ref("TransferRequest"),
                links={
                    "AcceptTransfer": _transfer_link("accept", "to_household_id"),
                    "DeclineTransfer": _transfer_link("decline", "to_household_id"),
                    "CancelTransfer": _transfer_link("cancel", "from_household_id"),
                },
            )
        },
        _D + "/audit": {
            "get": _Op(
                "Audit events of one device in this household (admin)",
                tag="audit",
                ok=(200, "AuditPage"),
                errors=(403, 404),
                query=_PAGE,
            )
        },
        _H + "/transfers": {
            "get": _Op(
                "Pending transfers to and from the household (admin)",
                tag="devices",
                ok=(200, "TransferList"),
                errors=(403, 404),
            )
        },
        _H + "/transfers/{transfer_id}/accept": {
            "post": _Op(
                "Accept a device offered to this household (admin)",
                tag="devices",
                ok=(200, "Transfer"),
                errors=(403, 404, 503),
            )
        },
        _H + "/transfers/{transfer_id}/decline": {
            "post": _Op(
                "Decline an offer (admin of the recipient)",
                tag="devices",
                ok=(204, None),
                errors=(403, 404, 409),
            )
        },
        _H + "/transfers/{transfer_id}/cancel": {
            "post": _Op(
                "Withdraw an offer (owner of the offering household)",
                tag="devices",
                ok=(204, None),
                errors=(403, 404, 409),
            )
        },
        _H + "/mqtt-credentials": {
            "get": _Op(
                "The household's MQTT credentials for other tools, without passwords (admin)",
                tag="devices",
                ok=(200, "MqttAccessList"),
                errors=(403, 404),
            ),
            "post": _Op(
                "MQTT credentials for another tool (Node-RED, Telegraf), read or control (admin)",
                tag="devices",
                ok=(201, "MqttAccessCredential"),
                errors=(403, 404, 409, 503),
                body=_ref("MqttAccessRequest"),
                description="The password is in this answer only. The credential reaches the "
                "household's devices (those it owns and those shared with it): it may "
                "subscribe to `iob/#` and receives their availability, descriptor and states; "
                "`control` may also publish their commands, except a factory reset. Connect "
                "with client id = username. At most 20 per household.",
                links={
                    "RevokeMqttCredential": _link(
                        "delete",
                        _H + "/mqtt-credentials/{credential_id}",
                        household_id="$response.body#/household_id",
                        credential_id="$response.body#/credential_id",
                    ),
                },
            ),
        },
        _H + "/mqtt-credentials/{credential_id}": {
            "delete": _Op(
                "Revoke an MQTT credential; its live session is disconnected (admin)",
                tag="devices",
                ok=(204, None),
                errors=(403, 404, 503),
            )
        },
        _H + "/hub": {
            "get": _Op(
                "The household hub's MQTT credentials for Home Assistant (admin)",
                tag="devices",
                ok=(200, "MqttCredentials"),
                errors=(403, 404, 503),
                description="Created on first use: username `hub-<household_id>`.",
            )
        },
        _H + "/hub/rotate": {
            "post": _Op(
                "Rotate the hub's password (admin)",
                tag="devices",
                ok=(200, "MqttCredentials"),
                errors=(403, 404, 503),
            )
        },
        _H + "/audit": {
            "get": _Op(
                "The household's audit events, newest first (admin)",
                tag="audit",
                ok=(200, "AuditPage"),
                errors=(403, 404),
                query=_PAGE,
            )
        },
        "/v1/admin/registry/import": {
            "post": _Op(
                "Import factory-provision records, all or nothing (service admin)",
                tag="admin",
                ok=(200, "ImportReport"),
                errors=(403,),
                body=_ref("RegistryImportRequest"),
            )
        },
        "/v1/admin/registry/devices/{device_id}": {
            "get": _Op(
                "A registry entry (service admin)",
                tag="admin",
                ok=(200, "RegistryDevice"),
                errors=(403, 404),
            )
        },
        "/v1/admin/registry/devices/{device_id}/preassignment": {
            "put": _Op(
                "Pre-assign to a household for zero-touch (service admin)",
                tag="admin",
                ok=(200, "RegistryDevice"),
                errors=(403, 404),
                body=_ref("PreassignRequest"),
                links={
                    "GetRegistryDevice": _link(
                        "get",
                        "/v1/admin/registry/devices/{device_id}",
                        device_id="$request.path.device_id",
                    ),
                    "ClearPreassignment": _link(
                        "delete",
                        "/v1/admin/registry/devices/{device_id}/preassignment",
                        device_id="$request.path.device_id",
                    ),
                },
            ),
            "delete": _Op(
                "Clear a pre-assignment (service admin)",
                tag="admin",
                ok=(204, None),
                errors=(403, 404),
            ),
        },
        "/v1/admin/models": {
            "get": _Op(
                "Device models (service admin)", tag="admin", ok=(200, "ModelList"), errors=(403,)
            )
        },
        "/v1/admin/models/{model}": {
            "put": _Op(
                "Create or replace a device model (service admin)",
                tag="admin",
                ok=(200, "Model"),
                errors=(403,),
                body=_ref("PutModelRequest"),
                links={
                    "GetModel": _link("get", "/v1/models/{model}", model="$response.body#/model")
                },
            )
        },
        "/v1/admin/audit": {
            "get": _Op(
                "The whole audit log (service admin)",
                tag="admin",
                ok=(200, "AuditPage"),
                errors=(403,),
                query=(
                    _parameter("household_id", "query", ID),
                    _parameter("device_id", "query", ID),
                    *_PAGE,
                ),
            )
        },
        "/v1/admin/accounts/{account_id}/revoke-sessions": {
            "post": _Op(
                "Revoke every session of an account (service admin)",
                tag="admin",
                ok=(200, "RevokedSessions"),
                errors=(403,),
            )
        },
    }


@cache
def _document() -> dict[str, Any]:
    paths = {
        path: {
            method: op.render(method, path) if isinstance(op, _Op) else op
            for method, op in item.items()
        }
        for path, item in _paths().items()
    }
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
