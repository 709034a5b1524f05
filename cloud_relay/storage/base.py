"""The one storage interface, implemented by SQLite (embedded) and PostgreSQL (scale).

Queries are written once, in the SQL both engines share, with ``$1``-style placeholders
(SQLite receives them as ``?1``). Times are whole Unix seconds, flags are 0/1 integers and
binary values are bytes, so rows look the same whichever engine produced them.

A write goes through :meth:`Storage.run` (a function of the connection that awaits nothing
else: on SQLite it runs whole on the writer thread and shares its commit with concurrent ones)
or, when it must await another service in between, :meth:`Storage.transaction`: commit on
success, roll back on any exception (including cancellation). Reads that need no consistency
with a write use :meth:`Storage.read`.
"""

from __future__ import annotations

import abc
import re
import sys
from collections.abc import Awaitable, Callable
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
_T = TypeVar("_T")

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

    #: An SQL expression for the next audit event's number (``audit_log.seq``).
    _audit_next_seq_sql: str

    async def lock_audit_chain(self, chain: str, genesis: bytes) -> Row:
        """Lock and return the head of audit chain ``chain`` (``seq``, ``hash``, ``next``).

        One row per chain, created at ``genesis`` on first use; the upsert takes the row's
        lock, so appends to one chain are serialised and appends to others are not. ``next``
        is the number the event gets in the whole log (taken under the lock: increasing along
        each chain).
        """
        row = await self.fetchrow(
            "INSERT INTO audit_chains (chain, seq, hash) VALUES ($1, 0, $2) "  # noqa: S608 - fixed fragments
            "ON CONFLICT (chain) DO UPDATE SET seq = audit_chains.seq "
            f"RETURNING seq, hash, {self._audit_next_seq_sql} AS next",
            chain,
            genesis,
        )
        if row is None:
            raise StorageError("the audit chain head vanished; run `python -m cloud_relay migrate`")
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

    async def run(self, body: Callable[[Connection], Awaitable[_T]]) -> _T:
        """Run ``body`` in a read-write transaction; its result once the commit is durable.

        ``body`` may only await its connection (SQLite runs it on the writer thread, in a
        savepoint of a commit it may share with other transactions); one that raises is rolled
        back and its exception re-raised here.
        """
        async with self.transaction() as conn:
            return await body(conn)

    async def statement(self, sql: str, *args: Any) -> Any:
        """One statement as a transaction of its own; the first column of its first row.

        For a write that is a single statement (a server-side function): PostgreSQL runs it
        in one round trip, without BEGIN and COMMIT of their own.
        """

        async def body(conn: Connection) -> Any:
            return await conn.fetchval(sql, *args)

        return await self.run(body)

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
