"""Constants for the IoT Onboard integration, and the layout of its config entries.

Version 2 (docs/architecture.md, "How devices are modelled"): one household entry per household
of an account service (unique id = the household id; the hub), and one device entry per device
onboarded from this Home Assistant (unique id = the device id; data = the record shown under
``devices`` below plus ``device_id`` and ``household_id``; title = the device's name). Version 1
kept the records in the household entry under ``devices``; ``async_migrate_entry`` moves them.
The household entry's
``entry.data`` is written by the config flow and by the token callback, and read by the
runtime; the names below are stable (a rename needs a config-entry migration)::

    {
        "account_url": "https://onboard.example",   # CONF_ACCOUNT_URL, normalised, no "/"
        "account_service": "<name>._iob-relay._tcp.local.",  # CONF_ACCOUNT_SERVICE (only
                                                    #   when signed in from its announcement:
                                                    #   a new address updates account_url)
        "account_id": "<32 hex>",                   # CONF_ACCOUNT_ID: whose tokens these are
        "email": "ada@example.com",                 # CONF_EMAIL: prefilled at reauth
        "household_id": "<32 hex>",                 # CONF_HOUSEHOLD_ID (= entry.unique_id)
        "access_token": "...",                      # CONF_ACCESS_TOKEN
        "access_expires_at": 1764000000,            # CONF_ACCESS_EXPIRES_AT, Unix seconds
        "refresh_token": "...",                     # CONF_REFRESH_TOKEN (rotates on use)
        "refresh_expires_at": 1766000000,           # CONF_REFRESH_EXPIRES_AT, Unix seconds
        "remembered_wifi": "<base64url>",           # CONF_REMEMBERED_WIFI (opt-in): network
                                                    #   and password sealed with a key kept in
                                                    #   .storage/iot_onboard.wifi_keys, never
                                                    #   here (wifi_memory.py; redacted)
        "devices": {                                # CONF_DEVICES (version 1 only; now one
                                                    #   device entry each, data as below)
            "<device id>": {
                "host": "192.168.1.40",             # DEVICE_HOST: LAN provisioning server
                "port": 8423,                       # DEVICE_PORT
                "model": "pi-sensor",               # DEVICE_MODEL
                "public_key": "<base64url>",        # DEVICE_PUBLIC_KEY: verified Ed25519 key
                "owner_secret": "<base64url>",      # DEVICE_OWNER_SECRET: the only credential
                                                    #   the claimed device accepts (secret!)
                "added_at": 1764000000,             # DEVICE_ADDED_AT, Unix seconds
                "name": "Porch light",              # DEVICE_NAME: typed in the flow (device
                                                    #   entries only; absent when not typed)
            },
        },
    }

The password is never stored. ``owner_secret`` is a device credential: redact it (and the
tokens) in diagnostics; the Wi-Fi change of a claimed device uses it instead of the label.
Tokens: ``account_client.TokenSet.as_entry_data()`` / ``TokenSet.from_entry_data()`` convert;
the runtime passes ``on_tokens`` to its ``AccountClient`` and writes each new pair back with
``async_update_entry`` (refresh tokens rotate and a reused one revokes the whole session, so
exactly one client per entry may refresh: the config flow uses ``entry.runtime_data.account``
when the entry is loaded, see ``RUNTIME_ACCOUNT_ATTR``). The account service owns the device
list; ``devices`` keeps only what HA needs locally (where to reach a device for a Wi-Fi change,
the key it proved at onboarding). Zeroconf updates a device's address there without a reload.
Options belong to the runtime (roles). The flow updates data and schedules a reload itself (no
update listener is needed for data; newer HA refuses ``async_update_reload_and_abort`` on
entries with update listeners).
"""

from typing import Final

DOMAIN: Final = "iot_onboard"

