"""Device identity: id, Ed25519 key pair, fingerprints and domain-separated signatures.

The private key is the device's proof of possession (handshake transcript, claim, release),
so it is only ever written with mode 0600 and refused when the file has become readable by
anyone else.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Self

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .canonical import (
    BASE32_ALPHABET,
    FieldValue,
    b64url_decode,
    b64url_encode,
    base32_decode,
    base32_encode,
    canonical_json,
    encode_fields,
    parse_canonical_json,
)
from .errors import (
    EncodingError,
    InsecureKeyFileError,
    InvalidDeviceIdError,
    InvalidKeyError,
    KeyFileError,
    ProtocolError,
    SignatureError,
)
from .sources import RandomSource, system_random

DEVICE_ID_BYTES: Final = 10
DEVICE_ID_LENGTH: Final = 16
PUBLIC_KEY_SIZE: Final = 32
PRIVATE_KEY_SIZE: Final = 32
SIGNATURE_SIZE: Final = 64
FINGERPRINT_SIZE: Final = 20
FINGERPRINT_LENGTH: Final = 32
FINGERPRINT_DOMAIN: Final = "iob/v1/fingerprint"
IDENTITY_FILE_FORMAT: Final = "iob-identity-v1"
IDENTITY_FILE_MODE: Final = 0o600

_DEVICE_ID_RE: Final = re.compile(f"[{BASE32_ALPHABET}]{{{DEVICE_ID_LENGTH}}}")


def generate_device_id(random_bytes: RandomSource = system_random) -> str:
    """A fresh device id: 80 random bits as 16 Crockford base32 characters."""
    return base32_encode(random_bytes(DEVICE_ID_BYTES))


def validate_device_id(device_id: str) -> str:
    """Return ``device_id`` if it is 16 upper-case Crockford base32 characters."""
    if not _DEVICE_ID_RE.fullmatch(device_id):
        raise InvalidDeviceIdError(
            f"device id must be {DEVICE_ID_LENGTH} characters of {BASE32_ALPHABET}"
        )
    return device_id


def load_public_key(public_key: bytes) -> Ed25519PublicKey:
    """Parse a raw 32-byte Ed25519 public key."""
    if len(public_key) != PUBLIC_KEY_SIZE:
        raise InvalidKeyError(f"Ed25519 public key must be {PUBLIC_KEY_SIZE} bytes")
    try:
        return Ed25519PublicKey.from_public_bytes(public_key)
    except ValueError as err:  # pragma: no cover - cryptography accepts every 32-byte string
        raise InvalidKeyError("not an Ed25519 public key") from err


def public_key_fingerprint(public_key: bytes) -> bytes:
    """The 160-bit fingerprint printed in the QR code.

    160 bits keep the QR small while a second preimage (an evil twin with a matching key)
    still costs 2**160 work.
    """
    load_public_key(public_key)
    digest = hashlib.sha256(encode_fields(FINGERPRINT_DOMAIN, {"public_key": public_key}))
    return digest.digest()[:FINGERPRINT_SIZE]


def format_fingerprint(fingerprint: bytes) -> str:
    """Fingerprint as 32 base32 characters, as printed in the QR payload."""
    if len(fingerprint) != FINGERPRINT_SIZE:
        raise InvalidKeyError(f"fingerprint must be {FINGERPRINT_SIZE} bytes")
    return base32_encode(fingerprint)


def parse_fingerprint(text: str) -> bytes:
    """Inverse of :func:`format_fingerprint`."""
    if len(text) != FINGERPRINT_LENGTH:
        raise InvalidKeyError(f"fingerprint must be {FINGERPRINT_LENGTH} characters")
    try:
        return base32_decode(text)
    except EncodingError as err:
        raise InvalidKeyError(f"fingerprint: {err}") from err


def verify_signature(
    public_key: bytes, domain: str, fields: Mapping[str, FieldValue], signature: bytes
) -> None:
    """Raise :class:`SignatureError` unless ``signature`` signs ``(domain, fields)``."""
    key = load_public_key(public_key)
    if len(signature) != SIGNATURE_SIZE:
        raise SignatureError(f"signature must be {SIGNATURE_SIZE} bytes")
    try:
        key.verify(signature, encode_fields(domain, fields))
    except InvalidSignature as err:
        raise SignatureError(f"signature does not verify for {domain}") from err


class DeviceIdentity:
    """A device id with its Ed25519 private key."""

    __slots__ = ("_device_id", "_private_key", "_public_key")

    def __init__(self, device_id: str, private_key: Ed25519PrivateKey) -> None:
        """Bind ``device_id`` to ``private_key``."""
        self._device_id = validate_device_id(device_id)
        self._private_key = private_key
        self._public_key = private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @classmethod
    def generate(
        cls, device_id: str | None = None, *, random_bytes: RandomSource = system_random
    ) -> Self:
        """Create a new identity (a new id unless one is given) from ``random_bytes``."""
        if device_id is None:
            device_id = generate_device_id(random_bytes)
        return cls.from_seed(device_id, random_bytes(PRIVATE_KEY_SIZE))

    @classmethod
    def from_seed(cls, device_id: str, seed: bytes) -> Self:
        """Rebuild an identity from its 32-byte Ed25519 seed (RFC 8032 private key)."""
        if len(seed) != PRIVATE_KEY_SIZE:
            raise InvalidKeyError(f"Ed25519 private key must be {PRIVATE_KEY_SIZE} bytes")
        return cls(device_id, Ed25519PrivateKey.from_private_bytes(seed))

    @property
    def device_id(self) -> str:
        """The device id."""
        return self._device_id

    @property
    def public_key(self) -> bytes:
        """Raw 32-byte public key."""
        return self._public_key

    @property
    def fingerprint(self) -> bytes:
        """160-bit fingerprint of the public key."""
        return public_key_fingerprint(self._public_key)

    def sign(self, domain: str, fields: Mapping[str, FieldValue]) -> bytes:
        """Sign the canonical encoding of ``(domain, fields)``."""
        return self._private_key.sign(encode_fields(domain, fields))

    def __repr__(self) -> str:
        """Show the id and fingerprint, never the key."""
        return f"DeviceIdentity({self._device_id}, {format_fingerprint(self.fingerprint)})"

    # --- storage --------------------------------------------------------------------------

    def _seed(self) -> bytes:
        return self._private_key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    def save(self, path: Path) -> None:
        """Write atomically (temp file, fsync, rename) with mode 0600 from the first byte."""
        document = canonical_json(
            {
                "device_id": self._device_id,
                "format": IDENTITY_FILE_FORMAT,
                "private_key": b64url_encode(self._seed()),
            }
        )
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            descriptor = os.open(
                temporary,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                IDENTITY_FILE_MODE,
            )
            try:
                os.write(descriptor, document)
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
            temporary.replace(path)
            directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        except OSError as err:
            temporary.unlink(missing_ok=True)
            raise KeyFileError(f"cannot write identity file {path}: {err}") from err

    @classmethod
    def load(cls, path: Path) -> Self:
        """Read an identity file written by :meth:`save`, refusing one others can read."""
        try:
            descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as err:
            raise KeyFileError(f"cannot open identity file {path}: {err}") from err
        try:
            info = os.fstat(descriptor)
            if not stat.S_ISREG(info.st_mode):
                raise KeyFileError(f"{path} is not a regular file")
            if info.st_mode & 0o077:
                raise InsecureKeyFileError(
                    f"{path} has mode {stat.S_IMODE(info.st_mode):04o}; it must be 0600"
                )
            raw = os.read(descriptor, 4096)
        finally:
            os.close(descriptor)
        device_id, seed = _parse_identity_file(raw, path)
        try:
            return cls.from_seed(device_id, seed)
        except ProtocolError as err:
            raise KeyFileError(f"{path}: {err}") from err


def _parse_identity_file(raw: bytes, path: Path) -> tuple[str, bytes]:
    try:
        document = parse_canonical_json(raw)
    except EncodingError as err:
        raise KeyFileError(f"{path}: {err}") from err
    if not isinstance(document, dict) or set(document) != {"device_id", "format", "private_key"}:
        raise KeyFileError(f"{path}: unexpected fields")
    device_id = document["device_id"]
    key_text = document["private_key"]
    if document["format"] != IDENTITY_FILE_FORMAT or not (
        isinstance(device_id, str) and isinstance(key_text, str)
    ):
        raise KeyFileError(f"{path}: not an {IDENTITY_FILE_FORMAT} file")
    try:
        return device_id, b64url_decode(key_text)
    except EncodingError as err:
        raise KeyFileError(f"{path}: private key: {err}") from err


@dataclass(frozen=True, slots=True)
class TrustAnchor:
    """What the client expects the device's key to be, checked before any secret is sent.

    From a QR code it is the printed fingerprint; from the registry (manual code) it is the
    full public key, compared exactly.
    """

    fingerprint: bytes
    public_key: bytes | None = None

    @classmethod
    def from_fingerprint(cls, fingerprint: bytes) -> Self:
        """Trust the key whose fingerprint is ``fingerprint`` (the QR path)."""
        if len(fingerprint) != FINGERPRINT_SIZE:
            raise InvalidKeyError(f"fingerprint must be {FINGERPRINT_SIZE} bytes")
        return cls(fingerprint)

    @classmethod
    def from_public_key(cls, public_key: bytes) -> Self:
        """Trust exactly ``public_key`` (the registry path)."""
        return cls(public_key_fingerprint(public_key), public_key)

    def matches(self, public_key: bytes) -> bool:
        """Whether ``public_key`` is the expected one (constant time)."""
        if self.public_key is not None:
            return hmac.compare_digest(self.public_key, public_key)
        try:
            candidate = public_key_fingerprint(public_key)
        except InvalidKeyError:
            return False
        return hmac.compare_digest(self.fingerprint, candidate)
