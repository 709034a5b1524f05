"""Households, their members and roles, and invitations.

Roles, from least to most: viewer (read-only), member (control), admin (manages members,
devices and claims), owner (one per household; also grants admin, transfers devices). A
member is an account, an external id standing for a Home Assistant user, or both. Every
check goes through :meth:`Households.require`: a non-member learns nothing about a household
(404, the same as for an id that does not exist).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Final

from iob_protocol import account_api as api

from . import audit
from .accounts import Account, normalize_email
from .context import ROLE_RANK, ROLES, Context
from .errors import (
    ConflictError,
    ForbiddenError,
    HouseholdNotFoundError,
    InvalidRequestError,
    InvitationInvalidError,
    MemberNotFoundError,
    StorageConflictError,
)
from .storage import Connection, Row
from .tokens import new_id, new_token, token_hash

MAX_NAME: Final = 100
MAX_EXTERNAL_ID: Final = 200
INVITABLE_ROLES: Final = ("admin", "member", "viewer")


def clean_text(value: str, field: str, *, max_length: int = MAX_NAME) -> str:
    """NFC-normalised, trimmed, non-empty, no control characters, valid UTF-8."""
    value = unicodedata.normalize("NFC", value).strip()
    if not value or len(value) > max_length:
        raise InvalidRequestError(f"{field} must be 1-{max_length} characters")
    if any(unicodedata.category(char) in {"Cc", "Cs", "Cn"} for char in value):
        raise InvalidRequestError(f"{field} must not contain control or unassigned characters")
    return value


def check_role(role: str, allowed: tuple[str, ...] = ROLES) -> str:
    """``role`` if it is one of ``allowed``."""
    if role not in allowed:
        raise InvalidRequestError(f"role must be one of {', '.join(allowed)}")
    return role


@dataclass(frozen=True, slots=True)
class Membership:
    """An account's place in a household."""

    household_id: str
    member_id: str
    role: str

    def at_least(self, role: str) -> bool:
        """Whether this role includes ``role``'s rights."""
        return ROLE_RANK[self.role] >= ROLE_RANK[role]


def member_json(row: Row) -> api.Member:
    """The API's representation of a member."""
    return api.Member(
        member_id=row["id"],
        household_id=row["household_id"],
        account_id=row["account_id"],
        external_id=row["external_id"],
        display_name=row["display_name"],
        role=api.Role(row["role"]),
        created_at=row["created_at"],
    )


