"""The household's remembered Wi-Fi: opt-in, sealed in the household entry, keyed elsewhere.

A household entry may hold ``remembered_wifi``: the network name, password and hidden flag,
sealed with ChaCha20-Poly1305 (``cryptography``, as the device session) under a random 256-bit
key of that household. The keys are not in the entry: they live in a storage file of their own,
``.storage/iot_onboard.wifi_keys``, written private (mode 0600) and at once (before the entry
refers to them). The household id is the associated data, so a sealed value copied into another
household's entry does not open.

What that protects against: ``core.config_entries`` alone (a copy shared for support, a
diagnostics dump, a partial backup, a stray sync) does not reveal the password, and forgetting
(the household's options) or removing the household destroys the key, so old copies of the
entry stay sealed. What it does not: someone with the whole configuration directory (or a full
Home Assistant backup) has the key too and can open it, as Home Assistant itself does. The
password is never logged and never sent back to the browser (the form leaves it empty).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from homeassistant.config_entries import ConfigEntry
from homeassistant.core import HomeAssistant
from homeassistant.helpers.singleton import singleton
from homeassistant.helpers.storage import Store
from homeassistant.util.hass_dict import HassKey

from .const import CONF_HOUSEHOLD_ID, CONF_REMEMBERED_WIFI, DOMAIN
from .iob_protocol import EncodingError, b64url_decode, b64url_encode

_LOGGER = logging.getLogger(__name__)

#: ``.storage/<STORAGE_KEY>``: ``{"keys": {household id: base64url 32-byte key}}``.
STORAGE_KEY: Final = f"{DOMAIN}.wifi_keys"
STORAGE_VERSION: Final = 1
_KEY_BYTES: Final = 32
_NONCE_BYTES: Final = 12
_AAD_PREFIX: Final = b"iot_onboard remembered wifi v1\x00"
_DATA_KEY: HassKey[WifiKeys] = HassKey(f"{DOMAIN}_wifi_keys")


class WifiMemoryError(Exception):
    """A remembered Wi-Fi cannot be opened (no key, another key, or damaged)."""


@dataclass(frozen=True, slots=True)
class RememberedWifi:
    """A household's remembered network; ``passphrase`` None for an open network."""

    ssid: bytes
    passphrase: str | None = field(repr=False)
    hidden: bool = False


def new_key() -> bytes:
    """A fresh household key."""
    return os.urandom(_KEY_BYTES)


def _aad(household_id: str) -> bytes:
    return _AAD_PREFIX + household_id.encode()


def seal(key: bytes, household_id: str, wifi: RememberedWifi) -> str:
    """``wifi`` sealed for ``household_id``'s entry: base64url of nonce and ciphertext."""
    plaintext = json.dumps(
        {"ssid": wifi.ssid.hex(), "passphrase": wifi.passphrase, "hidden": wifi.hidden}
    ).encode()
    nonce = os.urandom(_NONCE_BYTES)
    return b64url_encode(
        nonce + ChaCha20Poly1305(key).encrypt(nonce, plaintext, _aad(household_id))
    )


def unseal(key: bytes, household_id: str, sealed: str) -> RememberedWifi:
    """The inverse of :func:`seal`; :class:`WifiMemoryError` if it does not open."""
    try:
        raw = b64url_decode(sealed)
        plaintext = ChaCha20Poly1305(key).decrypt(
            raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _aad(household_id)
        )
        document = json.loads(plaintext)
        passphrase = document["passphrase"]
        return RememberedWifi(
            ssid=bytes.fromhex(document["ssid"]),
            passphrase=None if passphrase is None else str(passphrase),
            hidden=bool(document["hidden"]),
        )
    except (EncodingError, InvalidTag, ValueError, KeyError, TypeError) as err:
        raise WifiMemoryError("the remembered Wi-Fi does not open with this key") from err


class WifiKeys:
    """The households' keys in their own private storage file (one instance per hass)."""

    def __init__(self, hass: HomeAssistant) -> None:
        """Set up the store; nothing is read until a key is needed."""
        self._store: Store[dict[str, Any]] = Store(
            hass, STORAGE_VERSION, STORAGE_KEY, private=True, atomic_writes=True
        )
        self._keys: dict[str, str] | None = None
        # Two flows finishing at once must not each create (and write) a key of their own.
        self._lock = asyncio.Lock()

    async def _async_keys(self) -> dict[str, str]:
        if self._keys is None:
            stored = await self._store.async_load() or {}
            # Another caller may have loaded (and added a key) meanwhile: keep the first.
            if self._keys is None:
                self._keys = dict(stored.get("keys", {}))
        return self._keys

    async def async_get(self, household_id: str) -> bytes | None:
        """The household's key, if it has one."""
        key = (await self._async_keys()).get(household_id)
        return None if key is None else b64url_decode(key)

    async def async_get_or_create(self, household_id: str) -> bytes:
        """The household's key, created (and written at once) the first time."""
        async with self._lock:
            key = await self.async_get(household_id)
            if key is None:
                key = new_key()
                keys = await self._async_keys()
                keys[household_id] = b64url_encode(key)
                await self._store.async_save({"keys": keys})
            return key

    async def async_delete(self, household_id: str) -> None:
        """Destroy the household's key: what was sealed with it can no longer be opened."""
        async with self._lock:
            keys = await self._async_keys()
            if keys.pop(household_id, None) is not None:
                await self._store.async_save({"keys": keys})


@singleton(_DATA_KEY)
def wifi_keys(hass: HomeAssistant) -> WifiKeys:
    """The one key store of this Home Assistant."""
    return WifiKeys(hass)


async def async_recall(hass: HomeAssistant, entry: ConfigEntry) -> RememberedWifi | None:
    """The household entry's remembered Wi-Fi; None if it has none or it cannot be opened."""
    sealed = entry.data.get(CONF_REMEMBERED_WIFI)
    if not sealed:
        return None
    household_id: str = entry.data[CONF_HOUSEHOLD_ID]
    key = await wifi_keys(hass).async_get(household_id)
    reason = "its key is missing"
    if key is not None:
        try:
            return unseal(key, household_id, sealed)
        except WifiMemoryError as err:
            reason = str(err)
    _LOGGER.warning(
        "The remembered Wi-Fi of %s cannot be read (%s): type the Wi-Fi password; tick the box "
        "to remember it again",
        entry.title,
        reason,
    )
    return None


async def async_remember(hass: HomeAssistant, entry: ConfigEntry, wifi: RememberedWifi) -> None:
    """Seal ``wifi`` into the household entry (its key is written first)."""
    household_id: str = entry.data[CONF_HOUSEHOLD_ID]
    key = await wifi_keys(hass).async_get_or_create(household_id)
    hass.config_entries.async_update_entry(
        entry, data={**entry.data, CONF_REMEMBERED_WIFI: seal(key, household_id, wifi)}
    )


async def async_forget(hass: HomeAssistant, entry: ConfigEntry) -> None:
    """Drop the household's remembered Wi-Fi from its entry, then destroy its key."""
    if CONF_REMEMBERED_WIFI in entry.data:
        data = {k: v for k, v in entry.data.items() if k != CONF_REMEMBERED_WIFI}
        hass.config_entries.async_update_entry(entry, data=data)
    await wifi_keys(hass).async_delete(entry.data[CONF_HOUSEHOLD_ID])
