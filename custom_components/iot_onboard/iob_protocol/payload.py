"""Setup payload: the QR string, the manual code, the device-side setup code and its verifier.

A device has two independent setup secrets, both printed on its label:

* the **QR** secret, 120 random bits, together with the device id and the fingerprint of the
  device's public key: ``IOB1:<device id>:<secret>:<fingerprint>:<check>``;
* the **manual code**, a 9-digit passcode (about 29.9 bits, above Matter's 27-bit floor) plus a
  Verhoeff check digit, written ``12345-67890``.

Either one is the password of the PAKE while the device is unclaimed; the registry only ever
holds a salted scrypt :class:`SetupVerifier` of them.  Once claimed, the device accepts neither:
its only PAKE password is then the :class:`OwnerSecret` its owner's Home Assistant sent with
the claim, so holding the label is no longer enough to reconfigure or reset it.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar, Final, Self, TypeAlias

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from .canonical import (
    BASE32_ALPHABET,
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
    PayloadCharacterError,
    PayloadCheckError,
    PayloadError,
    PayloadLengthError,
    PayloadPrefixError,
    TrivialCodeError,
    VerifierFormatError,
)
from .identity import (
    DEVICE_ID_LENGTH,
    FINGERPRINT_LENGTH,
    FINGERPRINT_SIZE,
    TrustAnchor,
    format_fingerprint,
    validate_device_id,
)
from .sources import RandomSource, system_random

QR_PREFIX: Final = "IOB1"
QR_SEPARATOR: Final = ":"
SETUP_SECRET_SIZE: Final = 15
SETUP_SECRET_LENGTH: Final = 24
PASSCODE_DIGITS: Final = 9
MANUAL_CODE_DIGITS: Final = PASSCODE_DIGITS + 1
MANUAL_CODE_GROUP: Final = 5
MANUAL_SEPARATORS: Final = frozenset("- ")
OWNER_SECRET_SIZE: Final = 32
_QR_FIELDS: Final = 5
_QR_FIELD_LENGTHS: Final = (
    ("device id", DEVICE_ID_LENGTH),
    ("setup secret", SETUP_SECRET_LENGTH),
    ("fingerprint", FINGERPRINT_LENGTH),
    ("check character", 1),
)
_PASSCODE_RE: Final = re.compile(r"[0-9]{9}")
_BASE32_INDEX: Final = {char: index for index, char in enumerate(BASE32_ALPHABET)}


class CredentialKind(StrEnum):
    """Which secret the client holds; sent in the first handshake message.

    ``QR`` and ``MANUAL`` are printed on the label (unclaimed devices); ``OWNER`` is the secret
    the owner's Home Assistant handed over with the claim (claimed devices only).
    """

    QR = "qr"
    MANUAL = "manual"
    OWNER = "owner"

    @property
    def wire(self) -> int:
        """The byte that names this kind in the client hello."""
        return _KIND_WIRE[self]

    @classmethod
    def from_wire(cls, value: int) -> CredentialKind:
        """Inverse of :attr:`wire`."""
        for kind, wire in _KIND_WIRE.items():
            if wire == value:
                return kind
        raise PayloadError(f"unknown credential kind {value}")


_KIND_WIRE: Final = {
    CredentialKind.QR: 0x01,
    CredentialKind.MANUAL: 0x02,
    CredentialKind.OWNER: 0x03,
}
#: The kinds printed on the label: what an unclaimed device accepts.
LABEL_KINDS: Final = frozenset({CredentialKind.QR, CredentialKind.MANUAL})


# --- check characters ---------------------------------------------------------------------------


def luhn_mod32(text: str) -> str:
    """Luhn mod 32 check character over base32 text.

    Catches every single-character error and every transposition of adjacent characters
    except ``0Z`` <-> ``Z0`` (the one blind spot of Luhn mod N).
    """
    factor = 2
    total = 0
    for char in reversed(text):
        addend = factor * _BASE32_INDEX[char]
        factor = 3 - factor
        total += addend // 32 + addend % 32
    return BASE32_ALPHABET[(32 - total % 32) % 32]


_VERHOEFF_D: Final = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 2, 3, 4, 0, 6, 7, 8, 9, 5),
    (2, 3, 4, 0, 1, 7, 8, 9, 5, 6),
    (3, 4, 0, 1, 2, 8, 9, 5, 6, 7),
    (4, 0, 1, 2, 3, 9, 5, 6, 7, 8),
    (5, 9, 8, 7, 6, 0, 4, 3, 2, 1),
    (6, 5, 9, 8, 7, 1, 0, 4, 3, 2),
    (7, 6, 5, 9, 8, 2, 1, 0, 4, 3),
    (8, 7, 6, 5, 9, 3, 2, 1, 0, 4),
    (9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
)
_VERHOEFF_P: Final = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 5, 7, 6, 2, 8, 3, 0, 9, 4),
    (5, 8, 0, 3, 7, 9, 6, 1, 4, 2),
    (8, 9, 1, 6, 0, 4, 3, 5, 2, 7),
    (9, 4, 5, 3, 1, 2, 6, 8, 7, 0),
    (4, 2, 8, 6, 5, 7, 3, 9, 0, 1),
    (2, 7, 9, 3, 8, 0, 6, 4, 1, 5),
    (7, 0, 4, 6, 9, 1, 3, 2, 5, 8),
)
_VERHOEFF_INV: Final = (0, 4, 3, 2, 1, 5, 6, 7, 8, 9)


def _verhoeff(digits: str, *, with_check: bool) -> int:
    checksum = 0
    offset = 0 if with_check else 1
    for position, char in enumerate(reversed(digits)):
        checksum = _VERHOEFF_D[checksum][_VERHOEFF_P[(position + offset) % 8][int(char)]]
    return checksum


def verhoeff_digit(digits: str) -> str:
    """Verhoeff check digit: catches every single-digit error and adjacent transposition."""
    return str(_VERHOEFF_INV[_verhoeff(digits, with_check=False)])


def verhoeff_valid(digits: str) -> bool:
    """Whether the last digit of ``digits`` is its Verhoeff check digit."""
    return _verhoeff(digits, with_check=True) == 0


def is_trivial_passcode(passcode: str) -> bool:
    """Whether an attacker would try this passcode first.

    Refused: arithmetic runs mod 10 (``000000000``, ``123456789``, ``975319753``) and short
    repeats (``121212121``, ``123123123``).
    """
    values = [int(char) for char in passcode]
    steps = {(b - a) % 10 for a, b in itertools.pairwise(values)}
    if len(steps) == 1:
        return True
    return any(
        passcode == (passcode[:period] * PASSCODE_DIGITS)[:PASSCODE_DIGITS] for period in (2, 3)
    )


# --- QR payload ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QrPayload:
    """What the QR code on the label says."""

    kind: ClassVar[CredentialKind] = CredentialKind.QR

    device_id: str
    setup_secret: bytes
    fingerprint: bytes

    def __post_init__(self) -> None:
        """Refuse payloads that could not have come from :meth:`parse`."""
        validate_device_id(self.device_id)
        if len(self.setup_secret) != SETUP_SECRET_SIZE:
            raise PayloadLengthError(f"setup secret must be {SETUP_SECRET_SIZE} bytes")
        if len(self.fingerprint) != FINGERPRINT_SIZE:
            raise PayloadLengthError(f"fingerprint must be {FINGERPRINT_SIZE} bytes")

    @property
    def pake_secret(self) -> bytes:
        """The secret this credential contributes to the PAKE password."""
        return self.setup_secret

    @property
    def trust_anchor(self) -> TrustAnchor:
        """The device key the client must see, from the printed fingerprint."""
        return TrustAnchor.from_fingerprint(self.fingerprint)

    def format(self) -> str:
        """The QR string (alphanumeric-mode characters only, so the code stays small)."""
        body = (
            self.device_id + base32_encode(self.setup_secret) + format_fingerprint(self.fingerprint)
        )
        return QR_SEPARATOR.join(
            (
                QR_PREFIX,
                self.device_id,
                base32_encode(self.setup_secret),
                format_fingerprint(self.fingerprint),
                luhn_mod32(body),
            )
        )

    @classmethod
    def parse(cls, text: str) -> Self:
        """Parse a scanned QR string; each kind of damage raises its own error."""
        text = text.strip()
        if not text.startswith(QR_PREFIX + QR_SEPARATOR):
            head = text.split(QR_SEPARATOR, 1)[0][:8]
            raise PayloadPrefixError(f"not an IoT Onboard code: expected 'IOB1:', got {head!r}")
        fields = text.split(QR_SEPARATOR)
        if len(fields) != _QR_FIELDS:
            raise PayloadLengthError(f"expected {_QR_FIELDS} fields, got {len(fields)}")
        offset = len(QR_PREFIX) + 1
        for (name, length), field in zip(_QR_FIELD_LENGTHS, fields[1:], strict=True):
            if len(field) != length:
                raise PayloadLengthError(f"{name} must be {length} characters, got {len(field)}")
            for index, char in enumerate(field):
                if char not in _BASE32_INDEX:
                    raise PayloadCharacterError(
                        f"{name}: character {char!r} at position {offset + index} is not "
                        "allowed (digits and upper-case letters except I, L, O, U)"
                    )
            offset += length + 1
        device_id, secret, fingerprint, check = fields[1:]
        if luhn_mod32(device_id + secret + fingerprint) != check:
            raise PayloadCheckError("check character does not match; rescan the code")
        return cls(device_id, base32_decode(secret), base32_decode(fingerprint))


# --- manual code --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ManualCode:
    """The digits printed under the QR code, for typing in."""

    kind: ClassVar[CredentialKind] = CredentialKind.MANUAL

    passcode: str

    def __post_init__(self) -> None:
        """Refuse malformed and trivial passcodes."""
        if not _PASSCODE_RE.fullmatch(self.passcode):
            raise PayloadLengthError(f"passcode must be {PASSCODE_DIGITS} digits")
        if is_trivial_passcode(self.passcode):
            raise TrivialCodeError("this passcode is too easy to guess")

    @property
    def pake_secret(self) -> bytes:
        """The secret this credential contributes to the PAKE password."""
        return self.passcode.encode("ascii")

    def format(self) -> str:
        """Ten digits in two groups of five: ``12345-67890``."""
        digits = self.passcode + verhoeff_digit(self.passcode)
        return f"{digits[:MANUAL_CODE_GROUP]}-{digits[MANUAL_CODE_GROUP:]}"

    @classmethod
    def parse(cls, text: str) -> Self:
        """Parse a typed code; hyphens and spaces anywhere are ignored."""
        digits = ""
        for position, char in enumerate(text.strip()):
            if char in MANUAL_SEPARATORS:
                continue
            if not ("0" <= char <= "9"):
                raise PayloadCharacterError(
                    f"character {char!r} at position {position} is not a digit"
                )
            digits += char
        if len(digits) != MANUAL_CODE_DIGITS:
            raise PayloadLengthError(
                f"manual code must have {MANUAL_CODE_DIGITS} digits, got {len(digits)}"
            )
        if not verhoeff_valid(digits):
            raise PayloadCheckError("check digit does not match; check for a typo")
        return cls(digits[:PASSCODE_DIGITS])


SetupCredential: TypeAlias = QrPayload | ManualCode


# --- owner secret -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, repr=False)
class OwnerSecret:
    """What a claimed device shares with its owner's Home Assistant, and nobody else.

    32 random bytes that Home Assistant generates per device, keeps in its config entry and sends
    with ``set_claim`` inside the encrypted session; the device saves it together with the claim.
    From then on it is the device's only PAKE password (kind ``owner``): a label in someone
    else's hands opens nothing.  At 256 bits it needs no attempt limit of its own, but owner
    handshakes still count against the same one.  Never logged (no repr).
    """

    kind: ClassVar[CredentialKind] = CredentialKind.OWNER

    secret: bytes

    def __post_init__(self) -> None:
        """Refuse anything that cannot have come from :meth:`generate`."""
        if len(self.secret) != OWNER_SECRET_SIZE:
            raise PayloadLengthError(f"owner secret must be {OWNER_SECRET_SIZE} bytes")
        if len(set(self.secret)) == 1:
            raise TrivialCodeError("owner secret must be random, not one repeated byte")

    @classmethod
    def generate(cls, *, random_bytes: RandomSource = system_random) -> Self:
        """A fresh secret (Home Assistant, once per device and claim)."""
        return cls(random_bytes(OWNER_SECRET_SIZE))

    @property
    def pake_secret(self) -> bytes:
        """The secret this credential contributes to the PAKE password."""
        return self.secret

    def encode(self) -> str:
        """base64url, for storage in Home Assistant's config entry."""
        return b64url_encode(self.secret)

    @classmethod
    def decode(cls, text: str) -> Self:
        """Inverse of :meth:`encode`."""
        try:
            return cls(b64url_decode(text))
        except EncodingError as err:
            raise PayloadError(f"owner secret: {err}") from err


