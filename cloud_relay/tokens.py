"""Random tokens, their stored hashes, ids, and the derived MQTT passwords.

The database stores only SHA-256 hashes of bearer secrets (access, refresh, claim and
invitation tokens): a leaked database grants nothing. Tokens carry 256 random bits, so one
unsalted hash suffices (nothing to brute-force). MQTT passwords are not stored at all: they
are derived from the relay's secret key, the subject and a version, so ``broker reconcile``
can rebuild the broker from the database alone and rotation is a version bump.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Final

from iob_protocol.canonical import b64url_encode, encode_fields

TOKEN_BYTES: Final = 32
ID_BYTES: Final = 16
_MQTT_DOMAIN: Final = "iob/v1/relay-mqtt-password"


def new_token() -> str:
    """256 random bits, base64url (43 characters)."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> bytes:
    """What the database stores for a bearer token."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def new_id() -> str:
    """128 random bits as 32 lower-case hex characters (safe in MQTT usernames and URLs)."""
    return secrets.token_hex(ID_BYTES)


def mqtt_password(secret_key: bytes, kind: str, subject: str, version: int) -> str:
    """The MQTT password of a device or hub, derived (HMAC-SHA-256) rather than stored."""
    material = encode_fields(_MQTT_DOMAIN, {"kind": kind, "subject": subject, "version": version})
    return b64url_encode(hmac.new(secret_key, material, hashlib.sha256).digest())
