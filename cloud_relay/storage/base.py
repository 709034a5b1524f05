"""The one storage interface, implemented by SQLite (embedded) and PostgreSQL (scale).

Queries are written once, in the SQL both engines share, with ``$1``-style placeholders
(SQLite receives them as ``?1``). Times are whole Unix seconds, flags are 0/1 integers and
binary values are bytes, so rows look the same whichever engine produced them.

A write goes through :meth:`Storage.transaction`: commit on success, roll back on any
exception (including cancellation). Reads that need no consistency with a write use
:meth:`Storage.read`.
"""

from __future__ import annotations

import abc
import re
import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Final, TypeAlias, TypeVar

from cloud_relay.errors import StorageError

if sys.version_info < (3, 12):
    _F = TypeVar("_F", bound=Callable[..., Any])

    def override(method: _F) -> _F:
        """``typing.override`` (3.12) on Python 3.11 (Raspberry Pi OS Bookworm): a marker only.

        The engines use it there; mypy checks the overrides in its run at Python 3.13.
        """
        return method


Row: TypeAlias = dict[str, Any]

_PLACEHOLDER: Final = re.compile(r"\$(\d+)")


def to_qmark(sql: str) -> str:
    """``$1`` → ``?1`` for SQLite (numbered, so one argument may appear twice)."""
    return _PLACEHOLDER.sub(r"?\1", sql)


class Connection(abc.ABC):
    """One connection, inside a transaction or a read."""

    dialect: str

    @abc.abstractmethod
    async def execute(self, sql: str, *args: Any) -> int:
        """Run a statement; return the number of rows it changed."""

    @abc.abstractmethod
    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        """Run a query; return every row."""

    async def fetchrow(self, sql: str, *args: Any) -> Row | None:
        """Run a query; return its first row or None."""
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, *args: Any) -> Any:
        """Run a query; return the first column of its first row, or None."""
        row = await self.fetchrow(sql, *args)
        return None if row is None else next(iter(row.values()))

    #: Reads the audit chain's head row, locking it where the dialect needs a lock for that.
    _audit_head_sql: str

    async def lock_audit_head(self) -> Row:
        """Lock and return the audit chain's head row until the transaction ends."""
        row = await self.fetchrow(self._audit_head_sql)
        if row is None:
            raise StorageError("the audit head row is missing; run `python -m cloud_relay migrate`")
        return row

    @abc.abstractmethod
    async def lock(self, key: str) -> None:
        """Hold an exclusive lock named ``key`` until the transaction ends.

        Serialises transactions that read something to act on it outside the database (the
        rights of a household's hub, put on the broker before the commit): the second one
        waits here until the first has committed, then reads what it committed. Take such
        locks in a fixed order (sorted keys) to stay clear of deadlocks.
        """


class Storage(abc.ABC):
    """A database behind the account service."""

    dialect: str
    #: Whether every write transaction of the service runs one at a time behind one lock
    #: (SQLite), so work moved out of a transaction is work taken off everyone's critical path.
    single_writer: bool = False

    @abc.abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[Connection]:
        """A read-write transaction; commits when the block ends without an exception."""

    @abc.abstractmethod
    def read(self) -> AbstractAsyncContextManager[Connection]:
        """A connection for reads (SQLite: a reader that never waits for the writer)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close every connection."""

    async def _applied_versions(self, conn: Connection) -> set[int]:
        """Migration versions already applied (creating the bookkeeping table if needed)."""
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(version INTEGER PRIMARY KEY, name TEXT NOT NULL)"
        )
        return {row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")}

    @abc.abstractmethod
    def _migration_transaction(self) -> AbstractAsyncContextManager[Connection]:
        """A transaction that no other process migrates concurrently with."""

    async def migrate(self) -> list[int]:
        """Apply every pending migration, each in its own transaction; return their versions."""
        from .schema import MIGRATIONS  # noqa: PLC0415 - schema imports this module

        applied: list[int] = []
        for migration in MIGRATIONS:
            async with self._migration_transaction() as conn:
                if migration.version in await self._applied_versions(conn):
                    continue
                for statement in migration.statements(self.dialect):
                    await conn.execute(statement)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
                applied.append(migration.version)
        return applied

    async def schema_version(self) -> int:
        """The highest applied migration, 0 for an empty database."""
        async with self._migration_transaction() as conn:
            versions = await self._applied_versions(conn)
        return max(versions, default=0)
