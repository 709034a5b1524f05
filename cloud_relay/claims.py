"""Claims (DESIGN "Claim"): pre-validation, token, signed confirmation, zero-touch.

A single-use token bound to device and household; the device's signed confirmation within the
TTL; zero-touch ownership of devices pre-assigned to a household.

Ownership is decided by one conditional update (``… WHERE household_id IS NULL``) that also
locks the device row, so of any number of concurrent confirmations exactly one wins; the
others see zero rows changed and are rejected. Every claim transaction locks the device row
before touching claim rows, so concurrent claims of one device never deadlock.

Strangers learn nothing: an unknown id, a device owned by another household, a device
pre-assigned to another household and a spent token all give the same 409 ``claim_rejected``
after the same queries. The claiming household's own device is claimable: onboarding it
again (every answer of its first onboarding was lost and it rolled back) keeps the owner and
rotates its MQTT credential (:func:`take_back`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Final

from iob_protocol import account_api as api
from iob_protocol.canonical import JsonValue

from . import audit
from .accounts import Account
from .broker import DeviceCredential
from .broker_sync import BrokerPlan
from .context import Context
from .device_proofs import (
    DeviceStatement,
    parse_claim_confirmation,
    parse_zero_touch,
    verify_statement,
)
from .errors import (
    ClaimExpiredError,
    ClaimNotFoundError,
    ClaimRejectedError,
)
from .households import Households
from .mutation import KeyedLocks, mutate
from .ratelimit import hit_all
from .storage import Connection, Row
from .tokens import new_id, new_token, token_hash

_LOGGER: Final = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Owned:
    """A device now owned by a household, with its MQTT credential."""

    device_id: str
    household_id: str
    credential: DeviceCredential

    def answer(self, ctx: Context) -> api.Owned:
        """The body devices and Home Assistant receive."""
        return api.Owned(
            device_id=self.device_id,
            household_id=self.household_id,
            mqtt=ctx.mqtt_credentials(self.credential),
        )


async def _reject_other_claims(
    conn: Connection, *, device_id: str, claim_id: str, now: int
) -> None:
    """The device's other pending claims lose: ``claim_id`` took it."""
    await conn.execute(
        "UPDATE claims SET status = 'rejected', completed_at = $1 "
        "WHERE device_id = $2 AND status = 'pending' AND id <> $3",
        now,
        device_id,
        claim_id,
    )


async def take_ownership(
    conn: Connection,
    plan: BrokerPlan,
    ctx: Context,
    *,
    device_id: str,
    household_id: str,
    actor: str,
    action: str,
    details: dict[str, JsonValue],
    claim_id: str = "",
    kick: bool = False,
    now: int | None = None,
) -> Owned | None:
    """Make ``household_id`` the owner if the device is free; None if someone was faster.

    Every other pending claim of the device (``claim_id`` excepted) is closed as rejected.
    ``kick``: the household's Home Assistant did not ask for this claim (zero-touch), so its
    hub is disconnected to re-read the device list now rather than at its next refresh.
    ``now``: the caller's time, so ``owned_since`` equals the claim's ``completed_at`` (a
    re-confirmation recognises the ownership its claim made by it).
    """
    if now is None:
        now = ctx.now()
    taken = await conn.fetch(
        "UPDATE devices SET household_id = $1, owned_since = $2, updated_at = $2 "
        "WHERE device_id = $3 AND household_id IS NULL "
        "AND (preassigned_household_id IS NULL OR preassigned_household_id = $1) "
        "RETURNING credential_version",
        household_id,
        now,
        device_id,
    )
    if len(taken) != 1:
        return None
    await _reject_other_claims(conn, device_id=device_id, claim_id=claim_id, now=now)
    version = taken[0]["credential_version"]
    # Put already by the caller's ``prepare`` when nothing changed since (see Claims.confirm).
    credential = await plan.put_before(device_id, int(version))
    await plan.grant_device(conn, household_id, device_id, kick=kick)
    await audit.append(
        conn,
        at=now,
        actor=actor,
        action=action,
        household_id=household_id,
        device_id=device_id,
        details=details,
    )
    return Owned(device_id, household_id, credential)


