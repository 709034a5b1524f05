"""Storage: migrations from an empty database on both engines, and the placeholder rewrite."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cloud_relay.storage import LATEST_VERSION, open_storage
from cloud_relay.storage.base import to_qmark
from cloud_relay.storage.schema import MIGRATIONS

from .conftest import run_async


async def _migrate_twice(url: str) -> None:
    storage = await open_storage(url)
    try:
        assert await storage.schema_version() == 0
        assert await storage.migrate() == [migration.version for migration in MIGRATIONS]
        assert await storage.migrate() == []
        assert await storage.schema_version() == LATEST_VERSION
        async with storage.read() as conn:
            head = await conn.fetchrow("SELECT seq, hash FROM audit_head WHERE id = 1")
        assert head == {"seq": 0, "hash": bytes(32)}
    finally:
        await storage.close()


async def test_sqlite_migrates_from_empty(tmp_path: Path) -> None:
    await _migrate_twice(f"sqlite:///{tmp_path}/fresh.db")
    storage = await open_storage(f"sqlite:///{tmp_path}/fresh.db")
    try:
        async with storage.read() as conn:
            assert (await conn.fetchval("PRAGMA journal_mode")) == "wal"
            # FULL (2): an acknowledged claim survives a power cut, not only a crash.
            assert (await conn.fetchval("PRAGMA synchronous")) == 2
        async with storage.transaction() as conn:
            assert (await conn.fetchval("PRAGMA synchronous")) == 2
    finally:
        await storage.close()


def test_postgres_migrates_from_empty(fresh_postgres: Callable[[bool], str]) -> None:
    url = fresh_postgres(False)
    run_async(lambda: _migrate_twice(url))


def test_placeholders() -> None:
    assert to_qmark("SELECT $1, $2, $1") == "SELECT ?1, ?2, ?1"
