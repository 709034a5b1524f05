"""A claim confirmation relayed by Home Assistant (an IoT VLAN without internet), both databases.

The service verifies the same signature as for a direct post and refuses a replay the same way;
the only difference is the answer: ``relayed: true`` adds ``grant_mac``, which the device checks
against the claim token it holds (iob_protocol.claim.ClaimGrant).
"""

from __future__ import annotations

from typing import Any

import pytest
from iob_protocol.account_api import Owned, RelayedOwned
from iob_protocol.canonical import canonical_json
from iob_protocol.claim import ClaimConfirmation
from iob_protocol.errors import ClaimError

from tests.plugins.mosquitto import MosquittoBroker

from .helpers import Api
from .mqtt import connect_code


def _statement(signed: dict[str, Any]) -> ClaimConfirmation:
    return ClaimConfirmation.from_json(canonical_json(signed))


async def test_relayed_confirmation_owns_and_its_answer_is_bound_to_it(
    api: Api, broker: MosquittoBroker
) -> None:
    _owner, household, device, started = await api.started_claim()
    token = started.body["token"]
    signed = device.confirm(token, api.now())
    relayed = await api.request(
        "POST",
        "/v1/claims/confirm",
        json_body={"confirmation": signed, "relayed": True},
        expect=200,
    )
    answer = RelayedOwned.parse(relayed.body)
    confirmation = _statement(signed)
    owned = answer.opened(confirmation)  # the device's check: its token, its nonce
    assert (owned.household_id, owned.device_id) == (household, device.id)
    assert await connect_code(broker, relayed.body["mqtt"]) == 0

    # HA is a courier: a grant it changed, or one for another confirmation, is refused.
    changed = RelayedOwned.parse({**relayed.body, "household_id": "0" * 32})
    with pytest.raises(ClaimError):
        changed.opened(confirmation)
    other = _statement(device.confirm(token, api.now()))
    with pytest.raises(ClaimError):
        answer.opened(other)

    # Replays are refused as for a direct post, relayed or not.
    for body in ({"confirmation": signed, "relayed": True}, {"confirmation": signed}):
        replay = await api.request("POST", "/v1/claims/confirm", json_body=body)
        assert (replay.status, replay.code) == (409, "claim_rejected")

    # A direct post keeps today's answer (older devices parse it strictly).
    direct = await api.request(
        "POST",
        "/v1/claims/confirm",
        json_body={"confirmation": device.confirm(token, api.now())},
        expect=200,
    )
    assert Owned.parse(direct.body).mqtt == owned.mqtt


async def test_relayed_confirmation_with_a_forged_signature_is_refused(api: Api) -> None:
    _owner, _household, device, started = await api.started_claim()
    signed = device.confirm(started.body["token"], api.now())
    forged = {**signed, "claim_token": "A" * 43}  # not what the device signed
    reply = await api.request(
        "POST", "/v1/claims/confirm", json_body={"confirmation": forged, "relayed": True}
    )
    assert (reply.status, reply.code) == (400, "bad_signature")