async def take_back(
    conn: Connection,
    plan: BrokerPlan,
    *,
    device_id: str,
    household_id: str,
    details: dict[str, JsonValue],
    claim_id: str,
    now: int,
) -> Owned | None:
    """A device ``household_id`` owns already, onboarded into it again; None if it does not.

    The device confirmed a claim of its own household: its earlier onboarding's answers were
    all lost and it rolled back (or it was reset while offline). Ownership stays; the MQTT
    credential is rotated (whatever copy of the old password exists - the lost answer's, a
    reset device's - stops working, and the broker disconnects a session that uses it);
    ``owned_since`` becomes ``now``, so this claim's own lost answer can be re-confirmed
    (:func:`reconfirm`), an earlier claim's token re-confirms nothing, and a release notice
    signed before this onboarding is stale. Shares and pending transfers stay (the household
    did not change). Audited ``device.reclaimed``.
    """
    taken = await conn.fetch(
        "UPDATE devices SET owned_since = $1, credential_version = credential_version + 1, "
        "updated_at = $1 WHERE device_id = $2 AND household_id = $3 "
        "RETURNING credential_version",
        now,
        device_id,
        household_id,
    )
    if len(taken) != 1:
        return None
    await _reject_other_claims(conn, device_id=device_id, claim_id=claim_id, now=now)
    version = int(taken[0]["credential_version"])
    credential = await plan.put_device(device_id, version)
    await plan.grant_device(conn, household_id, device_id)  # in place already: no change
    await audit.append(
        conn,
        at=now,
        actor=f"device:{device_id}",
        action="device.reclaimed",
        household_id=household_id,
        device_id=device_id,
        details={**details, "credential_version": version},
    )
    _LOGGER.info("%s onboarded again into its household %s", device_id, household_id)
    return Owned(device_id, household_id, credential)


async def check_device_statement(ctx: Context, statement: DeviceStatement, *, max_age: int) -> None:
    """The per-device rate limit, then the signature by the registry key and time.

    Every statement a device signs goes through here before anything else is read or written
    (the HTTP layer spent the caller's per-address budget before it read the body); an unknown
    device fails the signature check like a forged statement (no enumeration).
    """
    await ctx.limiters.confirm_per_device.hit(statement.device_id)
    async with ctx.storage.read() as conn:
        key = await conn.fetchval(
            "SELECT public_key FROM devices WHERE device_id = $1", statement.device_id
        )
    verify_statement(
        statement,
        None if key is None else bytes(key),
        now=ctx.now(),
        max_age=max_age,
        max_skew=ctx.config.max_clock_skew,
    )


