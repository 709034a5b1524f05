"""The audit log: append-only, hash-chained, queryable per household and device.

Each event's hash covers its content and the previous event's hash, and the chain's head
(last sequence number and hash) is kept in its own row, so ``audit verify`` detects an edited
event, a deleted one in the middle and a truncated tail. Appends lock the head row, so events
are numbered without gaps in commit order; callers append last in their transaction, keeping
that lock short. Triggers refuse UPDATE and DELETE on the table; the chain catches anyone who
bypasses them with direct database access. Export the head (``audit verify`` prints it) to
somewhere the database's administrators cannot write, to detect a rewrite of the whole chain.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any, Final

from iob_protocol import account_api as api
from iob_protocol.canonical import JsonValue, canonical_json, encode_fields, parse_canonical_json

from .errors import AuditChainError
from .storage import Connection, Row, Storage

AUDIT_DOMAIN: Final = "iob/v1/relay-audit"
GENESIS_HASH: Final = bytes(32)
_VERIFY_PAGE: Final = 1000


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One entry of the log."""

    seq: int
    at: int
    actor: str
    action: str
    household_id: str | None
    device_id: str | None
    details: dict[str, JsonValue]
    hash: bytes

    def answer(self) -> api.AuditEvent:
        """The API's representation."""
        return api.AuditEvent(
            seq=self.seq,
            at=self.at,
            actor=self.actor,
            action=self.action,
            household_id=self.household_id,
            device_id=self.device_id,
            details=dict(self.details),
            hash=self.hash.hex(),
        )


@dataclass(frozen=True, slots=True)
class AuditPage:
    """Newest first; ``next_cursor`` fetches older events."""

    events: list[AuditEvent]
    next_cursor: str | None

    def answer(self) -> api.AuditPage:
        """The API's representation."""
        return api.AuditPage(
            events=tuple(event.answer() for event in self.events), next_cursor=self.next_cursor
        )


@dataclass(frozen=True, slots=True)
class ChainReport:
    """A verified chain: how many events and its head."""

    count: int
    head_seq: int
    head_hash: bytes


def event_hash(
    *,
    seq: int,
    at: int,
    actor: str,
    action: str,
    household_id: str | None,
    device_id: str | None,
    details: bytes,
    prev_hash: bytes,
) -> bytes:
    """The hash that links an event into the chain."""
    return hashlib.sha256(
        encode_fields(
            AUDIT_DOMAIN,
            {
                "seq": seq,
                "at": at,
                "actor": actor,
                "action": action,
                "household_id": household_id or "",
                "has_household": household_id is not None,
                "device_id": device_id or "",
                "has_device": device_id is not None,
                "details": details,
                "prev_hash": prev_hash,
            },
        )
    ).digest()


async def append(
    conn: Connection,
    *,
    at: int,
    actor: str,
    action: str,
    household_id: str | None = None,
    device_id: str | None = None,
    details: dict[str, JsonValue] | None = None,
) -> int:
    """Append one event inside the caller's transaction; return its sequence number."""
    head = await conn.lock_audit_head()
    seq = int(head["seq"]) + 1
    prev_hash = bytes(head["hash"])
    encoded = canonical_json(details or {})
    digest = event_hash(
        seq=seq,
        at=at,
        actor=actor,
        action=action,
        household_id=household_id,
        device_id=device_id,
        details=encoded,
        prev_hash=prev_hash,
    )
    await conn.execute(
        "INSERT INTO audit_log (seq, at, actor, action, household_id, device_id, details, "
        "prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        seq,
        at,
        actor,
        action,
        household_id,
        device_id,
        encoded.decode("utf-8"),
        prev_hash,
        digest,
    )
    await conn.execute("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1", seq, digest)
    return seq


def _event(row: Row) -> AuditEvent:
    details = parse_canonical_json(str(row["details"]).encode("utf-8"))
    return AuditEvent(
        seq=int(row["seq"]),
        at=int(row["at"]),
        actor=row["actor"],
        action=row["action"],
        household_id=row["household_id"],
        device_id=row["device_id"],
        details=details if isinstance(details, dict) else {},
        hash=bytes(row["hash"]),
    )


