"""The audit log as one chain per household: concurrent appends, verification, the migration.

A database written before schema version 4 has a single chain; it is migrated in place and its
old events stay verifiable next to the new per-household chains.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from cloud_relay import audit
from cloud_relay.errors import AuditChainError
from cloud_relay.storage import Connection, Storage, open_storage
from cloud_relay.storage import schema as schema_module
from cloud_relay.storage.schema import MIGRATIONS

from .conftest import run_async
from .helpers import Api
from .test_audit import _tamper


async def _append(storage: Storage, household: str | None, action: str) -> int:
    async def body(conn: Connection) -> int:
        return await audit.append(
            conn, at=1_700_000_000, actor="test", action=action, household_id=household
        )

    return await storage.run(body)


async def test_concurrent_appends_to_several_chains_verify(api: Api) -> None:
    storage = api.relay.ctx.storage
    households = ["h-a", "h-b", "h-c", None]
    seqs = await asyncio.gather(
        *(_append(storage, households[i % 4], f"test.{i}") for i in range(40))
    )
    assert len(set(seqs)) == 40
    report = await audit.verify(storage)
    assert report.chains >= 4
    async with storage.read() as conn:
        rows = await conn.fetch(
            "SELECT chain, chain_seq FROM audit_log WHERE chain IN ('h-a', 'h-b', 'h-c', '') "
            "AND action LIKE 'test.%' ORDER BY chain, chain_seq"
        )
    by_chain: dict[str, list[int]] = {}
    for row in rows:
        by_chain.setdefault(row["chain"], []).append(int(row["chain_seq"]))
    for chain in ("h-a", "h-b", "h-c"):
        assert by_chain[chain] == list(range(1, 11)), chain


async def test_full_claims_run_concurrently(api: Api) -> None:
    """Claims into several households at once (group commit on SQLite, row locks on PG)."""
    owners = [await api.owner_household() for _ in range(4)]
    devices = [await api.device() for _ in range(16)]
    owned = await asyncio.gather(
        *(api.claim(owners[i % 4][0], owners[i % 4][1], device) for i, device in enumerate(devices))
    )
    assert {body["household_id"] for body in owned} == {home for _owner, home in owners}
    report = await audit.verify(api.relay.ctx.storage)
    # 4 x household.created + 16 x (claim.created, device.claimed), at least.
    assert report.count >= 36


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        (
            "DELETE FROM audit_chains WHERE chain = 'h-b'",
            "head of the audit chain of household h-b",
        ),
        (
            (
                "DELETE FROM audit_log "
                "WHERE seq = (SELECT MAX(seq) FROM audit_log WHERE chain = 'h-a')"
            ),
            "chain of household h-a ends at its event 2 but its head says 3",
        ),
        ("UPDATE audit_log SET chain = 'h-c' WHERE chain = 'h-b'", "moved"),
        ("UPDATE audit_chains SET hash = hash WHERE chain = 'h-a'", None),
    ],
)
async def test_verify_checks_every_chain(api: Api, statement: str, message: str | None) -> None:
    storage = api.relay.ctx.storage
    for household in ("h-a", "h-b", "h-a", "h-b", "h-a"):
        await _append(storage, household, "test.event")
    await audit.verify(storage)
    await _tamper(api, statement)
    if message is None:  # a no-op edit: still intact
        await audit.verify(storage)
        return
    with pytest.raises(AuditChainError, match=message):
        await audit.verify(storage)


async def test_verify_reads_in_pages(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """A walk in pages of two gives the one-page answer and still finds a deleted event."""
    storage = api.relay.ctx.storage
    for household in ("h-a", "h-b", "h-a", "h-b", "h-a", None, "h-c"):
        await _append(storage, household, "test.event")
    whole = await audit.verify(storage)
    monkeypatch.setattr(audit, "_VERIFY_PAGE", 2)
    assert await audit.verify(storage) == whole
    await _tamper(
        api, "DELETE FROM audit_log WHERE chain = 'h-a' AND chain_seq = 2 AND action = 'test.event'"
    )
    with pytest.raises(AuditChainError, match="missing"):
        await audit.verify(storage)


async def _legacy_append(storage: Storage, action: str, household: str | None) -> None:
    """An append as versions before 4 made it: one chain, its head in ``audit_head``."""
    async with storage.transaction() as conn:
        head = await conn.fetchrow("SELECT seq, hash FROM audit_head WHERE id = 1")
        assert head is not None
        seq, prev = int(head["seq"]) + 1, bytes(head["hash"])
        details = b"{}"
        digest = audit.event_hash(
            seq=seq,
            at=1_600_000_000,
            actor="account:old",
            action=action,
            household_id=household,
            device_id=None,
            details=details,
            prev_hash=prev,
        )
        await conn.execute(
            "INSERT INTO audit_log (seq, at, actor, action, household_id, device_id, details, "
            "prev_hash, hash) VALUES ($1, $2, $3, $4, $5, NULL, $6, $7, $8)",
            seq,
            1_600_000_000,
            "account:old",
            action,
            household,
            details.decode(),
            prev,
            digest,
        )
        await conn.execute("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1", seq, digest)


async def _migrates_from_single_chain(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Pages of two: both walks (the old chain and the new ones) cross page boundaries.
    monkeypatch.setattr(audit, "_VERIFY_PAGE", 2)
    storage = await open_storage(url)
    try:
        with monkeypatch.context() as patched:
            patched.setattr(schema_module, "MIGRATIONS", MIGRATIONS[:3])
            assert await storage.migrate() == [1, 2, 3]
        for index in range(5):
            await _legacy_append(storage, f"old.{index}", "h-old" if index % 2 else None)
        assert await storage.migrate() == [4, 5]
        migrated = await audit.verify(storage)
        assert (migrated.count, migrated.chains) == (5, 0)
        for index in range(3):
            await _append(storage, "h-old", f"new.{index}")
        await _append(storage, None, "new.account")
        report = await audit.verify(storage)
        assert (report.count, report.chains) == (9, 2)
        async with storage.read() as conn:
            seqs = [int(r["seq"]) for r in await conn.fetch("SELECT seq FROM audit_log")]
            page = await audit.query(conn, household_id="h-old")
        # Numbers continue after the old chain's; a household's events list across both.
        assert sorted(seqs) == list(range(1, 10))
        assert [event.action for event in page.events] == [
            "new.2",
            "new.1",
            "new.0",
            "old.3",
            "old.1",
        ]
        await _tamper_old(storage)
        with pytest.raises(AuditChainError, match="event 2 was edited"):
            await audit.verify(storage)
    finally:
        await storage.close()


async def _tamper_old(storage: Storage) -> None:
    async with storage.transaction() as conn:
        if storage.dialect == "sqlite":
            await conn.execute("DROP TRIGGER audit_log_no_update")
        else:
            await conn.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only")
        await conn.execute("UPDATE audit_log SET actor = 'account:x' WHERE seq = 2")


async def test_sqlite_migrates_from_the_single_chain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _migrates_from_single_chain(f"sqlite:///{tmp_path}/old.db", monkeypatch)


def test_postgres_migrates_from_the_single_chain(
    fresh_postgres: Callable[[bool], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = fresh_postgres(False)
    run_async(lambda: _migrates_from_single_chain(url, monkeypatch))
