"""The manufacturing registry: factory records, device models, zero-touch pre-assignment.

Devices come from ``factory-provision`` records; pre-assignment is order metadata.

A factory record is one JSON object per line::

    {"device_id": "…", "model": "…", "public_key": "<base64url, 32 bytes>",
     "setup_verifier": "iob-verifier-v1$scrypt$…"}

(``verifier`` is accepted for ``setup_verifier``; other fields are ignored). An import is all
or nothing: every line is validated first, and a device already registered with a different
key is refused rather than silently re-keyed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Final

from iob_protocol import account_api as api
from iob_protocol.canonical import JsonValue, b64url_decode, b64url_encode, canonical_json
from iob_protocol.canonical import parse_canonical_json as _parse_canonical
from iob_protocol.errors import ProtocolError
from iob_protocol.identity import (
    format_fingerprint,
    load_public_key,
    public_key_fingerprint,
    validate_device_id,
)
from iob_protocol.payload import SetupVerifier

from . import audit
from .context import Context
from .errors import (
    HouseholdNotFoundError,
    InvalidRequestError,
    ModelNotFoundError,
    RegistryDeviceNotFoundError,
    RegistryImportError,
)
from .households import clean_text
from .storage import Connection, Row

MAX_MODEL: Final = 64
MAX_METADATA_BYTES: Final = 16 * 1024
MAX_ORDER_REF: Final = 200


@dataclass(frozen=True, slots=True)
class FactoryRecord:
    """One validated line of a factory-provision file."""

    device_id: str
    model: str
    public_key: bytes
    setup_verifier: str
    self_test: api.SelfTest | None = None


def check_model_name(model: str) -> str:
    """Model names are short printable identifiers."""
    if not 1 <= len(model) <= MAX_MODEL or not all(
        char.isascii() and (char.isalnum() or char in "-_.") for char in model
    ):
        raise InvalidRequestError(
            f"model must be 1-{MAX_MODEL} characters of letters, digits, '-', '_' or '.'"
        )
    return model


def parse_record(line: str, number: int) -> FactoryRecord:
    """Validate one line (``number`` is 1-based, for the message)."""
    where = f"line {number}"
    try:
        document = json.loads(line)
    except (ValueError, RecursionError) as err:
        raise RegistryImportError(f"{where}: not JSON ({err})") from err
    if not isinstance(document, dict):
        raise RegistryImportError(f"{where}: expected a JSON object")
    verifier_text = document.get("setup_verifier", document.get("verifier"))
    device_id, model, key_text = (
        document.get("device_id"),
        document.get("model"),
        document.get("public_key"),
    )
    if not all(isinstance(value, str) for value in (device_id, model, key_text, verifier_text)):
        raise RegistryImportError(
            f"{where}: device_id, model, public_key and setup_verifier must be strings"
        )
    assert_str = (str(device_id), str(model), str(key_text), str(verifier_text))
    try:
        validate_device_id(assert_str[0])
        check_model_name(assert_str[1])
        public_key = b64url_decode(assert_str[2])
        load_public_key(public_key)
        SetupVerifier.decode(assert_str[3])
    except (ProtocolError, InvalidRequestError) as err:
        raise RegistryImportError(f"{where}: {err}") from err
    fingerprint = document.get("fingerprint")
    if fingerprint is not None and fingerprint != format_fingerprint(
        public_key_fingerprint(public_key)
    ):
        raise RegistryImportError(f"{where}: fingerprint does not match public_key")
    return FactoryRecord(
        assert_str[0],
        assert_str[1],
        public_key,
        assert_str[3],
        _self_test(document.get("self_test"), where),
    )


SELF_TEST_RESULTS: Final = frozenset({"pass", "fail", "skipped"})


def _self_test(document: object, where: str) -> api.SelfTest | None:
    """The record's ``self_test`` object, checked (results known, ``passed`` consistent)."""
    if document is None:
        return None
    try:
        self_test = api.SelfTest.parse(document)
    except ProtocolError as err:
        raise RegistryImportError(
            f"{where}: self_test is malformed ({err}); re-run factory-provision --self-test"
        ) from err
    results = [check.result for check in self_test.checks]
    if not set(results) <= SELF_TEST_RESULTS:
        raise RegistryImportError(
            f"{where}: self_test results must be pass, fail or skipped; got {results}"
        )
    if self_test.passed != ("fail" not in results):
        raise RegistryImportError(
            f"{where}: self_test says passed={self_test.passed} but its checks disagree"
        )
    return self_test


