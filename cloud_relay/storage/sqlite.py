"""SQLite through the standard library: WAL, one writer thread with group commit, readers pooled.

The database and its ``-wal``/``-shm`` are 0600 in a directory the service makes 0700
(:mod:`.files`): they hold password hashes, e-mail addresses and the audit log.

No statement runs on the event loop. A transaction given as a function (:meth:`Storage.run`)
costs one thread hop: the writer thread runs its statements inline with plain ``sqlite3``.
Transactions that arrive while the writer is busy wait together and share one commit (group
commit): ``BEGIN IMMEDIATE``, each function in its own ``SAVEPOINT`` (one that raises is rolled
back alone and its caller gets the exception), one ``COMMIT`` — one fsync with
``synchronous=FULL`` for the whole group — and only then every caller gets its result, so
nothing is acknowledged before it is durable. A transaction that awaits something else (the
broker) uses :meth:`Storage.transaction`: it holds the writer alone, one hop per statement.
Other processes (the CLI next to a running server) wait up to ``busy_timeout`` for SQLite's
write lock. Readers see the last committed state (WAL) without waiting for the writer.
"""

from __future__ import annotations

import asyncio
import contextvars
import sqlite3
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Final, TypeVar

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
#: At most this many transactions share one commit (bounds the time to the first answer).
GROUP_MAX: Final = 256

_T = TypeVar("_T")


def _connect(path: Path) -> sqlite3.Connection:
    """A connection usable from any one thread at a time (the storage hands it out singly)."""
    try:
        connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as err:
        raise StorageError(f"cannot open SQLite database {path}: {err}") from err
    for pragma in (
        f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}",
        "PRAGMA foreign_keys = ON",
        # FULL: an acknowledged claim survives a power cut too (NORMAL in WAL mode may
        # roll back the last commits; docs/relay.md "Performance" has the cost).
        "PRAGMA synchronous = FULL",
    ):
        connection.execute(pragma)
    return connection


def _run_statement(
    connection: sqlite3.Connection, sql: str, args: tuple[Any, ...]
) -> tuple[int, list[Row]]:
    """(rows changed, rows returned) of one statement, errors as :class:`StorageError`."""
    try:
        cursor = connection.execute(to_qmark(sql), args)
        try:
            rows = cursor.fetchall()
            names = [column[0] for column in cursor.description or ()]
            count = cursor.rowcount
        finally:
            cursor.close()
    except sqlite3.IntegrityError as err:
        raise StorageConflictError(f"constraint failed: {err}") from err
    except sqlite3.Error as err:
        raise StorageError(f"SQLite: {err}") from err
    return max(count, 0), [dict(zip(names, row, strict=True)) for row in rows]


class SqliteConnection(Connection):
    """Statements run inline, on the thread that runs the transaction (the writer's)."""

    dialect = "sqlite"
    # The transaction holds SQLite's single write lock (BEGIN IMMEDIATE): MAX is stable.
    _audit_next_seq_sql = "(SELECT COALESCE(MAX(seq), 0) + 1 FROM audit_log)"

    def __init__(self, connection: sqlite3.Connection) -> None:
        """Use ``connection`` on the current thread."""
        self._connection = connection

    @override
    async def execute(self, sql: str, *args: Any) -> int:
        return _run_statement(self._connection, sql, args)[0]

    @override
    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return _run_statement(self._connection, sql, args)[1]

    @override
    async def lock(self, key: str) -> None:
        # Nothing to do: every transaction holds SQLite's single write lock (BEGIN IMMEDIATE),
        # so writers are serialised already.
        del key


class _HoppingConnection(SqliteConnection):
    """Each statement runs on ``executor``'s thread: one hop per statement.

    For readers, and for a :meth:`SqliteStorage.transaction` whose body awaits other things.
    """

    def __init__(self, connection: sqlite3.Connection, executor: ThreadPoolExecutor) -> None:
        """Use ``connection`` on ``executor``'s threads."""
        super().__init__(connection)
        self._executor = executor

    async def _hop(self, sql: str, args: tuple[Any, ...]) -> tuple[int, list[Row]]:
        loop = asyncio.get_running_loop()
        call = partial(_run_statement, self._connection, sql, args)
        return await loop.run_in_executor(self._executor, call)

    @override
    async def execute(self, sql: str, *args: Any) -> int:
        return (await self._hop(sql, args))[0]

    @override
    async def fetch(self, sql: str, *args: Any) -> list[Row]:
        return (await self._hop(sql, args))[1]