class Claims:
    """Create claims, report their status, accept the device's confirmation."""

    def __init__(self, ctx: Context, households: Households) -> None:
        """Use ``ctx``; role checks through ``households``."""
        self._ctx = ctx
        self._households = households
        self._confirming = KeyedLocks()

    async def create(
        self, account: Account, household_id: str, device_id: str, client: str
    ) -> api.Claim:
        """Pre-validate and issue a single-use token bound to device and household."""
        ctx = self._ctx
        limiters = ctx.limiters
        await hit_all(
            [
                (limiters.claims_per_account, account.id),
                (limiters.claims_per_address, client),
                (limiters.claims_per_device, device_id),
            ]
        )
        token, claim_id, now = new_token(), new_id(), ctx.now()
        expires_at = now + ctx.config.claim_ttl

        async def body(conn: Connection) -> None:
            await self._households.require(conn, household_id, account, "admin")
            device = await conn.fetchrow(
                "SELECT household_id, preassigned_household_id FROM devices WHERE device_id = $1",
                device_id,
            )
            # The household's own device may be onboarded again (its earlier onboarding's
            # answers were lost and it rolled back, or it was reset while offline): the
            # device's confirmation of this claim rotates its credential (``take_back``).
            owned_already = device is not None and device["household_id"] == household_id
            if not owned_already and (
                device is None
                or device["household_id"] is not None
                or device["preassigned_household_id"] not in {None, household_id}
            ):
                raise ClaimRejectedError
            await conn.execute(
                "INSERT INTO claims (id, device_id, household_id, account_id, token_hash, status, "
                "created_at, expires_at) VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7)",
                claim_id,
                device_id,
                household_id,
                account.id,
                token_hash(token),
                now,
                expires_at,
            )
            await audit.append(
                conn,
                at=now,
                actor=account.actor,
                action="claim.created",
                household_id=household_id,
                device_id=device_id,
                details={
                    "claim_id": claim_id,
                    "expires_at": expires_at,
                    **({"owned_already": True} if owned_already else {}),
                },
            )

        await ctx.storage.run(body)
        return api.Claim(
            claim_id=claim_id,
            device_id=device_id,
            household_id=household_id,
            token=token,
            expires_at=expires_at,
        )

    async def status(self, account: Account, claim_id: str) -> api.ClaimStatus:
        """pending, owned, expired or rejected (members of the claim's household only)."""
        async with self._ctx.storage.read() as conn:
            row = await conn.fetchrow("SELECT * FROM claims WHERE id = $1", claim_id)
            if row is None:
                raise ClaimNotFoundError
            member = await conn.fetchrow(
                "SELECT role FROM members WHERE household_id = $1 AND account_id = $2",
                row["household_id"],
                account.id,
            )
        if member is None:
            raise ClaimNotFoundError
        status = row["status"]
        if status == "pending" and row["expires_at"] < self._ctx.now():
            status = "expired"
        return api.ClaimStatus(
            claim_id=row["id"],
            status=api.ClaimState(status),
            device_id=row["device_id"],
            household_id=row["household_id"],
            expires_at=row["expires_at"],
            completed_at=row["completed_at"],
        )

    async def _claimable_version(self, hashed: bytes, device_id: str) -> int | None:
        """The device's credential version if the claim of ``hashed`` looks like it will win.

        Read outside the transaction (no write lock): only a hint for putting the device's
        client on the broker early. The transaction decides again under its locks.
        """
        async with self._ctx.storage.read() as conn:
            row = await conn.fetchrow(
                "SELECT c.household_id AS claim_household, c.status, c.expires_at, "
                "d.household_id, d.preassigned_household_id, d.credential_version "
                "FROM claims c JOIN devices d ON d.device_id = c.device_id "
                "WHERE c.token_hash = $1 AND c.device_id = $2",
                hashed,
                device_id,
            )
        if (
            row is None
            or row["status"] != "pending"
            or row["expires_at"] < self._ctx.now()
            or row["household_id"] is not None
            or row["preassigned_household_id"] not in {None, row["claim_household"]}
        ):
            return None
        return int(row["credential_version"])

    async def confirm(self, raw: object) -> Owned:
        """The device's signed confirmation: verify, then own in one transaction."""
        ctx = self._ctx
        confirmation = parse_claim_confirmation(raw)
        await check_device_statement(ctx, confirmation, max_age=ctx.config.claim_ttl)
        hashed = token_hash(confirmation.claim_token)

        async def body(conn: Connection, plan: BrokerPlan) -> Owned:
            now = ctx.now()
            claim = await conn.fetchrow(
                "SELECT id, device_id, household_id, account_id, status, expires_at, completed_at "
                "FROM claims "
                "WHERE token_hash = $1",
                hashed,
            )
            if claim is None or claim["device_id"] != confirmation.device_id:
                raise ClaimRejectedError
            # Every confirmation is used once, the first as well as a retry: a third party
            # replaying a captured one (HA relaying it, a proxy) gains nothing.
            await use_nonce(
                conn,
                confirmation.device_id,
                confirmation.nonce,
                confirmation.timestamp + ctx.config.claim_ttl + ctx.config.max_clock_skew,
            )
            if claim["status"] == "owned" and claim["expires_at"] >= now:
                return await reconfirm(conn, plan, ctx, claim)
            if claim["status"] == "expired" or (
                claim["status"] == "pending" and claim["expires_at"] < now
            ):
                raise ClaimExpiredError
            if claim["status"] != "pending":
                raise ClaimRejectedError
            details: dict[str, JsonValue] = {
                "claim_id": claim["id"],
                "account_id": claim["account_id"],
            }
            owned = await take_ownership(
                conn,
                plan,
                ctx,
                device_id=claim["device_id"],
                household_id=claim["household_id"],
                actor=f"device:{claim['device_id']}",
                action="device.claimed",
                details=details,
                claim_id=claim["id"],
                now=now,
            ) or await take_back(
                conn,
                plan,
                device_id=claim["device_id"],
                household_id=claim["household_id"],
                details=details,
                claim_id=claim["id"],
                now=now,
            )
            closed = await conn.execute(
                "UPDATE claims SET status = 'owned', completed_at = $1 "
                "WHERE id = $2 AND status = 'pending'",
                now,
                claim["id"],
            )
            if owned is None or closed != 1:
                raise ClaimRejectedError
            return owned

        async def prepare(plan: BrokerPlan) -> None:
            # The broker round trips (Mosquitto rewrites its whole dynamic-security file on
            # every change) happen here, not under the database's write lock. Only for a claim
            # that looks winnable, at the version it would commit; ``take_ownership`` re-checks
            # under the lock, and a loss is compensated like any failure.
            version = await self._claimable_version(hashed, confirmation.device_id)
            if version is not None:
                await plan.put_device(confirmation.device_id, version)

        # Only behind SQLite's single write lock, where a broker round trip inside the
        # transaction stalls every write of the service. PostgreSQL runs transactions side by
        # side (the broker was the limit there, measured: no gain, a longer tail), and with
        # several processes an in-process lock could not keep their early puts apart.
        early = prepare if ctx.storage.single_writer else None
        try:
            # One confirmation of a device at a time in this process, so one's early broker
            # call never interleaves with another's compensation.
            async with self._confirming.hold(confirmation.device_id):
                return await mutate(ctx, body, prepare=early, rerunnable=True)
        except ClaimExpiredError:
            await ctx.storage.run(
                lambda conn: conn.execute(
                    "UPDATE claims SET status = 'expired', completed_at = $1 "
                    "WHERE token_hash = $2 AND status = 'pending'",
                    ctx.now(),
                    hashed,
                )
            )
            raise

    async def zero_touch(self, raw: object) -> Owned:
        """A pre-assigned device, online by Ethernet, becomes its order's household's."""
        ctx = self._ctx
        confirmation = parse_zero_touch(raw)
        await check_device_statement(ctx, confirmation, max_age=ctx.config.claim_ttl)

        async def body(conn: Connection, plan: BrokerPlan) -> Owned:
            now = ctx.now()
            await use_nonce(
                conn,
                confirmation.device_id,
                confirmation.nonce,
                confirmation.timestamp + ctx.config.claim_ttl + ctx.config.max_clock_skew,
            )
            device = await conn.fetchrow(
                "SELECT household_id, preassigned_household_id, credential_version "
                "FROM devices WHERE device_id = $1",
                confirmation.device_id,
            )
            if device is None or device["preassigned_household_id"] is None:
                raise ClaimRejectedError
            household_id = device["preassigned_household_id"]
            if device["household_id"] == household_id:
                # The device lost the first answer: a fresh signature gets the same credential.
                credential = await plan.put_device(
                    confirmation.device_id, int(device["credential_version"])
                )
                return Owned(confirmation.device_id, household_id, credential)
            owned = await take_ownership(
                conn,
                plan,
                ctx,
                device_id=confirmation.device_id,
                household_id=household_id,
                actor=f"device:{confirmation.device_id}",
                action="device.claimed",
                details={"zero_touch": True},
                kick=True,
            )
            if owned is None:
                raise ClaimRejectedError
            _LOGGER.info("zero-touch: %s owned at %s", confirmation.device_id, now)
            return owned

        # Not while a confirmation of the device has its client put early (see confirm).
        async with self._confirming.hold(confirmation.device_id):
            return await mutate(ctx, body, rerunnable=True)

    async def purge_expired(self) -> None:
        """Mark lapsed claims expired and forget nonces past their window."""
        now = self._ctx.now()

        async def body(conn: Connection) -> None:
            await conn.execute(
                "UPDATE claims SET status = 'expired', completed_at = $1 "
                "WHERE status = 'pending' AND expires_at < $1",
                now,
            )
            await conn.execute("DELETE FROM device_nonces WHERE expires_at < $1", now)

        await self._ctx.storage.run(body)


