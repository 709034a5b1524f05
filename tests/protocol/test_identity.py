"""Device identity: ids, keys, storage and signatures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from iob_protocol import (
    DeviceIdentity,
    FieldValue,
    InsecureKeyFileError,
    InvalidDeviceIdError,
    InvalidKeyError,
    KeyFileError,
    SignatureError,
    canonical_json,
    format_fingerprint,
    generate_device_id,
    parse_fingerprint,
    public_key_fingerprint,
    validate_device_id,
    verify_signature,
)

from .helpers import SeededRandom

IDENTITY = DeviceIdentity.generate(random_bytes=SeededRandom("identity"))


def test_generated_ids_are_valid_and_distinct() -> None:
    ids = {generate_device_id() for _ in range(50)}
    assert len(ids) == 50
    for device_id in ids:
        assert validate_device_id(device_id) == device_id


@pytest.mark.parametrize(
    "bad", ["", "0123456789ABCDE", "0123456789abcdef", "0123456789ABCDEI", "0123456789ABCDEF0"]
)
def test_invalid_device_ids(bad: str) -> None:
    with pytest.raises(InvalidDeviceIdError):
        validate_device_id(bad)


def test_sign_and_verify() -> None:
    fields: dict[str, FieldValue] = {"a": 1, "b": b"x"}
    signature = IDENTITY.sign("iob/v1/test", fields)
    verify_signature(IDENTITY.public_key, "iob/v1/test", fields, signature)
    with pytest.raises(SignatureError):
        verify_signature(IDENTITY.public_key, "iob/v1/other", fields, signature)
    with pytest.raises(SignatureError):
        verify_signature(IDENTITY.public_key, "iob/v1/test", {"a": 2, "b": b"x"}, signature)
    with pytest.raises(SignatureError):
        verify_signature(IDENTITY.public_key, "iob/v1/test", fields, signature[:-1])
    with pytest.raises(InvalidKeyError):
        verify_signature(b"short", "iob/v1/test", fields, signature)


def test_fingerprint_text_round_trip() -> None:
    text = format_fingerprint(IDENTITY.fingerprint)
    assert len(text) == 32
    assert parse_fingerprint(text) == IDENTITY.fingerprint
    assert public_key_fingerprint(IDENTITY.public_key) == IDENTITY.fingerprint
    with pytest.raises(InvalidKeyError):
        parse_fingerprint(text[:-1])
    with pytest.raises(InvalidKeyError):
        parse_fingerprint(text[:-1] + "U")
    with pytest.raises(InvalidKeyError):
        format_fingerprint(b"short")


def test_repr_hides_key() -> None:
    assert IDENTITY.device_id in repr(IDENTITY)
    assert "private" not in repr(IDENTITY).lower()


def test_seed_length_checked() -> None:
    with pytest.raises(InvalidKeyError):
        DeviceIdentity.from_seed(IDENTITY.device_id, b"short")


def test_save_load_round_trip_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "identity.json"
    IDENTITY.save(path)
    assert path.stat().st_mode & 0o777 == 0o600
    loaded = DeviceIdentity.load(path)
    assert loaded.device_id == IDENTITY.device_id
    assert loaded.public_key == IDENTITY.public_key
    # Overwrite keeps 0600 and leaves no temporary file behind.
    IDENTITY.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["identity.json"]


def test_save_into_missing_directory_fails_cleanly(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError):
        IDENTITY.save(tmp_path / "missing" / "identity.json")


def test_load_refuses_readable_file(tmp_path: Path) -> None:
    path = tmp_path / "identity.json"
    IDENTITY.save(path)
    path.chmod(0o640)
    with pytest.raises(InsecureKeyFileError):
        DeviceIdentity.load(path)


def test_load_refuses_missing_symlink_and_directory(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError):
        DeviceIdentity.load(tmp_path / "absent")
    target = tmp_path / "real"
    IDENTITY.save(target)
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(KeyFileError):
        DeviceIdentity.load(link)
    directory = tmp_path / "dir"
    directory.mkdir(mode=0o700)
    with pytest.raises(KeyFileError):
        DeviceIdentity.load(directory)


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        canonical_json({"device_id": "x"}),
        canonical_json({"device_id": "0123456789ABCDEF", "format": "other", "private_key": "AA"}),
        canonical_json({"device_id": 5, "format": "iob-identity-v1", "private_key": "AA"}),
        canonical_json(
            {"device_id": "0123456789ABCDEF", "format": "iob-identity-v1", "private_key": "A"}
        ),
        canonical_json(
            {"device_id": "0123456789ABCDEF", "format": "iob-identity-v1", "private_key": "AAAA"}
        ),
        canonical_json({"device_id": "bad", "format": "iob-identity-v1", "private_key": "A" * 43}),
    ],
)
def test_load_refuses_malformed(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "identity.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, content)
    os.close(fd)
    with pytest.raises(KeyFileError):
        DeviceIdentity.load(path)
