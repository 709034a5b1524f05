"""The account's own data in Home Assistant: its export file, and what its deletion removes.

The options flow (options_flow.py) exports the entry's account and deletes it; this module
holds the parts that touch Home Assistant's disk and its config entries.

The export is the account service's ``GET /v1/account/export`` document, written unchanged
(indented) to a new file in Home Assistant's config directory: private (mode 0600 from its
creation, never world-readable for an instant), never overwriting an earlier export, named
with the date so the user finds it. The write runs in the executor (no blocking I/O in the
event loop). The file holds personal data (e-mail address, names, audit events): the user
guide tells the user to move it off the host, since backups include the config directory.
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Final

from homeassistant.config_entries import ConfigEntry, ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.util import dt as dt_util

from .account_client import AccountExport
from .const import CONF_ACCOUNT_ID, CONF_ACCOUNT_URL, CONF_EMAIL, CONF_HOUSEHOLD_ID
from .coordinator import IotOnboardConfigEntry
from .helpers import device_entries, household_entries

#: The export's file name: this prefix, the local date, and ``-2``, ``-3``… for more that day.
EXPORT_PREFIX: Final = "iot_onboard_account_export_"
#: The service's e-mail domain for the owner account it makes for the add-on's one-time token
#: (``cloud_relay.relay.Relay.redeem_provisioning``): its password is random and nobody's.
PROVISIONED_EMAIL_DOMAIN: Final = "@provisioned.invalid"
_PRIVATE_FILE: Final = 0o600
_CREATE_NEW: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _write_new_private_file(directory: Path, stem: str, content: bytes) -> Path:
    """Write ``content`` to ``<stem>.json`` (or ``<stem>-N.json``), created 0600, synced.

    A failed write removes the part written: no half export is left behind.
    """
    for number in itertools.count(1):
        path = directory / (f"{stem}.json" if number == 1 else f"{stem}-{number}.json")
        try:
            descriptor = os.open(path, _CREATE_NEW, _PRIVATE_FILE)
        except FileExistsError:
            continue
        try:
            with os.fdopen(descriptor, "wb") as file:
                file.write(content)
                file.flush()
                os.fsync(file.fileno())
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return path
    raise AssertionError("unreachable")  # pragma: no cover - itertools.count never ends


async def async_write_export(hass: HomeAssistant, export: AccountExport) -> Path:
    """Write ``export`` to a new private file in the config directory; its path.

    Raises :class:`OSError` when the file cannot be written (disk full, read-only).
    """
    content = json.dumps(export.to_dict(), indent=2, ensure_ascii=False).encode() + b"\n"
    stem = f"{EXPORT_PREFIX}{dt_util.now():%Y-%m-%d}"
    directory = Path(hass.config.config_dir)
    return await hass.async_add_executor_job(_write_new_private_file, directory, stem, content)


def is_provisioned(entry: IotOnboardConfigEntry) -> bool:
    """Whether the entry's account is the add-on's provisioned owner (no password anyone knows)."""
    email: str = entry.data.get(CONF_EMAIL, "")
    return email.endswith(PROVISIONED_EMAIL_DOMAIN)


def account_entries(hass: HomeAssistant, entry: IotOnboardConfigEntry) -> list[ConfigEntry]:
    """Every household entry signed in to the same account at the same service as ``entry``.

    Their sessions end with the account: an account deletion removes them all.
    """
    account = (entry.data.get(CONF_ACCOUNT_URL), entry.data.get(CONF_ACCOUNT_ID))
    return [
        other
        for other in household_entries(hass)
        if (other.data.get(CONF_ACCOUNT_URL), other.data.get(CONF_ACCOUNT_ID)) == account
    ]


async def async_remove_household_entries(hass: HomeAssistant, entries: list[ConfigEntry]) -> None:
    """Remove household entries and their device entries, releasing no device.

    The service has released what it had to (a deleted household's devices); the devices of a
    household the account only belonged to stay that household's, so removing their entries
    here must not release them either: with a loaded entry's device list emptied first,
    removing a device entry releases nothing (``async_remove_entry``).
    """
    for entry in entries:
        if entry.state is ConfigEntryState.LOADED:
            entry.runtime_data.coordinator.access.clear()
        for onboarded in device_entries(hass, entry.data[CONF_HOUSEHOLD_ID]):
            await hass.config_entries.async_remove(onboarded.entry_id)
        await hass.config_entries.async_remove(entry.entry_id)
