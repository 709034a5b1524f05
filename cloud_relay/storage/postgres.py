"""PostgreSQL through asyncpg, for many stateless relay processes behind a load balancer.

Transactions are READ COMMITTED; races are settled by conditional updates (``... WHERE
household_id IS NULL``) and by row locks taken with ``FOR UPDATE``, never by reading first.
Migrations hold a transaction-scoped advisory lock so processes starting together apply each
migration once.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Final

import asyncpg

from cloud_relay.errors import StorageConflictError, StorageError

from .base import Connection, Row, Storage

# The typing.override binding comes last: ruff reads it to exempt overrides from docstrings.
if sys.version_info < (3, 12):  # Raspberry Pi OS Bookworm's Python 3.11
    from .base import override
else:
    from typing import override

#: Arbitrary, fixed: the advisory lock that serialises migrations across processes.
_MIGRATION_LOCK: Final = 0x10B_4E1A
_POOL_MIN: Final = 2
_POOL_MAX: Final = 20


def _wrap(err: Exception) -> StorageError:
    if isinstance(err, asyncpg.IntegrityConstraintViolationError):
        return StorageConflictError(f"constraint failed: {err}")
    return StorageError(f"PostgreSQL: {err}")


class PostgresConnection(Connection):
    """A wrapped asyncpg connection."""

    dialect = "postgres"
    _audit_next_seq_sql = "nextval('audit_log_seq')"

    def __init__(self, connection: Any) -> None:
        """Wrap ``connection`` (an ``asyncpg.Connection``)."""
        self._connection = connection

    @override
    async def execute(self, sql: str, *args: Any) -> int:
        try:
            status: str = await self._connection.execute(sql, *args)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as err:
            raise _wrap(err) from err
        last = status.rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else 0

    @override
    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        try:
            records = await self._connection.fetch(sql, *args)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as err:
            raise _wrap(err) from err
        return [dict(record) for record in records]

    @override
    async def lock(self, key: str) -> None:
        # A transaction-scoped advisory lock (released at commit or rollback); under READ
        # COMMITTED the statements after it see what the previous holder committed.
        await self.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"iob:{key}")


class PostgresStorage(Storage):
    """A PostgreSQL database reached through a connection pool."""

    dialect = "postgres"

    def __init__(self, pool: Any) -> None:
        """Use ``pool`` (an ``asyncpg.Pool``); see :meth:`open`."""
        self._pool = pool

    @classmethod
    async def open(
        cls, dsn: str, *, min_size: int = _POOL_MIN, max_size: int = _POOL_MAX
    ) -> PostgresStorage:
        """Connect a pool to ``dsn`` (``postgresql://user@host:port/database``)."""
        try:
            pool = await asyncpg.create_pool(
                dsn, min_size=min_size, max_size=max_size, command_timeout=30
            )
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as err:
            raise StorageError(
                f"cannot connect to PostgreSQL ({_redact(dsn)}): {err}; check that the server "
                "runs and the DSN's host, port, user and database are right"
            ) from err
        return cls(pool)

    @override
    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        try:
            connection = await self._pool.acquire()
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as err:
            raise _wrap(err) from err
        try:
            transaction = connection.transaction()
            try:
                await transaction.start()
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as err:
                raise _wrap(err) from err
            try:
                yield PostgresConnection(connection)
            except BaseException:
                await transaction.rollback()
                raise
            try:
                await transaction.commit()
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as err:
                raise _wrap(err) from err
        finally:
            await self._pool.release(connection)

    @override
    async def statement(self, sql: str, *args: Any) -> Any:
        # Outside a transaction block a statement commits on its own (one round trip).
        async with self.read() as conn:
            return await conn.fetchval(sql, *args)

    @override
    @asynccontextmanager
    async def read(self) -> AsyncIterator[Connection]:
        try:
            connection = await self._pool.acquire()
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as err:
            raise _wrap(err) from err
        try:
            yield PostgresConnection(connection)
        finally:
            await self._pool.release(connection)

    @override
    def _migration_transaction(self) -> AbstractAsyncContextManager[Connection]:
        return self._locked_transaction()

    @asynccontextmanager
    async def _locked_transaction(self) -> AsyncIterator[Connection]:
        async with self.transaction() as conn:
            await conn.execute(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
            yield conn

    @override
    async def close(self) -> None:
        await self._pool.close()


def _redact(dsn: str) -> str:
    """The DSN without its password, for messages."""
    scheme, sep, rest = dsn.partition("://")
    if "@" not in rest:
        return dsn
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}{sep}{user}@{host}"
