"""Files at rest: the service's directories 0700 and its files 0600, whatever the umask.

The SQLite database holds password hashes, e-mail addresses and the audit log; the secret key
derives every MQTT password. SQLite creates a database 0644 (less the umask) and gives its
``-wal`` and ``-shm`` the database file's own mode, so the database file is made 0600 before
SQLite first opens it, and files an older version left readable are tightened at start.
A directory the operator made stays as it is (it may be shared: the default
``sqlite:///relay.db`` lives in the working directory); the ones the service makes are 0700.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Final

from iob_protocol.portfile import write_port_file as write_shared_port_file

from cloud_relay.errors import ConfigError

PRIVATE_DIRECTORY: Final = 0o700
PRIVATE_FILE: Final = 0o600
#: The files SQLite keeps beside a database (write-ahead log, shared memory, rollback journal).
SQLITE_COMPANIONS: Final = ("-wal", "-shm", "-journal")


def make_private_directory(path: Path) -> None:
    """Create ``path`` and its missing parents 0700; existing directories are left as they are.

    ``mkdir``'s mode is filtered by the umask, so each directory made here is chmod-ed after.
    """
    missing = [directory for directory in (path, *path.parents) if not directory.exists()]
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=PRIVATE_DIRECTORY)
        except FileExistsError:
            continue  # made meanwhile by someone else: theirs
        directory.chmod(PRIVATE_DIRECTORY)


def _private_descriptor(descriptor: int) -> None:
    if stat.S_IMODE(os.fstat(descriptor).st_mode) != PRIVATE_FILE:
        os.fchmod(descriptor, PRIVATE_FILE)


def make_private_file(path: Path) -> None:
    """Create ``path`` empty if it is missing, and make it 0600 (never a symlink's target)."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    descriptor = os.open(path, flags, PRIVATE_FILE)
    try:
        _private_descriptor(descriptor)
    finally:
        os.close(descriptor)


def write_private_file(path: Path, data: bytes) -> None:
    """Write a new file 0600 (refusing to replace one), fsync-ed."""
    make_private_directory(path.parent)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    descriptor = os.open(path, flags, PRIVATE_FILE)
    with os.fdopen(descriptor, "wb") as handle:
        _private_descriptor(descriptor)
        handle.write(data)
        handle.flush()
        os.fsync(descriptor)


def prepare_sqlite_files(database: Path) -> None:
    """Before SQLite opens ``database``: its directory, the file 0600, companions tightened."""
    make_private_directory(database.parent)
    make_private_file(database)
    for suffix in SQLITE_COMPANIONS:
        companion = database.with_name(database.name + suffix)
        if companion.exists() and not companion.is_symlink():
            make_private_file(companion)


def write_port_file(path: Path, document: dict[str, int]) -> None:
    """``serve --port-file``: the JSON ``document``, written atomically once the port is bound.

    A reader polling the path never sees half a file, nor a port nobody answers on.
    """
    try:
        write_shared_port_file(path, document)
    except OSError as err:
        raise ConfigError(f"cannot write the port file {path}: {err.strerror or err}") from err