def parse_records(text: str) -> list[FactoryRecord]:
    """Every record of a JSON-lines file; blank lines are skipped."""
    records: list[FactoryRecord] = []
    seen: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        record = parse_record(line, number)
        if record.device_id in seen:
            raise RegistryImportError(f"line {number}: device {record.device_id} appears twice")
        seen.add(record.device_id)
        records.append(record)
    if not records:
        raise RegistryImportError("the file holds no records")
    return records


def model_json(row: Row) -> api.Model:
    """The API's representation of a device model."""
    metadata = _parse_canonical(str(row["metadata"]).encode("utf-8"))
    return api.Model(
        model=row["model"],
        name=row["name"],
        manufacturer=row["manufacturer"],
        metadata=metadata if isinstance(metadata, dict) else {},
        updated_at=row["updated_at"],
    )


def _metadata(value: object) -> bytes:
    if not isinstance(value, dict):
        raise InvalidRequestError("metadata must be a JSON object")
    try:
        encoded = canonical_json(_json_value(value))
    except ProtocolError as err:
        raise InvalidRequestError(f"metadata: {err} (numbers must be integers)") from err
    if len(encoded) > MAX_METADATA_BYTES:
        raise InvalidRequestError(f"metadata must be at most {MAX_METADATA_BYTES} bytes")
    return encoded


