"""SQLite's writer: a transaction function is one thread hop; concurrent ones share a commit.

A failing transaction in a group is rolled back alone; a process killed with SIGKILL while it
commits groups loses no transaction it had acknowledged.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from cloud_relay.errors import StorageConflictError, StorageError
from cloud_relay.storage import Connection, Storage, open_storage
from cloud_relay.storage.sqlite import SqliteStorage

_ROOT = Path(__file__).resolve().parents[2]


async def _storage(path: Path) -> SqliteStorage:
    storage = await open_storage(f"sqlite:///{path}")
    assert isinstance(storage, SqliteStorage)
    await storage.migrate()
    async with storage.transaction() as conn:
        await conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, owner TEXT)")
    return storage


async def _ids(storage: Storage) -> set[int]:
    async with storage.read() as conn:
        return {int(row["id"]) for row in await conn.fetch("SELECT id FROM items")}


async def test_concurrent_transactions_share_commits_and_fail_alone(tmp_path: Path) -> None:
    storage = await _storage(tmp_path / "relay.db")
    try:

        def insert(item: int) -> Callable[[Connection], Awaitable[int]]:
            async def body(conn: Connection) -> int:
                await conn.execute("INSERT INTO items (id, owner) VALUES ($1, 'a')", item)
                if item % 10 == 3:
                    raise ValueError(f"body {item} fails after its insert")
                if item % 10 == 7:  # a constraint violation: a duplicate of item 1's row
                    await conn.execute("INSERT INTO items (id, owner) VALUES (1, 'b')")
                return item * 2

            return body

        before = storage.commits
        outcomes = await asyncio.gather(
            *(storage.run(insert(item)) for item in range(1, 61)), return_exceptions=True
        )
        for item, outcome in zip(range(1, 61), outcomes, strict=True):
            if item % 10 == 3:
                assert isinstance(outcome, ValueError), outcome
            elif item % 10 == 7:
                assert isinstance(outcome, StorageConflictError), outcome
            else:
                assert outcome == item * 2
        assert await _ids(storage) == {i for i in range(1, 61) if i % 10 not in {3, 7}}
        # 60 callers waiting together: far fewer commits than transactions.
        assert 1 <= storage.commits - before < 10
    finally:
        await storage.close()


async def test_a_body_that_awaits_something_else_is_refused(tmp_path: Path) -> None:
    storage = await _storage(tmp_path / "relay.db")
    try:

        async def sleeper(conn: Connection) -> None:
            await conn.execute("INSERT INTO items (id, owner) VALUES (100, 'sleeper')")
            await asyncio.sleep(0)

        async def fine(conn: Connection) -> None:
            await conn.execute("INSERT INTO items (id, owner) VALUES (101, 'fine')")

        refused, ok = await asyncio.gather(
            storage.run(sleeper), storage.run(fine), return_exceptions=True
        )
        assert isinstance(refused, StorageError)
        assert "storage.transaction()" in str(refused)
        assert ok is None
        assert await _ids(storage) == {101}
    finally:
        await storage.close()


async def test_transaction_and_run_take_turns(tmp_path: Path) -> None:
    """A transaction() holds the writer alone; functions queued meanwhile commit after it."""
    storage = await _storage(tmp_path / "relay.db")
    try:
        async with storage.transaction() as conn:
            await conn.execute("INSERT INTO items (id, owner) VALUES (1, 'transaction')")
            queued = asyncio.ensure_future(
                storage.run(lambda c: c.fetchval("SELECT owner FROM items WHERE id = 1"))
            )
            await asyncio.sleep(0.05)
            assert not queued.done()
        assert await queued == "transaction"
    finally:
        await storage.close()


_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    sys.path.insert(0, {root!r})
    from cloud_relay.storage import open_storage

    async def main():
        storage = await open_storage("sqlite:///" + {path!r})
        counter = iter(range(1, 10**9))

        async def writer():
            while True:
                item = next(counter)

                async def body(conn, item=item):
                    await conn.execute("INSERT INTO items (id, owner) VALUES ($1, 'w')", item)
                    await conn.execute("UPDATE totals SET n = n + 1")

                await storage.run(body)
                print(item, flush=True)

        await asyncio.gather(*(writer() for _ in range(32)))

    asyncio.run(main())
    """
)


async def test_sigkill_mid_group_commit_loses_no_acknowledged_transaction(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    storage = await _storage(path)
    async with storage.transaction() as conn:
        await conn.execute("CREATE TABLE totals (n INTEGER NOT NULL)")
        await conn.execute("INSERT INTO totals (n) VALUES (0)")
    await storage.close()

    script = _WRITER.format(root=str(_ROOT), path=str(path))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None
    acknowledged: set[int] = set()
    try:
        while len(acknowledged) < 400:
            line = await asyncio.wait_for(process.stdout.readline(), 30)
            if not line:
                stderr = await process.stderr.read() if process.stderr else b""
                pytest.fail(f"the writer died: {stderr.decode(errors='replace')}")
            acknowledged.add(int(line))
    finally:
        os.kill(process.pid, signal.SIGKILL)  # mid-commit: 32 writers keep the writer busy
        await process.wait()
    assert process.returncode == -signal.SIGKILL

    reopened = await open_storage(f"sqlite:///{path}")
    try:
        stored = await _ids(reopened)
        async with reopened.read() as conn:
            total = await conn.fetchval("SELECT n FROM totals")
    finally:
        await reopened.close()
    assert acknowledged <= stored
    # Whole transactions only: each committed insert came with its counter update.
    assert total == len(stored)