def pake_password(kind: CredentialKind, device_id: str, secret: bytes) -> bytes:
    """The PAKE password: the chosen secret bound to the device id and credential kind."""
    return hashlib.sha256(
        encode_fields(
            "iob/v1/pake-password",
            {"device_id": device_id, "kind": kind.value, "secret": secret},
        )
    ).digest()


# --- device-side setup code ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SetupCode:
    """Both secrets, as the device stores them after factory provisioning."""

    device_id: str
    setup_secret: bytes
    passcode: str

    def __post_init__(self) -> None:
        """Validate through the credential types, so a bad code never reaches the PAKE."""
        validate_device_id(self.device_id)
        if len(self.setup_secret) != SETUP_SECRET_SIZE:
            raise PayloadLengthError(f"setup secret must be {SETUP_SECRET_SIZE} bytes")
        ManualCode(self.passcode)

    @classmethod
    def generate(cls, device_id: str, *, random_bytes: RandomSource = system_random) -> Self:
        """New random secrets; trivial passcodes are drawn again."""
        setup_secret = random_bytes(SETUP_SECRET_SIZE)
        while True:
            # 32 bits reduced mod 10**9: bias below 2**-2, irrelevant next to the rate limit.
            passcode = f"{int.from_bytes(random_bytes(4), 'big') % 10**PASSCODE_DIGITS:09d}"
            if not is_trivial_passcode(passcode):
                return cls(device_id, setup_secret, passcode)

    def qr_payload(self, fingerprint: bytes) -> QrPayload:
        """The QR payload for the label."""
        return QrPayload(self.device_id, self.setup_secret, fingerprint)

    def manual_code(self) -> ManualCode:
        """The manual code for the label."""
        return ManualCode(self.passcode)

    def secret_for(self, kind: CredentialKind) -> bytes:
        """The label secret matching what the client says it holds."""
        if kind is CredentialKind.QR:
            return self.setup_secret
        if kind is CredentialKind.MANUAL:
            return self.passcode.encode("ascii")
        raise PayloadError("the label holds no owner secret")

    def to_json(self) -> bytes:
        """Canonical JSON for the device's own storage (never for the registry)."""
        return canonical_json(
            {
                "device_id": self.device_id,
                "passcode": self.passcode,
                "setup_secret": b64url_encode(self.setup_secret),
            }
        )

    @classmethod
    def from_json(cls, data: bytes) -> Self:
        """Inverse of :meth:`to_json`."""
        try:
            document = parse_canonical_json(data)
        except EncodingError as err:
            raise PayloadError(f"setup code: {err}") from err
        if not isinstance(document, dict) or set(document) != {
            "device_id",
            "passcode",
            "setup_secret",
        }:
            raise PayloadError("setup code: unexpected fields")
        device_id, passcode, secret = (
            document["device_id"],
            document["passcode"],
            document["setup_secret"],
        )
        if not (
            isinstance(device_id, str) and isinstance(passcode, str) and isinstance(secret, str)
        ):
            raise PayloadError("setup code: fields must be strings")
        try:
            return cls(device_id, b64url_decode(secret), passcode)
        except EncodingError as err:
            raise PayloadError(f"setup code: {err}") from err


