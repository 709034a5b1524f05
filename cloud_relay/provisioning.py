"""One-time provisioning tokens: how a service set up by a machine hands Home Assistant a way in.

The Home Assistant add-on starts the service with nobody signed up. At every start it mints one
token here (``iob-relay provisioning-token``) and announces it, with the service's URL, through
the Supervisor's discovery API; Home Assistant's ``async_step_hassio`` redeems it with
``POST /v1/provisioning/redeem`` (:meth:`cloud_relay.relay.Relay.redeem_provisioning`, which
calls :func:`redeem_token`).

A token is 256 random bits, valid once and for ``ttl`` seconds. Only its SHA-256 is stored, in a
JSON file beside the configuration (mode 0600, replaced atomically, under an exclusive lock so a
``serve`` redeeming and a CLI minting never lose each other's writes); expired and spent entries
are dropped on every write. The file belongs to one host: a deployment of several processes over
PostgreSQL on several hosts does not use these tokens.
"""

from __future__ import annotations

import contextlib
import fcntl
import hmac
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from .errors import ConfigError
from .storage.files import make_private_directory, write_private_file
from .tokens import new_token, token_hash

TOKENS_FILE: Final = "provisioning-tokens.json"
#: A day: the add-on mints a fresh one at every start, so this only bounds a forgotten one.
DEFAULT_TTL: Final = 24 * 3600
MAX_TTL: Final = 7 * 24 * 3600
_FORMAT_VERSION: Final = 1


def tokens_path(config_path: Path) -> Path:
    """Where the tokens of the service configured by ``config_path`` are kept."""
    return config_path.parent / TOKENS_FILE


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    make_private_directory(path.parent)
    lock = path.with_name(path.name + ".lock")
    descriptor = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def _read(path: Path) -> list[dict[str, object]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as err:
        raise ConfigError(
            f"cannot read the provisioning tokens in {path}: {err}; delete the file and mint a "
            "new token"
        ) from err
    tokens = data.get("tokens") if isinstance(data, dict) else None
    if not isinstance(tokens, list) or not all(isinstance(entry, dict) for entry in tokens):
        raise ConfigError(
            f"{path} is not a provisioning-token file; delete it and mint a new token"
        )
    return tokens


def _write(path: Path, tokens: list[dict[str, object]]) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.unlink(missing_ok=True)
    body = {"version": _FORMAT_VERSION, "tokens": tokens}
    write_private_file(partial, json.dumps(body, indent=1).encode("utf-8"))
    partial.replace(path)


def _live(tokens: list[dict[str, object]], now: float) -> list[dict[str, object]]:
    live: list[dict[str, object]] = []
    for entry in tokens:
        expires, digest = entry.get("expires"), entry.get("hash")
        if isinstance(expires, int) and isinstance(digest, str) and expires > now:
            live.append(entry)
    return live


def mint_token(path: Path, *, ttl: int = DEFAULT_TTL, now: float) -> str:
    """A new single-use token valid for ``ttl`` seconds; only its hash is written to ``path``."""
    if not 0 < ttl <= MAX_TTL:
        raise ConfigError(f"the token's lifetime must be between 1 and {MAX_TTL} seconds")
    token = new_token()
    with _locked(path):
        tokens = _live(_read(path), now)
        tokens.append({"hash": token_hash(token).hex(), "expires": int(now) + ttl})
        _write(path, tokens)
    return token


def redeem_token(path: Path, token: str, *, now: float) -> bool:
    """Spend ``token``: True once if it was minted here and has not expired, else False."""
    wanted = token_hash(token).hex()
    with _locked(path):
        tokens = _read(path)
        live = _live(tokens, now)
        kept = [entry for entry in live if not hmac.compare_digest(str(entry["hash"]), wanted)]
        if len(kept) != len(tokens):
            _write(path, kept)
        return len(kept) != len(live)
