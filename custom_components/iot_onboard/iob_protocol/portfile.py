"""The port file: which pid and ports a process bound, for whoever started it.

``python -m cloud_relay serve --port-file`` and the device agent's ``port_file`` bind port 0
and write this once their ports are bound; the tests, the benchmarks and the demo stack poll
for it. One writer for both, so both are atomic in the same way.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path

#: As any file the process creates (``open``'s default): 0666 less the umask.
PORT_FILE_MODE = 0o666


def write_port_file(path: Path, document: Mapping[str, int | None]) -> None:
    """Replace ``path`` with ``document`` as one JSON line, atomically.

    The JSON goes to a new temporary file beside ``path`` (the same file system), is fsync-ed,
    and the file is renamed over ``path``. A reader polling ``path`` sees the old file or the
    new one, never half of one, and a crash before the rename leaves the old file as it was.
    The directory is not fsync-ed: after a power cut the file names a process that is gone.

    Raises:
        OSError: the file could not be written; the temporary file is gone, ``path`` unchanged
            (the callers turn this into their own configuration error).
    """
    data = (json.dumps(dict(document)) + "\n").encode("utf-8")
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        descriptor = os.open(temporary, flags, PORT_FILE_MODE)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(descriptor, view) :]
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        temporary.replace(path)
    except OSError:
        temporary.unlink(missing_ok=True)
        raise
