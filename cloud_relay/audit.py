"""The audit log: append-only, hash-chained, queryable per household and device.

Events form one chain per household (and one, ``''``, for events of no household), so
transactions of different households never wait for each other's append. Each event's hash
covers its content, its number in the whole log (``seq``), its chain and position there
(``chain_seq``) and the chain's previous hash; each chain's head (last position and hash) is
kept in its own row of ``audit_chains``, so ``audit verify`` detects an edited event, a deleted
one in the middle and a truncated tail of any chain. Appends lock their chain's head row, so a
chain is numbered without gaps in commit order; callers append last in their transaction,
keeping that lock short. Events written before the per-household chains (schema version 4)
stay in the single chain they were hashed in (``chain`` NULL, head frozen in ``audit_head``)
and are verified as before. Triggers refuse UPDATE and DELETE on the table; the chains catch
anyone who bypasses them with direct database access. Export the digest of all heads (``audit
verify`` prints it) to somewhere the database's administrators cannot write, to detect a
rewrite of whole chains.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Final

from iob_protocol import account_api as api
from iob_protocol.canonical import JsonValue, canonical_json, encode_fields, parse_canonical_json

from .errors import AuditChainError
from .storage import Connection, Row, Storage

AUDIT_DOMAIN: Final = "iob/v1/relay-audit"
CHAIN_DOMAIN: Final = "iob/v1/relay-audit-chain"
HEADS_DOMAIN: Final = "iob/v1/relay-audit-heads"
#: The chain of events that concern no household (account sign-ups, registry imports).
ACCOUNT_CHAIN: Final = ""
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
    """A verified log: how many events, chains, and one digest of every chain's head."""

    count: int
    chains: int
    head_hash: bytes


def _content(
    *,
    at: int,
    actor: str,
    action: str,
    household_id: str | None,
    device_id: str | None,
    details: bytes,
    prev_hash: bytes,
) -> dict[str, str | int | bool | bytes]:
    """The fields both chain formats hash after their numbering, in this order."""
    return {
        "at": at,
        "actor": actor,
        "action": action,
        "household_id": household_id or "",
        "has_household": household_id is not None,
        "device_id": device_id or "",
        "has_device": device_id is not None,
        "details": details,
        "prev_hash": prev_hash,
    }


def event_hash(*, seq: int, **content: Any) -> bytes:
    """The hash that links an event into the single chain of schema versions before 4.

    ``content``: the keyword arguments of :func:`_content`.
    """
    fields = {"seq": seq, **_content(**content)}
    return hashlib.sha256(encode_fields(AUDIT_DOMAIN, fields)).digest()


def chain_event_hash(*, seq: int, chain: str, chain_seq: int, **content: Any) -> bytes:
    """The hash that links an event into its household's chain (schema version 4 on)."""
    fields = {"seq": seq, "chain": chain, "chain_seq": chain_seq, **_content(**content)}
    return hashlib.sha256(encode_fields(CHAIN_DOMAIN, fields)).digest()


def chain_of(household_id: str | None) -> str:
    """The chain an event of ``household_id`` belongs to."""
    return ACCOUNT_CHAIN if household_id is None else household_id


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
    chain = chain_of(household_id)
    head = await conn.lock_audit_chain(chain, GENESIS_HASH)
    seq, chain_seq, prev_hash = int(head["next"]), int(head["seq"]) + 1, bytes(head["hash"])
    encoded = canonical_json(details or {})
    digest = chain_event_hash(
        seq=seq,
        chain=chain,
        chain_seq=chain_seq,
        at=at,
        actor=actor,
        action=action,
        household_id=household_id,
        device_id=device_id,
        details=encoded,
        prev_hash=prev_hash,
    )
    await conn.execute(
        "INSERT INTO audit_log (seq, chain, chain_seq, at, actor, action, household_id, "
        "device_id, details, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, "
        "$11)",
        seq,
        chain,
        chain_seq,
        at,
        actor,
        action,
        household_id,
        device_id,
        encoded.decode("utf-8"),
        prev_hash,
        digest,
    )
    await conn.execute(
        "UPDATE audit_chains SET seq = $1, hash = $2 WHERE chain = $3", chain_seq, digest, chain
    )
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
    """Walk every chain; raise :class:`AuditChainError` naming the first broken event."""
    legacy_count, legacy_head = await _verify_single_chain(storage)
    async with storage.read() as conn:
        rows = await conn.fetch("SELECT chain, seq, hash FROM audit_chains")
    heads = {str(row["chain"]): (int(row["seq"]), bytes(row["hash"])) for row in rows}
    count = legacy_count
    walked: dict[str, tuple[int, bytes]] = {}
    async for chain, chain_seq, digest in _walk_chains(storage):
        walked[chain] = (chain_seq, digest)
        count += chain_seq
    for chain in sorted(heads.keys() | walked.keys()):
        _check_head(chain, walked.get(chain, (0, GENESIS_HASH)), heads.get(chain))
    summary = hashlib.sha256(HEADS_DOMAIN.encode() + b"\0" + legacy_head)
    for chain in sorted(heads):
        chain_seq, digest = heads[chain]
        summary.update(encode_fields(HEADS_DOMAIN, {"chain": chain, "seq": chain_seq}) + digest)
    return ChainReport(count, len(heads), summary.digest())