def parse_cursor(cursor: str | None) -> int | None:
    """A cursor is the sequence number to continue below; None starts at the newest."""
    if cursor is None:
        return None
    if not cursor.isascii() or not cursor.isdigit() or len(cursor) > 18:  # noqa: PLR2004
        from .errors import InvalidRequestError  # noqa: PLC0415 - only on this error path

        raise InvalidRequestError("cursor must be a value returned as next_cursor")
    return int(cursor)


async def query(
    conn: Connection,
    *,
    household_id: str | None = None,
    device_id: str | None = None,
    before: int | None = None,
    limit: int = 50,
) -> AuditPage:
    """Events newest first, filtered by household and/or device, ``limit`` per page."""
    conditions = ["seq < $1"]
    args: list[Any] = [before if before is not None else 2**62]
    if household_id is not None:
        args.append(household_id)
        conditions.append(f"household_id = ${len(args)}")
    if device_id is not None:
        args.append(device_id)
        conditions.append(f"device_id = ${len(args)}")
    args.append(limit + 1)
    rows = await conn.fetch(
        "SELECT seq, at, actor, action, household_id, device_id, details, hash FROM audit_log "  # noqa: S608 - only fixed fragments
        f"WHERE {' AND '.join(conditions)} ORDER BY seq DESC LIMIT ${len(args)}",
        *args,
    )
    events = [_event(row) for row in rows[:limit]]
    next_cursor = str(events[-1].seq) if len(rows) > limit and events else None
    return AuditPage(events, next_cursor)


async def by_actor(conn: Connection, actor: str) -> list[AuditEvent]:
    """Every event ``actor`` caused, oldest first (an account's data export; a full scan)."""
    rows = await conn.fetch(
        "SELECT seq, at, actor, action, household_id, device_id, details, hash FROM audit_log "
        "WHERE actor = $1 ORDER BY seq",
        actor,
    )
    return [_event(row) for row in rows]


async def verify(storage: Storage) -> ChainReport:
    """Walk the whole chain; raise :class:`AuditChainError` naming the first broken event."""
    expected_seq = 1
    prev_hash = GENESIS_HASH
    count = 0
    while True:
        async with storage.read() as conn:
            rows = await conn.fetch(
                "SELECT seq, at, actor, action, household_id, device_id, details, prev_hash, "
                "hash FROM audit_log WHERE seq >= $1 ORDER BY seq LIMIT $2",
                expected_seq,
                _VERIFY_PAGE,
            )
        for row in rows:
            seq = int(row["seq"])
            if seq != expected_seq:
                raise AuditChainError(
                    f"audit event {expected_seq} is missing (next is {seq}): events were deleted"
                )
            if not hmac.compare_digest(bytes(row["prev_hash"]), prev_hash):
                raise AuditChainError(f"audit event {seq} does not link to event {seq - 1}")
            digest = event_hash(
                seq=seq,
                at=int(row["at"]),
                actor=row["actor"],
                action=row["action"],
                household_id=row["household_id"],
                device_id=row["device_id"],
                details=str(row["details"]).encode("utf-8"),
                prev_hash=prev_hash,
            )
            if not hmac.compare_digest(digest, bytes(row["hash"])):
                raise AuditChainError(f"audit event {seq} was edited (its hash does not match)")
            prev_hash = digest
            expected_seq += 1
            count += 1
        if len(rows) < _VERIFY_PAGE:
            break
    async with storage.read() as conn:
        head = await conn.fetchrow("SELECT seq, hash FROM audit_head WHERE id = 1")
    if head is None:
        raise AuditChainError("the audit head row is missing")
    if int(head["seq"]) != count or not hmac.compare_digest(bytes(head["hash"]), prev_hash):
        raise AuditChainError(
            f"the chain ends at event {count} but its head says {head['seq']}: the newest "
            "events were deleted or the head was edited"
        )
    return ChainReport(count, count, prev_hash)