async def reconfirm(conn: Connection, plan: BrokerPlan, ctx: Context, claim: Row) -> Owned:
    """A retry of a confirmation whose answer was lost: the same grant, audited as such.

    The device lost the answer (the connection dropped after the commit) and retries within
    the TTL with a fresh signature over the same token. It gets the grant of the ownership this
    claim made, if that still stands (not released, transferred or re-claimed since:
    ``owned_since`` is the claim's completion time), at the current credential version (the
    first answer's, unless rotated since), with the broker re-projected on the way.
    """
    kept = await conn.fetch(
        "UPDATE devices SET updated_at = updated_at "
        "WHERE device_id = $1 AND household_id = $2 AND owned_since = $3 "
        "RETURNING credential_version",
        claim["device_id"],
        claim["household_id"],
        claim["completed_at"],
    )
    if len(kept) != 1:
        raise ClaimRejectedError
    version = int(kept[0]["credential_version"])
    credential = await plan.put_device(claim["device_id"], version)
    await audit.append(
        conn,
        at=ctx.now(),
        actor=f"device:{claim['device_id']}",
        action="device.claim_reconfirmed",
        household_id=claim["household_id"],
        device_id=claim["device_id"],
        details={"claim_id": claim["id"], "credential_version": version},
    )
    _LOGGER.info("claim %s re-confirmed by %s", claim["id"], claim["device_id"])
    return Owned(claim["device_id"], claim["household_id"], credential)


async def use_nonce(conn: Connection, device_id: str, nonce: bytes, expires_at: int) -> None:
    """Record a device statement's nonce; a second use is a replay and is rejected."""
    used = await conn.execute(
        "INSERT INTO device_nonces (device_id, nonce, expires_at) VALUES ($1, $2, $3) "
        "ON CONFLICT (device_id, nonce) DO NOTHING",
        device_id,
        nonce,
        expires_at,
    )
    if used != 1:
        raise ClaimRejectedError
