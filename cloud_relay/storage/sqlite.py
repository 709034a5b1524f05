"""SQLite through aiosqlite: WAL, one writer connection behind a lock, a pool of readers.

The database and its ``-wal``/``-shm`` are 0600 in a directory the service makes 0700
(:mod:`.files`): they hold password hashes, e-mail addresses and the audit log.

Every statement runs on aiosqlite's connection thread, never on the event loop. Writes are
serialised in-process by an ``asyncio.Lock`` and take SQLite's write lock at ``BEGIN
IMMEDIATE``, so two writers never deadlock on a lock upgrade; other processes (the CLI next
to a running server) wait up to ``busy_timeout``. Readers see the last committed state (WAL)
without waiting for the writer.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any, Final

import aiosqlite

from cloud_relay.errors import StorageConflictError, StorageError

from .base import Connection, Row, Storage, to_qmark
from .files import prepare_sqlite_files

# The typing.override binding comes last: ruff reads it to exempt overrides from docstrings.
if sys.version_info < (3, 12):  # Raspberry Pi OS Bookworm's Python 3.11
    from .base import override
else:
    from typing import override

_BUSY_TIMEOUT_MS: Final = 10_000
_READERS: Final = 4


class SqliteConnection(Connection):
    """A wrapped aiosqlite connection."""

    dialect = "sqlite"
    # The transaction already holds SQLite's single write lock (BEGIN IMMEDIATE).
    _audit_head_sql = "SELECT seq, hash FROM audit_head WHERE id = 1"

    def __init__(self, connection: aiosqlite.Connection) -> None:
        """Wrap ``connection``."""
        self._connection = connection

    @override
    async def execute(self, sql: str, *args: Any) -> int:
        try:
            cursor = await self._connection.execute(to_qmark(sql), args)
        except sqlite3.IntegrityError as err:
            raise StorageConflictError(f"constraint failed: {err}") from err
        except sqlite3.Error as err:
            raise StorageError(f"SQLite: {err}") from err
        count = cursor.rowcount
        await cursor.close()
        return max(count, 0)

    @override
    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        try:
            cursor = await self._connection.execute(to_qmark(sql), args)
            rows = await cursor.fetchall()
            names = [column[0] for column in cursor.description or ()]
            await cursor.close()
        except sqlite3.IntegrityError as err:
            raise StorageConflictError(f"constraint failed: {err}") from err
        except sqlite3.Error as err:
            raise StorageError(f"SQLite: {err}") from err
        return [dict(zip(names, row, strict=True)) for row in rows]

    @override
    async def lock(self, key: str) -> None:
        # Nothing to do: every transaction holds SQLite's single write lock (BEGIN IMMEDIATE),
        # so writers are serialised already.
        del key


class SqliteStorage(Storage):
    """An SQLite database file."""

    dialect = "sqlite"
    single_writer = True

    def __init__(self, path: Path) -> None:
        """Open lazily: call :meth:`open` before use."""
        self.path = path
        self._writer: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        self._readers: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
        self._all: list[aiosqlite.Connection] = []

    @classmethod
    async def open(cls, path: Path) -> SqliteStorage:
        """Open (creating the file) and configure WAL."""
        storage = cls(path)
        try:
            await storage._open()
        except BaseException:
            await storage.close()
            raise
        return storage

    async def _connect(self) -> aiosqlite.Connection:
        try:
            connection = await aiosqlite.connect(self.path, isolation_level=None)
        except sqlite3.Error as err:
            raise StorageError(f"cannot open SQLite database {self.path}: {err}") from err
        self._all.append(connection)
        for pragma in (
            f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}",
            "PRAGMA foreign_keys = ON",
            # FULL: an acknowledged claim survives a power cut too (NORMAL in WAL mode may
            # roll back the last commits; docs/relay.md "Performance" has the cost).
            "PRAGMA synchronous = FULL",
        ):
            await connection.execute(pragma)
        return connection

    async def _open(self) -> None:
        try:
            await asyncio.to_thread(prepare_sqlite_files, self.path)
        except OSError as err:
            raise StorageError(f"cannot prepare SQLite database {self.path}: {err}") from err
        self._writer = await self._connect()
        cursor = await self._writer.execute("PRAGMA journal_mode = WAL")
        mode = await cursor.fetchone()
        await cursor.close()
        if mode is None or str(mode[0]).lower() != "wal":
            raise StorageError(f"SQLite at {self.path} refused WAL mode (got {mode})")
        for _ in range(_READERS):
            self._readers.put_nowait(await self._connect())

    def _writer_connection(self) -> aiosqlite.Connection:
        if self._writer is None:
            raise StorageError("the SQLite storage is closed")
        return self._writer

    @override
    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self._write_lock:
            writer = self._writer_connection()
            try:
                await writer.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as err:
                raise StorageError(f"SQLite: cannot begin a transaction: {err}") from err
            try:
                yield SqliteConnection(writer)
            except BaseException:
                with suppress(sqlite3.Error):
                    await asyncio.shield(writer.execute("ROLLBACK"))
                raise
            try:
                await writer.execute("COMMIT")
            except sqlite3.Error as err:
                with suppress(sqlite3.Error):
                    await writer.execute("ROLLBACK")
                raise StorageError(f"SQLite: commit failed: {err}") from err

    @override
    @asynccontextmanager
    async def read(self) -> AsyncIterator[Connection]:
        if self._writer is None:
            raise StorageError("the SQLite storage is closed")
        reader = await self._readers.get()
        try:
            yield SqliteConnection(reader)
        finally:
            self._readers.put_nowait(reader)

    @override
    def _migration_transaction(self) -> Any:
        return self.transaction()

    @override
    async def close(self) -> None:
        connections, self._all, self._writer = self._all, [], None
        for connection in connections:
            with suppress(sqlite3.Error, ValueError):
                await connection.close()