def _json_value(value: object) -> JsonValue:
    if value is None or isinstance(value, bool | int | str):
        if isinstance(value, str) and "\x00" in value:
            raise InvalidRequestError("metadata strings must not contain NUL")
        return value
    if isinstance(value, list):
        return [_json_value(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _json_value(item) for key, item in value.items()}
    raise InvalidRequestError("metadata numbers must be integers")


class Registry:
    """Factory records, device models and pre-assignment (service administrators)."""

    def __init__(self, ctx: Context) -> None:
        """Use ``ctx``'s storage and clock."""
        self._ctx = ctx

    async def import_records(self, records: list[FactoryRecord], actor: str) -> api.ImportReport:
        """Add devices (and placeholder models); identical re-imports are no-ops."""
        now = self._ctx.now()
        imported = unchanged = 0
        async with self._ctx.storage.transaction() as conn:
            for record in records:
                existing = await conn.fetchrow(
                    "SELECT model, public_key, setup_verifier FROM devices WHERE device_id = $1",
                    record.device_id,
                )
                if existing is not None:
                    if bytes(existing["public_key"]) != record.public_key or (
                        existing["model"] != record.model
                        or existing["setup_verifier"] != record.setup_verifier
                    ):
                        raise RegistryImportError(
                            f"device {record.device_id} is already registered with a different "
                            "key, model or verifier; a device is never re-keyed by an import"
                        )
                    unchanged += 1
                    continue
                await conn.execute(
                    "INSERT INTO device_models (model, name, manufacturer, metadata, created_at, "
                    "updated_at) VALUES ($1, $1, '', '{}', $2, $2) ON CONFLICT (model) DO NOTHING",
                    record.model,
                    now,
                )
                await conn.execute(
                    "INSERT INTO devices (device_id, model, public_key, setup_verifier, "
                    "imported_at, updated_at, self_test) VALUES ($1, $2, $3, $4, $5, $5, $6)",
                    record.device_id,
                    record.model,
                    record.public_key,
                    record.setup_verifier,
                    now,
                    None if record.self_test is None else json.dumps(record.self_test.to_dict()),
                )
                imported += 1
            if imported:
                await audit.append(
                    conn,
                    at=now,
                    actor=actor,
                    action="registry.imported",
                    details={"imported": imported, "unchanged": unchanged},
                )
        return api.ImportReport(imported=imported, unchanged=unchanged)

    async def models(self) -> list[api.Model]:
        """Every device model."""
        async with self._ctx.storage.read() as conn:
            rows = await conn.fetch("SELECT * FROM device_models ORDER BY model")
        return [model_json(row) for row in rows]

    async def model(self, model: str) -> api.Model:
        """One device model."""
        async with self._ctx.storage.read() as conn:
            row = await conn.fetchrow("SELECT * FROM device_models WHERE model = $1", model)
        if row is None:
            raise ModelNotFoundError
        return model_json(row)

    async def put_model(
        self, model: str, *, name: str, manufacturer: str, metadata: object, actor: str
    ) -> api.Model:
        """Create or replace a model's name, manufacturer and metadata."""
        check_model_name(model)
        name = clean_text(name, "name")
        manufacturer = clean_text(manufacturer, "manufacturer") if manufacturer else ""
        encoded = _metadata(metadata).decode("utf-8")
        now = self._ctx.now()
        async with self._ctx.storage.transaction() as conn:
            await conn.execute(
                "INSERT INTO device_models (model, name, manufacturer, metadata, created_at, "
                "updated_at) VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (model) DO UPDATE SET "
                "name = excluded.name, manufacturer = excluded.manufacturer, "
                "metadata = excluded.metadata, updated_at = excluded.updated_at",
                model,
                name,
                manufacturer,
                encoded,
                now,
            )
            await audit.append(
                conn, at=now, actor=actor, action="model.updated", details={"model": model}
            )
            row = await conn.fetchrow("SELECT * FROM device_models WHERE model = $1", model)
        if row is None:  # pragma: no cover - just written
            raise ModelNotFoundError
        return model_json(row)

    @staticmethod
    async def _device(conn: Connection, device_id: str) -> Row:
        row = await conn.fetchrow("SELECT * FROM devices WHERE device_id = $1", device_id)
        if row is None:
            raise RegistryDeviceNotFoundError
        return row

    @staticmethod
    def device_json(row: Row) -> api.RegistryDevice:
        """The admin API's view of a registry entry."""
        return api.RegistryDevice(
            device_id=row["device_id"],
            model=row["model"],
            public_key=b64url_encode(bytes(row["public_key"])),
            fingerprint=format_fingerprint(public_key_fingerprint(bytes(row["public_key"]))),
            imported_at=row["imported_at"],
            household_id=row["household_id"],
            owned_since=row["owned_since"],
            preassigned_household_id=row["preassigned_household_id"],
            order_ref=row["order_ref"],
            self_test=None
            if row["self_test"] is None
            else api.SelfTest.parse(json.loads(row["self_test"])),
        )

    async def device(self, device_id: str) -> api.RegistryDevice:
        """A registry entry with its ownership (admins only)."""
        async with self._ctx.storage.read() as conn:
            return self.device_json(await self._device(conn, device_id))

    async def preassign(
        self, device_id: str, household_id: str | None, order_ref: str | None, actor: str
    ) -> api.RegistryDevice:
        """Pre-assign a device to a household for zero-touch (None clears it)."""
        if order_ref is not None:
            order_ref = clean_text(order_ref, "order_ref", max_length=MAX_ORDER_REF)
        now = self._ctx.now()
        async with self._ctx.storage.transaction() as conn:
            await self._device(conn, device_id)
            if household_id is not None and (
                await conn.fetchval("SELECT id FROM households WHERE id = $1", household_id) is None
            ):
                raise HouseholdNotFoundError("No household has this id; check the order.")
            await conn.execute(
                "UPDATE devices SET preassigned_household_id = $1, order_ref = $2, "
                "updated_at = $3 WHERE device_id = $4",
                household_id,
                order_ref if household_id is not None else None,
                now,
                device_id,
            )
            await audit.append(
                conn,
                at=now,
                actor=actor,
                action="device.preassigned" if household_id else "device.preassignment_cleared",
                household_id=household_id,
                device_id=device_id,
                details={"order_ref": order_ref} if household_id and order_ref else {},
            )
            return self.device_json(await self._device(conn, device_id))
