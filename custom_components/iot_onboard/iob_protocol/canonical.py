"""Deterministic encodings.

Two encodings, each with exactly one byte string per value, because signatures, MACs and
test vectors are taken over bytes:

* :func:`encode_fields` - a length-prefixed binary encoding of a *domain* string and a flat map
  of named fields, used for everything that is signed, MACed or hashed.  The domain separates
  uses (a claim signature can never be replayed as a handshake signature) and the length
  prefixes make concatenation unambiguous.
* :func:`canonical_json` / :func:`parse_canonical_json` - JSON with sorted keys, no whitespace,
  UTF-8, integers only, used for command messages.  Parsing insists on the canonical form so
  two implementations can never disagree about what a message says.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from typing import Final, TypeAlias

from .boundedjson import MAX_JSON_DEPTH, load_json
from .errors import EncodingError, MalformedMessageError, NonCanonicalMessageError

#: Leads every :func:`encode_fields` output, so it cannot collide with other formats.
FIELDS_MAGIC: Final = b"IOB1-FIELDS"

TAG_BYTES: Final = 0x01
TAG_STRING: Final = 0x02
TAG_INTEGER: Final = 0x03
TAG_BOOLEAN: Final = 0x04

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
#: Integers in JSON stay within what an IEEE double holds exactly (JavaScript clients).
JSON_INT_MAX: Final = 2**53 - 1
#: Larger than any frame (16 KiB), statement or stored audit record: a bound, not a format rule.
MAX_CANONICAL_BYTES: Final = 1024 * 1024

_DOMAIN_RE: Final = re.compile(r"[a-z0-9][a-z0-9/._-]{0,127}")
_FIELD_RE: Final = re.compile(r"[a-z][a-z0-9_]{0,63}")
_B64URL_RE: Final = re.compile(r"[A-Za-z0-9_-]*")

FieldValue: TypeAlias = bytes | str | int | bool
JsonValue: TypeAlias = bool | int | str | list["JsonValue"] | dict[str, "JsonValue"] | None


def _length_prefixed(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def _encode_value(name: str, value: FieldValue) -> bytes:
    # bool first: it is a subclass of int.
    if isinstance(value, bool):
        return bytes([TAG_BOOLEAN]) + _length_prefixed(b"\x01" if value else b"\x00")
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            raise EncodingError(f"field {name!r}: integer outside signed 64-bit range")
        return bytes([TAG_INTEGER]) + _length_prefixed(value.to_bytes(8, "big", signed=True))
    if isinstance(value, str):
        try:
            encoded = value.encode("utf-8")
        except UnicodeEncodeError as err:
            raise EncodingError(f"field {name!r}: string is not valid Unicode") from err
        return bytes([TAG_STRING]) + _length_prefixed(encoded)
    if isinstance(value, bytes):
        return bytes([TAG_BYTES]) + _length_prefixed(value)
    raise EncodingError(f"field {name!r}: unsupported type {type(value).__name__}")


def encode_fields(domain: str, fields: Mapping[str, FieldValue]) -> bytes:
    """Encode a domain and named fields into the one byte string that gets signed or MACed.

    Layout: ``lp(FIELDS_MAGIC) lp(domain) u32(count)`` then, for each field in ascending
    byte order of its name, ``lp(name) tag lp(value)``; ``lp(x)`` is a 4-byte big-endian
    length followed by ``x``.
    """
    if not _DOMAIN_RE.fullmatch(domain):
        raise EncodingError(f"invalid domain {domain!r}")
    out = bytearray(_length_prefixed(FIELDS_MAGIC))
    out += _length_prefixed(domain.encode("ascii"))
    out += len(fields).to_bytes(4, "big")
    for name in sorted(fields):
        if not _FIELD_RE.fullmatch(name):
            raise EncodingError(f"invalid field name {name!r}")
        out += _length_prefixed(name.encode("ascii"))
        out += _encode_value(name, fields[name])
    return bytes(out)


# --- base64url ----------------------------------------------------------------------------------


def b64url_encode(data: bytes) -> str:
    """Base64url without padding (RFC 4648 section 5)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strict inverse of :func:`b64url_encode`: no padding, no stray bits, one spelling."""
    if not _B64URL_RE.fullmatch(text) or len(text) % 4 == 1:
        raise EncodingError("not unpadded base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as err:  # pragma: no cover - excluded by the regex
        raise EncodingError("not unpadded base64url") from err
    if b64url_encode(data) != text:
        raise EncodingError("non-canonical base64url (stray trailing bits)")
    return data


# --- Crockford base32 ---------------------------------------------------------------------------

#: Crockford's base32 alphabet: digits and upper-case letters without I, L, O and U, so it
#: survives being read aloud and fits a QR code's alphanumeric mode.
BASE32_ALPHABET: Final = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_BASE32_INDEX: Final = {char: index for index, char in enumerate(BASE32_ALPHABET)}
_BASE32_GROUP_BYTES: Final = 5
_BASE32_GROUP_CHARS: Final = 8


def base32_encode(data: bytes) -> str:
    """Crockford base32 of a whole number of 5-byte groups (so no padding is ever needed)."""
    if len(data) % _BASE32_GROUP_BYTES:
        raise EncodingError("base32 input must be a multiple of 5 bytes")
    number = int.from_bytes(data, "big")
    chars = len(data) * 8 // 5
    return "".join(BASE32_ALPHABET[(number >> (5 * (chars - 1 - i))) & 31] for i in range(chars))


def base32_decode(text: str) -> bytes:
    """Strict inverse of :func:`base32_encode` (upper case only, whole groups)."""
    if len(text) % _BASE32_GROUP_CHARS:
        raise EncodingError("base32 input must be a multiple of 8 characters")
    number = 0
    for char in text:
        index = _BASE32_INDEX.get(char)
        if index is None:
            raise EncodingError(f"{char!r} is not a base32 character")
        number = (number << 5) | index
    return number.to_bytes(len(text) * 5 // 8, "big")


# --- canonical JSON -----------------------------------------------------------------------------


def _check_json(value: object, path: str, depth: int = 0) -> None:
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if not -JSON_INT_MAX <= value <= JSON_INT_MAX:
            raise EncodingError(f"{path}: integer outside the exact JSON range")
        return
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as err:
            raise EncodingError(f"{path}: string is not valid Unicode") from err
        return
    if depth >= MAX_JSON_DEPTH:
        # What the parser would refuse is never produced (and the recursion stays bounded).
        raise EncodingError(f"{path}: nested deeper than {MAX_JSON_DEPTH} levels")
    _check_json_container(value, path, depth + 1)


def _check_json_container(value: object, path: str, depth: int) -> None:
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check_json(item, f"{path}[{index}]", depth)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise EncodingError(f"{path}: object keys must be strings")
            _check_json(key, path)
            _check_json(item, f"{path}.{key}", depth)
        return
    raise EncodingError(f"{path}: unsupported type {type(value).__name__}")


def canonical_json(value: JsonValue) -> bytes:
    """Serialise to canonical JSON: sorted keys, no whitespace, UTF-8, integers only."""
    _check_json(value, "$")
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def parse_canonical_json(data: bytes) -> JsonValue:
    """Parse canonical JSON, refusing anything that is not byte-identical to its re-encoding.

    Read through :func:`~.boundedjson.load_json` (at most :data:`MAX_CANONICAL_BYTES` and
    :data:`~.boundedjson.MAX_JSON_DEPTH` levels), so a hostile peer gets a
    :class:`~.errors.JsonTooDeepError`, never a recursion error.
    """
    value: JsonValue = load_json(data, max_bytes=MAX_CANONICAL_BYTES, integers_only=True)
    try:
        again = canonical_json(value)
    except EncodingError as err:
        raise MalformedMessageError(str(err)) from err
    if again != data:
        raise NonCanonicalMessageError(
            "message is not canonical JSON (sorted keys, no whitespace, no escapes for "
            "printable characters)"
        )
    return value
