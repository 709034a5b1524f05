"""Account lifecycle: owner hand-over, household deletion, account export and deletion.

A household is deleted the way its devices are released, in one transaction through
:func:`~cloud_relay.mutation.mutate`: every device is released by
:func:`~cloud_relay.devices.release_device` (client removed on the broker, live session cut,
device unclaimed), the hub is removed, the households it shared with are re-projected, and the
rows go. The broker calls are made before the commit; a failure rolls the database back and
compensation puts the broker back, and a crash between the two leaves a household whose
devices are missing on the broker until ``broker reconcile`` (run at every start) or a retry of
the deletion, which completes it.

Deleting an account leaves the audit chain untouched: events name an account only by its
random id (``account:<id>``), never by e-mail address or name, so removing the account row
(the one place where the id maps to a person) pseudonymises every event it caused while every
hash stays valid. docs/relay.md ("Retention") says what is kept, and why.
"""

from __future__ import annotations

import unicodedata

from iob_protocol import account_api as api

from . import audit
from .accounts import Account, Accounts
from .broker_sync import BrokerPlan, household_lock
from .context import Context
from .devices import release_device
from .errors import (
    ConfirmationMismatchError,
    ConflictError,
    ForbiddenError,
    HouseholdDeletedError,
    HouseholdNotFoundError,
    InvalidRequestError,
    MemberNotFoundError,
    OwnerHandoverRequiredError,
    RelayError,
)
from .households import Households, Membership, member_json
from .mutation import mutate
from .storage import Connection, Row


def _require_owner(membership: Membership, what: str) -> None:
    if membership.role != "owner":
        raise ForbiddenError(
            f"Only the household's owner can {what}; yours is {membership.role}. Ask its owner."
        )


async def _deleted_by(conn: Connection, household_id: str, account: Account) -> bool:
    """Whether ``account`` deleted ``household_id`` (a replay gets 410; anyone else 404)."""
    seq = await conn.fetchval(
        "SELECT seq FROM audit_log WHERE household_id = $1 AND action = 'household.deleted' "
        "AND actor = $2",
        household_id,
        account.actor,
    )
    return seq is not None


async def remove_household(
    conn: Connection, plan: BrokerPlan, household_id: str, *, now: int, actor: str, why: str
) -> api.HouseholdDeleted:
    """Release every device, drop hub, shares, members, invitations and claims; audit it."""
    sharees = {
        row["household_id"]
        for row in await conn.fetch(
            "SELECT s.household_id FROM shares s JOIN devices d ON d.device_id = s.device_id "
            "WHERE d.household_id = $1",
            household_id,
        )
    }
    # Every hub this touches, locked in one order (put_hub takes them again, re-entrantly).
    for locked in sorted({household_id, *sharees}):
        await conn.lock(household_lock(locked))
    devices = [
        row["device_id"]
        for row in await conn.fetch(
            "SELECT device_id FROM devices WHERE household_id = $1 ORDER BY device_id",
            household_id,
        )
    ]
    for device_id in devices:
        released = await release_device(
            conn,
            plan,
            device_id=device_id,
            household_id=household_id,
            now=now,
            actor=actor,
            details={"by": why},
            sync_hubs=False,
        )
        sharees.update(released)
    sharees.discard(household_id)
    members = int(
        await conn.fetchval("SELECT count(*) FROM members WHERE household_id = $1", household_id)
    )
    invitations = int(
        await conn.fetchval(
            "SELECT count(*) FROM invitations WHERE household_id = $1 AND accepted_at IS NULL "
            "AND revoked_at IS NULL AND expires_at >= $2",
            household_id,
            now,
        )
    )
    # Zero-touch orders for the household lapse with it (ON DELETE SET NULL keeps order_ref).
    await conn.execute(
        "UPDATE devices SET preassigned_household_id = NULL, order_ref = NULL, updated_at = $1 "
        "WHERE preassigned_household_id = $2",
        now,
        household_id,
    )
    had_hub = await conn.fetchval("SELECT 1 FROM hubs WHERE household_id = $1", household_id)
    # Cascades to members, invitations, claims, the hub, shares in and transfers either way.
    await conn.execute("DELETE FROM households WHERE id = $1", household_id)
    if had_hub is not None:
        await plan.remove_hub(household_id)
    await plan.sync_hubs(conn, sharees, kick=True)
    deleted = api.HouseholdDeleted(
        household_id=household_id,
        devices_released=len(devices),
        members_removed=members,
        invitations_revoked=invitations,
    )
    await audit.append(
        conn,
        at=now,
        actor=actor,
        action="household.deleted",
        household_id=household_id,
        details={
            "by": why,
            "devices_released": len(devices),
            "members_removed": members,
            "invitations_revoked": invitations,
        },
    )
    return deleted