# --- registry verifier --------------------------------------------------------------------------

VERIFIER_PREFIX: Final = "iob-verifier-v1"
VERIFIER_SALT_SIZE: Final = 16
VERIFIER_HASH_SIZE: Final = 32
VERIFIER_DOMAIN: Final = "iob/v1/setup-verifier"
#: scrypt cost: log2(N) from 14 (the floor) to 17, r from 8 to 16, p from 1 to 4.
DEFAULT_SCRYPT_LOG2_N: Final = 15
_LOG2_N_RANGE: Final = range(14, 18)
_R_RANGE: Final = range(8, 17)
_P_RANGE: Final = range(1, 5)
_VERIFIER_FIELDS: Final = 8


def _scrypt(
    *, salt: bytes, log2_n: int, r: int, p: int, device_id: str, kind: CredentialKind, secret: bytes
) -> bytes:
    material = encode_fields(
        VERIFIER_DOMAIN, {"device_id": device_id, "kind": kind.value, "secret": secret}
    )
    return Scrypt(salt=salt, length=VERIFIER_HASH_SIZE, n=2**log2_n, r=r, p=p).derive(material)


@dataclass(frozen=True, slots=True)
class SetupVerifier:
    """Salted scrypt hashes of both setup secrets, for the manufacturing registry.

    Lets the account service check that a user holds the label without ever storing it.  The
    QR secret (120 bits) is safe even if the registry leaks; the manual passcode (~30 bits) is
    only slowed down by scrypt, which is why the PAKE's own rate limit matters.
    """

    log2_n: int
    r: int
    p: int
    salt: bytes
    qr_hash: bytes
    manual_hash: bytes

    @classmethod
    def create(
        cls,
        code: SetupCode,
        *,
        random_bytes: RandomSource = system_random,
        log2_n: int = DEFAULT_SCRYPT_LOG2_N,
        r: int = 8,
        p: int = 1,
    ) -> Self:
        """Hash both secrets of ``code`` under one fresh salt."""
        _check_cost(log2_n, r, p)
        salt = random_bytes(VERIFIER_SALT_SIZE)
        hashes = {
            kind: _scrypt(
                salt=salt,
                log2_n=log2_n,
                r=r,
                p=p,
                device_id=code.device_id,
                kind=kind,
                secret=code.secret_for(kind),
            )
            for kind in (CredentialKind.QR, CredentialKind.MANUAL)
        }
        return cls(log2_n, r, p, salt, hashes[CredentialKind.QR], hashes[CredentialKind.MANUAL])

    def verify(self, device_id: str, credential: SetupCredential) -> bool:
        """Whether ``credential`` is this device's QR payload or manual code (constant time)."""
        if isinstance(credential, QrPayload) and credential.device_id != device_id:
            return False
        candidate = _scrypt(
            salt=self.salt,
            log2_n=self.log2_n,
            r=self.r,
            p=self.p,
            device_id=device_id,
            kind=credential.kind,
            secret=credential.pake_secret,
        )
        expected = self.qr_hash if credential.kind is CredentialKind.QR else self.manual_hash
        return hmac.compare_digest(candidate, expected)

    def encode(self) -> str:
        """``iob-verifier-v1$scrypt$<log2 N>$<r>$<p>$<salt>$<qr hash>$<manual hash>``."""
        return "$".join(
            (
                VERIFIER_PREFIX,
                "scrypt",
                str(self.log2_n),
                str(self.r),
                str(self.p),
                b64url_encode(self.salt),
                b64url_encode(self.qr_hash),
                b64url_encode(self.manual_hash),
            )
        )

    @classmethod
    def decode(cls, text: str) -> Self:
        """Parse :meth:`encode` output, refusing costs below the floor or absurdly high."""
        parts = text.split("$")
        if len(parts) != _VERIFIER_FIELDS or parts[:2] != [VERIFIER_PREFIX, "scrypt"]:
            raise VerifierFormatError("not an iob-verifier-v1 scrypt verifier")
        if not all(part.isascii() and part.isdigit() for part in parts[2:5]):
            raise VerifierFormatError("scrypt parameters must be decimal integers")
        log2_n, r, p = (int(part) for part in parts[2:5])
        _check_cost(log2_n, r, p)
        try:
            salt, qr_hash, manual_hash = (b64url_decode(part) for part in parts[5:])
        except EncodingError as err:
            raise VerifierFormatError(f"verifier: {err}") from err
        if len(salt) != VERIFIER_SALT_SIZE or {len(qr_hash), len(manual_hash)} != {
            VERIFIER_HASH_SIZE
        }:
            raise VerifierFormatError("verifier salt or hash has the wrong length")
        return cls(log2_n, r, p, salt, qr_hash, manual_hash)


def _check_cost(log2_n: int, r: int, p: int) -> None:
    if log2_n not in _LOG2_N_RANGE or r not in _R_RANGE or p not in _P_RANGE:
        raise VerifierFormatError(
            f"scrypt cost out of range (log2 N {log2_n}, r {r}, p {p}); allowed log2 N 14-17, "
            "r 8-16, p 1-4"
        )
