"""Owned devices: listing, release, rotation, shares, transfer and the household hub.

Release comes from the owner or from the device after a factory reset; transfer is two-party.
A rotated device password reaches the device through its own signed credential request.

Every change that alters what the broker holds runs through :func:`~cloud_relay.mutation.mutate`,
so the database and the broker change together or not at all.
"""

from __future__ import annotations

from iob_protocol import account_api as api
from iob_protocol.canonical import JsonValue
from iob_protocol.claim import CREDENTIAL_MAX_AGE_SECONDS

from . import audit
from .accounts import Account
from .broker import HubCredential
from .broker_sync import BrokerPlan
from .claims import check_device_statement, use_nonce
from .context import Context
from .device_proofs import parse_mqtt_credential_request, parse_release
from .errors import (
    BadSignatureError,
    ClaimExpiredError,
    ClaimRejectedError,
    ClockSkewError,
    ConflictError,
    CredentialRefusedError,
    DeviceNotFoundError,
    ForbiddenError,
    HouseholdNotFoundError,
    InvalidRequestError,
    ReleaseStaleError,
    ShareNotFoundError,
    TransferNotFoundError,
)
from .households import Households
from .mutation import mutate
from .registry import model_json
from .storage import Connection, Row
from .tokens import new_id


def _transfer(row: Row) -> api.Transfer:
    return api.Transfer(
        transfer_id=row["id"],
        device_id=row["device_id"],
        from_household_id=row["from_household_id"],
        to_household_id=row["to_household_id"],
        status=api.TransferStatus(row["status"]),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
    )


def _share_access(control: object) -> api.ShareAccess:
    return api.ShareAccess.CONTROL if control else api.ShareAccess.READ


async def _audit_transfer(
    conn: Connection,
    *,
    at: int,
    actor: str,
    action: str,
    transfer_id: str,
    device_id: str,
    from_household: str,
    to_household: str,
    details: dict[str, JsonValue] | None = None,
) -> None:
    """A transfer concerns two households: each one's audit trail records it.

    In sorted order: each append locks its household's chain head, so two transactions that
    audit the same two households take those locks in one order (no deadlock on PostgreSQL).
    """
    for audited in sorted((from_household, to_household)):
        await audit.append(
            conn,
            at=at,
            actor=actor,
            action=action,
            household_id=audited,
            device_id=device_id,
            details=details if details is not None else {"transfer_id": transfer_id},
        )


async def release_device(
    conn: Connection,
    plan: BrokerPlan,
    *,
    device_id: str,
    household_id: str,
    now: int,
    actor: str,
    details: dict[str, JsonValue],
    sync_hubs: bool = True,
) -> list[str]:
    """Drop ownership, shares, pending transfers and pre-assignment; kick the device and hubs.

    Returns the households the device was shared with. ``sync_hubs=False`` leaves the hubs to
    the caller (a household deletion re-projects each affected hub once, not once per device).
    """
    released = await conn.execute(
        "UPDATE devices SET household_id = NULL, owned_since = NULL, "
        "credential_version = credential_version + 1, preassigned_household_id = NULL, "
        "order_ref = NULL, updated_at = $1 WHERE device_id = $2 AND household_id = $3",
        now,
        device_id,
        household_id,
    )
    if released != 1:
        raise DeviceNotFoundError
    sharees = [
        row["household_id"]
        for row in await conn.fetch(
            "SELECT household_id FROM shares WHERE device_id = $1", device_id
        )
    ]
    await conn.execute("DELETE FROM shares WHERE device_id = $1", device_id)
    await conn.execute(
        "UPDATE transfers SET status = 'cancelled', completed_at = $1 "
        "WHERE device_id = $2 AND status = 'pending'",
        now,
        device_id,
    )
    await plan.remove_device(device_id)
    if sync_hubs:
        await plan.sync_hubs(conn, [household_id, *sharees], kick=True)
    await audit.append(
        conn,
        at=now,
        actor=actor,
        action="device.released",
        household_id=household_id,
        device_id=device_id,
        details=details,
    )
    return sharees