def _handover_message(households: list[Row]) -> str:
    named = "; ".join(f"{row['name']!r} ({row['household_id']})" for row in households)
    first = households[0]["household_id"]
    return (
        f"You own households other accounts belong to: {named}. For each, hand ownership to "
        f"another member (POST /v1/households/{first}/owner with their member_id) or delete "
        f"the household (DELETE /v1/households/{first}), then delete your account."
    )


class Lifecycle:
    """Hand-over, household deletion, account export and deletion; each role-checked."""

    def __init__(self, ctx: Context, accounts: Accounts, households: Households) -> None:
        """Use ``ctx``; passwords through ``accounts``, roles through ``households``."""
        self._ctx = ctx
        self._accounts = accounts
        self._households = households

    async def hand_over(self, account: Account, household_id: str, member_id: str) -> api.Member:
        """Make another member with an account the owner; the old owner becomes an admin."""
        now = self._ctx.now()
        async with self._ctx.storage.transaction() as conn:
            actor = await self._households.require(conn, household_id, account, "admin")
            _require_owner(actor, "hand over ownership")
            target = await conn.fetchrow(
                "SELECT * FROM members WHERE id = $1 AND household_id = $2",
                member_id,
                household_id,
            )
            if target is None:
                raise MemberNotFoundError
            if target["id"] == actor.member_id:
                raise InvalidRequestError(
                    "You are the owner already; pass the member_id of the member who takes over "
                    "(GET /v1/households/{id}/members)."
                )
            if target["account_id"] is None:
                raise InvalidRequestError(
                    "This member stands for a Home Assistant user and has no account of its "
                    "own; only a member with an account can own the household. Invite them "
                    "to sign up and join first."
                )
            # Demote first: a household has one owner at every statement (members_one_owner).
            demoted = await conn.execute(
                "UPDATE members SET role = 'admin', updated_at = $1 WHERE id = $2 "
                "AND role = 'owner'",
                now,
                actor.member_id,
            )
            if demoted != 1:  # pragma: no cover - a concurrent hand-over committed first
                raise ConflictError("Ownership just changed; reload the household.")
            await conn.execute(
                "UPDATE members SET role = 'owner', updated_at = $1 WHERE id = $2", now, member_id
            )
            await audit.append(
                conn,
                at=now,
                actor=account.actor,
                action="household.owner_changed",
                household_id=household_id,
                details={"from_member_id": actor.member_id, "to_member_id": member_id},
            )
            row = await conn.fetchrow("SELECT * FROM members WHERE id = $1", member_id)
        if row is None:  # pragma: no cover - just updated
            raise MemberNotFoundError
        return member_json(row)

    async def delete_household(
        self, account: Account, household_id: str, confirm_name: str
    ) -> api.HouseholdDeleted:
        """Delete a household (owner; ``confirm_name`` must be its name)."""
        ctx = self._ctx

        async def body(conn: Connection, plan: BrokerPlan) -> api.HouseholdDeleted:
            try:
                actor = await self._households.require(conn, household_id, account, "admin")
            except HouseholdNotFoundError:
                if await _deleted_by(conn, household_id, account):
                    raise HouseholdDeletedError from None
                raise
            _require_owner(actor, "delete the household")
            name = await conn.fetchval("SELECT name FROM households WHERE id = $1", household_id)
            if unicodedata.normalize("NFC", confirm_name).strip() != name:
                raise ConfirmationMismatchError
            return await remove_household(
                conn, plan, household_id, now=ctx.now(), actor=account.actor, why="owner"
            )

        return await mutate(ctx, body)

    async def export(self, account: Account) -> api.AccountExport:
        """Everything the service holds about the account: no token, hash or secret."""
        async with self._ctx.storage.read() as conn:
            profile = await conn.fetchrow(
                "SELECT id, email, display_name, is_admin, created_at FROM accounts WHERE id = $1",
                account.id,
            )
            # Columns named as the wire model's fields.
            memberships = await conn.fetch(
                "SELECT m.household_id, h.name AS household_name, m.id AS member_id, m.role, "
                "m.external_id, m.display_name, m.created_at AS joined_at, "
                "h.created_at AS household_created_at FROM members m "
                "JOIN households h ON h.id = m.household_id WHERE m.account_id = $1 "
                "ORDER BY m.created_at, m.id",
                account.id,
            )
            households = []
            for row in memberships:
                if row["role"] != "owner":
                    continue
                devices = await conn.fetch(
                    "SELECT device_id, model, owned_since FROM devices WHERE household_id = $1 "
                    "ORDER BY device_id",
                    row["household_id"],
                )
                households.append(
                    api.ExportedHousehold(
                        household_id=row["household_id"],
                        name=row["household_name"],
                        created_at=row["household_created_at"],
                        devices=tuple(
                            api.DeviceSummary(
                                device_id=device["device_id"],
                                model=device["model"],
                                access=api.DeviceAccess.OWNER,
                                owner_household_id=row["household_id"],
                                since=device["owned_since"],
                            )
                            for device in devices
                        ),
                    )
                )
            sessions = await conn.fetch(
                "SELECT id AS session_id, created_at, revoked_at, revoke_reason FROM auth_families "
                "WHERE account_id = $1 ORDER BY created_at, id",
                account.id,
            )
            events = await audit.by_actor(conn, account.actor)
        if profile is None:  # pragma: no cover - the token's account was just read
            raise RelayError("the signed-in account has no row")
        return api.AccountExport(
            exported_at=self._ctx.now(),
            account=api.AccountProfile(
                account_id=profile["id"],
                email=profile["email"],
                display_name=profile["display_name"],
                is_admin=bool(profile["is_admin"]),
                created_at=profile["created_at"],
            ),
            memberships=tuple(
                api.ExportedMembership(
                    **{k: v for k, v in row.items() if k not in {"role", "household_created_at"}},
                    role=api.Role(row["role"]),
                )
                for row in memberships
            ),
            households=tuple(households),
            sessions=tuple(api.ExportedSession(**row) for row in sessions),
            audit_events=tuple(event.answer() for event in events),
        )

    async def delete_account(self, account: Account, password: str) -> None:
        """Delete the account (password re-entered): refused while others depend on it."""
        await self._accounts.confirm_password(account, password)
        now = self._ctx.now()

        async def body(conn: Connection, plan: BrokerPlan) -> None:
            await self._delete_account(conn, plan, account, now)

        await mutate(self._ctx, body)

    async def _delete_account(
        self, conn: Connection, plan: BrokerPlan, account: Account, now: int
    ) -> None:
        """The deletion's transaction (see :meth:`delete_account`)."""
        rows = await conn.fetch(
            "SELECT m.id, m.household_id, m.role, h.name FROM members m "
            "JOIN households h ON h.id = m.household_id WHERE m.account_id = $1 "
            "ORDER BY h.created_at, h.id",
            account.id,
        )
        owned = [row for row in rows if row["role"] == "owner"]
        blocked = [
            row
            for row in owned
            if await conn.fetchval(
                "SELECT count(*) FROM members WHERE household_id = $1 "
                "AND account_id IS NOT NULL AND account_id <> $2",
                row["household_id"],
                account.id,
            )
        ]
        if blocked:
            raise OwnerHandoverRequiredError(_handover_message(blocked))
        for row in owned:
            await remove_household(
                conn, plan, row["household_id"], now=now, actor=account.actor, why="account"
            )
        for row in rows:
            if row["role"] == "owner":
                continue
            await conn.execute("DELETE FROM members WHERE id = $1", row["id"])
            await audit.append(
                conn,
                at=now,
                actor=account.actor,
                action="member.left",
                household_id=row["household_id"],
                details={"member_id": row["id"], "role": row["role"], "by": "account"},
            )
        # Invitations addressed to the person: the open ones end, none keeps the address.
        await conn.execute(
            "UPDATE invitations SET email = NULL, revoked_at = CASE WHEN accepted_at IS NULL "
            "AND revoked_at IS NULL THEN $1 ELSE revoked_at END WHERE email = $2",
            now,
            account.email,
        )
        sessions = int(
            await conn.fetchval(
                "SELECT count(*) FROM auth_families WHERE account_id = $1 AND revoked_at IS NULL",
                account.id,
            )
        )
        # Cascades to every session and token: the account's bearer tokens stop at once.
        await conn.execute("DELETE FROM accounts WHERE id = $1", account.id)
        await audit.append(
            conn,
            at=now,
            actor=account.actor,
            action="account.deleted",
            details={
                "households_deleted": len(owned),
                "memberships_removed": len(rows) - len(owned),
                "sessions_revoked": sessions,
            },
        )