class Households:
    """Households, members, invitations and the role checks every endpoint uses."""

    def __init__(self, ctx: Context) -> None:
        """Use ``ctx``'s storage and clock."""
        self._ctx = ctx

    # --- authorisation --------------------------------------------------------------------

    @staticmethod
    async def membership(conn: Connection, household_id: str, account: Account) -> Membership:
        """The account's membership, or :class:`HouseholdNotFoundError` if it has none."""
        row = await conn.fetchrow(
            "SELECT id, role FROM members WHERE household_id = $1 AND account_id = $2",
            household_id,
            account.id,
        )
        if row is None:
            raise HouseholdNotFoundError
        return Membership(household_id, row["id"], row["role"])

    async def require(
        self, conn: Connection, household_id: str, account: Account, role: str
    ) -> Membership:
        """The membership if its role is at least ``role``; 404 for strangers, 403 below."""
        membership = await self.membership(conn, household_id, account)
        if not membership.at_least(role):
            raise ForbiddenError(
                f"This needs the {role} role or higher in the household; yours is "
                f"{membership.role}. Ask the household's owner."
            )
        return membership

    # --- households -----------------------------------------------------------------------

    async def create(self, account: Account, name: str) -> api.Household:
        """A new household with ``account`` as its owner."""
        name = clean_text(name, "name")
        household_id, member_id, now = new_id(), new_id(), self._ctx.now()
        async with self._ctx.storage.transaction() as conn:
            await conn.execute(
                "INSERT INTO households (id, name, created_at) VALUES ($1, $2, $3)",
                household_id,
                name,
                now,
            )
            await conn.execute(
                "INSERT INTO members (id, household_id, account_id, display_name, role, "
                "created_at, updated_at) VALUES ($1, $2, $3, $4, 'owner', $5, $5)",
                member_id,
                household_id,
                account.id,
                account.display_name,
                now,
            )
            await audit.append(
                conn,
                at=now,
                actor=account.actor,
                action="household.created",
                household_id=household_id,
                details={"name": name},
            )
        return api.Household(
            household_id=household_id, name=name, role=api.Role.OWNER, created_at=now
        )

    async def list_for(self, account: Account) -> list[api.Household]:
        """Every household the account belongs to, with its role."""
        async with self._ctx.storage.read() as conn:
            rows = await conn.fetch(
                "SELECT h.id, h.name, h.created_at, m.role FROM households h "
                "JOIN members m ON m.household_id = h.id WHERE m.account_id = $1 "
                "ORDER BY h.created_at, h.id",
                account.id,
            )
        return [
            api.Household(
                household_id=row["id"],
                name=row["name"],
                role=api.Role(row["role"]),
                created_at=row["created_at"],
            )
            for row in rows
        ]

    async def get(self, account: Account, household_id: str) -> api.Household:
        """One household (any member)."""
        async with self._ctx.storage.read() as conn:
            membership = await self.require(conn, household_id, account, "viewer")
            row = await conn.fetchrow(
                "SELECT id, name, created_at FROM households WHERE id = $1", household_id
            )
        if row is None:  # pragma: no cover - a membership implies the household
            raise HouseholdNotFoundError
        return api.Household(
            household_id=row["id"],
            name=row["name"],
            role=api.Role(membership.role),
            created_at=row["created_at"],
        )

    async def rename(self, account: Account, household_id: str, name: str) -> api.Household:
        """Change the name (admin or owner)."""
        name = clean_text(name, "name")
        now = self._ctx.now()
        async with self._ctx.storage.transaction() as conn:
            await self.require(conn, household_id, account, "admin")
            await conn.execute("UPDATE households SET name = $1 WHERE id = $2", name, household_id)
            await audit.append(
                conn,
                at=now,
                actor=account.actor,
                action="household.renamed",
                household_id=household_id,
                details={"name": name},
            )
        return await self.get(account, household_id)

    # --- members --------------------------------------------------------------------------

    async def members(self, account: Account, household_id: str) -> list[api.Member]:
        """Every member (any member may see who else is in the household)."""
        async with self._ctx.storage.read() as conn:
            await self.require(conn, household_id, account, "viewer")
            rows = await conn.fetch(
                "SELECT * FROM members WHERE household_id = $1 ORDER BY created_at, id",
                household_id,
            )
        return [member_json(row) for row in rows]

    @staticmethod
    def _may_grant(actor: Membership, role: str) -> None:
        if role == "owner":
            raise InvalidRequestError(
                "a household has exactly one owner; the owner role cannot be granted"
            )
        if role == "admin" and actor.role != "owner":
            raise ForbiddenError("Only the household's owner can grant or change the admin role.")

    async def add_external_member(
        self,
        account: Account,
        household_id: str,
        *,
        external_id: str,
        display_name: str,
        role: str,
    ) -> api.Member:
        """A member standing for a Home Assistant user (no account of their own)."""
        external_id = clean_text(external_id, "external_id", max_length=MAX_EXTERNAL_ID)
        display_name = clean_text(display_name, "display_name")
        check_role(role)
        member_id, now = new_id(), self._ctx.now()
        try:
            async with self._ctx.storage.transaction() as conn:
                actor = await self.require(conn, household_id, account, "admin")
                self._may_grant(actor, role)
                await conn.execute(
                    "INSERT INTO members (id, household_id, external_id, display_name, role, "
                    "created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $6)",
                    member_id,
                    household_id,
                    external_id,
                    display_name,
                    role,
                    now,
                )
                await audit.append(
                    conn,
                    at=now,
                    actor=account.actor,
                    action="member.added",
                    household_id=household_id,
                    details={"member_id": member_id, "external_id": external_id, "role": role},
                )
                row = await conn.fetchrow("SELECT * FROM members WHERE id = $1", member_id)
        except StorageConflictError as err:
            raise ConflictError(
                "A member with this external_id exists in the household; update it instead."
            ) from err
        if row is None:  # pragma: no cover - just inserted
            raise MemberNotFoundError
        return member_json(row)

    async def _target(self, conn: Connection, household_id: str, member_id: str) -> Row:
        row = await conn.fetchrow(
            "SELECT * FROM members WHERE id = $1 AND household_id = $2", member_id, household_id
        )
        if row is None:
            raise MemberNotFoundError
        return row

    async def update_member(
        self,
        account: Account,
        household_id: str,
        member_id: str,
        *,
        role: str | None = None,
        display_name: str | None = None,
        external_id: str | None = None,
    ) -> api.Member:
        """Change a member's role, name or external id (role changes are audited)."""
        if role is not None:
            check_role(role)
        if display_name is not None:
            display_name = clean_text(display_name, "display_name")
        if external_id is not None:
            external_id = clean_text(external_id, "external_id", max_length=MAX_EXTERNAL_ID)
        now = self._ctx.now()
        try:
            async with self._ctx.storage.transaction() as conn:
                actor = await self.require(conn, household_id, account, "admin")
                target = await self._target(conn, household_id, member_id)
                if role is not None and role != target["role"]:
                    if target["role"] == "owner":
                        raise InvalidRequestError(
                            "the owner's role cannot be changed; the household needs its owner"
                        )
                    self._may_grant(actor, role)
                    if target["role"] == "admin" and actor.role != "owner":
                        raise ForbiddenError("Only the household's owner can change an admin.")
                await conn.execute(
                    "UPDATE members SET role = $1, display_name = $2, external_id = $3, "
                    "updated_at = $4 WHERE id = $5",
                    role or target["role"],
                    display_name or target["display_name"],
                    external_id if external_id is not None else target["external_id"],
                    now,
                    member_id,
                )
                if role is not None and role != target["role"]:
                    await audit.append(
                        conn,
                        at=now,
                        actor=account.actor,
                        action="member.role_changed",
                        household_id=household_id,
                        details={"member_id": member_id, "from": target["role"], "to": role},
                    )
                row = await self._target(conn, household_id, member_id)
        except StorageConflictError as err:
            raise ConflictError(
                "Another member of the household has this external_id; choose another."
            ) from err
        return member_json(row)

    async def remove_member(self, account: Account, household_id: str, member_id: str) -> None:
        """Remove a member (admin or owner; admins only by the owner; never the owner)."""
        now = self._ctx.now()
        async with self._ctx.storage.transaction() as conn:
            actor = await self.require(conn, household_id, account, "admin")
            target = await self._target(conn, household_id, member_id)
            if target["role"] == "owner":
                raise InvalidRequestError("the owner cannot be removed from the household")
            if target["role"] == "admin" and actor.role != "owner":
                raise ForbiddenError("Only the household's owner can remove an admin.")
            await conn.execute("DELETE FROM members WHERE id = $1", member_id)
            await audit.append(
                conn,
                at=now,
                actor=account.actor,
                action="member.removed",
                household_id=household_id,
                details={"member_id": member_id, "role": target["role"]},
            )

    # --- invitations ----------------------------------------------------------------------

    async def invite(
        self,
        account: Account,
        household_id: str,
        *,
        role: str,
        email: str | None = None,
        external_id: str | None = None,
    ) -> api.Invitation:
        """An invitation token (shown once) that an account redeems to join with ``role``."""
        check_role(role, INVITABLE_ROLES)
        if email is not None:
            email = normalize_email(email)
        if external_id is not None:
            external_id = clean_text(external_id, "external_id", max_length=MAX_EXTERNAL_ID)
        token, invitation_id, now = new_token(), new_id(), self._ctx.now()
        expires_at = now + self._ctx.config.invitation_ttl
        async with self._ctx.storage.transaction() as conn:
            actor = await self.require(conn, household_id, account, "admin")
            self._may_grant(actor, role)
            await conn.execute(
                "INSERT INTO invitations (id, household_id, token_hash, role, email, external_id, "
                "created_by, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                invitation_id,
                household_id,
                token_hash(token),
                role,
                email,
                external_id,
                account.id,
                now,
                expires_at,
            )
            await audit.append(
                conn,
                at=now,
                actor=account.actor,
                action="invitation.created",
                household_id=household_id,
                details={"invitation_id": invitation_id, "role": role},
            )
        return api.Invitation(
            invitation_id=invitation_id,
            household_id=household_id,
            token=token,
            role=api.Role(role),
            email=email,
            external_id=external_id,
            expires_at=expires_at,
        )

    async def invitations(self, account: Account, household_id: str) -> list[api.InvitationSummary]:
        """Open invitations (no tokens: they are shown only once)."""
        now = self._ctx.now()
        async with self._ctx.storage.read() as conn:
            await self.require(conn, household_id, account, "admin")
            rows = await conn.fetch(
                "SELECT id, role, email, external_id, created_at, expires_at FROM invitations "
                "WHERE household_id = $1 AND accepted_at IS NULL AND revoked_at IS NULL "
                "AND expires_at >= $2 ORDER BY created_at, id",
                household_id,
                now,
            )
        return [
            api.InvitationSummary(
                invitation_id=row["id"],
                household_id=household_id,
                role=api.Role(row["role"]),
                email=row["email"],
                external_id=row["external_id"],
                created_at=row["created_at"],
                expires_at=row["expires_at"],
            )
            for row in rows
        ]

    async def revoke_invitation(
        self, account: Account, household_id: str, invitation_id: str
    ) -> None:
        """Withdraw an open invitation."""
        now = self._ctx.now()
        async with self._ctx.storage.transaction() as conn:
            await self.require(conn, household_id, account, "admin")
            changed = await conn.execute(
                "UPDATE invitations SET revoked_at = $1 WHERE id = $2 AND household_id = $3 "
                "AND accepted_at IS NULL AND revoked_at IS NULL",
                now,
                invitation_id,
                household_id,
            )
            if not changed:
                raise InvitationInvalidError
            await audit.append(
                conn,
                at=now,
                actor=account.actor,
                action="invitation.revoked",
                household_id=household_id,
                details={"invitation_id": invitation_id},
            )

    async def accept(self, account: Account, token: str) -> api.Member:
        """Join the household of an invitation (single use)."""
        now = self._ctx.now()
        member_id = new_id()
        try:
            async with self._ctx.storage.transaction() as conn:
                row = await conn.fetchrow(
                    "SELECT * FROM invitations WHERE token_hash = $1", token_hash(token)
                )
                if (
                    row is None
                    or row["accepted_at"] is not None
                    or row["revoked_at"] is not None
                    or row["expires_at"] < now
                    or (row["email"] is not None and row["email"] != account.email)
                ):
                    raise InvitationInvalidError
                household_id = row["household_id"]
                existing = await conn.fetchrow(
                    "SELECT id FROM members WHERE household_id = $1 AND account_id = $2",
                    household_id,
                    account.id,
                )
                if existing is not None:
                    raise ConflictError(
                        "You are already a member of this household; ask an admin to change "
                        "your role instead.",
                    )
                used = await conn.execute(
                    "UPDATE invitations SET accepted_at = $1, accepted_by = $2 WHERE id = $3 "
                    "AND accepted_at IS NULL",
                    now,
                    account.id,
                    row["id"],
                )
                if used != 1:
                    raise InvitationInvalidError
                await conn.execute(
                    "INSERT INTO members (id, household_id, account_id, external_id, "
                    "display_name, role, created_at, updated_at) "
                    "VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
                    member_id,
                    household_id,
                    account.id,
                    row["external_id"],
                    account.display_name,
                    row["role"],
                    now,
                )
                await audit.append(
                    conn,
                    at=now,
                    actor=account.actor,
                    action="member.joined",
                    household_id=household_id,
                    details={
                        "member_id": member_id,
                        "invitation_id": row["id"],
                        "role": row["role"],
                    },
                )
                member = await conn.fetchrow("SELECT * FROM members WHERE id = $1", member_id)
        except StorageConflictError as err:
            raise ConflictError(
                "A member with this invitation's external_id exists; ask an admin to link it."
            ) from err
        if member is None:  # pragma: no cover - just inserted
            raise MemberNotFoundError
        return member_json(member)