async def put_household_hub(
    conn: Connection,
    plan: BrokerPlan,
    household_id: str,
    account: Account,
    *,
    now: int,
    rotate: bool = False,
) -> HubCredential:
    """Put the household's hub on the broker, creating it on first use (``rotate`` renews it).

    Its role is also what the household's tool credentials hold (docs/broker.md).
    """
    version = await conn.fetchval(
        "SELECT credential_version FROM hubs WHERE household_id = $1", household_id
    )
    if version is None:
        version = 1
        await conn.execute(
            "INSERT INTO hubs (household_id, credential_version, created_at, updated_at) "
            "VALUES ($1, 1, $2, $2)",
            household_id,
            now,
        )
    elif rotate:
        version = int(version) + 1
        await conn.execute(
            "UPDATE hubs SET credential_version = $1, updated_at = $2 WHERE household_id = $3",
            version,
            now,
            household_id,
        )
    credential = await plan.put_hub(conn, household_id, int(version))
    if rotate or version == 1:
        await audit.append(
            conn,
            at=now,
            actor=account.actor,
            action="hub.credentials_rotated" if rotate else "hub.created",
            household_id=household_id,
        )
    return credential


class Devices:
    """Operations on devices a household owns or has been shared."""

    def __init__(self, ctx: Context, households: Households) -> None:
        """Use ``ctx``; role checks through ``households``."""
        self._ctx = ctx
        self._households = households

    # --- reading --------------------------------------------------------------------------

    async def listing(self, account: Account, household_id: str) -> list[api.DeviceSummary]:
        """Owned devices and devices shared with the household (any member)."""
        async with self._ctx.storage.read() as conn:
            await self._households.require(conn, household_id, account, "viewer")
            owned = await conn.fetch(
                "SELECT device_id, model, owned_since FROM devices WHERE household_id = $1 "
                "ORDER BY device_id",
                household_id,
            )
            shared = await conn.fetch(
                "SELECT d.device_id, d.model, d.household_id, s.control, s.created_at "
                "FROM shares s JOIN devices d ON d.device_id = s.device_id "
                "WHERE s.household_id = $1 ORDER BY d.device_id",
                household_id,
            )
        return [
            api.DeviceSummary(
                device_id=row["device_id"],
                model=row["model"],
                access=api.DeviceAccess.OWNER,
                owner_household_id=household_id,
                since=row["owned_since"],
            )
            for row in owned
        ] + [
            api.DeviceSummary(
                device_id=row["device_id"],
                model=row["model"],
                access=api.DeviceAccess(_share_access(row["control"]).value),
                owner_household_id=row["household_id"],
                since=row["created_at"],
            )
            for row in shared
        ]

    async def _access(self, conn: Connection, household_id: str, device_id: str) -> Row:
        row = await conn.fetchrow(
            "SELECT d.device_id, d.model, d.household_id, d.owned_since, s.control "
            "FROM devices d LEFT JOIN shares s ON s.device_id = d.device_id "
            "AND s.household_id = $1 WHERE d.device_id = $2 "
            "AND (d.household_id = $1 OR s.household_id IS NOT NULL)",
            household_id,
            device_id,
        )
        if row is None:
            raise DeviceNotFoundError
        return row

    async def get(self, account: Account, household_id: str, device_id: str) -> api.Device:
        """One device with its model's metadata (any member of an owning or sharing household)."""
        async with self._ctx.storage.read() as conn:
            await self._households.require(conn, household_id, account, "viewer")
            row = await self._access(conn, household_id, device_id)
            model = await conn.fetchrow(
                "SELECT * FROM device_models WHERE model = $1", row["model"]
            )
        owner = row["household_id"] == household_id
        access = _share_access(row["control"]).value
        return api.Device(
            device_id=row["device_id"],
            model=row["model"],
            access=api.DeviceAccess.OWNER if owner else api.DeviceAccess(access),
            owner_household_id=row["household_id"],
            since=row["owned_since"],
            model_info=model_json(model) if model is not None else None,
        )

    async def _owned(self, conn: Connection, household_id: str, device_id: str) -> Row:
        row = await conn.fetchrow(
            "SELECT * FROM devices WHERE device_id = $1 AND household_id = $2",
            device_id,
            household_id,
        )
        if row is None:
            raise DeviceNotFoundError
        return row

    # --- release --------------------------------------------------------------------------

    async def release(self, account: Account, household_id: str, device_id: str) -> None:
        """Unclaim: credentials revoked and the live session kicked at once."""
        ctx = self._ctx

        async def body(conn: Connection, plan: BrokerPlan) -> None:
            await self._households.require(conn, household_id, account, "admin")
            await release_device(
                conn,
                plan,
                device_id=device_id,
                household_id=household_id,
                now=ctx.now(),
                actor=account.actor,
                details={"by": "owner"},
            )

        await mutate(ctx, body)

    async def release_by_device(self, raw: object) -> None:
        """The device, after a factory reset, lets go of its owner (signed; idempotent)."""
        ctx = self._ctx
        notice = parse_release(raw)
        await check_device_statement(ctx, notice, max_age=ctx.config.claim_ttl)

        async def body(conn: Connection, plan: BrokerPlan) -> None:
            device = await conn.fetchrow(
                "SELECT household_id, owned_since FROM devices WHERE device_id = $1",
                notice.device_id,
            )
            if device is None or device["household_id"] is None:
                return  # already released: idempotent
            if notice.timestamp < device["owned_since"]:
                raise ReleaseStaleError
            await use_nonce(
                conn,
                notice.device_id,
                notice.nonce,
                notice.timestamp + ctx.config.claim_ttl + ctx.config.max_clock_skew,
            )
            await release_device(
                conn,
                plan,
                device_id=notice.device_id,
                household_id=device["household_id"],
                now=ctx.now(),
                actor=f"device:{notice.device_id}",
                details={"by": "device", "reason": notice.reason.value},
            )

        await mutate(ctx, body)

    # --- credentials ----------------------------------------------------------------------

    async def rotate(
        self, account: Account, household_id: str, device_id: str
    ) -> api.DeviceCredentials:
        """New device password (the old one stops working); hand it to the device yourself."""
        ctx = self._ctx

        async def body(conn: Connection, plan: BrokerPlan) -> api.DeviceCredentials:
            await self._households.require(conn, household_id, account, "admin")
            await self._owned(conn, household_id, device_id)
            now = ctx.now()
            await conn.execute(
                "UPDATE devices SET credential_version = credential_version + 1, updated_at = $1 "
                "WHERE device_id = $2",
                now,
                device_id,
            )
            version = await conn.fetchval(
                "SELECT credential_version FROM devices WHERE device_id = $1", device_id
            )
            credential = await plan.put_device(device_id, int(version))
            await audit.append(
                conn,
                at=now,
                actor=account.actor,
                action="device.credentials_rotated",
                household_id=household_id,
                device_id=device_id,
            )
            return api.DeviceCredentials(device_id=device_id, mqtt=ctx.mqtt_credentials(credential))

        return await mutate(ctx, body)

    async def mqtt_credential(self, raw: object) -> api.Owned | api.Unowned:
        """The owned device's current MQTT credential, for its own signed request.

        How a rotated password reaches the device: the broker refuses the old one, the device
        signs a fresh request, and gets the grant its owner's rotation made. The broker is
        re-projected on the way (unchanged if it already holds this password), so a broker
        that fell behind the database is repaired by the device that noticed.

        A genuine request (the registered key's signature, fresh, nonce unused) for a device no
        household owns (released, or never claimed) is answered ``{"status": "unowned"}``: only
        the holder of the device's private key can ask it, so it tells no one anything they
        could not learn from the device itself, and the device returns to unclaimed. Unknown,
        unverifiable and replayed requests all get :class:`CredentialRefusedError`.
        """
        ctx = self._ctx
        request = parse_mqtt_credential_request(raw)
        try:
            await check_device_statement(ctx, request, max_age=CREDENTIAL_MAX_AGE_SECONDS)
        except BadSignatureError as err:
            raise CredentialRefusedError from err
        except ClaimExpiredError as err:
            # Signed just before it was sent: an old request means a clock that lags.
            raise ClockSkewError(
                f"The device's signed time is {ctx.now() - request.timestamp} s behind the "
                "service's; let the device reach an NTP server (UDP 123) and try again."
            ) from err

        async def body(conn: Connection, plan: BrokerPlan) -> api.Owned | api.Unowned:
            try:
                await use_nonce(
                    conn,
                    request.device_id,
                    request.nonce,
                    request.timestamp + CREDENTIAL_MAX_AGE_SECONDS + ctx.config.max_clock_skew,
                )
            except ClaimRejectedError as err:
                raise CredentialRefusedError from err
            device = await conn.fetchrow(
                "SELECT household_id, credential_version FROM devices WHERE device_id = $1",
                request.device_id,
            )
            if device is None:  # removed from the registry meanwhile
                raise CredentialRefusedError
            if device["household_id"] is None:
                # Committed with the nonce, so a replay of this request is refused.
                await audit.append(
                    conn,
                    at=ctx.now(),
                    actor=f"device:{request.device_id}",
                    action="device.told_unowned",
                    device_id=request.device_id,
                )
                return api.Unowned(device_id=request.device_id)
            version = int(device["credential_version"])
            credential = await plan.put_device(request.device_id, version)
            await audit.append(
                conn,
                at=ctx.now(),
                actor=f"device:{request.device_id}",
                action="device.credentials_fetched",
                household_id=device["household_id"],
                device_id=request.device_id,
                details={"credential_version": version},
            )
            return api.Owned(
                device_id=request.device_id,
                household_id=device["household_id"],
                mqtt=ctx.mqtt_credentials(credential),
            )

        return await mutate(ctx, body)

    # --- hub ------------------------------------------------------------------------------

    async def hub(
        self, account: Account, household_id: str, *, rotate: bool
    ) -> api.MqttCredentials:
        """The household hub's MQTT credential (created on first use; ``rotate`` renews it)."""
        ctx = self._ctx

        async def body(conn: Connection, plan: BrokerPlan) -> api.MqttCredentials:
            await self._households.require(conn, household_id, account, "admin")
            credential = await put_household_hub(
                conn, plan, household_id, account, now=ctx.now(), rotate=rotate
            )
            return ctx.mqtt_credentials(credential)

        return await mutate(ctx, body)

    # --- shares ---------------------------------------------------------------------------

    async def shares(self, account: Account, household_id: str, device_id: str) -> list[api.Share]:
        """Who the device is shared with (admin or owner of the owning household)."""
        async with self._ctx.storage.read() as conn:
            await self._households.require(conn, household_id, account, "admin")
            await self._owned(conn, household_id, device_id)
            rows = await conn.fetch(
                "SELECT household_id, control, created_at FROM shares WHERE device_id = $1 "
                "ORDER BY created_at, household_id",
                device_id,
            )
        return [
            api.Share(
                device_id=device_id,
                household_id=row["household_id"],
                access=_share_access(row["control"]),
                created_at=row["created_at"],
            )
            for row in rows
        ]

    async def share(
        self,
        account: Account,
        household_id: str,
        device_id: str,
        target_household_id: str,
        *,
        control: bool,
    ) -> api.Share:
        """Share (or change a share) read-only or with control."""
        ctx = self._ctx

        async def body(conn: Connection, plan: BrokerPlan) -> api.Share:
            await self._households.require(conn, household_id, account, "admin")
            await self._owned(conn, household_id, device_id)
            if target_household_id == household_id:
                raise InvalidRequestError("a device cannot be shared with its own household")
            if (
                await conn.fetchval("SELECT id FROM households WHERE id = $1", target_household_id)
                is None
            ):
                raise HouseholdNotFoundError(
                    "No household has this id; ask the other household for its id."
                )
            now = ctx.now()
            await conn.execute(
                "INSERT INTO shares (device_id, household_id, control, created_by, created_at) "
                "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (device_id, household_id) "
                "DO UPDATE SET control = excluded.control",
                device_id,
                target_household_id,
                int(control),
                account.id,
                now,
            )
            # The sharee's Home Assistant re-reads its device list now (it gained a device).
            await plan.sync_hubs(conn, [target_household_id], kick=True)
            details: dict[str, JsonValue] = {
                "owner_household_id": household_id,
                "shared_with": target_household_id,
                "access": "control" if control else "read",
            }
            for audited in sorted((household_id, target_household_id)):  # see _audit_transfer
                await audit.append(
                    conn,
                    at=now,
                    actor=account.actor,
                    action="device.shared",
                    household_id=audited,
                    device_id=device_id,
                    details=details,
                )
            return api.Share(
                device_id=device_id,
                household_id=target_household_id,
                access=_share_access(control),
                created_at=now,
            )

        return await mutate(ctx, body)

    async def unshare(
        self, account: Account, household_id: str, device_id: str, target_household_id: str
    ) -> None:
        """End a share; the other household's hub loses the device at once."""
        ctx = self._ctx

        async def body(conn: Connection, plan: BrokerPlan) -> None:
            await self._households.require(conn, household_id, account, "admin")
            await self._owned(conn, household_id, device_id)
            removed = await conn.execute(
                "DELETE FROM shares WHERE device_id = $1 AND household_id = $2",
                device_id,
                target_household_id,
            )
            if not removed:
                raise ShareNotFoundError
            await plan.sync_hubs(conn, [target_household_id], kick=True)
            now = ctx.now()
            for audited in sorted((household_id, target_household_id)):  # see _audit_transfer
                await audit.append(
                    conn,
                    at=now,
                    actor=account.actor,
                    action="device.unshared",
                    household_id=audited,
                    device_id=device_id,
                    details={
                        "owner_household_id": household_id,
                        "shared_with": target_household_id,
                    },
                )

        await mutate(ctx, body)

    # --- transfer -------------------------------------------------------------------------

    async def offer(
        self, account: Account, household_id: str, device_id: str, to_household_id: str
    ) -> api.Transfer:
        """The owner offers the device to another household (replaces an earlier offer)."""
        ctx = self._ctx
        now, transfer_id = ctx.now(), new_id()
        async with ctx.storage.transaction() as conn:
            membership = await self._households.require(conn, household_id, account, "admin")
            if membership.role != "owner":
                raise ForbiddenError("Only the household's owner can transfer a device.")
            await self._owned(conn, household_id, device_id)
            if to_household_id == household_id:
                raise InvalidRequestError("a device cannot be transferred to its own household")
            if (
                await conn.fetchval("SELECT id FROM households WHERE id = $1", to_household_id)
                is None
            ):
                raise HouseholdNotFoundError(
                    "No household has this id; ask the recipient for its household id."
                )
            await conn.execute(
                "UPDATE transfers SET status = 'cancelled', completed_at = $1 "
                "WHERE device_id = $2 AND status = 'pending'",
                now,
                device_id,
            )
            await conn.execute(
                "INSERT INTO transfers (id, device_id, from_household_id, to_household_id, "
                "status, created_by, created_at, expires_at) "
                "VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7)",
                transfer_id,
                device_id,
                household_id,
                to_household_id,
                account.id,
                now,
                now + ctx.config.transfer_ttl,
            )
            await _audit_transfer(
                conn,
                at=now,
                actor=account.actor,
                action="transfer.offered",
                transfer_id=transfer_id,
                device_id=device_id,
                from_household=household_id,
                to_household=to_household_id,
                details={"transfer_id": transfer_id, "from": household_id, "to": to_household_id},
            )
            row = await conn.fetchrow("SELECT * FROM transfers WHERE id = $1", transfer_id)
        if row is None:  # pragma: no cover - just inserted
            raise TransferNotFoundError
        return _transfer(row)

    async def transfers(self, account: Account, household_id: str) -> list[api.Transfer]:
        """Pending transfers to and from the household."""
        now = self._ctx.now()
        async with self._ctx.storage.read() as conn:
            await self._households.require(conn, household_id, account, "admin")
            rows = await conn.fetch(
                "SELECT * FROM transfers WHERE status = 'pending' AND expires_at >= $1 "
                "AND (from_household_id = $2 OR to_household_id = $2) ORDER BY created_at, id",
                now,
                household_id,
            )
        return [_transfer(row) for row in rows]

    async def _pending_transfer(
        self, conn: Connection, transfer_id: str, household_id: str, side: str
    ) -> Row:
        row = await conn.fetchrow(
            f"SELECT * FROM transfers WHERE id = $1 AND {side} = $2 AND status = 'pending'",  # noqa: S608 - side is one of two column names
            transfer_id,
            household_id,
        )
        if row is None or row["expires_at"] < self._ctx.now():
            raise TransferNotFoundError
        return row

    async def accept(self, account: Account, household_id: str, transfer_id: str) -> api.Transfer:
        """The recipient accepts: ownership moves, shares end, both hubs are updated."""
        ctx = self._ctx

        async def body(conn: Connection, plan: BrokerPlan) -> api.Transfer:
            await self._households.require(conn, household_id, account, "admin")
            transfer = await self._pending_transfer(
                conn, transfer_id, household_id, "to_household_id"
            )
            now = ctx.now()
            device_id, from_household = transfer["device_id"], transfer["from_household_id"]
            moved = await conn.execute(
                "UPDATE devices SET household_id = $1, owned_since = $2, "
                "preassigned_household_id = NULL, order_ref = NULL, updated_at = $2 "
                "WHERE device_id = $3 AND household_id = $4",
                household_id,
                now,
                device_id,
                from_household,
            )
            if moved != 1:
                raise TransferNotFoundError
            sharees = [
                row["household_id"]
                for row in await conn.fetch(
                    "SELECT household_id FROM shares WHERE device_id = $1", device_id
                )
            ]
            await conn.execute("DELETE FROM shares WHERE device_id = $1", device_id)
            await conn.execute(
                "UPDATE transfers SET status = 'accepted', completed_at = $1 WHERE id = $2",
                now,
                transfer_id,
            )
            # Kicked: each Home Assistant reconnects and re-reads its list (the old household's
            # loses the device, the new one's gains it) instead of waiting for its refresh.
            await plan.sync_hubs(conn, [from_household, household_id, *sharees], kick=True)
            await _audit_transfer(
                conn,
                at=now,
                actor=account.actor,
                action="device.transferred",
                transfer_id=transfer_id,
                device_id=device_id,
                from_household=from_household,
                to_household=household_id,
                details={"transfer_id": transfer_id, "from": from_household, "to": household_id},
            )
            row = await conn.fetchrow("SELECT * FROM transfers WHERE id = $1", transfer_id)
            if row is None:  # pragma: no cover - just updated
                raise TransferNotFoundError
            return _transfer(row)

        return await mutate(ctx, body)

    async def close_transfer(
        self, account: Account, household_id: str, transfer_id: str, *, decline: bool
    ) -> None:
        """The recipient declines, or the owner cancels, a pending transfer."""
        now = self._ctx.now()
        async with self._ctx.storage.transaction() as conn:
            membership = await self._households.require(conn, household_id, account, "admin")
            if not decline and membership.role != "owner":
                raise ForbiddenError("Only the household's owner can cancel a transfer.")
            side = "to_household_id" if decline else "from_household_id"
            transfer = await self._pending_transfer(conn, transfer_id, household_id, side)
            status = "declined" if decline else "cancelled"
            changed = await conn.execute(
                "UPDATE transfers SET status = $1, completed_at = $2 "
                "WHERE id = $3 AND status = 'pending'",
                status,
                now,
                transfer_id,
            )
            if changed != 1:
                raise ConflictError("The transfer was just completed or closed; reload.")
            await _audit_transfer(
                conn,
                at=now,
                actor=account.actor,
                action=f"transfer.{status}",
                transfer_id=transfer_id,
                device_id=transfer["device_id"],
                from_household=transfer["from_household_id"],
                to_household=transfer["to_household_id"],
            )

    # --- audit ----------------------------------------------------------------------------

    async def audit(
        self,
        account: Account,
        household_id: str,
        *,
        device_id: str | None,
        cursor: str | None,
        limit: int,
    ) -> audit.AuditPage:
        """The household's audit events (admin or owner), optionally for one device."""
        async with self._ctx.storage.read() as conn:
            await self._households.require(conn, household_id, account, "admin")
            return await audit.query(
                conn,
                household_id=household_id,
                device_id=device_id,
                before=audit.parse_cursor(cursor),
                limit=limit,
            )