# --- entry.data -----------------------------------------------------------------------------
CONF_ACCOUNT_URL: Final = "account_url"
CONF_ACCOUNT_SERVICE: Final = "account_service"
CONF_ACCOUNT_ID: Final = "account_id"
CONF_EMAIL: Final = "email"
CONF_HOUSEHOLD_ID: Final = "household_id"
CONF_ACCESS_TOKEN: Final = "access_token"  # noqa: S105 - a key name, not a secret
CONF_ACCESS_EXPIRES_AT: Final = "access_expires_at"
CONF_REFRESH_TOKEN: Final = "refresh_token"  # noqa: S105 - a key name, not a secret
CONF_REFRESH_EXPIRES_AT: Final = "refresh_expires_at"
CONF_DEVICES: Final = "devices"
#: The config entries' version: 2 = one entry per device (version 1 kept them in the household).
ENTRY_VERSION: Final = 2
#: A device entry (config entry version 2): the device id; its data is the device record plus
#: ``household_id`` (the household entry that serves it) and this key. Unique id = device id.
CONF_DEVICE_ID: Final = "device_id"
#: A household entry: its remembered Wi-Fi, sealed (wifi_memory.py; the key is kept elsewhere).
CONF_REMEMBERED_WIFI: Final = "remembered_wifi"
#: Set on a device entry that a newer onboarding of the same device replaces (not released).
CONF_SUPERSEDED: Final = "superseded"

# --- one record under entry.data["devices"][device_id] ----------------------------------------
DEVICE_HOST: Final = "host"
DEVICE_PORT: Final = "port"
DEVICE_MODEL: Final = "model"
DEVICE_PUBLIC_KEY: Final = "public_key"
DEVICE_ADDED_AT: Final = "added_at"
DEVICE_OWNER_SECRET: Final = "owner_secret"  # noqa: S105 - a key name, not a secret
#: A name typed in the flow (device entries only; without it the registry device takes the
#: descriptor's name, else the entry's title).
DEVICE_NAME: Final = "name"

#: Attribute of ``entry.runtime_data`` holding the entry's ``AccountClient`` while it is loaded.
RUNTIME_ACCOUNT_ATTR: Final = "account"

# --- config flow ------------------------------------------------------------------------------
#: Flow context key: start a reconfigure flow straight at one device's Wi-Fi change (repairs):
#: ``hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_RECONFIGURE,
#: "entry_id": entry.entry_id, CONTEXT_DEVICE_ID: device_id})``.
CONTEXT_DEVICE_ID: Final = "iob_device_id"

#: The zeroconf service devices advertise while unclaimed (manifest.json matches it).
ZEROCONF_TYPE: Final = "_iot-onboard._tcp.local."
#: The LAN provisioning server's port when discovery does not say (device_firmware default).
DEFAULT_DEVICE_PORT: Final = 8423
#: The wire protocol version this integration speaks (zeroconf TXT ``protocol``).
SUPPORTED_PROTOCOL: Final = "1"

# --- runtime: entry.options (roles; written by options_flow.py) -------------------------------
#: Role given to Home Assistant users who are not mapped to a household member.
CONF_UNMAPPED_ROLE: Final = "unmapped_role"
#: Role of actions without a user (automations, scripts started by triggers).
CONF_AUTOMATION_ROLE: Final = "automation_role"
DEFAULT_UNMAPPED_ROLE: Final = "viewer"
DEFAULT_AUTOMATION_ROLE: Final = "member"
#: A household member standing for a Home Assistant user has ``external_id`` = prefix + user id.
EXTERNAL_ID_PREFIX: Final = "ha-user:"

# --- runtime: actions (services.yaml) ---------------------------------------------------------
SERVICE_IDENTIFY: Final = "identify"
SERVICE_SHARE: Final = "share"
SERVICE_TRANSFER: Final = "transfer"
SERVICE_RELEASE: Final = "release"
SERVICE_FACTORY_RESET: Final = "factory_reset"
SERVICE_ROTATE_CREDENTIALS: Final = "rotate_credentials"
SERVICE_ROTATE_DEVICE_CREDENTIALS: Final = "rotate_device_credentials"
ATTR_DEVICE_ID: Final = "device_id"
ATTR_CONFIG_ENTRY_ID: Final = "config_entry_id"
ATTR_HOUSEHOLD_ID: Final = "household_id"
ATTR_ACCESS: Final = "access"
#: Host names of this host: an ``http`` account service is accepted there only.
LOOPBACK_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "::1"})