@dataclass(slots=True)
class _Job:
    """One :meth:`SqliteStorage.run` call waiting for the writer."""

    body: Callable[[Connection], Awaitable[Any]]
    context: contextvars.Context
    future: asyncio.Future[Any]


def _drive(awaitable: Awaitable[_T]) -> _T:
    """Run a transaction body to its end on this thread; it may only await its connection."""
    steps = awaitable.__await__()
    try:
        steps.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    steps.close()
    raise StorageError(
        "a storage.run() body awaited something other than its connection; "
        "use storage.transaction() for a transaction that waits on other services"
    )


class SqliteStorage(Storage):
    """An SQLite database file."""

    dialect = "sqlite"
    single_writer = True

    def __init__(self, path: Path) -> None:
        """Open lazily: call :meth:`open` before use."""
        self.path = path
        self._writer: sqlite3.Connection | None = None
        self._writer_thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        self._reader_threads = ThreadPoolExecutor(_READERS, thread_name_prefix="sqlite-reader")
        # Held by a group commit or a transaction(): the writer connection is theirs.
        self._write_lock = asyncio.Lock()
        self._readers: asyncio.Queue[sqlite3.Connection] = asyncio.Queue()
        self._all: list[sqlite3.Connection] = []
        self._pending: list[_Job] = []
        self._committer: asyncio.Task[None] | None = None
        #: Commits made and transactions they carried (the benchmark reports the group size).
        self.commits = 0
        self.committed = 0

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

    async def _open(self) -> None:
        try:
            await asyncio.to_thread(prepare_sqlite_files, self.path)
        except OSError as err:
            raise StorageError(f"cannot prepare SQLite database {self.path}: {err}") from err
        connections = await asyncio.to_thread(self._connect_all)
        self._writer = connections[0]
        for reader in connections[1:]:
            self._readers.put_nowait(reader)

    def _connect_all(self) -> list[sqlite3.Connection]:
        writer = _connect(self.path)
        self._all.append(writer)
        mode = writer.execute("PRAGMA journal_mode = WAL").fetchone()
        if mode is None or str(mode[0]).lower() != "wal":
            raise StorageError(f"SQLite at {self.path} refused WAL mode (got {mode})")
        for _ in range(_READERS):
            self._all.append(_connect(self.path))
        return list(self._all)

    def _writer_connection(self) -> sqlite3.Connection:
        if self._writer is None:
            raise StorageError("the SQLite storage is closed")
        return self._writer

    @override
    async def run(self, body: Callable[[Connection], Awaitable[_T]]) -> _T:
        self._writer_connection()
        loop = asyncio.get_running_loop()
        job = _Job(body, contextvars.copy_context(), loop.create_future())
        self._pending.append(job)
        if self._committer is None or self._committer.done():
            self._committer = loop.create_task(self._commit_pending())
        result: _T = await job.future
        return result

    async def _commit_pending(self) -> None:
        """Commit waiting transactions, a group at a time, until none wait."""
        loop = asyncio.get_running_loop()
        while self._pending:
            async with self._write_lock:
                jobs, self._pending = self._pending[:GROUP_MAX], self._pending[GROUP_MAX:]
                try:
                    # Shielded: the writer finishes the group whatever happens to this task.
                    outcomes = await asyncio.shield(
                        loop.run_in_executor(self._writer_thread, self._commit_group, jobs)
                    )
                except BaseException as err:  # closed under it: no caller waits forever
                    failure = StorageError(f"SQLite: the writer stopped: {err!r}")
                    outcomes = [(None, failure)] * len(jobs)
                    if not isinstance(err, Exception):
                        self._answer(jobs, outcomes)
                        raise
            self._answer(jobs, outcomes)

    @staticmethod
    def _answer(jobs: list[_Job], outcomes: list[tuple[Any, BaseException | None]]) -> None:
        """Answer every caller still waiting: its result or its exception."""
        for job, (value, error) in zip(jobs, outcomes, strict=True):
            if job.future.done():
                continue
            if error is not None:
                job.future.set_exception(error)
            else:
                job.future.set_result(value)

    def _commit_group(self, jobs: list[_Job]) -> list[tuple[Any, BaseException | None]]:
        """On the writer thread: every job in its savepoint, then one commit."""
        writer = self._writer_connection()
        conn = SqliteConnection(writer)
        outcomes: list[tuple[Any, BaseException | None]] = []
        try:
            writer.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as err:
            failure = StorageError(f"SQLite: cannot begin a transaction: {err}")
            return [(None, failure)] * len(jobs)
        try:
            outcomes.extend(self._run_job(writer, conn, job) for job in jobs)
        except sqlite3.Error as err:
            return self._abandon(outcomes, len(jobs), f"cannot roll back a savepoint: {err}")
        try:
            writer.execute("COMMIT")
        except sqlite3.Error as err:
            return self._abandon(outcomes, len(jobs), f"commit failed: {err}")
        self.commits += 1
        self.committed += sum(1 for _value, error in outcomes if error is None)
        return outcomes

    @staticmethod
    def _run_job(
        writer: sqlite3.Connection, conn: Connection, job: _Job
    ) -> tuple[Any, BaseException | None]:
        """One job in its own savepoint: rolled back alone if it raises."""
        if job.future.cancelled():  # its caller went away before it began
            return None, None
        writer.execute("SAVEPOINT job")
        try:
            value = job.context.run(_drive, job.body(conn))
        except BaseException as err:  # noqa: BLE001 - handed to the job's caller
            writer.execute("ROLLBACK TO job")
            writer.execute("RELEASE job")
            return None, err
        writer.execute("RELEASE job")
        return value, None

    def _abandon(
        self, outcomes: list[tuple[Any, BaseException | None]], total: int, why: str
    ) -> list[tuple[Any, BaseException | None]]:
        """Roll the whole group back: every job that had succeeded now fails."""
        with suppress(sqlite3.Error):
            self._writer_connection().execute("ROLLBACK")
        failure: BaseException = StorageError(f"SQLite: {why}")
        kept: list[tuple[Any, BaseException | None]] = [
            (None, error or failure) for _value, error in outcomes
        ]
        return kept + [(None, failure)] * (total - len(outcomes))

    @override
    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with self._write_lock:
            conn = _HoppingConnection(self._writer_connection(), self._writer_thread)
            try:
                await conn.execute("BEGIN IMMEDIATE")
            except StorageError as err:
                raise StorageError(f"SQLite: cannot begin a transaction: {err}") from err
            try:
                yield conn
            except BaseException:
                with suppress(StorageError):
                    await asyncio.shield(conn.execute("ROLLBACK"))
                raise
            try:
                await conn.execute("COMMIT")
            except StorageError as err:
                with suppress(StorageError):
                    await conn.execute("ROLLBACK")
                raise StorageError(f"SQLite: commit failed: {err}") from err

    @override
    @asynccontextmanager
    async def read(self) -> AsyncIterator[Connection]:
        if self._writer is None:
            raise StorageError("the SQLite storage is closed")
        reader = await self._readers.get()
        try:
            yield _HoppingConnection(reader, self._reader_threads)
        finally:
            self._readers.put_nowait(reader)

    @override
    def _migration_transaction(self) -> Any:
        return self.transaction()

    @override
    async def close(self) -> None:
        if self._committer is not None:
            with suppress(Exception):
                await self._committer
        connections, self._all, self._writer = self._all, [], None
        for connection in connections:
            with suppress(sqlite3.Error):
                connection.close()
        self._writer_thread.shutdown(wait=False)
        self._reader_threads.shutdown(wait=False)
