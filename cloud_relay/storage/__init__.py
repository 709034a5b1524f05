"""Storage: one interface (:class:`Storage`), SQLite and PostgreSQL behind it."""

from __future__ import annotations

from pathlib import Path

from cloud_relay.errors import ConfigError

from .base import Connection, Row, Storage
from .schema import LATEST_VERSION

__all__ = ["LATEST_VERSION", "Connection", "Row", "Storage", "open_storage"]


async def open_storage(url: str) -> Storage:
    """Open ``sqlite:///relative.db``, ``sqlite:////abs.db`` or ``postgresql://…`` (unmigrated)."""
    if url.startswith("sqlite:///"):
        from .sqlite import SqliteStorage  # noqa: PLC0415 - only the engine in use is imported

        return await SqliteStorage.open(Path(url.removeprefix("sqlite:///")))
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStorage  # noqa: PLC0415

        return await PostgresStorage.open(url)
    raise ConfigError(
        f"unsupported database URL {url.split('://', 1)[0]!r}: use sqlite:///path/relay.db "
        "or postgresql://user@host:port/database"
    )