def _check_head(chain: str, walked: tuple[int, bytes], head: tuple[int, bytes] | None) -> None:
    """The last event walked in ``chain`` is the one its head row names."""
    label = f"household {chain}" if chain else "account events"
    if head is None:
        raise AuditChainError(f"the head of the audit chain of {label} is missing")
    if head[0] != walked[0] or not hmac.compare_digest(head[1], walked[1]):
        raise AuditChainError(
            f"the audit chain of {label} ends at its event {walked[0]} but its head says "
            f"{head[0]}: the newest events were deleted or the head was edited"
        )


async def _paged(
    storage: Storage, sql: str, start: tuple[Any, ...], after: Callable[[Row], tuple[Any, ...]]
) -> AsyncIterator[Row]:
    """The rows of ``sql`` a page at a time (keyset paging: ``after`` the last row's key).

    ``sql`` takes the key's parameters, then the page size as its last one; no read
    transaction is held between pages.
    """
    args = start
    while True:
        async with storage.read() as conn:
            rows = await conn.fetch(sql, *args, _VERIFY_PAGE)
        for row in rows:
            yield row
        if len(rows) < _VERIFY_PAGE:
            return
        args = after(rows[-1])


async def _walk_chains(storage: Storage) -> AsyncIterator[tuple[str, int, bytes]]:
    """Every event of the per-household chains, checked: (chain, position, hash)."""
    chain: str | None = None
    position = 0
    prev_hash = GENESIS_HASH
    last_seq = 0
    rows = _paged(
        storage,
        "SELECT seq, chain, chain_seq, at, actor, action, household_id, device_id, "
        "details, prev_hash, hash FROM audit_log WHERE chain IS NOT NULL "
        "AND (chain > $1 OR (chain = $1 AND chain_seq > $2)) "
        "ORDER BY chain, chain_seq LIMIT $3",
        ("", -1),
        lambda row: (str(row["chain"]), int(row["chain_seq"])),
    )
    async for row in rows:
        if row["chain"] != chain:
            if chain is not None:
                yield chain, position, prev_hash
            chain, position, prev_hash, last_seq = str(row["chain"]), 0, GENESIS_HASH, 0
        position += 1
        prev_hash = _check_chain_event(row, position, prev_hash, last_seq)
        last_seq = int(row["seq"])
    if chain is not None:
        yield chain, position, prev_hash


def _check_chain_event(row: Row, position: int, prev_hash: bytes, last_seq: int) -> bytes:
    """Check the event at ``position`` of its chain; return its hash."""
    seq = int(row["seq"])
    if int(row["chain_seq"]) != position:
        raise AuditChainError(f"an audit event before event {seq} is missing: events were deleted")
    if row["chain"] != chain_of(row["household_id"]) or seq <= last_seq:
        raise AuditChainError(f"audit event {seq} was moved")
    if not hmac.compare_digest(bytes(row["prev_hash"]), prev_hash):
        raise AuditChainError(f"audit event {seq} does not link to the one before it")
    digest = chain_event_hash(
        seq=seq, chain=str(row["chain"]), chain_seq=position, **_stored_content(row, prev_hash)
    )
    return _matching(row, digest)


def _stored_content(row: Row, prev_hash: bytes) -> dict[str, Any]:
    """The hashed content of a stored event, linked to ``prev_hash``."""
    return {
        "at": int(row["at"]),
        "actor": row["actor"],
        "action": row["action"],
        "household_id": row["household_id"],
        "device_id": row["device_id"],
        "details": str(row["details"]).encode("utf-8"),
        "prev_hash": prev_hash,
    }


def _matching(row: Row, digest: bytes) -> bytes:
    """``digest`` if it is the stored event's hash."""
    if not hmac.compare_digest(digest, bytes(row["hash"])):
        raise AuditChainError(f"audit event {row['seq']} was edited (its hash does not match)")
    return digest


async def _verify_single_chain(storage: Storage) -> tuple[int, bytes]:
    """The events written before version 4, one chain by ``seq``: (count, head hash)."""
    expected_seq = 1
    prev_hash = GENESIS_HASH
    count = 0
    rows = _paged(
        storage,
        "SELECT seq, at, actor, action, household_id, device_id, details, prev_hash, "
        "hash FROM audit_log WHERE chain IS NULL AND seq >= $1 ORDER BY seq LIMIT $2",
        (1,),
        lambda row: (int(row["seq"]) + 1,),
    )
    async for row in rows:
        seq = int(row["seq"])
        if seq != expected_seq:
            raise AuditChainError(
                f"audit event {expected_seq} is missing (next is {seq}): events were deleted"
            )
        if not hmac.compare_digest(bytes(row["prev_hash"]), prev_hash):
            raise AuditChainError(f"audit event {seq} does not link to event {seq - 1}")
        prev_hash = _matching(row, event_hash(seq=seq, **_stored_content(row, prev_hash)))
        expected_seq += 1
        count += 1
    async with storage.read() as conn:
        head = await conn.fetchrow("SELECT seq, hash FROM audit_head WHERE id = 1")
    if head is None:
        raise AuditChainError("the audit head row is missing")
    if int(head["seq"]) != count or not hmac.compare_digest(bytes(head["hash"]), prev_hash):
        raise AuditChainError(
            f"the chain ends at event {count} but its head says {head['seq']}: the newest "
            "events were deleted or the head was edited"
        )
    return count, prev_hash
