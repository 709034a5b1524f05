"""The manual-code key lookup (DESIGN "Local secure session" 2).

With only the manual code (no QR fingerprint), Home Assistant must check the key a device
presents in the handshake against the registry before sending it anything secret. It asks here:
the household member types the code from the label, the service checks it against the
registry's salted scrypt verifier and answers with the device's public key.

The manual code has about 30 bits, so this is an online guessing oracle and is treated as one:

* every attempt counts against per-account, per-address and per-device budgets *before* the
  scrypt runs, so concurrent guesses cannot overrun the per-device budget (default 20 per
  15 minutes, as the device's own handshake limiter);
* an unknown id, a wrong code and a device owned by (or pre-assigned to) another household all
  get the same 404 after the same work (an unknown id is checked against a throw-away verifier
  of the default cost), so the answer says nothing about which ids exist or who owns them;
* every refused attempt is appended to the audit log (household, account, device id; never the
  code), so guessing and budget burning are visible and attributable. Successes change nothing
  and are followed by the claim, which is audited.

scrypt costs ~32 MiB and ~0.1 s per check: it runs in worker threads, never on the event loop,
at most :data:`MAX_CONCURRENT_CHECKS` at a time per process.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import Final

from iob_protocol import account_api as api
from iob_protocol.canonical import b64url_encode
from iob_protocol.errors import ProtocolError
from iob_protocol.identity import format_fingerprint, public_key_fingerprint, validate_device_id
from iob_protocol.payload import (
    DEFAULT_SCRYPT_LOG2_N,
    VERIFIER_HASH_SIZE,
    VERIFIER_SALT_SIZE,
    ManualCode,
    SetupVerifier,
)

from . import audit
from .accounts import Account
from .context import Context
from .errors import DeviceKeyNotFoundError, InvalidRequestError
from .households import Households
from .ratelimit import hit_all
from .storage import Row

#: scrypt checks running at once per process (memory: ~32 MiB each at the default cost).
MAX_CONCURRENT_CHECKS: Final = 2


def _throwaway_verifier() -> SetupVerifier:
    """A verifier nothing matches, at the default cost, for ids the registry does not know."""
    return SetupVerifier(
        log2_n=DEFAULT_SCRYPT_LOG2_N,
        r=8,
        p=1,
        salt=os.urandom(VERIFIER_SALT_SIZE),
        qr_hash=os.urandom(VERIFIER_HASH_SIZE),
        manual_hash=os.urandom(VERIFIER_HASH_SIZE),
    )


def _may_onboard(row: Row, household_id: str) -> bool:
    """Free and not pre-assigned elsewhere (as a claim requires), or already this household's."""
    owner = row["household_id"]
    if owner is not None:
        return bool(owner == household_id)
    return row["preassigned_household_id"] in {None, household_id}


@dataclass(frozen=True, slots=True)
class DeviceKey:
    """What Home Assistant pins for the handshake (``ClientSession.for_manual_code``)."""

    device_id: str
    public_key: bytes
    model: str

    def answer(self) -> api.DeviceKey:
        """The API's representation."""
        return api.DeviceKey(
            device_id=self.device_id,
            public_key=b64url_encode(self.public_key),
            fingerprint=format_fingerprint(public_key_fingerprint(self.public_key)),
            model=self.model,
        )


def parse_lookup(device_id: str, manual_code: str) -> tuple[str, ManualCode]:
    """Validate the request's shape (nothing secret: the check digit is on the label)."""
    try:
        validate_device_id(device_id)
    except ProtocolError as err:
        raise InvalidRequestError(
            f"device_id: {err}; use the id the device announces (discovery) or prints on its label"
        ) from err
    try:
        code = ManualCode.parse(manual_code)
    except ProtocolError as err:
        raise InvalidRequestError(
            f"manual_code: {err}; type the 10 digits under the QR code on the device's label"
        ) from err
    return device_id, code


class DeviceKeys:
    """The registry's device keys, for household members who hold the device's manual code."""

    def __init__(self, ctx: Context, households: Households) -> None:
        """Use ``ctx``; role checks through ``households``."""
        self._ctx = ctx
        self._households = households
        self._throwaway = _throwaway_verifier()
        self._checks = asyncio.Semaphore(MAX_CONCURRENT_CHECKS)

    async def _code_matches(
        self, verifier: SetupVerifier, device_id: str, code: ManualCode
    ) -> bool:
        async with self._checks:
            return await asyncio.to_thread(verifier.verify, device_id, code)

    async def lookup(
        self, account: Account, household_id: str, device_id: str, manual_code: str, client: str
    ) -> DeviceKey:
        """The device's key if ``manual_code`` is its code and this household may onboard it.

        Member role or above. A device that is free (and not pre-assigned elsewhere) or
        already owned by this household (re-onboarding) qualifies; anything else, like a wrong
        code or an unknown id, is :class:`DeviceKeyNotFoundError`.
        """
        ctx = self._ctx
        device_id, code = parse_lookup(device_id, manual_code)
        limiters = ctx.limiters
        async with ctx.storage.read() as conn:
            # Role first: a refused caller must not spend the device's budget.
            await self._households.require(conn, household_id, account, "member")
            await hit_all(
                [
                    (limiters.key_lookups_per_account, account.id),
                    (limiters.key_lookups_per_address, client),
                    (limiters.key_lookups_per_device, device_id),
                ]
            )
            row = await conn.fetchrow(
                "SELECT model, public_key, setup_verifier, household_id, "
                "preassigned_household_id FROM devices WHERE device_id = $1",
                device_id,
            )
        verifier = self._throwaway if row is None else SetupVerifier.decode(row["setup_verifier"])
        # The scrypt runs whatever the row says, so every refusal costs the same.
        matches = await self._code_matches(verifier, device_id, code)
        if row is not None and matches and _may_onboard(row, household_id):
            return DeviceKey(device_id, bytes(row["public_key"]), row["model"])
        async with ctx.storage.transaction() as conn:
            await audit.append(
                conn,
                at=ctx.now(),
                actor=account.actor,
                action="device.key_lookup_refused",
                household_id=household_id,
                device_id=device_id,
            )
        raise DeviceKeyNotFoundError
