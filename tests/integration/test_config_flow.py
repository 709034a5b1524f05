"""Config flow: every step, every error followed by recovery, duplicate and discovery aborts.

The account service and the device are the two clients, patched where the flow imports them
(``autospec``, as HA core's wled tests do); the real ones run in test_onboarding_e2e.py.
"""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import json
import re
import time
from collections.abc import Generator, Mapping
from ipaddress import ip_address
from pathlib import Path
from typing import Any, cast
from unittest.mock import ANY, AsyncMock, MagicMock, call, create_autospec, patch

import pytest
import voluptuous as vol
from homeassistant.components import bluetooth
from homeassistant.components.bluetooth import BluetoothServiceInfoBleak
from homeassistant.components.hassio.addon_manager import (
    AddonError,
    AddonInfo,
    AddonManager,
    AddonState,
)
from homeassistant.config_entries import (
    SOURCE_BLUETOOTH,
    SOURCE_HASSIO,
    SOURCE_IGNORE,
    SOURCE_RECONFIGURE,
    SOURCE_USER,
    SOURCE_ZEROCONF,
    ConfigFlowContext,
)
from homeassistant.const import EVENT_HOMEASSISTANT_FINAL_WRITE
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType, InvalidData
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers import issue_registry as ir
from homeassistant.helpers.selector import SelectSelector
from homeassistant.helpers.service_info.hassio import HassioServiceInfo
from homeassistant.helpers.service_info.zeroconf import ZeroconfServiceInfo
from homeassistant.helpers.translation import async_get_translations
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.iot_onboard import (
    async_migrate_entry,
    async_remove_config_entry_device,
    ble_client,
    commit_engine,
    config_flow,
    flow_errors,
    onboarding,
    wifi_memory,
)
from custom_components.iot_onboard.account_client import (
    Account,
    AccountClient,
    AccountConnectionError,
    AccountResponseError,
    AlreadyOwnedError,
    AuthenticationError,
    Claim,
    ClaimRejectedError,
    ClaimState,
    ClaimStatus,
    DeviceKey,
    DeviceKeyNotFoundError,
    EmailTakenError,
    ForbiddenError,
    Household,
    InvalidCredentialsError,
    Model,
    NotFoundError,
    ProvisioningTokenInvalidError,
    RateLimitedError,
    Role,
    ServiceHealth,
    ServiceUnavailableError,
    SignedIn,
    TokenSet,
    WeakPasswordError,
)
from custom_components.iot_onboard.config_flow import normalize_account_url
from custom_components.iot_onboard.const import (
    CONF_ACCOUNT_ID,
    CONF_ACCOUNT_URL,
    CONF_DEVICE_ID,
    CONF_EMAIL,
    CONF_HOUSEHOLD_ID,
    CONF_REMEMBERED_WIFI,
    DEVICE_HOST,
    DEVICE_MODEL,
    DEVICE_NAME,
    DEVICE_OWNER_SECRET,
    DEVICE_PORT,
    DEVICE_PUBLIC_KEY,
    DOMAIN,
)
from custom_components.iot_onboard.coordinator import IotOnboardCoordinator
from custom_components.iot_onboard.device_client import (
    CredentialRefusedClientError,
    DeviceAdvertisement,
    DeviceCommandError,
    DeviceConnectionError,
    DeviceKeyMismatchClientError,
    DeviceLink,
    DeviceProtocolError,
    HandshakeRefusedError,
    SessionLostError,
    SetupCodeRejectedError,
)
from custom_components.iot_onboard.hub import HubCredentials, MqttHub
from custom_components.iot_onboard.iob_protocol import (
    CommandType,
    DeviceIdentity,
    DeviceState,
    DiagnosticCode,
    InfoResult,
    OwnerSecret,
    SetupCode,
    StatusResult,
    WifiNetwork,
    WifiSecurity,
    b64url_encode,
)
from custom_components.iot_onboard.iob_protocol.ble import SERVICE_UUID
from custom_components.iot_onboard.options_flow import IotOnboardOptionsFlow
from tests.integration.fake_ble import ADDRESS, FakeConnector, FakeGattDevice, ble_device
from tests.integration.runtime_helpers import device_advertisement

URL = "https://onboard.example"
HID = "a" * 32
OTHER_HID = "e" * 32
ACCOUNT_ID = "b" * 32
IDENTITY = DeviceIdentity.generate()
DEVICE_ID = IDENTITY.device_id
SETUP = SetupCode.generate(DEVICE_ID)
QR = SETUP.qr_payload(IDENTITY.fingerprint).format()
MANUAL = SETUP.manual_code().format()
OTHER_IDENTITY = DeviceIdentity.generate()
OTHER_QR = (
    SetupCode.generate(OTHER_IDENTITY.device_id).qr_payload(OTHER_IDENTITY.fingerprint).format()
)
TOKENS = TokenSet(
    access_token="access-" + "x" * 40,
    access_expires_at=int(time.time()) + 900,
    refresh_token="refresh-" + "y" * 40,
    refresh_expires_at=int(time.time()) + 86400,
)
NEW_TOKENS = TokenSet(
    access_token="access-" + "n" * 40,
    access_expires_at=int(time.time()) + 900,
    refresh_token="refresh-" + "m" * 40,
    refresh_expires_at=int(time.time()) + 86400,
)
ACCOUNT = Account(account_id=ACCOUNT_ID, email="ada@example.com", display_name="", is_admin=False)
HOME = Household(household_id=HID, name="Home", role=Role.OWNER, created_at=0)
FLAT = Household(household_id=OTHER_HID, name="Flat", role=Role.ADMIN, created_at=0)
TEST_MODEL = Model(
    model="pi-test", name="Test sensor", manufacturer="IoT Onboard", metadata={}, updated_at=0
)
#: The name field's default for DEVICE_ID (it advertises no name of its own).
DEFAULT_NAME = f"Test sensor {DEVICE_ID[-4:]}"
HOME_NET = WifiNetwork(ssid=b"HomeNet", rssi=-40, security=WifiSecurity.WPA_PERSONAL)
CAFE = WifiNetwork(ssid=b"Cafe\x1b[31m", rssi=-70, security=WifiSecurity.OPEN)
OLD = WifiNetwork(ssid=b"Old", rssi=-80, security=WifiSecurity.WEP)
HOME_KEY = "ssid:" + b"HomeNet".hex()
CAFE_KEY = "ssid:" + CAFE.ssid.hex()
OLD_KEY = "ssid:" + b"Old".hex()
PASSWORD = "correct horse battery"  # noqa: S105 - the test network
SIGN_IN = {
    CONF_ACCOUNT_URL: URL + "/",
    CONF_EMAIL: "ada@example.com",
    "password": "pw",
    "create_account": False,
    "household_name": "Home",  # used when the account has no household
}


def claim(*, expires_in: int = 600) -> Claim:
    return Claim(
        claim_id="1" * 32,
        device_id=DEVICE_ID,
        household_id=HID,
        token="t" * 43,
        expires_at=int(time.time()) + expires_in,
    )


def claim_status(state: ClaimState) -> ClaimStatus:
    return ClaimStatus(
        claim_id="1" * 32,
        status=state,
        device_id=DEVICE_ID,
        household_id=HID,
        expires_at=0,
        completed_at=None,
    )


def entry_data() -> dict[str, Any]:
    return {
        CONF_ACCOUNT_URL: URL,
        CONF_ACCOUNT_ID: ACCOUNT_ID,
        CONF_EMAIL: "ada@example.com",
        CONF_HOUSEHOLD_ID: HID,
        **TOKENS.as_entry_data(),
    }


OWNER = OwnerSecret.generate()
DEVICE_RECORD = {
    DEVICE_HOST: "192.0.2.10",
    DEVICE_PORT: 8423,
    DEVICE_MODEL: "pi-test",
    DEVICE_PUBLIC_KEY: b64url_encode(IDENTITY.public_key),
    DEVICE_OWNER_SECRET: OWNER.encode(),
    "added_at": 1,
}


def household_entry(
    hass: HomeAssistant, *, hid: str = HID, devices: dict[str, Any] | None = None
) -> MockConfigEntry:
    """The household entry (version 2) and one device entry per ``devices`` record."""
    entry = MockConfigEntry(
        domain=DOMAIN,
        version=2,
        unique_id=hid,
        title="Home" if hid == HID else "Flat",
        data={**entry_data(), CONF_HOUSEHOLD_ID: hid},
    )
    entry.add_to_hass(hass)
    for device_id, record in (devices or {}).items():
        MockConfigEntry(
            domain=DOMAIN,
            version=2,
            unique_id=device_id,
            title=f"pi-test {device_id[-4:]}",
            data={**record, CONF_DEVICE_ID: device_id, CONF_HOUSEHOLD_ID: hid},
        ).add_to_hass(hass)
    return entry


def records(hass: HomeAssistant, household: MockConfigEntry) -> dict[str, dict[str, Any]]:
    """The device entries of ``household`` as the version-1 records were (id -> record)."""
    hid = household.data[CONF_HOUSEHOLD_ID]
    return {
        str(entry.unique_id): {
            k: v for k, v in entry.data.items() if k not in {CONF_DEVICE_ID, CONF_HOUSEHOLD_ID}
        }
        for entry in hass.config_entries.async_entries(DOMAIN)
        if entry.data.get(CONF_DEVICE_ID) and entry.data.get(CONF_HOUSEHOLD_ID) == hid
    }


def device_entry_of(hass: HomeAssistant, device_id: str = DEVICE_ID) -> MockConfigEntry:
    """The device entry of ``device_id``."""
    found = [e for e in hass.config_entries.async_entries(DOMAIN) if e.unique_id == device_id]
    assert len(found) == 1, found
    return cast("MockConfigEntry", found[0])


def discovery(
    *,
    device_id: str = DEVICE_ID,
    protocol: str = "1",
    port: int | None = 8423,
    state: str = "unclaimed",
    name: str | None = None,
) -> ZeroconfServiceInfo:
    return device_advertisement(device_id, port=port, state=state, protocol=protocol, name=name)


STRINGS: dict[str, Any] = json.loads(
    (Path(config_flow.__file__).parent / "translations" / "en.json").read_text(encoding="utf-8")
)["config"]
_PLACEHOLDER = re.compile(r"{(\w+)}")
#: Placeholders Home Assistant adds by itself (the entry's title in reauth and reconfigure).
_HA_PLACEHOLDERS = {"name"}


def _check_text(text: str, placeholders: Mapping[str, str] | None) -> None:
    missing = set(_PLACEHOLDER.findall(text)) - set(placeholders or {}) - _HA_PLACEHOLDERS
    assert not missing, f"{text!r} lacks placeholders {missing}"


@pytest.fixture(autouse=True)
def every_string_is_translated() -> Generator[None]:
    """Every form, menu, progress and abort the flow shows has its text and placeholders."""
    flow = config_flow.IotOnboardConfigFlow
    show_form, show_menu, show_progress, abort = (
        flow.async_show_form,
        flow.async_show_menu,
        flow.async_show_progress,
        flow.async_abort,
    )

    def checked_form(self: Any, **kwargs: Any) -> Any:
        step = STRINGS["step"][kwargs["step_id"]]
        placeholders = kwargs.get("description_placeholders")
        _check_text(step.get("description", ""), placeholders)
        _check_text(step.get("title", ""), placeholders)
        for error in (kwargs.get("errors") or {}).values():
            _check_text(STRINGS["error"][error], placeholders)
        return show_form(self, **kwargs)

    def checked_menu(self: Any, **kwargs: Any) -> Any:
        labels = STRINGS["step"][kwargs["step_id"]]["menu_options"]
        assert set(kwargs["menu_options"]) <= set(labels)
        return show_menu(self, **kwargs)

    def checked_progress(self: Any, **kwargs: Any) -> Any:
        _check_text(
            STRINGS["progress"][kwargs["progress_action"]], kwargs.get("description_placeholders")
        )
        return show_progress(self, **kwargs)

    def checked_abort(self: Any, **kwargs: Any) -> Any:
        _check_text(STRINGS["abort"][kwargs["reason"]], kwargs.get("description_placeholders"))
        return abort(self, **kwargs)

    with (
        patch.object(flow, "async_show_form", checked_form),
        patch.object(flow, "async_show_menu", checked_menu),
        patch.object(flow, "async_show_progress", checked_progress),
        patch.object(flow, "async_abort", checked_abort),
    ):
        yield


@pytest.fixture(autouse=True)
def mock_setup_entry() -> Generator[AsyncMock]:
    """The runtime is not under test here: entries set up and reload instantly."""
    with patch("custom_components.iot_onboard.async_setup_entry", return_value=True) as setup:
        yield setup


@pytest.fixture(autouse=True)
def fast_polls() -> Generator[None]:
    with patch.object(commit_engine, "POLL_INTERVAL", 0):
        yield


@pytest.fixture(autouse=True)
def account_cls(mock_account_client: MagicMock) -> MagicMock:
    cls = mock_account_client
    client = cls.return_value
    client.base_url = URL
    client.tokens = TOKENS
    client.health.return_value = ServiceHealth(status="ok", time=0)
    client.sign_in.return_value = SignedIn(account=ACCOUNT, tokens=TOKENS)
    client.sign_up.return_value = SignedIn(account=ACCOUNT, tokens=TOKENS)
    client.households.return_value = [HOME]
    client.create_household.return_value = HOME
    client.create_claim.return_value = claim()
    client.claim_status.return_value = claim_status(ClaimState.PENDING)
    client.device_key.return_value = DeviceKey(
        device_id=DEVICE_ID, public_key=IDENTITY.public_key, fingerprint="F", model="pi-test"
    )
    client.me.return_value = ACCOUNT
    client.model.return_value = TEST_MODEL
    return cls


@pytest.fixture
def account(account_cls: MagicMock) -> MagicMock:
    client: MagicMock = account_cls.return_value
    return client


@pytest.fixture
def link() -> MagicMock:
    mock: MagicMock = create_autospec(DeviceLink, instance=True)
    mock.usable = True
    mock.waits_for_status = False  # an older device: status is polled
    mock.relays_claims = False  # and it posts its confirmation itself
    mock.supports_wps = False  # and it knows no WPS join
    mock.device_public_key = IDENTITY.public_key
    mock.info.return_value = InfoResult(
        device_id=DEVICE_ID,
        model="pi-test",
        firmware_version="1.0",
        protocol_version=1,
        claimed=False,
    )
    mock.scan_wifi.return_value = (HOME_NET, HOME_NET, CAFE, OLD)
    mock.commit.return_value = 180
    mock.status.return_value = StatusResult(state=DeviceState.COMMITTED)
    return mock


@pytest.fixture(autouse=True)
def device_cls(link: MagicMock, mock_device_client: MagicMock) -> MagicMock:
    cls = mock_device_client
    cls.return_value.connect.return_value = link
    cls.return_value.fetch_info.return_value = DeviceAdvertisement(
        device_id=DEVICE_ID,
        model="pi-test",
        firmware_version="1.0",
        protocol_version=1,
        state="unclaimed",
        window="open",
    )
    return cls


@pytest.fixture
def device(device_cls: MagicMock) -> MagicMock:
    client: MagicMock = device_cls.return_value
    return client


# --- helpers that walk the flow ---------------------------------------------------------------


def wifi_change_context(hass: HomeAssistant, device_id: str = DEVICE_ID) -> ConfigFlowContext:
    """The Wi-Fi change: the device entry's reconfigure flow (what the repair starts)."""
    return {"source": SOURCE_RECONFIGURE, "entry_id": device_entry_of(hass, device_id).entry_id}


async def start_discovery(hass: HomeAssistant) -> dict[str, Any]:
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_ZEROCONF}, data=discovery()
    )
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "discovery_confirm"
    placeholders = result["description_placeholders"]
    assert placeholders is not None
    assert placeholders["device_id"] == DEVICE_ID
    return dict(result)


async def to_credentials(hass: HomeAssistant) -> str:
    result = await start_discovery(hass)
    result = dict(await hass.config_entries.flow.async_configure(result["flow_id"], {}))
    assert result["step_id"] == "credentials", result
    return str(result["flow_id"])


async def submit(hass: HomeAssistant, flow_id: str, data: dict[str, Any] | None = None) -> Any:
    return await hass.config_entries.flow.async_configure(flow_id, data)


async def to_wifi(hass: HomeAssistant, code: str = QR) -> str:
    flow_id = await to_credentials(hass)
    result = await submit(hass, flow_id, {"setup_code": code})
    assert result["step_id"] == "wifi", result
    return flow_id


async def provision(
    hass: HomeAssistant, flow_id: str, wifi: dict[str, Any], *, action: str = "provision"
) -> Any:
    """Submit the Wi-Fi form, let the progress task run, return what follows."""
    result = await submit(hass, flow_id, wifi)
    assert result["type"] is FlowResultType.SHOW_PROGRESS, result
    assert result["progress_action"] == action
    await hass.async_block_till_done()
    return await submit(hass, flow_id)


HOME_WIFI = {"network": HOME_KEY, "passphrase": PASSWORD}


# --- accounts ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("https://onboard.example", "https://onboard.example"),
        ("  https://onboard.example:8443/  ", "https://onboard.example:8443"),
        ("http://localhost:8470", "http://localhost:8470"),
        ("http://127.0.0.1:8470/", "http://127.0.0.1:8470"),
        ("http://onboard.example", None),
        ("ftp://onboard.example", None),
        ("onboard.example", None),
        ("https://user:pw@onboard.example", None),
        ("https://onboard.example/?token=x", None),
        ("https://[::1", None),
    ],
)
def test_normalize_account_url(raw: str, expected: str | None) -> None:
    assert normalize_account_url(raw) == expected


@pytest.mark.parametrize(
    ("failure", "where", "error"),
    [
        (("health", AccountConnectionError("down")), "base", "cannot_connect"),
        (("health", AccountResponseError("html")), "base", "not_account_service"),
        (
            ("sign_in", InvalidCredentialsError(401, "invalid_credentials", "")),
            "base",
            "invalid_auth",
        ),
        (("sign_in", AccountConnectionError("down")), "base", "cannot_connect"),
        (("sign_in", RateLimitedError(429, "rate_limited", "", 60)), "base", "rate_limited"),
        (("sign_in", ServiceUnavailableError(503, "x", "")), "base", "account_refused"),
        (("sign_in", AccountResponseError("junk")), "base", "not_account_service"),
        (("households", ForbiddenError(403, "forbidden", "")), "base", "account_refused"),
    ],
)
async def test_sign_in_errors_then_recovery(
    hass: HomeAssistant,
    account: MagicMock,
    failure: tuple[str, Exception],
    where: str,
    error: str,
) -> None:
    method, exc = failure
    getattr(account, method).side_effect = exc
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    assert result["step_id"] == "account"
    result = await submit(hass, result["flow_id"], SIGN_IN)
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {where: error}

    getattr(account, method).side_effect = None
    result = await submit(hass, result["flow_id"], SIGN_IN)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == "Home"
    assert result["result"].unique_id == HID
    assert result["data"] == entry_data()


async def test_invalid_url_then_sign_up(hass: HomeAssistant, account: MagicMock) -> None:
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    result = await submit(
        hass, result["flow_id"], {**SIGN_IN, CONF_ACCOUNT_URL: "http://x.example"}
    )
    assert result["errors"] == {CONF_ACCOUNT_URL: "invalid_url"}
    account.sign_up.side_effect = [
        EmailTakenError(409, "email_taken", ""),
        WeakPasswordError(400, "weak_password", ""),
        SignedIn(account=ACCOUNT, tokens=TOKENS),
    ]
    account.households.return_value = []
    new = {**SIGN_IN, "create_account": True}
    result = await submit(hass, result["flow_id"], new)
    assert result["errors"] == {"base": "email_taken"}
    result = await submit(hass, result["flow_id"], new)
    assert result["errors"] == {"password": "weak_password"}
    account.create_household.side_effect = [AccountConnectionError("down"), HOME]
    result = await submit(hass, result["flow_id"], {**new, "household_name": "Home"})
    # A new account has no household: the sign-in form's name creates it; when that fails,
    # the household form shows why with the name kept (the sign-up is not repeated).
    assert result["step_id"] == "household"
    assert result["errors"] == {"base": "account_unreachable"}
    assert "household" not in result["data_schema"].schema
    assert suggested(result)["household_name"] == "Home"
    result = await submit(hass, result["flow_id"], {"household_name": "  "})
    assert result["errors"] == {"household_name": "name_required"}
    result = await submit(hass, result["flow_id"], {"household_name": "Home"})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    account.create_household.assert_called_with("Home")
    assert account.sign_up.await_count == 3


async def test_an_account_without_household_gets_one_in_the_sign_in_step(
    hass: HomeAssistant, account: MagicMock
) -> None:
    """One form: the household is created under Home Assistant's location name by default."""
    account.households.return_value = []
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    assert result["step_id"] == "account"
    assert result["data_schema"] is not None
    schema = result["data_schema"].schema
    default = next(key for key in schema if key == "household_name").default()
    assert default == hass.config.location_name
    defaults = {k: v for k, v in SIGN_IN.items() if k != "household_name"}
    result = await submit(hass, result["flow_id"], defaults)
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    account.create_household.assert_awaited_once_with(hass.config.location_name)


async def test_choose_among_households(hass: HomeAssistant, account: MagicMock) -> None:
    account.households.return_value = [HOME, FLAT]
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    result = await submit(hass, result["flow_id"], SIGN_IN)
    assert result["step_id"] == "household"
    result = await submit(hass, result["flow_id"], {"household": OTHER_HID})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == "Flat"
    assert result["result"].unique_id == OTHER_HID


async def test_create_another_household(hass: HomeAssistant, account: MagicMock) -> None:
    account.households.return_value = [HOME, FLAT]
    account.create_household.return_value = Household(
        household_id="c" * 32, name="Cabin", role=Role.OWNER, created_at=0
    )
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    result = await submit(hass, result["flow_id"], SIGN_IN)
    result = await submit(
        hass, result["flow_id"], {"household": "new_household", "household_name": "Cabin"}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == "Cabin"


async def test_household_already_configured(hass: HomeAssistant) -> None:
    household_entry(hass)
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    assert result["type"] is FlowResultType.MENU
    assert result["menu_options"] == ["account", "manual_device"]
    result = await submit(hass, result["flow_id"], {"next_step_id": "account"})
    result = await submit(hass, result["flow_id"], SIGN_IN)
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"


# --- reauth ------------------------------------------------------------------------------------


async def test_reauth_wrong_password_then_success(
    hass: HomeAssistant, account: MagicMock, account_cls: MagicMock
) -> None:
    entry = household_entry(hass)
    result = await entry.start_reauth_flow(hass)
    assert result["step_id"] == "reauth_confirm"
    assert (result["description_placeholders"] or {})["email"] == "ada@example.com"
    account.sign_in.side_effect = [
        InvalidCredentialsError(401, "invalid_credentials", ""),
        SignedIn(account=ACCOUNT, tokens=NEW_TOKENS),
    ]
    result = await submit(hass, result["flow_id"], {"password": "wrong"})
    assert result["errors"] == {"base": "invalid_auth"}
    result = await submit(hass, result["flow_id"], {"password": "pw"})
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reauth_successful"
    assert entry.data["access_token"] == NEW_TOKENS.access_token
    assert account_cls.call_args.args == (URL,)


@pytest.mark.parametrize(
    ("signed_in", "households"),
    [
        (
            Account(account_id="9" * 32, email="x@example.com", display_name="", is_admin=False),
            [HOME],
        ),
        (ACCOUNT, [FLAT]),
    ],
    ids=["another_account", "no_longer_a_member"],
)
async def test_reauth_must_be_the_same_account_and_household(
    hass: HomeAssistant, account: MagicMock, signed_in: Account, households: list[Household]
) -> None:
    entry = household_entry(hass)
    account.sign_in.return_value = SignedIn(account=signed_in, tokens=NEW_TOKENS)
    account.households.return_value = households
    result = await entry.start_reauth_flow(hass)
    result = await submit(hass, result["flow_id"], {"password": "pw"})
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "wrong_account"
    assert entry.data["access_token"] == TOKENS.access_token


# --- reconfigure: the account service's address --------------------------------------------------


async def test_reconfigure_address_with_the_stored_session(
    hass: HomeAssistant, account: MagicMock
) -> None:
    entry = household_entry(hass)
    result = await entry.start_reconfigure_flow(hass)
    assert result["step_id"] == "reconfigure_account"
    result = await submit(hass, result["flow_id"], {CONF_ACCOUNT_URL: "http://moved.example"})
    assert result["errors"] == {CONF_ACCOUNT_URL: "invalid_url"}
    account.me.side_effect = [
        AuthenticationError(401, "invalid_token", ""),
        AccountConnectionError("down"),
        AccountResponseError("html"),
        ACCOUNT,
    ]
    moved = {CONF_ACCOUNT_URL: "https://moved.example"}
    result = await submit(hass, result["flow_id"], moved)
    assert result["errors"] == {"password": "password_needed"}
    result = await submit(hass, result["flow_id"], moved)
    assert result["errors"] == {"base": "cannot_connect"}
    result = await submit(hass, result["flow_id"], moved)
    assert result["errors"] == {"base": "not_account_service"}
    account.tokens = None  # nothing new to store: the same session
    result = await submit(hass, result["flow_id"], moved)
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    assert entry.data[CONF_ACCOUNT_URL] == "https://moved.example"
    assert entry.data["access_token"] == TOKENS.access_token


async def test_reconfigure_address_with_a_password(hass: HomeAssistant, account: MagicMock) -> None:
    entry = household_entry(hass)
    result = await entry.start_reconfigure_flow(hass)
    account.sign_in.side_effect = [
        InvalidCredentialsError(401, "invalid_credentials", ""),
        SignedIn(account=ACCOUNT, tokens=NEW_TOKENS),
    ]
    account.tokens = NEW_TOKENS
    moved = {CONF_ACCOUNT_URL: "https://moved.example", "password": "pw"}
    result = await submit(hass, result["flow_id"], moved)
    assert result["errors"] == {"base": "invalid_auth"}
    result = await submit(hass, result["flow_id"], moved)
    assert result["reason"] == "reconfigure_successful"
    assert entry.data["access_token"] == NEW_TOKENS.access_token


async def test_reconfigure_to_another_service_is_refused(
    hass: HomeAssistant, account: MagicMock
) -> None:
    entry = household_entry(hass)
    account.me.return_value = Account(
        account_id="9" * 32, email="x@example.com", display_name="", is_admin=False
    )
    result = await entry.start_reconfigure_flow(hass)
    result = await submit(hass, result["flow_id"], {CONF_ACCOUNT_URL: "https://other.example"})
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "wrong_account"
    assert entry.data[CONF_ACCOUNT_URL] == URL


# --- discovery -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("info", "reason"),
    [
        (discovery(device_id="not-a-device-id"), "invalid_discovery_info"),
        (discovery(protocol="2"), "unsupported_protocol"),
    ],
)
async def test_discovery_aborts_on_bad_advertisements(
    hass: HomeAssistant, info: ZeroconfServiceInfo, reason: str
) -> None:
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_ZEROCONF}, data=info
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == reason


async def test_discovery_of_an_ignored_device(hass: HomeAssistant) -> None:
    MockConfigEntry(domain=DOMAIN, unique_id=DEVICE_ID, source=SOURCE_IGNORE).add_to_hass(hass)
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_ZEROCONF}, data=discovery()
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"


@pytest.mark.parametrize(("port", "updated"), [(8423, False), (9000, True)])
async def test_discovery_of_an_owned_device_updates_its_address(
    hass: HomeAssistant, port: int, updated: bool
) -> None:
    household_entry(hass, hid=OTHER_HID)
    entry = household_entry(hass, devices={DEVICE_ID: DEVICE_RECORD})
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_ZEROCONF}, data=discovery(port=port, state="online")
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"
    assert records(hass, entry)[DEVICE_ID][DEVICE_PORT] == port
    assert (records(hass, entry)[DEVICE_ID] == DEVICE_RECORD) is not updated


async def test_onboarding_into_the_household_entry(
    hass: HomeAssistant, account: MagicMock, device_cls: MagicMock, link: MagicMock
) -> None:
    entry = household_entry(hass)
    flow_id = await to_wifi(hass)
    result = await submit(hass, flow_id, {"network": HOME_KEY})  # WPA2 needs the password
    assert result["errors"] == {"passphrase": "passphrase_required"}
    result = await provision(hass, flow_id, HOME_WIFI)
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    record = records(hass, entry)[DEVICE_ID]
    assert record[DEVICE_HOST] == "192.0.2.10"
    assert record[DEVICE_PUBLIC_KEY] == b64url_encode(IDENTITY.public_key)
    assert record[DEVICE_MODEL] == "pi-test"
    # The device got exactly: Wi-Fi, then the claim with the live token, then commit.
    link.set_wifi.assert_awaited_once_with(b"HomeNet", PASSWORD, hidden=False)
    link.set_claim.assert_awaited_once_with(
        URL, "t" * 43, owner_secret=ANY, allow_insecure_http=False, hub_relay=False
    )
    # The owner secret the device got is the one kept for later owner sessions.
    assert record[DEVICE_OWNER_SECRET] == link.set_claim.call_args.kwargs["owner_secret"].encode()
    link.commit.assert_awaited_once()
    link.close.assert_called()
    device_cls.assert_called_with(
        "192.0.2.10", 8423, session=device_cls.call_args.kwargs["session"]
    )
    account.create_claim.assert_awaited_once_with(HID, DEVICE_ID)
    device_cls.return_value.connect.assert_awaited_once()
    # The QR code carries the fingerprint itself: no registry lookup for it.
    assert device_cls.return_value.connect.call_args.kwargs["device_public_key"] is None
    account.device_key.assert_not_awaited()


async def test_wrong_wifi_password_is_shown_then_retried(
    hass: HomeAssistant, account: MagicMock, device: MagicMock, link: MagicMock
) -> None:
    """The device rolls back with WIFI_AUTH_FAILED; the same session retries."""
    entry = household_entry(hass)
    flow_id = await to_wifi(hass)
    link.status.side_effect = [
        StatusResult(state=DeviceState.COMMITTING),
        StatusResult(state=DeviceState.PROVISIONING, diagnostic=DiagnosticCode.WIFI_AUTH_FAILED),
        StatusResult(state=DeviceState.COMMITTED),
    ]
    result = await provision(hass, flow_id, {"network": HOME_KEY, "passphrase": "wrong password"})
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "wifi"
    assert result["errors"] == {"base": "wifi_auth_failed"}
    result = await provision(hass, flow_id, HOME_WIFI)
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    assert DEVICE_ID in records(hass, entry)
    assert device.connect.await_count == 1  # one handshake for both attempts
    assert account.create_claim.await_count == 1  # the unused claim was reused


# --- the commit answered inline, or a progress screen the frontend cannot miss ---------------


@pytest.fixture
def inline_commits(monkeypatch: pytest.MonkeyPatch) -> None:
    """The production wait before a progress screen (the suite's autouse fixture sets 0)."""
    monkeypatch.setattr(onboarding.DeviceSteps, "inline_commit_wait", onboarding.INLINE_COMMIT_WAIT)


@pytest.mark.usefixtures("inline_commits", "account")
async def test_a_quick_commit_answers_the_wifi_form_with_the_entry(
    hass: HomeAssistant, link: MagicMock
) -> None:
    """No progress screen for a commit that ends at once: HA 2025.4's dialog would miss its
    end (it subscribes only after drawing it) and spin while the device is already owned."""
    entry = household_entry(hass)
    flow_id = await to_wifi(hass)
    result = await submit(hass, flow_id, HOME_WIFI)
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    assert DEVICE_ID in records(hass, entry)
    link.commit.assert_awaited_once()


@pytest.mark.usefixtures("inline_commits", "account")
async def test_a_quick_failed_commit_answers_with_the_wifi_form_and_its_error(
    hass: HomeAssistant, link: MagicMock
) -> None:
    household_entry(hass)
    flow_id = await to_wifi(hass)
    link.status.side_effect = [
        StatusResult(state=DeviceState.PROVISIONING, diagnostic=DiagnosticCode.WIFI_AUTH_FAILED),
    ]
    result = await submit(hass, flow_id, {"network": HOME_KEY, "passphrase": "wrong password"})
    assert result["type"] is FlowResultType.FORM, result
    assert result["step_id"] == "wifi"
    assert result["errors"] == {"base": "wifi_auth_failed"}


@pytest.mark.usefixtures("account")
async def test_a_slow_commit_shows_progress_for_at_least_the_minimum(
    hass: HomeAssistant, link: MagicMock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit that outlasts the inline wait shows the progress screen, and the screen's end
    comes no sooner than PROGRESS_MIN_SHOWN after it was shown, even if the commit ends at
    once: by then the frontend listens for it."""
    monkeypatch.setattr(onboarding.DeviceSteps, "inline_commit_wait", 0.01)
    monkeypatch.setattr(onboarding, "PROGRESS_MIN_SHOWN", 0.3)
    entry = household_entry(hass)
    flow_id = await to_wifi(hass)
    release = asyncio.Event()

    async def slow_commit(*args: Any, **kwargs: Any) -> int:
        del args, kwargs
        await release.wait()
        return 180

    link.commit.side_effect = slow_commit
    progressed: list[float] = []
    unsubscribe = hass.bus.async_listen(
        "data_entry_flow_progressed",
        lambda event: (
            progressed.append(time.monotonic()) if event.data["flow_id"] == flow_id else None
        ),
    )
    result = await submit(hass, flow_id, HOME_WIFI)
    shown = time.monotonic()
    assert result["type"] is FlowResultType.SHOW_PROGRESS, result
    # A reopened dialog reads the flow again meanwhile: still the same progress screen.
    again = await submit(hass, flow_id)
    assert again["type"] is FlowResultType.SHOW_PROGRESS, again
    release.set()  # the commit ends right after the screen was shown
    await hass.async_block_till_done()
    unsubscribe()
    assert progressed, "the progress screen never ended"
    assert progressed[0] - shown >= 0.3
    result = await submit(hass, flow_id)
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    assert DEVICE_ID in records(hass, entry)


@pytest.mark.parametrize(
    ("state", "error"),
    [
        (ClaimState.EXPIRED, "claim_expired"),
        (ClaimState.REJECTED, "claim_rejected"),
    ],
)
async def test_claim_outcome_when_the_device_left_the_network(
    hass: HomeAssistant,
    account: MagicMock,
    link: MagicMock,
    state: ClaimState,
    error: str,
) -> None:
    """The device joined the new Wi-Fi and is gone from this one: the claim says how it went."""
    household_entry(hass)
    flow_id = await to_wifi(hass)
    link.status.side_effect = DeviceConnectionError("gone")
    account.claim_status.side_effect = [
        claim_status(ClaimState.PENDING),  # reuse check before set_claim
        claim_status(ClaimState.PENDING),
        claim_status(state),
    ]
    result = await provision(hass, flow_id, HOME_WIFI)
    assert result["errors"] == {"base": error}
    account.claim_status.side_effect = None
    account.claim_status.return_value = claim_status(ClaimState.OWNED)
    result = await provision(hass, flow_id, HOME_WIFI)
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    assert link.status.await_count == 2  # polled once per attempt, then the claim decides


@pytest.mark.parametrize(
    ("failure", "error"),
    [
        (DeviceCommandError("failed", DiagnosticCode.DHCP_TIMEOUT, None), "dhcp_timeout"),
        (DeviceCommandError("busy", None, "a commit is running"), "device_error"),
        (SessionLostError("no_session"), "device_lost"),
        (DeviceConnectionError("gone"), "device_lost"),
        (DeviceProtocolError("unexpected_message", "?"), "device_error"),
        (AccountConnectionError("down"), "account_unreachable"),
        (RateLimitedError(429, "rate_limited", "", None), "rate_limited"),
        (TimeoutError(), "timeout"),
    ],
)
async def test_commit_failures_are_retried_in_place(
    hass: HomeAssistant,
    account: MagicMock,
    link: MagicMock,
    failure: Exception,
    error: str,
) -> None:
    household_entry(hass)
    flow_id = await to_wifi(hass)
    if isinstance(failure, AccountConnectionError | RateLimitedError):
        account.claim_status.side_effect = [claim_status(ClaimState.PENDING), failure]
        # The device cannot tell either (gone from this network): the account's error stands.
        link.status.side_effect = DeviceConnectionError("gone")
    else:
        link.commit.side_effect = [failure, 180]
    result = await provision(hass, flow_id, HOME_WIFI)
    assert result["step_id"] == "wifi"
    assert result["errors"] == {"base": error}
    account.claim_status.side_effect = None
    link.status.side_effect = None
    link.status.return_value = StatusResult(state=DeviceState.COMMITTED)
    result = await provision(hass, flow_id, HOME_WIFI)
    assert result["type"] is FlowResultType.CREATE_ENTRY, result


async def test_the_commit_timer_runs_out(hass: HomeAssistant, link: MagicMock) -> None:
    household_entry(hass)
    flow_id = await to_wifi(hass)
    link.commit.return_value = 0
    link.status.return_value = StatusResult(state=DeviceState.COMMITTING)
    with (
        patch.object(commit_engine, "COMMIT_MARGIN", 0.05),
        patch.object(commit_engine, "POLL_INTERVAL", 0.01),
    ):
        result = await provision(hass, flow_id, HOME_WIFI)
    assert result["errors"] == {"base": flow_errors.diagnostic_error(DiagnosticCode.TIMEOUT)}


async def test_session_is_reestablished_when_the_device_dropped_it(
    hass: HomeAssistant, device: MagicMock, link: MagicMock
) -> None:
    household_entry(hass)
    flow_id = await to_wifi(hass)
    link.usable = False
    device.connect.side_effect = [DeviceConnectionError("gone"), link]
    result = await provision(hass, flow_id, HOME_WIFI)
    assert result["errors"] == {"base": "device_lost"}
    result = await provision(hass, flow_id, HOME_WIFI)
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    assert device.connect.await_count == 3


async def test_another_device_answering_the_reconnect_ends_the_flow(
    hass: HomeAssistant, device: MagicMock, link: MagicMock
) -> None:
    """Re-opening the dropped session at commit time meets a key that is not the device's."""
    household_entry(hass)
    flow_id = await to_wifi(hass)
    link.usable = False
    device.connect.side_effect = DeviceKeyMismatchClientError("another key")
    result = await provision(hass, flow_id, HOME_WIFI)
    assert (result["type"], result["reason"]) == (FlowResultType.ABORT, "device_key_mismatch")
    link.set_claim.assert_not_awaited()


@pytest.mark.parametrize(
    ("claims", "statuses", "created"),
    [
        ([claim(expires_in=60)], [], 2),  # about to expire: replaced without asking
        ([claim()], [claim_status(ClaimState.EXPIRED)], 2),  # used up: replaced
        ([claim()], [claim_status(ClaimState.PENDING)], 1),  # still good: reused
    ],
)
async def test_claim_is_fresh_at_commit_time(
    hass: HomeAssistant,
    account: MagicMock,
    claims: list[Claim],
    statuses: list[ClaimStatus],
    created: int,
) -> None:
    household_entry(hass)
    account.create_claim.side_effect = [*claims, claim()]
    account.claim_status.side_effect = statuses
    flow_id = await to_wifi(hass)
    result = await provision(hass, flow_id, HOME_WIFI)
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    assert account.create_claim.await_count == created


@pytest.mark.parametrize(
    ("method", "failure", "reason", "reauth"),
    [
        (
            "claim_status",
            AuthenticationError(401, "refresh_token_invalid", ""),
            "reauth_required",
            True,
        ),
        (
            "create_claim",
            AuthenticationError(401, "refresh_token_invalid", ""),
            "reauth_required",
            True,
        ),
        ("create_claim", ClaimRejectedError(409, "claim_rejected", ""), "claim_rejected", False),
    ],
)
async def test_account_failures_during_the_commit_end_the_flow(  # noqa: PLR0917 - parametrized
    hass: HomeAssistant,
    account: MagicMock,
    method: str,
    failure: Exception,
    reason: str,
    reauth: bool,
) -> None:
    entry = household_entry(hass)
    flow_id = await to_wifi(hass)
    account.claim_status.side_effect = [claim_status(ClaimState.EXPIRED)]
    getattr(account, method).side_effect = failure
    result = await provision(hass, flow_id, HOME_WIFI)
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == reason
    flows = hass.config_entries.flow.async_progress_by_handler(DOMAIN)
    assert any(f["context"]["source"] == "reauth" for f in flows) is reauth
    assert records(hass, entry) == {}


async def test_keep_ethernet_and_open_and_hidden_networks(
    hass: HomeAssistant, link: MagicMock
) -> None:
    household_entry(hass)
    flow_id = await to_wifi(hass)
    result = await submit(hass, flow_id, {"network": OLD_KEY})
    assert result["errors"] == {"network": "unsupported_security"}
    result = await submit(hass, flow_id, {"network": "hidden_network"})
    assert result["errors"] == {"hidden_ssid": "invalid_ssid"}
    result = await submit(hass, flow_id, {"network": "hidden_network", "hidden_ssid": "x" * 33})
    assert result["errors"] == {"hidden_ssid": "invalid_ssid"}
    result = await submit(
        hass, flow_id, {"network": "hidden_network", "hidden_ssid": "Attic", "passphrase": "short"}
    )
    assert result["errors"] == {"passphrase": "invalid_passphrase"}
    # An open network ignores a typed password; the labels escape the hostile SSID.
    labels = [o["label"] for o in result["data_schema"].schema["network"].config["options"]]
    assert labels[1] == "Cafe\\x1b[31m · -70 dBm · open"
    link.status.side_effect = [
        StatusResult(state=DeviceState.PROVISIONING, diagnostic=DiagnosticCode.NO_INTERNET),
        StatusResult(state=DeviceState.PROVISIONING, diagnostic=DiagnosticCode.WIFI_AP_NOT_FOUND),
        StatusResult(state=DeviceState.COMMITTED),
    ]
    result = await provision(hass, flow_id, {"network": CAFE_KEY, "passphrase": "ignored!"})
    assert result["errors"] == {"base": "no_internet"}
    link.set_wifi.assert_awaited_with(CAFE.ssid, None, hidden=False)
    result = await provision(
        hass, flow_id, {"network": "hidden_network", "hidden_ssid": "Attic", "passphrase": PASSWORD}
    )
    assert result["errors"] == {"base": "wifi_ap_not_found"}
    link.set_wifi.assert_awaited_with(b"Attic", PASSWORD, hidden=True)
    link.set_wifi.reset_mock()
    result = await provision(hass, flow_id, {"network": "keep_ethernet"})
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    link.set_wifi.assert_not_awaited()


# --- discovery without a household entry: sign in inside the flow ---------------------------------


async def test_discovery_signs_in_and_creates_the_household_with_the_device(
    hass: HomeAssistant, device: MagicMock
) -> None:
    ignored = MockConfigEntry(domain=DOMAIN, unique_id=DEVICE_ID, source=SOURCE_IGNORE)
    result = await start_discovery(hass)
    ignored.add_to_hass(hass)  # ignored meanwhile (another tab): onboarding lifts it
    result = await submit(hass, result["flow_id"], {})
    assert result["step_id"] == "account"
    result = await submit(hass, result["flow_id"], SIGN_IN)
    assert result["step_id"] == "credentials"
    result = await submit(hass, result["flow_id"], {"setup_code": MANUAL})
    assert result["step_id"] == "wifi"
    result = await provision(hass, result["flow_id"], HOME_WIFI)
    # The success screen is the device's; its household entry was created first.
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["result"].unique_id == DEVICE_ID
    assert result["data"][CONF_HOUSEHOLD_ID] == HID
    household = [e for e in hass.config_entries.async_entries(DOMAIN) if e.unique_id == HID]
    assert len(household) == 1
    assert household[0].data[CONF_ACCOUNT_ID] == ACCOUNT_ID
    assert set(records(hass, cast("MockConfigEntry", household[0]))) == {DEVICE_ID}
    assert hass.config_entries.async_get_entry(ignored.entry_id) is None
    # The manual code was checked against the registry key from the claim.
    assert device.connect.call_args.kwargs["device_public_key"] == IDENTITY.public_key


async def test_discovery_signs_in_to_a_household_that_is_set_up(
    hass: HomeAssistant, account: MagicMock
) -> None:
    """Signed in to a household that another entry already has: the device goes there."""
    account.households.return_value = [HOME, FLAT]
    result = await start_discovery(hass)
    result = await submit(hass, result["flow_id"], {})
    result = await submit(hass, result["flow_id"], SIGN_IN)
    household_entry(hass, hid="c" * 32)  # two households set up meanwhile
    entry = household_entry(hass)
    result = await submit(hass, result["flow_id"], {"household": HID})
    assert result["step_id"] == "credentials"
    result = await submit(hass, result["flow_id"], {"setup_code": QR})
    result = await provision(hass, result["flow_id"], HOME_WIFI)
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    assert DEVICE_ID in records(hass, entry)


async def test_sign_in_inside_discovery_then_the_session_is_revoked(
    hass: HomeAssistant, account: MagicMock, device: MagicMock
) -> None:
    """No entry to reauthenticate yet: the flow ends and says to start again."""
    account.create_claim.side_effect = AuthenticationError(401, "invalid_token", "")
    result = await start_discovery(hass)
    result = await submit(hass, result["flow_id"], {})
    result = await submit(hass, result["flow_id"], SIGN_IN)
    result = await submit(hass, result["flow_id"], {"setup_code": QR})
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reauth_required"
    assert hass.config_entries.flow.async_progress_by_handler(DOMAIN) == []
    device.connect.assert_not_awaited()


# --- the account service announces itself (serve --announce) ---------------------------------

RELAY_URL = "http://127.0.0.1:8470"
RELAY_NAME = "IoT Onboard account service on pi._iob-relay._tcp.local."


def relay_discovery(
    *, host: str = "127.0.0.1", api: str = "v1", path: str = "/", url: str | None = None
) -> ZeroconfServiceInfo:
    extra = {} if url is None else {"url": url}
    return ZeroconfServiceInfo(
        ip_address=ip_address(host),
        ip_addresses=[ip_address(host)],
        port=8470,
        hostname="pi.local.",
        type="_iob-relay._tcp.local.",
        name=RELAY_NAME,
        properties={"path": path, "api": api, "version": "0.1.0", **extra},
    )


async def start_relay_discovery(hass: HomeAssistant, **kwargs: str) -> Any:
    return await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_ZEROCONF}, data=relay_discovery(**kwargs)
    )


async def test_relay_discovery_signs_in_with_no_url_typed(
    hass: HomeAssistant, account_cls: MagicMock
) -> None:
    household_entry(hass, hid=OTHER_HID)  # another household, on another service
    result = await start_relay_discovery(hass)
    assert result["step_id"] == "relay_confirm"
    assert result["description_placeholders"] == {"url": RELAY_URL}
    result = await submit(hass, result["flow_id"], {})
    assert result["step_id"] == "account"
    assert "account_url" not in result["data_schema"].schema  # known: not asked
    sign_in = {k: v for k, v in SIGN_IN.items() if k != CONF_ACCOUNT_URL}
    result = await submit(hass, result["flow_id"], sign_in)
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    assert account_cls.call_args.args == (RELAY_URL,)
    assert result["result"].unique_id == HID
    assert result["data"]["account_service"] == RELAY_NAME


async def test_a_service_on_the_lan_is_reached_through_its_announced_https_address(
    hass: HomeAssistant, account_cls: MagicMock
) -> None:
    """Another host's service announces its TLS proxy (``serve --announce-url``)."""
    proxy = "https://relay.home.example:8443"
    result = await start_relay_discovery(hass, host="192.0.2.7", url=proxy)
    assert result["step_id"] == "relay_confirm"
    assert result["description_placeholders"] == {"url": proxy}
    result = await submit(hass, result["flow_id"], {})
    sign_in = {k: v for k, v in SIGN_IN.items() if k != CONF_ACCOUNT_URL}
    result = await submit(hass, result["flow_id"], sign_in)
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    assert account_cls.call_args.args == (proxy,)
    # The announced address is held to the typed URL's rule: no plain http across the LAN.
    result = await start_relay_discovery(hass, host="192.0.2.8", url="http://192.0.2.8:8470")
    assert result["reason"] == "insecure_account_service"


async def test_relay_discovery_aborts(hass: HomeAssistant) -> None:
    result = await start_relay_discovery(hass, api="v2")
    assert result["reason"] == "unsupported_protocol"
    # Plain http across the network: never (as for a typed URL).
    result = await start_relay_discovery(hass, host="192.0.2.7")
    assert result["reason"] == "insecure_account_service"
    result = await start_relay_discovery(hass, path="x")
    assert result["reason"] == "insecure_account_service"
    ignored = MockConfigEntry(domain=DOMAIN, unique_id=RELAY_NAME, source=SOURCE_IGNORE)
    ignored.add_to_hass(hass)
    result = await start_relay_discovery(hass)
    assert result["reason"] == "already_configured"
    ignored_gone = await hass.config_entries.async_remove(ignored.entry_id)
    assert ignored_gone["require_restart"] is False
    # A household entry of that URL (typed before the service announced itself).
    entry = household_entry(hass)
    hass.config_entries.async_update_entry(entry, data={**entry.data, CONF_ACCOUNT_URL: RELAY_URL})
    result = await start_relay_discovery(hass)
    assert result["reason"] == "already_configured"


async def test_an_announced_service_at_a_new_address_updates_its_entry(
    hass: HomeAssistant,
) -> None:
    entry = household_entry(hass)
    hass.config_entries.async_update_entry(
        entry, data={**entry.data, "account_service": RELAY_NAME}
    )
    result = await start_relay_discovery(hass)
    assert result["reason"] == "already_configured"
    assert entry.data[CONF_ACCOUNT_URL] == RELAY_URL
    result = await start_relay_discovery(hass)  # the same address again: nothing to change
    assert result["reason"] == "already_configured"
    assert entry.data[CONF_ACCOUNT_URL] == RELAY_URL


async def test_device_discovery_prefills_the_announced_url(
    hass: HomeAssistant, account_cls: MagicMock
) -> None:
    result = await start_discovery(hass)
    result = await submit(hass, result["flow_id"], {})
    assert "account_url" not in suggested(result)  # no service announced yet
    relay = await start_relay_discovery(hass)  # its card stays while the device is set up
    assert relay["step_id"] == "relay_confirm"
    hass.config_entries.flow.async_abort(result["flow_id"])
    result = await start_discovery(hass)
    result = await submit(hass, result["flow_id"], {})
    assert result["step_id"] == "account"
    assert suggested(result)["account_url"] == RELAY_URL
    result = await submit(hass, result["flow_id"], {**SIGN_IN, CONF_ACCOUNT_URL: RELAY_URL})
    assert result["step_id"] == "credentials", result
    assert account_cls.call_args.args == (RELAY_URL,)
    # The household is created on the announced service: its card goes (nothing left to add)
    # and the entry follows the service's announcements from now on.
    assert relay_flows(hass) == [relay["flow_id"]]
    account_cls.return_value.base_url = RELAY_URL
    result = await submit(hass, result["flow_id"], {"setup_code": QR})
    result = await provision(hass, result["flow_id"], HOME_WIFI)
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    assert relay_flows(hass) == []
    (hub,) = [e for e in hass.config_entries.async_entries(DOMAIN) if e.unique_id == HID]
    assert hub.data["account_service"] == RELAY_NAME


def relay_flows(hass: HomeAssistant) -> list[str]:
    """The flows of announced account services (their "account service found" cards)."""
    flows = hass.config_entries.flow.async_progress_by_handler(
        DOMAIN, include_uninitialized=True, match_context={"source": SOURCE_ZEROCONF}
    )
    return [f["flow_id"] for f in flows if f["context"].get("unique_id") == RELAY_NAME]


async def test_signing_in_to_an_announced_service_by_hand_ends_its_card(
    hass: HomeAssistant, account_cls: MagicMock
) -> None:
    """Add integration with the announced address (suggested there): no stale card is left."""
    account_cls.return_value.base_url = RELAY_URL
    relay = await start_relay_discovery(hass)
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    assert suggested(result)["account_url"] == RELAY_URL
    assert relay_flows(hass) == [relay["flow_id"]]
    result = await submit(hass, result["flow_id"], {**SIGN_IN, CONF_ACCOUNT_URL: RELAY_URL})
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    assert account_cls.call_args.args == (RELAY_URL,)
    assert relay_flows(hass) == []
    assert result["data"]["account_service"] == RELAY_NAME


async def test_pick_household_and_use_the_loaded_client(
    hass: HomeAssistant, account_cls: MagicMock
) -> None:
    """With several households the user picks one; a loaded entry's own client is used."""
    household_entry(hass)
    flat = household_entry(hass, hid=OTHER_HID)
    runtime_client = create_autospec(AccountClient, instance=True)
    runtime_client.base_url = URL
    runtime_client.create_claim.return_value = claim()
    runtime_client.claim_status.return_value = claim_status(ClaimState.PENDING)
    runtime_client.model.return_value = TEST_MODEL
    flat.runtime_data = MagicMock(account=runtime_client)
    result = await start_discovery(hass)
    result = await submit(hass, result["flow_id"], {})
    assert result["step_id"] == "pick_household"
    result = await submit(hass, result["flow_id"], {"entry": flat.entry_id})
    result = await submit(hass, result["flow_id"], {"setup_code": QR})
    result = await provision(hass, result["flow_id"], HOME_WIFI)
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    assert DEVICE_ID in records(hass, flat)
    runtime_client.create_claim.assert_awaited_once_with(OTHER_HID, DEVICE_ID)
    account_cls.assert_not_called()


async def test_new_client_persists_rotated_tokens(
    hass: HomeAssistant, account_cls: MagicMock
) -> None:
    entry = household_entry(hass)
    await to_credentials(hass)
    on_tokens = account_cls.call_args.kwargs["on_tokens"]
    on_tokens(NEW_TOKENS)
    assert entry.data["refresh_token"] == NEW_TOKENS.refresh_token
    assert entry.data[CONF_HOUSEHOLD_ID] == HID


# --- the setup code step -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("12345", "invalid_setup_code"),
        ("IOB1:nonsense", "invalid_setup_code"),
        (MANUAL[:-1] + str((int(MANUAL[-1]) + 1) % 10), "setup_code_typo"),
        (OTHER_QR, "qr_other_device"),
    ],
    # Not the codes: they are random per run, which breaks pytest -n (ids must agree).
    ids=["short", "bad_qr", "typo", "other_device"],
)
async def test_setup_code_errors_then_recovery(
    hass: HomeAssistant, device: MagicMock, code: str, error: str
) -> None:
    household_entry(hass)
    flow_id = await to_credentials(hass)
    result = await submit(hass, flow_id, {"setup_code": code})
    assert result["errors"] == {"setup_code": error}
    device.connect.assert_not_awaited()
    result = await submit(hass, flow_id, {"setup_code": QR})
    assert result["step_id"] == "wifi"


@pytest.mark.parametrize(
    ("failure", "error"),
    [
        (
            DeviceKeyNotFoundError(404, "device_not_found_or_code_wrong", ""),
            {"setup_code": "manual_code_not_accepted"},
        ),
        (NotFoundError(404, "not_found", ""), {"setup_code": "manual_code_unsupported"}),
        (RateLimitedError(429, "rate_limited", "", 60), {"base": "rate_limited"}),
    ],
)
async def test_manual_code_needs_the_registry_key(
    hass: HomeAssistant,
    account: MagicMock,
    device: MagicMock,
    failure: Exception,
    error: dict[str, str],
) -> None:
    """A typed code carries no fingerprint: without the registry key nothing is sent."""
    household_entry(hass)
    account.device_key.side_effect = failure
    flow_id = await to_credentials(hass)
    result = await submit(hass, flow_id, {"setup_code": MANUAL})
    assert result["errors"] == error
    device.connect.assert_not_awaited()
    account.device_key.assert_awaited_with(HID, DEVICE_ID, MANUAL)
    result = await submit(hass, flow_id, {"setup_code": QR})
    assert result["step_id"] == "wifi"


@pytest.mark.parametrize(
    ("failure", "error"),
    [
        (SetupCodeRejectedError("no"), {"setup_code": "wrong_setup_code"}),
        (HandshakeRefusedError("window_closed"), {"base": "window_closed"}),
        (HandshakeRefusedError("locked_out"), {"base": "locked_out"}),
        (HandshakeRefusedError("busy", 60), {"base": "busy"}),
        (DeviceConnectionError("refused"), {"base": "cannot_connect"}),
        (DeviceProtocolError("malformed_handshake", "?"), {"base": "device_error"}),
    ],
)
async def test_handshake_errors_then_recovery(
    hass: HomeAssistant,
    device: MagicMock,
    link: MagicMock,
    failure: Exception,
    error: dict[str, str],
) -> None:
    household_entry(hass)
    flow_id = await to_credentials(hass)
    device.connect.side_effect = [failure, link]
    result = await submit(hass, flow_id, {"setup_code": QR})
    assert result["step_id"] == "credentials"
    assert result["errors"] == error
    result = await submit(hass, flow_id, {"setup_code": QR})
    assert result["step_id"] == "wifi"


@pytest.mark.parametrize(
    ("failure", "error"),
    [
        (DeviceConnectionError("gone"), "cannot_connect"),
        (DeviceProtocolError("frame_authentication", "?"), "device_error"),
    ],
)
async def test_reading_the_device_fails_then_recovers(
    hass: HomeAssistant, link: MagicMock, failure: Exception, error: str
) -> None:
    household_entry(hass)
    flow_id = await to_credentials(hass)
    info = link.info.return_value
    link.info.side_effect = [failure, info]
    result = await submit(hass, flow_id, {"setup_code": QR})
    assert result["errors"] == {"base": error}
    result = await submit(hass, flow_id, {"setup_code": QR})
    assert result["step_id"] == "wifi"


async def test_failed_scan_still_offers_hidden_and_ethernet(
    hass: HomeAssistant, link: MagicMock
) -> None:
    household_entry(hass)
    link.scan_wifi.side_effect = DeviceCommandError("failed", None, "scan failed")
    flow_id = await to_credentials(hass)
    result = await submit(hass, flow_id, {"setup_code": QR})
    options = result["data_schema"].schema["network"].config["options"]
    assert [o["value"] for o in options] == ["hidden_network", "keep_ethernet"]


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        (AlreadyOwnedError(409, "already_owned", ""), "already_owned"),
        (ClaimRejectedError(409, "claim_rejected", ""), "claim_rejected"),
        (ForbiddenError(403, "forbidden", ""), "not_allowed"),
        (AuthenticationError(401, "invalid_token", ""), "reauth_required"),
    ],
)
async def test_claim_refusals_end_the_flow(
    hass: HomeAssistant,
    account: MagicMock,
    device: MagicMock,
    failure: Exception,
    reason: str,
) -> None:
    household_entry(hass)
    account.create_claim.side_effect = failure
    flow_id = await to_credentials(hass)
    result = await submit(hass, flow_id, {"setup_code": QR})
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == reason
    assert result["description_placeholders"]["device_id"] == DEVICE_ID
    device.connect.assert_not_awaited()  # nothing was sent to the device


@pytest.mark.parametrize(
    ("failure", "error"),
    [
        (RateLimitedError(429, "rate_limited", "", 30), "rate_limited"),
        (AccountConnectionError("down"), "account_unreachable"),
        (ServiceUnavailableError(503, "storage_unavailable", ""), "account_refused"),
    ],
)
async def test_claim_errors_then_recovery(
    hass: HomeAssistant, account: MagicMock, failure: Exception, error: str
) -> None:
    household_entry(hass)
    account.create_claim.side_effect = [failure, claim()]
    flow_id = await to_credentials(hass)
    result = await submit(hass, flow_id, {"setup_code": QR})
    assert result["errors"] == {"base": error}
    result = await submit(hass, flow_id, {"setup_code": QR})
    assert result["step_id"] == "wifi"


@pytest.mark.parametrize(
    ("info", "reason"),
    [
        (
            InfoResult(
                device_id=OTHER_IDENTITY.device_id,
                model="x",
                firmware_version="1",
                protocol_version=1,
                claimed=False,
            ),
            "device_id_mismatch",
        ),
        (
            InfoResult(
                device_id=DEVICE_ID,
                model="x",
                firmware_version="1",
                protocol_version=1,
                claimed=True,
            ),
            "device_claimed",
        ),
    ],
)
async def test_unexpected_devices_end_the_flow(
    hass: HomeAssistant, link: MagicMock, info: InfoResult, reason: str
) -> None:
    household_entry(hass)
    link.info.return_value = info
    flow_id = await to_credentials(hass)
    result = await submit(hass, flow_id, {"setup_code": QR})
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == reason


async def test_evil_twin_ends_the_flow_before_any_secret(
    hass: HomeAssistant, device: MagicMock, link: MagicMock
) -> None:
    household_entry(hass)
    device.connect.side_effect = DeviceKeyMismatchClientError("key mismatch")
    flow_id = await to_credentials(hass)
    result = await submit(hass, flow_id, {"setup_code": QR})
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "device_key_mismatch"
    assert result["description_placeholders"]["host"] == "192.0.2.10"
    link.set_wifi.assert_not_awaited()
    link.set_claim.assert_not_awaited()


# --- the manual add ------------------------------------------------------------------------------


async def test_manual_device_errors_then_success(
    hass: HomeAssistant, device: MagicMock, device_cls: MagicMock
) -> None:
    entry = household_entry(hass)
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    result = await submit(hass, result["flow_id"], {"next_step_id": "manual_device"})
    assert result["step_id"] == "manual_device"
    info = device.fetch_info.return_value
    device.fetch_info.side_effect = [
        DeviceConnectionError("refused"),
        DeviceProtocolError("not_a_device", "HTTP 404"),
        info,
    ]
    manual = {"host": " 198.51.100.7 ", "port": 8423, "setup_code": QR}
    result = await submit(hass, result["flow_id"], manual)
    assert result["errors"] == {"base": "cannot_connect"}
    result = await submit(hass, result["flow_id"], manual)
    assert result["errors"] == {"base": "not_a_device"}
    result = await submit(hass, result["flow_id"], manual)
    assert result["step_id"] == "wifi"  # the code was given with the address
    result = await provision(hass, result["flow_id"], HOME_WIFI)
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    assert records(hass, entry)[DEVICE_ID][DEVICE_HOST] == "198.51.100.7"
    assert device_cls.call_args.args == ("198.51.100.7", 8423)


async def test_manual_add_of_an_owned_device(hass: HomeAssistant, device: MagicMock) -> None:
    entry = household_entry(hass, devices={DEVICE_ID: DEVICE_RECORD})
    device.fetch_info.return_value = dataclasses.replace(
        device.fetch_info.return_value, state="online", window="closed"
    )
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    result = await submit(hass, result["flow_id"], {"next_step_id": "manual_device"})
    result = await submit(
        hass, result["flow_id"], {"host": "198.51.100.7", "port": 8423, "setup_code": QR}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"
    assert records(hass, entry)[DEVICE_ID][DEVICE_HOST] == "198.51.100.7"


async def test_manual_add_of_a_recorded_device_that_rolled_back(
    hass: HomeAssistant, account: MagicMock
) -> None:
    """The household's record is stale: the device heard none of its onboarding's answers and
    rolled back (it says it is unclaimed). As for zeroconf, the record does not stop a new
    onboarding; the service gives the household's own device a new claim (docs/relay.md)."""
    household_entry(hass, devices={DEVICE_ID: {**DEVICE_RECORD, DEVICE_OWNER_SECRET: "x"}})
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    result = await submit(hass, result["flow_id"], {"next_step_id": "manual_device"})
    result = await submit(
        hass, result["flow_id"], {"host": "198.51.100.7", "port": 8423, "setup_code": QR}
    )
    assert result.get("step_id") == "wifi", result
    result = await provision(hass, result["flow_id"], HOME_WIFI)
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    record = device_entry_of(hass).data  # the stale entry gave way to this onboarding's
    assert record[DEVICE_HOST] == "198.51.100.7"
    assert record[DEVICE_OWNER_SECRET] != "x"  # this onboarding's secret replaced the old one
    account.create_claim.assert_awaited_once()


# --- reconfigure: a device's Wi-Fi ---------------------------------------------------------------

CLAIMED_INFO = InfoResult(
    device_id=DEVICE_ID, model="pi-test", firmware_version="1", protocol_version=1, claimed=True
)


async def test_wifi_change_of_an_owned_device(
    hass: HomeAssistant, account: MagicMock, device: MagicMock, link: MagicMock
) -> None:
    """No label needed: the owner secret from the claim opens the session."""
    household_entry(hass, devices={DEVICE_ID: DEVICE_RECORD})
    link.info.return_value = CLAIMED_INFO
    result = await device_entry_of(hass).start_reconfigure_flow(hass)
    assert result["step_id"] == "device_select"
    assert suggested(result) == {"host": "192.0.2.10", "port": 8423}  # the last known address
    device.connect.side_effect = [
        DeviceConnectionError("gone"),
        HandshakeRefusedError("window_closed"),
        SetupCodeRejectedError("another secret"),
        link,
    ]
    selected = {"host": "192.0.2.99", "port": 8423}
    for error in ("cannot_connect", "window_closed", "owner_secret_rejected"):
        result = await submit(hass, result["flow_id"], selected)
        assert result["step_id"] == "device_select"
        assert result["errors"] == {"base": error}
        assert suggested(result) == selected  # the address typed, not the stored one
    result = await submit(hass, result["flow_id"], selected)
    assert result["step_id"] == "wifi"
    options = result["data_schema"].schema["network"].config["options"]
    assert "keep_ethernet" not in [o["value"] for o in options]
    # A claimed device that fails keeps its owner: status "committed" with a diagnostic.
    link.status.side_effect = [
        StatusResult(state=DeviceState.COMMITTED, diagnostic=DiagnosticCode.WIFI_AUTH_FAILED),
        StatusResult(state=DeviceState.COMMITTED),
    ]
    # Nothing is claimed: the progress text says what a Wi-Fi change does, not a claim.
    assert "household" not in STRINGS["progress"]["wifi_change"]
    result = await provision(hass, result["flow_id"], HOME_WIFI, action="wifi_change")
    assert result["errors"] == {"base": "wifi_auth_failed"}
    assert suggested(result) == {"network": HOME_KEY}
    result = await provision(hass, result["flow_id"], HOME_WIFI, action="wifi_change")
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "wifi_changed"
    account.create_claim.assert_not_awaited()
    link.set_claim.assert_not_awaited()
    credential = device.connect.call_args.args[0]
    assert isinstance(credential, OwnerSecret)
    assert credential.secret == OWNER.secret
    assert device.connect.call_args.kwargs["device_public_key"] == IDENTITY.public_key


async def test_wifi_change_device_lost_without_a_claim_to_ask(
    hass: HomeAssistant, link: MagicMock
) -> None:
    household_entry(hass, devices={DEVICE_ID: DEVICE_RECORD})
    link.info.return_value = CLAIMED_INFO
    result = await hass.config_entries.flow.async_init(DOMAIN, context=wifi_change_context(hass))
    assert result["step_id"] == "device_select"  # preselected, the address to confirm
    result = await submit(hass, result["flow_id"], {"host": "192.0.2.10", "port": 8423})
    assert result["step_id"] == "wifi"
    link.status.side_effect = SessionLostError("no_session")
    result = await provision(hass, result["flow_id"], HOME_WIFI, action="wifi_change")
    assert result["errors"] == {"base": "device_lost"}


@pytest.mark.parametrize(
    ("record", "refusal", "reason"),
    [
        ({DEVICE_ID: DEVICE_RECORD}, "setup_code_required", "device_reset"),
        ({DEVICE_ID: DEVICE_RECORD}, "no_owner_secret", "no_owner_secret"),
    ],
)
async def test_wifi_change_of_a_device_that_is_no_longer_ours(
    hass: HomeAssistant,
    device: MagicMock,
    record: dict[str, Any],
    refusal: str,
    reason: str,
) -> None:
    household_entry(hass, devices=record)
    device.connect.side_effect = CredentialRefusedClientError(refusal)
    result = await hass.config_entries.flow.async_init(DOMAIN, context=wifi_change_context(hass))
    result = await submit(hass, result["flow_id"], {"host": "192.0.2.10", "port": 8423})
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == reason


async def test_wifi_change_needs_the_owner_secret(hass: HomeAssistant) -> None:
    """Claimed without an owner secret (zero-touch, older firmware): only a reset helps."""
    record = {k: v for k, v in DEVICE_RECORD.items() if k != DEVICE_OWNER_SECRET}
    household_entry(hass, devices={DEVICE_ID: record})
    result = await hass.config_entries.flow.async_init(DOMAIN, context=wifi_change_context(hass))
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "no_owner_secret"


async def test_label_of_a_claimed_device(hass: HomeAssistant, device: MagicMock) -> None:
    """The device refuses the label because it has an owner: the flow says so and ends."""
    household_entry(hass)
    device.connect.side_effect = CredentialRefusedClientError("owner_session_required")
    flow_id = await to_credentials(hass)
    result = await submit(hass, flow_id, {"setup_code": QR})
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "device_claimed"


async def test_a_device_entry_whose_household_entry_is_gone(hass: HomeAssistant) -> None:
    """Its Wi-Fi cannot change without the household's session: the abort says so."""
    MockConfigEntry(
        domain=DOMAIN,
        version=2,
        unique_id=DEVICE_ID,
        data={**DEVICE_RECORD, CONF_DEVICE_ID: DEVICE_ID, CONF_HOUSEHOLD_ID: HID},
    ).add_to_hass(hass)
    result = await hass.config_entries.flow.async_init(DOMAIN, context=wifi_change_context(hass))
    assert (result["type"], result["reason"]) == (FlowResultType.ABORT, "household_missing")


async def test_device_entries_have_no_options_and_their_device_goes_with_them(
    hass: HomeAssistant,
) -> None:
    household = household_entry(hass, devices={DEVICE_ID: DEVICE_RECORD})
    onboarded = device_entry_of(hass)
    flow = config_flow.IotOnboardConfigFlow
    assert flow.async_supports_options_flow(household)
    assert not flow.async_supports_options_flow(onboarded)
    device = dr.async_get(hass).async_get_or_create(
        config_entry_id=onboarded.entry_id, identifiers={(DOMAIN, DEVICE_ID)}
    )
    # Removing the device from its device entry's page: remove the entry instead.
    assert not await async_remove_config_entry_device(hass, onboarded, device)
    # An entry from a newer version of the integration is not touched.
    assert not await async_migrate_entry(hass, MockConfigEntry(domain=DOMAIN, version=3))


async def test_removing_a_device_entry_without_its_hub_releases_nothing(
    hass: HomeAssistant, account: MagicMock, caplog: pytest.LogCaptureFixture
) -> None:
    """The household entry is not loaded: the release cannot be sent; the log says what to do."""
    household_entry(hass, devices={DEVICE_ID: DEVICE_RECORD})
    await hass.config_entries.async_remove(device_entry_of(hass).entry_id)
    assert "was not released" in caplog.text
    account.release_device.assert_not_awaited()


# --- closing the dialog ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("final", "recorded"),
    [
        (StatusResult(state=DeviceState.COMMITTED), True),
        (StatusResult(state=DeviceState.PROVISIONING, diagnostic=DiagnosticCode.DNS_FAILED), False),
    ],
)
async def test_closing_the_dialog_mid_commit_keeps_the_owner_secret(
    hass: HomeAssistant, link: MagicMock, final: StatusResult, recorded: bool
) -> None:
    """Closed mid-commit: if the device ends up owned anyway, its owner secret is kept."""
    entry = household_entry(hass)
    flow_id = await to_wifi(hass)
    started = asyncio.Event()
    outcome = asyncio.get_running_loop().create_future()

    async def committing() -> StatusResult:
        started.set()
        if outcome.done():
            result: StatusResult = outcome.result()
            return result
        return StatusResult(state=DeviceState.COMMITTING)

    link.status.side_effect = committing
    with patch.object(commit_engine, "POLL_INTERVAL", 0.01):
        result = await submit(hass, flow_id, HOME_WIFI)
        assert result["type"] is FlowResultType.SHOW_PROGRESS
        await started.wait()
        hass.config_entries.flow.async_abort(flow_id)
        assert hass.config_entries.flow.async_progress_by_handler(DOMAIN) == []
        link.close.assert_not_called()  # still waiting for the device
        outcome.set_result(final)
        await hass.async_block_till_done(wait_background_tasks=True)
    link.close.assert_called()
    assert (DEVICE_ID in records(hass, entry)) is recorded
    if recorded:
        sent = link.set_claim.call_args.kwargs["owner_secret"]
        assert records(hass, entry)[DEVICE_ID][DEVICE_OWNER_SECRET] == sent.encode()


async def test_closing_the_dialog_mid_wifi_change_stops_waiting(
    hass: HomeAssistant, link: MagicMock
) -> None:
    entry = household_entry(hass, devices={DEVICE_ID: DEVICE_RECORD})
    link.info.return_value = CLAIMED_INFO
    link.status.return_value = StatusResult(state=DeviceState.COMMITTING)
    result = await hass.config_entries.flow.async_init(DOMAIN, context=wifi_change_context(hass))
    result = await submit(hass, result["flow_id"], {"host": "192.0.2.10", "port": 8423})
    with patch.object(commit_engine, "POLL_INTERVAL", 0.01):
        result = await submit(hass, result["flow_id"], HOME_WIFI)
        assert result["type"] is FlowResultType.SHOW_PROGRESS
        hass.config_entries.flow.async_abort(result["flow_id"])
        await hass.async_block_till_done(wait_background_tasks=True)
    link.close.assert_called()
    assert records(hass, entry) == {DEVICE_ID: DEVICE_RECORD}


async def test_closing_the_dialog_before_the_device(hass: HomeAssistant) -> None:
    result = await start_discovery(hass)
    hass.config_entries.flow.async_abort(result["flow_id"])
    assert hass.config_entries.flow.async_progress_by_handler(DOMAIN) == []


# --- the options flow (the runtime's roles) -------------------------------------------------


def test_options_flow_is_the_runtimes(hass: HomeAssistant) -> None:
    entry = household_entry(hass)
    handler = config_flow.IotOnboardConfigFlow.async_get_options_flow(entry)
    assert isinstance(handler, IotOnboardOptionsFlow)


# --- translations ---------------------------------------------------------------------------------


def _abort_reasons() -> set[str]:
    """Every abort reason the flow's source can produce, read from its syntax tree."""
    reasons = {"already_configured", "already_in_progress"}  # from HA's unique-id helpers
    nodes = (
        node
        for module in (config_flow, onboarding)
        for node in ast.walk(ast.parse(Path(module.__file__ or "").read_text(encoding="utf-8")))
    )
    for node in nodes:
        if isinstance(node, ast.Call):
            name = getattr(node.func, "attr", getattr(node.func, "id", ""))
            if (
                name in {"_abort", "AbortFlow"}
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                reasons.add(ast.literal_eval(node.args[0]))
            reasons.update(
                ast.literal_eval(k.value)
                for k in node.keywords
                if k.arg in {"reason", "abort"} and isinstance(k.value, ast.Constant)
            )
    reasons.update(
        row.abort
        for row in flow_errors.FLOW_ERRORS.values()
        if row.abort is not None and row.abort != flow_errors.FROM_CODE
    )
    reasons.add(config_flow.IotOnboardConfigFlow()._reauth())
    return reasons


def test_every_abort_reason_is_translated() -> None:
    """Aborts raised as AbortFlow bypass async_abort: check them from the source."""
    reasons = _abort_reasons()
    assert {"device_key_mismatch", "wifi_changed", "device_claimed"} <= reasons
    provided = set(config_flow.IotOnboardConfigFlow()._placeholders())
    for reason in reasons:
        _check_text(STRINGS["abort"][reason], dict.fromkeys(provided, ""))


def test_every_form_error_of_the_table_is_translated() -> None:
    """flow_errors.FLOW_ERRORS: every error key it can show has its text."""
    errors = {row.error for row in flow_errors.FLOW_ERRORS.values() if row.error is not None}
    errors |= set(flow_errors.BLUETOOTH_ERRORS.values())
    errors.discard(flow_errors.FROM_CODE)
    assert {"account_refused", "wrong_setup_code", "device_lost"} <= errors
    assert errors <= set(STRINGS["error"])


def test_every_diagnostic_code_has_its_message_and_next_step() -> None:
    for code in DiagnosticCode:
        text = STRINGS["error"][flow_errors.diagnostic_error(code)]
        assert code.message in text
        assert code.next_step in text


# --- Bluetooth: discovery, onboarding, re-onboarding after Wi-Fi loss -------------------------


@pytest.fixture
def gatt_device() -> FakeGattDevice:
    """An unclaimed device in radio range (the scripted GATT side of tests/integration/fake_ble)."""
    return FakeGattDevice(IDENTITY, SETUP)


@pytest.fixture
def connector(gatt_device: FakeGattDevice) -> Generator[FakeConnector]:
    """bleak-retry-connector's establish_connection, connecting to ``gatt_device``."""
    fake = FakeConnector(gatt_device)
    with patch.object(ble_client, "establish_connection", fake):
        yield fake


async def advertise(hass: HomeAssistant, info: BluetoothServiceInfoBleak) -> None:
    """What a local adapter or an active ESPHome proxy reports (HA's own injection path)."""
    bluetooth.async_get_advertisement_callback(hass)(info)
    # Discovery flows start as background tasks.
    await hass.async_block_till_done(wait_background_tasks=True)


def flows(hass: HomeAssistant) -> list[Any]:
    return [flow for flow in hass.config_entries.flow.async_progress() if flow["handler"] == DOMAIN]


async def start_bluetooth(hass: HomeAssistant, gatt_device: FakeGattDevice) -> str:
    """Discovered by the advertisement: the flow waits at its confirmation."""
    await advertise(hass, gatt_device.service_info())
    await hass.async_block_till_done()
    (flow,) = flows(hass)
    assert flow["context"]["source"] == SOURCE_BLUETOOTH
    assert flow["context"]["unique_id"] == DEVICE_ID[:8]
    assert flow["step_id"] == "bluetooth_confirm"
    return str(flow["flow_id"])


@pytest.mark.usefixtures("enable_bluetooth")
async def test_bluetooth_onboarding_through_to_the_household(
    hass: HomeAssistant, account: MagicMock, gatt_device: FakeGattDevice, connector: FakeConnector
) -> None:
    """Advertisement → confirm → QR code → Wi-Fi → commit over GATT → device added."""
    entry = household_entry(hass)
    flow_id = await start_bluetooth(hass, gatt_device)
    result = await submit(hass, flow_id, {})
    assert result["step_id"] == "credentials"
    assert result["description_placeholders"]["device_id"] == DEVICE_ID[:8]
    result = await submit(hass, flow_id, {"setup_code": QR})
    assert result["step_id"] == "wifi", result
    # The link is let go while the user picks a network.
    assert connector.all_closed
    result = await provision(hass, flow_id, HOME_WIFI)
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    assert gatt_device.wifi == b"HomeNet"
    assert gatt_device.claim is not None
    assert gatt_device.claim.owner_secret is not None
    account.create_claim.assert_awaited_with(HID, DEVICE_ID)
    assert connector.all_closed  # disconnected at the end, always
    assert gatt_device.connections >= 2  # resumed over a new connection after the form
    assert all(seen.address == ADDRESS for seen in connector.devices_seen)
    record = records(hass, entry)[DEVICE_ID]
    assert record[DEVICE_HOST] == ""  # reached over Bluetooth: no LAN address yet
    assert OwnerSecret.decode(record[DEVICE_OWNER_SECRET]).secret == gatt_device.claim.owner_secret
    assert record[DEVICE_PUBLIC_KEY] == b64url_encode(IDENTITY.public_key)


@pytest.mark.usefixtures("enable_bluetooth", "account", "connector")
@pytest.mark.parametrize("names_wps", [True, False], ids=["names-wps", "older-device"])
async def test_bluetooth_onboarding_by_the_routers_wps_button(
    hass: HomeAssistant, gatt_device: FakeGattDevice, *, names_wps: bool
) -> None:
    """A device that names ``wps`` in its features characteristic is offered the router's
    button over Bluetooth as over the LAN; the key goes from the router to the device. An
    older device (no characteristic) is not offered it."""
    gatt_device.features = b"wps" if names_wps else None
    entry = household_entry(hass)
    flow_id = await start_bluetooth(hass, gatt_device)
    await submit(hass, flow_id, {})
    result = await submit(hass, flow_id, {"setup_code": QR})
    assert result["step_id"] == "wifi", result
    if not names_wps:
        assert WPS not in fields(result)
        return
    assert WPS in fields(result)
    result = await submit(hass, flow_id, WPS_JOIN)
    assert (result["step_id"], result["errors"]) == ("wps", {})
    assert CommandType.SET_WIFI not in gatt_device.commands  # nothing before the button
    result = await provision(hass, flow_id, {})
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    assert (gatt_device.wifi, gatt_device.wps) == (b"HomeNet", True)
    assert DEVICE_ID in records(hass, entry)


@pytest.mark.usefixtures("enable_bluetooth")
async def test_bluetooth_ignores_what_is_not_for_this_home_assistant(
    hass: HomeAssistant, gatt_device: FakeGattDevice
) -> None:
    """Window closed, a stranger's claimed device, garbage service data: no flow at all."""
    await advertise(hass, gatt_device.service_info(window_open=False))
    other_setup = SetupCode.generate(OTHER_IDENTITY.device_id)
    stranger = FakeGattDevice(OTHER_IDENTITY, other_setup, owner=OwnerSecret.generate())
    await advertise(hass, stranger.service_info())
    await hass.async_block_till_done()
    assert flows(hass) == []
    for data, reason in ((b"\x02", "invalid_discovery_info"), (b"", "invalid_discovery_info")):
        info = gatt_device.service_info()
        info.service_data[SERVICE_UUID] = data
        result = await hass.config_entries.flow.async_init(
            DOMAIN, context={"source": SOURCE_BLUETOOTH}, data=info
        )
        assert result["type"] is FlowResultType.ABORT
        assert result["reason"] == reason
    for info, reason in (
        (gatt_device.service_info(window_open=False), "window_not_open"),
        (stranger.service_info(), "device_claimed"),
    ):
        result = await hass.config_entries.flow.async_init(
            DOMAIN, context={"source": SOURCE_BLUETOOTH}, data=info
        )
        assert result["reason"] == reason


@pytest.mark.usefixtures("enable_bluetooth")
async def test_one_flow_when_zeroconf_sees_the_device_first(
    hass: HomeAssistant, gatt_device: FakeGattDevice
) -> None:
    await start_discovery(hass)
    await advertise(hass, gatt_device.service_info())
    await hass.async_block_till_done()
    (flow,) = flows(hass)
    assert flow["context"]["source"] == SOURCE_ZEROCONF
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_BLUETOOTH}, data=gatt_device.service_info()
    )
    assert result["reason"] == "already_in_progress"


@pytest.mark.usefixtures("enable_bluetooth")
async def test_one_flow_when_bluetooth_sees_the_device_first(
    hass: HomeAssistant, gatt_device: FakeGattDevice
) -> None:
    await start_bluetooth(hass, gatt_device)
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_ZEROCONF}, data=discovery()
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_in_progress"
    assert len(flows(hass)) == 1


async def test_one_ignore_covers_both_discoveries(
    hass: HomeAssistant, gatt_device: FakeGattDevice
) -> None:
    MockConfigEntry(domain=DOMAIN, unique_id=DEVICE_ID[:8], source=SOURCE_IGNORE).add_to_hass(hass)
    for source, data in (
        (SOURCE_BLUETOOTH, gatt_device.service_info()),
        (SOURCE_ZEROCONF, discovery()),
    ):
        result = await hass.config_entries.flow.async_init(
            DOMAIN, context={"source": source}, data=data
        )
        assert result["reason"] == "already_configured"


@pytest.mark.usefixtures("enable_bluetooth")
async def test_bluetooth_setup_code_errors_then_recovery(
    hass: HomeAssistant, gatt_device: FakeGattDevice, connector: FakeConnector
) -> None:
    """Only the QR code names the device over BLE; a wrong code is the device's verdict."""
    household_entry(hass)
    flow_id = await start_bluetooth(hass, gatt_device)
    await submit(hass, flow_id, {})
    wrong = SetupCode.generate(DEVICE_ID).qr_payload(IDENTITY.fingerprint).format()
    for code, error in (
        (MANUAL, "bluetooth_needs_qr"),
        (OTHER_QR, "qr_other_device"),
        (wrong, "wrong_setup_code"),
    ):
        result = await submit(hass, flow_id, {"setup_code": code})
        assert result["step_id"] == "credentials"
        assert result["errors"] == {"setup_code": error}
    assert connector.all_closed
    result = await submit(hass, flow_id, {"setup_code": QR})
    assert result["step_id"] == "wifi"


@pytest.mark.usefixtures("enable_bluetooth")
async def test_bluetooth_link_failures_then_recovery(
    hass: HomeAssistant, gatt_device: FakeGattDevice, connector: FakeConnector
) -> None:
    """Out of range, a link dropped mid-reply, then mid-commit: messages, retries, done."""
    household_entry(hass)
    flow_id = await start_bluetooth(hass, gatt_device)
    await submit(hass, flow_id, {})
    gatt_device.reachable = False
    result = await submit(hass, flow_id, {"setup_code": QR})
    assert result["errors"] == {"base": "bluetooth_unreachable"}
    gatt_device.reachable = True
    gatt_device.drop_mid_reply = 3  # DEVICE_HELLO cut off after 3 of its 10 notifications
    result = await submit(hass, flow_id, {"setup_code": QR})
    assert result["errors"] == {"base": "bluetooth_unreachable"}
    result = await submit(hass, flow_id, {"setup_code": QR})
    assert result["step_id"] == "wifi"
    # Gone when the commit starts: the Wi-Fi form says so; back in range, the retry works.
    gatt_device.reachable = False
    result = await provision(hass, flow_id, HOME_WIFI)
    assert result["errors"] == {"base": "bluetooth_lost"}
    gatt_device.reachable = True
    gatt_device.drop_mid_request = 2  # set_wifi cut off mid-frame: sent again on a new link
    result = await provision(hass, flow_id, HOME_WIFI)
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    assert gatt_device.wifi == b"HomeNet"
    assert connector.all_closed


@pytest.mark.usefixtures("enable_bluetooth")
async def test_bluetooth_reply_lost_mid_command_starts_a_new_session(
    hass: HomeAssistant, gatt_device: FakeGattDevice, connector: FakeConnector
) -> None:
    household_entry(hass)
    flow_id = await start_bluetooth(hass, gatt_device)
    await submit(hass, flow_id, {})
    result = await submit(hass, flow_id, {"setup_code": QR})
    gatt_device.drop_mid_reply = 1  # the reply to set_wifi is lost: the counters disagree
    result = await provision(hass, flow_id, HOME_WIFI)
    assert result["errors"] == {"base": "bluetooth_lost"}
    result = await provision(hass, flow_id, HOME_WIFI)  # a new handshake with the same QR
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    assert gatt_device.commands.count(CommandType.SET_WIFI) >= 2
    assert connector.all_closed


@pytest.mark.usefixtures("enable_bluetooth")
async def test_closing_the_bluetooth_dialog_disconnects(
    hass: HomeAssistant, gatt_device: FakeGattDevice, connector: FakeConnector
) -> None:
    household_entry(hass)
    flow_id = await start_bluetooth(hass, gatt_device)
    await submit(hass, flow_id, {})
    await submit(hass, flow_id, {"setup_code": QR})
    hass.config_entries.flow.async_abort(flow_id)
    await hass.async_block_till_done()
    assert connector.all_closed


# --- re-onboarding: an owned device lost its Wi-Fi and advertises its owner-only window -------


async def owned_entry(hass: HomeAssistant, record: Mapping[str, Any]) -> MockConfigEntry:
    """A loaded household entry with the device in its data and in the device registry."""
    entry = household_entry(hass, devices={DEVICE_ID: dict(record)})
    assert await hass.config_entries.async_setup(entry.entry_id)
    dr.async_get(hass).async_get_or_create(
        config_entry_id=entry.entry_id, identifiers={(DOMAIN, DEVICE_ID)}, name="Kitchen sensor"
    )
    return entry


def wifi_lost_issue(hass: HomeAssistant) -> ir.IssueEntry | None:
    return ir.async_get(hass).async_get_issue(DOMAIN, f"wifi_lost_{DEVICE_ID}")


@pytest.mark.usefixtures("enable_bluetooth")
async def test_wifi_lost_advertisement_raises_the_repair_and_changes_wifi_over_ble(
    hass: HomeAssistant, account: MagicMock, connector: FakeConnector
) -> None:
    await owned_entry(hass, DEVICE_RECORD)
    connector.device.owner = OWNER
    await advertise(hass, connector.device.service_info())
    await hass.async_block_till_done()
    assert wifi_lost_issue(hass) is not None
    (flow,) = flows(hass)
    assert flow["step_id"] == "wifi_lost_confirm"
    result = await submit(hass, flow["flow_id"], {})
    assert result["step_id"] == "wifi", result
    options = result["data_schema"].schema["network"].config["options"]
    assert "keep_ethernet" not in [o["value"] for o in options]
    result = await provision(hass, flow["flow_id"], HOME_WIFI, action="wifi_change")
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "wifi_changed"
    assert connector.device.wifi == b"HomeNet"
    assert connector.device.claim is None  # the owner session changes Wi-Fi only
    account.create_claim.assert_not_awaited()
    assert connector.all_closed


@pytest.mark.usefixtures("enable_bluetooth")
async def test_the_owner_moves_the_device_over_ble_by_the_routers_wps_button(
    hass: HomeAssistant, account: MagicMock, connector: FakeConnector
) -> None:
    """The router's password changed and nobody at home knows the new one: in the owner's
    session over Bluetooth, the router's WPS button moves the device (no password sent, no
    claim)."""
    await owned_entry(hass, DEVICE_RECORD)
    connector.device.owner = OWNER
    await advertise(hass, connector.device.service_info())
    await hass.async_block_till_done()
    (flow,) = flows(hass)
    flow_id = flow["flow_id"]
    result = await submit(hass, flow_id, {})
    assert result["step_id"] == "wifi", result
    assert WPS in fields(result)
    result = await submit(hass, flow_id, WPS_JOIN)
    assert (result["step_id"], result["errors"]) == ("wps", {})
    result = await provision(hass, flow_id, {}, action="wifi_change")
    assert result["type"] is FlowResultType.ABORT, result
    assert result["reason"] == "wifi_changed"
    assert (connector.device.wifi, connector.device.wps) == (b"HomeNet", True)
    assert connector.device.claim is None
    account.create_claim.assert_not_awaited()
    assert connector.all_closed


@pytest.mark.usefixtures("enable_bluetooth")
async def test_the_repair_leads_to_the_wifi_change_over_ble(
    hass: HomeAssistant, connector: FakeConnector
) -> None:
    await owned_entry(hass, DEVICE_RECORD)
    connector.device.owner = OWNER
    # The discovery flow was dismissed; the repair stays and starts the same path.
    await advertise(hass, connector.device.service_info())
    await hass.async_block_till_done()
    for flow in flows(hass):
        hass.config_entries.flow.async_abort(flow["flow_id"])
    assert wifi_lost_issue(hass) is not None
    result = await hass.config_entries.flow.async_init(DOMAIN, context=wifi_change_context(hass))
    assert result["step_id"] == "wifi_lost_confirm"
    # The device leaves Bluetooth once it joined the new network; soon back online, the
    # runtime deletes the repair, which ends the wait.

    def back_online_soon() -> None:
        hass.loop.call_soon(ir.async_delete_issue, hass, DOMAIN, f"wifi_lost_{DEVICE_ID}")

    connector.on_unreachable = back_online_soon
    result = await submit(hass, result["flow_id"], {})
    connector.device.leave_after_commit = True
    result = await provision(hass, result["flow_id"], HOME_WIFI, action="wifi_change")
    assert result["reason"] == "wifi_changed"
    assert connector.all_closed


@pytest.mark.usefixtures("enable_bluetooth")
async def test_wifi_change_over_ble_needs_this_home_assistants_owner_secret(
    hass: HomeAssistant, connector: FakeConnector
) -> None:
    """Another Home Assistant's secret is refused by the device; none at all ends the flow."""
    await owned_entry(hass, DEVICE_RECORD)
    connector.device.owner = OwnerSecret.generate()  # claimed by someone else's setup
    await advertise(hass, connector.device.service_info())
    await hass.async_block_till_done()
    (flow,) = flows(hass)
    result = await submit(hass, flow["flow_id"], {})
    assert result["step_id"] == "wifi_lost_confirm"
    assert result["errors"] == {"base": "owner_secret_rejected"}
    assert connector.device.commands == []  # nothing reached the device's commands


@pytest.mark.usefixtures("enable_bluetooth")
async def test_wifi_change_over_ble_without_an_owner_secret(
    hass: HomeAssistant, connector: FakeConnector
) -> None:
    record = {k: v for k, v in DEVICE_RECORD.items() if k != DEVICE_OWNER_SECRET}
    await owned_entry(hass, record)
    connector.device.owner = OWNER
    await advertise(hass, connector.device.service_info())
    await hass.async_block_till_done()
    (flow,) = flows(hass)
    result = await submit(hass, flow["flow_id"], {})
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "no_owner_secret"
    assert connector.device.connections == 0


async def test_wifi_lost_advertisement_of_an_entry_not_loaded(
    hass: HomeAssistant, gatt_device: FakeGattDevice
) -> None:
    household_entry(hass, devices={DEVICE_ID: DEVICE_RECORD})
    gatt_device.owner = OWNER
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_BLUETOOTH}, data=gatt_device.service_info()
    )
    assert result["reason"] == "already_configured"


@pytest.mark.usefixtures("enable_bluetooth")
async def test_the_repair_falls_back_to_the_lan_when_bluetooth_does_not_see_the_device(
    hass: HomeAssistant,
) -> None:
    """Other devices in range (ours or not) do not count: the address form as before."""
    other_setup = SetupCode.generate(OTHER_IDENTITY.device_id)
    neighbour = FakeGattDevice(OTHER_IDENTITY, other_setup, owner=OwnerSecret.generate())
    await owned_entry(hass, DEVICE_RECORD)
    MockConfigEntry(
        domain=DOMAIN,
        version=2,
        unique_id="Z" * 16,
        data={**DEVICE_RECORD, CONF_DEVICE_ID: "Z" * 16, CONF_HOUSEHOLD_ID: HID},
    ).add_to_hass(hass)
    info = neighbour.service_info()
    await advertise(hass, info)
    unrelated = neighbour.service_info()
    unrelated.service_data.clear()
    unrelated.address = "AA:BB:CC:DD:EE:02"
    unrelated.device = ble_device("AA:BB:CC:DD:EE:02", "thermometer")
    await advertise(hass, unrelated)
    await hass.async_block_till_done()
    assert flows(hass) == []  # a stranger's claimed device, and a device that is not ours
    result = await hass.config_entries.flow.async_init(DOMAIN, context=wifi_change_context(hass))
    assert result["step_id"] == "device_select"


# --- fixes found by the whole-stack tests (tests/stack) ----------------------------------------

SELECTOR_STRINGS: dict[str, Any] = json.loads(
    (Path(config_flow.__file__).parent / "translations" / "en.json").read_text(encoding="utf-8")
)["selector"]


def _raw_options(schema: Any) -> list[str]:
    """Option values a form would show as they are: neither translated nor labelled."""
    raw: list[str] = []
    for selector in getattr(schema, "schema", {}).values():
        if not isinstance(selector, SelectSelector):
            continue
        key = selector.config.get("translation_key") or ""
        translated = SELECTOR_STRINGS.get(key, {}).get("options", {})
        for option in selector.config["options"]:
            value = str(option if isinstance(option, str) else option["value"])
            label = value if isinstance(option, str) else str(option["label"])
            if label == value and value not in translated:
                raw.append(value)
    return raw


@pytest.fixture(autouse=True)
def every_option_has_a_label() -> Generator[None]:
    """No form of the flow shows an option's raw value (``keep_ethernet``) to the user."""
    flow = config_flow.IotOnboardConfigFlow
    show_form = flow.async_show_form

    def checked_form(self: Any, **kwargs: Any) -> Any:
        raw = _raw_options(kwargs.get("data_schema"))
        assert not raw, f"{kwargs['step_id']} shows raw option values {raw}"
        return show_form(self, **kwargs)

    with patch.object(flow, "async_show_form", checked_form):
        yield


async def test_the_wifi_choices_are_translated_the_way_home_assistant_does(
    hass: HomeAssistant,
) -> None:
    """Keep Ethernet and hidden network: labelled through the selector's translation_key."""
    household_entry(hass)
    flow_id = await to_wifi(hass)
    result = await submit(hass, flow_id, {"network": OLD_KEY})
    selector = result["data_schema"].schema["network"]
    values = [option["value"] for option in selector.config["options"]]
    assert values[-2:] == ["hidden_network", "keep_ethernet"]
    key = selector.config["translation_key"]
    strings = await async_get_translations(hass, "en", "selector", [DOMAIN])
    for value in ("hidden_network", "keep_ethernet"):
        text = strings.get(f"component.{DOMAIN}.selector.{key}.options.{value}")
        assert text, f"{value} has no translation"
        assert value not in text


async def test_a_reset_device_is_discovered_again_despite_its_stale_record(
    hass: HomeAssistant, account: MagicMock, link: MagicMock
) -> None:
    """The device says "unclaimed" seconds before the runtime drops its record: a flow starts.

    The finish replaces the stale record (new owner secret) and drops the one another
    household of this Home Assistant still had.
    """
    other = household_entry(
        hass, hid=OTHER_HID, devices={DEVICE_ID: DEVICE_RECORD, "OTHERDEVICE": DEVICE_RECORD}
    )
    entry = household_entry(hass, devices={DEVICE_ID: {**DEVICE_RECORD, DEVICE_HOST: "old"}})
    result = await start_discovery(hass)
    result = await submit(hass, result["flow_id"], {})
    assert result["step_id"] == "pick_household"
    result = await submit(hass, result["flow_id"], {"entry": entry.entry_id})
    assert result["step_id"] == "credentials"
    result = await submit(hass, result["flow_id"], {"setup_code": QR})
    assert result["step_id"] == "wifi", result
    result = await provision(hass, result["flow_id"], HOME_WIFI)
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    record = records(hass, entry)[DEVICE_ID]
    assert record[DEVICE_OWNER_SECRET] == link.set_claim.call_args.kwargs["owner_secret"].encode()
    assert record[DEVICE_OWNER_SECRET] != OWNER.encode()
    assert record[DEVICE_HOST] == "192.0.2.10"
    assert records(hass, other) == {"OTHERDEVICE": DEVICE_RECORD}
    account.create_claim.assert_awaited_once_with(HID, DEVICE_ID)


async def test_an_owned_device_that_does_not_say_unclaimed_is_still_refused(
    hass: HomeAssistant,
) -> None:
    household_entry(hass, devices={DEVICE_ID: DEVICE_RECORD})
    for state in ("online", "committing", ""):
        result = await hass.config_entries.flow.async_init(
            DOMAIN, context={"source": SOURCE_ZEROCONF}, data=discovery(state=state)
        )
        assert result["reason"] == "already_configured"


@pytest.mark.usefixtures("enable_bluetooth")
async def test_a_reset_device_over_bluetooth_is_onboarded_despite_its_stale_record(
    hass: HomeAssistant, gatt_device: FakeGattDevice, connector: FakeConnector
) -> None:
    """Phase unclaimed: the onboarding flow, not the owner's Wi-Fi-lost window."""
    entry = await owned_entry(hass, DEVICE_RECORD)
    flow_id = await start_bluetooth(hass, gatt_device)
    assert wifi_lost_issue(hass) is None
    result = await submit(hass, flow_id, {})
    assert result["step_id"] == "credentials"
    result = await submit(hass, flow_id, {"setup_code": QR})
    assert result["step_id"] == "wifi", result
    result = await provision(hass, flow_id, HOME_WIFI)
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    assert gatt_device.claim is not None
    assert gatt_device.claim.owner_secret is not None
    record = records(hass, entry)[DEVICE_ID]
    assert OwnerSecret.decode(record[DEVICE_OWNER_SECRET]).secret == gatt_device.claim.owner_secret
    assert record[DEVICE_OWNER_SECRET] != OWNER.encode()
    assert connector.all_closed


@pytest.mark.parametrize(
    "failure",
    [
        AccountConnectionError("connection refused"),
        ServiceUnavailableError(503, "unavailable", ""),
        RateLimitedError(429, "rate_limited", "", None),
    ],
)
async def test_account_service_lost_mid_commit_waits_for_the_devices_verdict(
    hass: HomeAssistant, account: MagicMock, link: MagicMock, failure: Exception
) -> None:
    """The device still commits: its own verdict (it cannot reach the service) is shown.

    Then the retry in place works at once: the device has rolled back, not still committing.
    """
    entry = household_entry(hass)
    flow_id = await to_wifi(hass)
    account.claim_status.side_effect = [claim_status(ClaimState.PENDING), failure, failure]
    link.status.side_effect = [
        StatusResult(state=DeviceState.COMMITTING),
        StatusResult(state=DeviceState.COMMITTING),
        StatusResult(state=DeviceState.PROVISIONING, diagnostic=DiagnosticCode.RELAY_UNREACHABLE),
    ]
    result = await provision(hass, flow_id, HOME_WIFI)
    assert result["step_id"] == "wifi"
    assert result["errors"] == {"base": "relay_unreachable"}
    assert link.status.await_count == 3
    text = STRINGS["error"]["relay_unreachable"]
    assert DiagnosticCode.RELAY_UNREACHABLE.message in text
    assert DiagnosticCode.RELAY_UNREACHABLE.next_step in text
    account.claim_status.side_effect = None
    link.status.side_effect = None
    result = await provision(hass, flow_id, HOME_WIFI)
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    assert DEVICE_ID in records(hass, entry)


async def test_account_service_and_device_both_lost_mid_commit(
    hass: HomeAssistant, account: MagicMock, link: MagicMock
) -> None:
    """Nobody can tell how the commit went: the account service's error, then a retry."""
    household_entry(hass)
    flow_id = await to_wifi(hass)
    down = AccountConnectionError("connection refused")
    account.claim_status.side_effect = [claim_status(ClaimState.PENDING), down, down]
    link.status.side_effect = [
        StatusResult(state=DeviceState.COMMITTING),
        DeviceConnectionError("gone"),
    ]
    result = await provision(hass, flow_id, HOME_WIFI)
    assert result["errors"] == {"base": "account_unreachable"}
    assert account.claim_status.await_count == 3  # the first failure was waited out
    account.claim_status.side_effect = None
    link.status.side_effect = None
    result = await provision(hass, flow_id, HOME_WIFI)
    assert result["type"] is FlowResultType.CREATE_ENTRY, result


async def test_a_refused_claim_check_mid_commit_is_not_waited_out(
    hass: HomeAssistant, account: MagicMock, link: MagicMock
) -> None:
    """Only failures a retry may fix are temporary; a revoked session ends the flow."""
    household_entry(hass)
    flow_id = await to_wifi(hass)
    account.claim_status.side_effect = [
        claim_status(ClaimState.PENDING),
        AuthenticationError(401, "refresh_token_invalid", ""),
    ]
    link.status.return_value = StatusResult(state=DeviceState.COMMITTING)
    result = await provision(hass, flow_id, HOME_WIFI)
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reauth_required"


# --- a lost claim answer: the flow converges instead of aborting ------------------------------


async def test_a_claim_owned_while_the_device_rolled_back_is_handed_over_again(
    hass: HomeAssistant, account: MagicMock, link: MagicMock
) -> None:
    """The service recorded the claim but its answer never reached the device, which rolled
    back (the service stayed out of reach until its timer). The retry hands over the same
    token, which the device confirms again (or settles by its credential request)."""
    entry = household_entry(hass)
    flow_id = await to_wifi(hass)
    link.status.side_effect = [
        StatusResult(state=DeviceState.COMMITTING),
        StatusResult(state=DeviceState.PROVISIONING, diagnostic=DiagnosticCode.RELAY_UNREACHABLE),
        StatusResult(state=DeviceState.PROVISIONING, diagnostic=DiagnosticCode.RELAY_UNREACHABLE),
        StatusResult(state=DeviceState.COMMITTING),
        StatusResult(state=DeviceState.COMMITTED),
    ]
    account.claim_status.side_effect = [
        claim_status(ClaimState.PENDING),  # reuse check before the first set_claim
        claim_status(ClaimState.PENDING),  # while the device commits
        claim_status(ClaimState.OWNED),  # reuse check: the lost confirmation went through
    ]
    result = await provision(hass, flow_id, HOME_WIFI)
    assert result["errors"] == {"base": "relay_unreachable"}
    result = await provision(hass, flow_id, HOME_WIFI)
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    assert DEVICE_ID in records(hass, entry)
    assert account.create_claim.await_count == 1  # no new claim: already_owned is not asked
    tokens = [call.args[1] for call in link.set_claim.await_args_list]
    assert tokens == ["t" * 43, "t" * 43]  # the same token, handed over again
    # Success came from the device (the claim said "owned" before this commit began).
    assert link.status.await_count == 5
    secrets = {call.kwargs["owner_secret"] for call in link.set_claim.await_args_list}
    assert len(secrets) == 1
    assert records(hass, entry)[DEVICE_ID][DEVICE_OWNER_SECRET] == secrets.pop().encode()


async def test_already_owned_for_this_household_converges_to_the_device(
    hass: HomeAssistant, account: MagicMock, link: MagicMock
) -> None:
    """The retry comes when the claim has too little time left, and the service answers the
    new claim with already_owned: this household owns it through this flow's lost answer. The
    device meanwhile finished by itself (it retried, or fetched its credential): added."""
    entry = household_entry(hass)
    flow_id = await to_wifi(hass)
    link.status.side_effect = [
        StatusResult(state=DeviceState.PROVISIONING, diagnostic=DiagnosticCode.RELAY_UNREACHABLE),
        StatusResult(state=DeviceState.COMMITTED),
    ]
    result = await provision(hass, flow_id, HOME_WIFI)
    assert result["errors"] == {"base": "relay_unreachable"}
    account.create_claim.side_effect = AlreadyOwnedError(409, "already_owned", "")
    with patch.object(commit_engine, "CLAIM_MIN_LIFETIME", 10**6):  # the claim is about to lapse
        result = await provision(hass, flow_id, HOME_WIFI)
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    assert DEVICE_ID in records(hass, entry)
    assert account.create_claim.await_count == 2
    link.set_claim.assert_awaited_once()  # the owned device is not asked to claim again
    link.commit.assert_awaited_once()


async def test_already_owned_before_any_commit_still_ends_the_flow(
    hass: HomeAssistant, account: MagicMock
) -> None:
    """Only a claim of this flow converges: a device the household owned before is refused."""
    household_entry(hass)
    account.create_claim.side_effect = AlreadyOwnedError(409, "already_owned", "")
    flow_id = await to_credentials(hass)
    result = await submit(hass, flow_id, {"setup_code": QR})
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_owned"


# --- after an error the form keeps what was typed; only the wrong field is cleared ----------------


def suggested(result: Mapping[str, Any]) -> dict[str, Any]:
    """What the re-shown form fills in: its suggested values, read as HA core's tests do."""
    return {
        str(key.schema): key.description["suggested_value"]
        for key in result["data_schema"].schema
        if key.description and "suggested_value" in key.description
    }


async def test_the_account_form_keeps_what_was_typed(
    hass: HomeAssistant, account: MagicMock
) -> None:
    """The address and e-mail come back after any error; the password never does."""
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    account.health.side_effect = AccountConnectionError("down")
    result = await submit(hass, result["flow_id"], SIGN_IN)
    assert result["errors"] == {"base": "cannot_connect"}
    typed = {k: v for k, v in SIGN_IN.items() if k != "password"}
    assert suggested(result) == typed
    account.health.side_effect = None
    # The wrong field (the address) is cleared; the rest stays.
    result = await submit(hass, result["flow_id"], {**SIGN_IN, CONF_ACCOUNT_URL: "http://x.test"})
    assert result["errors"] == {CONF_ACCOUNT_URL: "invalid_url"}
    assert suggested(result) == {
        CONF_EMAIL: "ada@example.com",
        "create_account": False,
        "household_name": "Home",
    }
    account.sign_up.side_effect = WeakPasswordError(400, "weak_password", "")
    result = await submit(hass, result["flow_id"], {**SIGN_IN, "create_account": True})
    assert result["errors"] == {"password": "weak_password"}
    assert suggested(result) == {**typed, "create_account": True}
    account.sign_up.side_effect = None
    result = await submit(hass, result["flow_id"], {**SIGN_IN, "create_account": True})
    assert result["type"] is FlowResultType.CREATE_ENTRY


async def test_the_household_form_keeps_what_was_typed(
    hass: HomeAssistant, account: MagicMock
) -> None:
    account.households.return_value = [HOME, FLAT]
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    result = await submit(hass, result["flow_id"], SIGN_IN)
    assert result["step_id"] == "household"
    new = {"household": "new_household", "household_name": "Cabin"}
    account.create_household.side_effect = [AccountConnectionError("down"), HOME]
    result = await submit(hass, result["flow_id"], new)
    assert result["errors"] == {"base": "account_unreachable"}
    assert suggested(result) == new
    result = await submit(hass, result["flow_id"], {**new, "household_name": "  "})
    assert result["errors"] == {"household_name": "name_required"}
    assert suggested(result) == {"household": "new_household"}
    result = await submit(hass, result["flow_id"], new)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    account.create_household.assert_called_with("Cabin")


async def test_the_setup_code_is_kept_unless_it_was_wrong(
    hass: HomeAssistant, account: MagicMock, device: MagicMock, link: MagicMock
) -> None:
    household_entry(hass)
    flow_id = await to_credentials(hass)
    # The account service was down: nothing was wrong with the code.
    account.create_claim.side_effect = AccountConnectionError("down")
    result = await submit(hass, flow_id, {"setup_code": QR})
    assert result["errors"] == {"base": "account_unreachable"}
    assert suggested(result) == {"setup_code": QR, "name": DEFAULT_NAME}
    account.create_claim.side_effect = None
    # The device refused the code: it is cleared.
    device.connect.side_effect = [SetupCodeRejectedError("no"), DeviceConnectionError("x"), link]
    result = await submit(hass, flow_id, {"setup_code": QR})
    assert result["errors"] == {"setup_code": "wrong_setup_code"}
    assert suggested(result) == {"name": DEFAULT_NAME}
    result = await submit(hass, flow_id, {"setup_code": QR})
    assert result["errors"] == {"base": "cannot_connect"}
    assert suggested(result) == {"setup_code": QR, "name": DEFAULT_NAME}
    result = await submit(hass, flow_id, {"setup_code": "IOB1:garbage"})
    assert result["errors"] == {"setup_code": "invalid_setup_code"}
    assert suggested(result) == {"name": DEFAULT_NAME}
    result = await submit(hass, flow_id, {"setup_code": QR})
    assert result["step_id"] == "wifi"


@pytest.mark.parametrize(
    ("failure", "error", "kept"),
    [
        (
            DeviceKeyNotFoundError(404, "device_not_found_or_code_wrong", ""),
            {"setup_code": "manual_code_not_accepted"},
            {},
        ),
        (
            RateLimitedError(429, "rate_limited", "", 60),
            {"base": "rate_limited"},
            {"setup_code": MANUAL},
        ),
    ],
)
async def test_a_typed_code_is_kept_unless_the_service_says_it_is_wrong(
    hass: HomeAssistant,
    account: MagicMock,
    failure: Exception,
    error: dict[str, str],
    kept: dict[str, str],
) -> None:
    household_entry(hass)
    account.device_key.side_effect = failure
    flow_id = await to_credentials(hass)
    result = await submit(hass, flow_id, {"setup_code": MANUAL})
    assert result["errors"] == error
    assert suggested(result) == {**kept, "name": DEFAULT_NAME}


async def test_the_code_given_with_the_address_is_kept(
    hass: HomeAssistant, account: MagicMock, device: MagicMock
) -> None:
    """The manual add: address, port and code after a probe error, the code on the next form."""
    household_entry(hass)
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    result = await submit(hass, result["flow_id"], {"next_step_id": "manual_device"})
    info = device.fetch_info.return_value
    device.fetch_info.side_effect = [DeviceConnectionError("refused"), info]
    manual = {"host": "198.51.100.7", "port": 8423, "setup_code": MANUAL}
    result = await submit(hass, result["flow_id"], manual)
    assert result["errors"] == {"base": "cannot_connect"}
    assert suggested(result) == manual
    account.create_claim.side_effect = [AccountConnectionError("down"), claim()]
    result = await submit(hass, result["flow_id"], manual)
    assert (result["step_id"], result["errors"]) == ("credentials", {"base": "account_unreachable"})
    assert suggested(result) == {"setup_code": MANUAL, "name": DEFAULT_NAME}


async def test_the_wifi_form_keeps_what_was_typed(hass: HomeAssistant, link: MagicMock) -> None:
    """Network, hidden name and password survive; only the field in error is cleared."""
    household_entry(hass)
    flow_id = await to_wifi(hass)
    hidden = {"network": "hidden_network", "hidden_ssid": "x" * 33, "passphrase": PASSWORD}
    result = await submit(hass, flow_id, hidden)
    assert result["errors"] == {"hidden_ssid": "invalid_ssid"}
    assert suggested(result) == {"network": "hidden_network", "passphrase": PASSWORD}
    result = await submit(hass, flow_id, {"network": HOME_KEY, "passphrase": "short"})
    assert result["errors"] == {"passphrase": "invalid_passphrase"}
    assert suggested(result) == {"network": HOME_KEY}
    link.status.side_effect = [
        StatusResult(state=DeviceState.PROVISIONING, diagnostic=DiagnosticCode.NO_INTERNET),
        StatusResult(state=DeviceState.PROVISIONING, diagnostic=DiagnosticCode.WIFI_AUTH_FAILED),
        StatusResult(state=DeviceState.COMMITTED),
    ]
    # The device's verdict is not about anything typed: all of it comes back.
    attic = {"network": "hidden_network", "hidden_ssid": "Attic", "passphrase": PASSWORD}
    result = await provision(hass, flow_id, attic)
    assert (result["step_id"], result["errors"]) == ("wifi", {"base": "no_internet"})
    assert suggested(result) == attic
    # The device says the password was rejected: it is cleared, the network stays.
    result = await provision(hass, flow_id, {"network": HOME_KEY, "passphrase": "wrong password"})
    assert (result["step_id"], result["errors"]) == ("wifi", {"base": "wifi_auth_failed"})
    assert suggested(result) == {"network": HOME_KEY}
    result = await provision(hass, flow_id, HOME_WIFI)
    assert result["type"] is FlowResultType.CREATE_ENTRY, result


async def test_a_new_account_service_address_is_kept(
    hass: HomeAssistant, account: MagicMock
) -> None:
    """Reconfigure: the typed address comes back after an error, not the stored one."""
    entry = household_entry(hass)
    result = await entry.start_reconfigure_flow(hass)
    assert suggested(result) == {CONF_ACCOUNT_URL: URL}
    moved = {CONF_ACCOUNT_URL: "https://moved.example", "password": "pw"}
    account.sign_in.side_effect = [AccountConnectionError("down"), account.sign_in.return_value]
    result = await submit(hass, result["flow_id"], moved)
    assert result["errors"] == {"base": "cannot_connect"}
    assert suggested(result) == {CONF_ACCOUNT_URL: "https://moved.example"}
    result = await submit(hass, result["flow_id"], {CONF_ACCOUNT_URL: "http://moved.example"})
    assert result["errors"] == {CONF_ACCOUNT_URL: "invalid_url"}
    assert suggested(result) == {CONF_ACCOUNT_URL: URL}  # the stored one again
    result = await submit(hass, result["flow_id"], moved)
    assert result["reason"] == "reconfigure_successful"


# --- the trust text says where each secret goes ---------------------------------------------------


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.:;])\s+", text) if s.strip()]


def _recipients(secret: str, account: MagicMock, link: MagicMock) -> set[str]:
    """Who got ``secret``: the account service (any client call) or the device (a command)."""
    went = set()
    if any(secret in str(call) for call in account.mock_calls):
        went.add("account service")
    if any(secret in str(call) for call in link.mock_calls):
        went.add("device")
    return went


async def test_the_trust_text_says_where_each_secret_goes(
    hass: HomeAssistant, account: MagicMock, link: MagicMock
) -> None:
    """Each step's text against what the flow really sends (a typed code: the service too)."""
    steps = STRINGS["step"]
    account_password = "account-password-1234"  # noqa: S105 - a test account
    # The first device: sign in inside the flow, a typed code, a Wi-Fi password.
    result = await start_discovery(hass)
    result = await submit(hass, result["flow_id"], {})
    result = await submit(hass, result["flow_id"], {**SIGN_IN, "password": account_password})
    result = await submit(hass, result["flow_id"], {"setup_code": MANUAL})
    result = await provision(hass, result["flow_id"], HOME_WIFI)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    account.device_key.assert_awaited_once_with(HID, DEVICE_ID, MANUAL)
    assert _recipients(account_password, account, link) == {"account service"}
    assert _recipients(MANUAL, account, link) == {"account service"}
    assert _recipients(PASSWORD, account, link) == {"device"}
    link.set_wifi.assert_awaited_with(HOME_NET.ssid, PASSWORD, hidden=False)
    stored = str([e.data for e in hass.config_entries.async_entries(DOMAIN)])
    assert account_password not in stored
    assert PASSWORD not in stored
    # The setup-code step: a typed code goes to the account service, never "nowhere".
    credentials = steps["credentials"]["description"]
    assert "never sent" not in credentials
    typed = [s for s in _sentences(credentials) if "typed code" in s]
    assert typed
    assert all("account service" in s for s in typed), typed
    # What the account step says: e-mail and password to the service; tokens kept, not it.
    assert "e-mail and password go only to this service" in steps["account"]["description"]
    password = steps["account"]["data_description"]["password"]
    assert "keeps sign-in tokens, not the password" in password
    # The Wi-Fi password goes to the device only.
    assert "only to the device" in steps["wifi"]["description"]

    # A later device with its QR code: the code is not sent to the account service.
    account.reset_mock()
    link.reset_mock()
    await hass.config_entries.async_remove(device_entry_of(hass).entry_id)
    flow_id = await to_wifi(hass, QR)
    account.device_key.assert_not_awaited()
    assert _recipients(QR, account, link) == set()
    assert _recipients(SETUP.manual_code().format(), account, link) == set()
    # Only the device's id went there, for its claim.
    account.create_claim.assert_awaited_with(HID, DEVICE_ID)
    qr = [s for s in _sentences(credentials) if "QR" in s]
    assert qr == ["QR text stays in Home Assistant."], qr
    hass.config_entries.flow.async_abort(flow_id)


async def test_the_reconfigure_text_says_the_stored_sign_in_goes_to_the_new_address(
    hass: HomeAssistant, account_cls: MagicMock
) -> None:
    entry = household_entry(hass)
    result = await entry.start_reconfigure_flow(hass)
    moved = {CONF_ACCOUNT_URL: "https://moved.example"}
    result = await submit(hass, result["flow_id"], moved)
    assert result["reason"] == "reconfigure_successful"
    assert account_cls.call_args.args == ("https://moved.example",)
    assert account_cls.call_args.kwargs["tokens"] == TOKENS
    text = STRINGS["step"]["reconfigure_account"]["description"]
    assert "sends its stored sign-in" in text
    assert "to the new address" in text


# --- names: the discovery card, the name field, the entry's title ------------------------------


def card(hass: HomeAssistant) -> str:
    """The text of the discovery card (the flow's ``title_placeholders``)."""
    [flow] = hass.config_entries.flow.async_progress_by_handler(DOMAIN)
    return str(flow["context"]["title_placeholders"]["name"])


async def test_the_discovery_card_shows_the_devices_own_name(hass: HomeAssistant) -> None:
    """A device with a name (device.toml, advertised in TXT) is shown by it; else model + id."""
    await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_ZEROCONF}, data=discovery(name="Kitchen sensor")
    )
    assert card(hass) == "Kitchen sensor"
    [flow] = hass.config_entries.flow.async_progress_by_handler(DOMAIN)
    hass.config_entries.flow.async_abort(flow["flow_id"])
    await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_ZEROCONF}, data=discovery()
    )
    assert card(hass) == f"pi-test {DEVICE_ID[-4:]}"


async def test_the_discovery_card_shows_the_models_name(
    hass: HomeAssistant, account: MagicMock
) -> None:
    """With a household loaded, the account service names the model ("Test sensor")."""
    household_entry(hass).runtime_data = MagicMock(account=account)
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_ZEROCONF}, data=discovery()
    )
    assert card(hass) == DEFAULT_NAME
    # Asked once per flow: the setup-code form's default does not ask again.
    result = await submit(hass, result["flow_id"], {})
    assert suggested(result)["name"] == DEFAULT_NAME
    account.model.assert_awaited_once_with("pi-test")


async def test_the_name_defaults_to_the_devices_own_name(hass: HomeAssistant) -> None:
    """Submitted as offered: the entry (and so the registry device) is named after the device."""
    household_entry(hass)
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_ZEROCONF}, data=discovery(name="Kitchen sensor")
    )
    result = await submit(hass, result["flow_id"], {})
    assert result["step_id"] == "credentials"
    assert suggested(result)["name"] == "Kitchen sensor"
    result = await submit(hass, result["flow_id"], {"setup_code": QR, "name": "Kitchen sensor"})
    result = await provision(hass, result["flow_id"], HOME_WIFI)
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    assert result["title"] == "Kitchen sensor"
    # Not typed: the device's own name (its descriptor's) names the registry device.
    assert DEVICE_NAME not in result["data"]


async def test_the_name_defaults_to_the_models_name_and_the_short_id(
    hass: HomeAssistant, account: MagicMock
) -> None:
    """A device without a name: the model's human name (from the account service) + 4 chars."""
    household_entry(hass)
    flow_id = await to_credentials(hass)
    result = await submit(hass, flow_id, {"setup_code": "nonsense"})  # the form again
    assert suggested(result)["name"] == DEFAULT_NAME
    account.model.assert_awaited_with("pi-test")
    # Left empty: the same default.
    result = await submit(hass, flow_id, {"setup_code": QR})
    result = await provision(hass, result["flow_id"], HOME_WIFI)
    assert result["title"] == DEFAULT_NAME
    assert DEVICE_NAME not in result["data"]


async def test_without_the_models_name_the_model_id_names_the_device(
    hass: HomeAssistant, account: MagicMock
) -> None:
    """The account service cannot say (unknown model, too slow): today's text, no error."""
    household_entry(hass)
    account.model.side_effect = NotFoundError(404, "model_not_found", "no such model")
    flow_id = await to_credentials(hass)
    result = await submit(hass, flow_id, {"setup_code": QR})
    assert result["step_id"] == "wifi"
    result = await provision(hass, flow_id, HOME_WIFI)
    assert result["title"] == f"pi-test {DEVICE_ID[-4:]}"

    never = asyncio.Event()

    async def hangs(model: str) -> Model:
        await never.wait()
        raise AssertionError(model)

    account.model.side_effect = hangs
    with patch.object(onboarding, "MODEL_NAME_TIMEOUT", 0.01):
        flow_id = await to_credentials_of_another_flow(hass)
    result = await submit(hass, flow_id, {"setup_code": "nonsense"})
    assert suggested(result)["name"] == f"pi-test {OTHER_IDENTITY.device_id[-4:]}"


async def test_an_edited_name_names_the_entry(hass: HomeAssistant) -> None:
    household_entry(hass)
    flow_id = await to_credentials(hass)
    result = await submit(hass, flow_id, {"setup_code": QR, "name": "  Porch light "})
    result = await provision(hass, flow_id, HOME_WIFI)
    assert result["title"] == "Porch light"
    assert device_entry_of(hass).data[DEVICE_NAME] == "Porch light"
    # The form is shown again after an error with the name typed.
    flow_id = await to_credentials_of_another_flow(hass)
    result = await submit(hass, flow_id, {"setup_code": "nonsense", "name": "Porch light 2"})
    assert suggested(result)["name"] == "Porch light 2"


async def to_credentials_of_another_flow(hass: HomeAssistant) -> str:
    """A second device's flow, up to the setup-code form."""
    result = await hass.config_entries.flow.async_init(
        DOMAIN,
        context={"source": SOURCE_ZEROCONF},
        data=discovery(device_id=OTHER_IDENTITY.device_id),
    )
    result = await submit(hass, result["flow_id"], {})
    assert result["step_id"] == "credentials", result
    return str(result["flow_id"])


async def test_the_manual_add_takes_a_name_or_the_devices_own(
    hass: HomeAssistant, device: MagicMock
) -> None:
    """The address form has the only form before the commit there: its name field is optional."""
    household_entry(hass)
    device.fetch_info.return_value = dataclasses.replace(
        device.fetch_info.return_value, name="Kitchen sensor"
    )
    manual = {"host": "198.51.100.7", "port": 8423, "setup_code": QR}
    cases: tuple[tuple[dict[str, str], str, str | None], ...] = (
        ({"name": " Shed "}, "Shed", "Shed"),
        ({}, "Kitchen sensor", None),
    )
    for typed, expected, stored in cases:
        result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
        result = await submit(hass, result["flow_id"], {"next_step_id": "manual_device"})
        result = await submit(hass, result["flow_id"], manual | typed)
        result = await provision(hass, result["flow_id"], HOME_WIFI)
        assert (result["type"], result["title"]) == (FlowResultType.CREATE_ENTRY, expected)
        assert device_entry_of(hass).data.get(DEVICE_NAME) == stored


# --- the household's remembered Wi-Fi (opt-in, encrypted; a later device only confirms) -------

REMEMBER = "remember_wifi"
NEW_PASSWORD = "the new one 2026"  # noqa: S105 - the test network


def defaults(result: Mapping[str, Any]) -> dict[str, Any]:
    """What the form preselects: its fields' defaults (what an untouched submit sends)."""
    return {
        str(key.schema): key.default()
        for key in result["data_schema"].schema
        if key.default is not vol.UNDEFINED
    }


async def flushed_config_entries(hass: HomeAssistant, hass_storage: dict[str, Any]) -> str:
    """``.storage/core.config_entries`` as Home Assistant writes it (delayed saves flushed)."""
    hass.bus.async_fire(EVENT_HOMEASSISTANT_FINAL_WRITE)
    await hass.async_block_till_done()
    return json.dumps(hass_storage["core.config_entries"])


async def remember_home_wifi(hass: HomeAssistant, link: MagicMock) -> MockConfigEntry:
    """The household's first device, with the box ticked; its device entry removed again."""
    entry = household_entry(hass)
    flow_id = await to_wifi(hass)
    result = await provision(hass, flow_id, {**HOME_WIFI, REMEMBER: True})
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    await hass.config_entries.async_remove(device_entry_of(hass).entry_id)
    link.reset_mock()
    return entry


async def test_the_wifi_is_remembered_only_when_asked_and_only_encrypted(
    hass: HomeAssistant, hass_storage: dict[str, Any]
) -> None:
    """Off by default; ticked, the entry holds ciphertext and the key lives in another file."""
    entry = household_entry(hass)
    flow_id = await to_wifi(hass)
    result = await submit(hass, flow_id, {"network": HOME_KEY})
    assert result["errors"] == {"passphrase": "passphrase_required"}
    assert defaults(result)[REMEMBER] is False
    result = await provision(hass, flow_id, HOME_WIFI)
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    assert CONF_REMEMBERED_WIFI not in entry.data
    await hass.config_entries.async_remove(device_entry_of(hass).entry_id)

    flow_id = await to_wifi(hass)
    result = await provision(hass, flow_id, {**HOME_WIFI, REMEMBER: True})
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    assert entry.data[CONF_REMEMBERED_WIFI]
    config_entries = await flushed_config_entries(hass, hass_storage)
    for secret in (PASSWORD, "HomeNet", b"HomeNet".hex()):
        assert secret not in json.dumps(dict(entry.data))
        assert secret not in json.dumps(dict(entry.options))
        assert secret not in config_entries
    assert entry.data[CONF_REMEMBERED_WIFI] in config_entries
    # The key is in a file of its own, never next to the ciphertext.
    keys = hass_storage[wifi_memory.STORAGE_KEY]["data"]["keys"]
    assert set(keys) == {HID}
    assert keys[HID] not in config_entries
    assert PASSWORD not in json.dumps(hass_storage[wifi_memory.STORAGE_KEY])


@pytest.mark.parametrize(
    ("scan", "network"),
    [((CAFE, HOME_NET), HOME_KEY), ((CAFE,), onboarding.REMEMBERED_NETWORK)],
    ids=["seen", "not-seen"],
)
async def test_a_later_device_needs_only_its_code_and_one_confirm(
    hass: HomeAssistant,
    link: MagicMock,
    scan: tuple[WifiNetwork, ...],
    network: str,
) -> None:
    """The remembered network is preselected (offered even when the scan missed it)."""
    await remember_home_wifi(hass, link)
    link.scan_wifi.return_value = scan
    flow_id = await to_credentials(hass)
    result = await submit(hass, flow_id, {"setup_code": QR})
    assert result["step_id"] == "wifi"
    assert defaults(result) == {"network": network, REMEMBER: True}
    labels = {
        option["value"]: option["label"]
        for option in result["data_schema"].schema["network"].config["options"]
    }
    assert "HomeNet" in labels[network]
    assert "remembered" in labels[network]
    # Nothing typed; the password never goes back to the browser.
    assert suggested(result) == {}
    assert PASSWORD not in str(result)
    result = await provision(hass, flow_id, {})
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    link.set_wifi.assert_awaited_once_with(b"HomeNet", PASSWORD, hidden=False)


async def test_a_rejected_remembered_password_is_said_and_replaced(
    hass: HomeAssistant, link: MagicMock
) -> None:
    """WIFI_AUTH_FAILED with the remembered password: say so, take the current one, keep it."""
    await remember_home_wifi(hass, link)
    flow_id = await to_wifi(hass)
    link.status.side_effect = [
        StatusResult(state=DeviceState.PROVISIONING, diagnostic=DiagnosticCode.WIFI_AUTH_FAILED),
        StatusResult(state=DeviceState.COMMITTED),
    ]
    result = await provision(hass, flow_id, {})
    assert (result["step_id"], result["errors"]) == ("wifi", {"base": "remembered_wifi_rejected"})
    assert "type the current one" in STRINGS["error"]["remembered_wifi_rejected"]
    assert defaults(result) == {"network": HOME_KEY, REMEMBER: True}
    link.set_wifi.assert_awaited_once_with(b"HomeNet", PASSWORD, hidden=False)
    # The rejected password is not tried again.
    result = await submit(hass, flow_id, {})
    assert result["errors"] == {"passphrase": "passphrase_required"}
    result = await provision(hass, flow_id, {"network": HOME_KEY, "passphrase": NEW_PASSWORD})
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    link.set_wifi.assert_awaited_with(b"HomeNet", NEW_PASSWORD, hidden=False)

    # The box stayed ticked: the next device gets the current password.
    await hass.config_entries.async_remove(device_entry_of(hass).entry_id)
    link.reset_mock()
    link.status.side_effect = None
    flow_id = await to_wifi(hass)
    result = await provision(hass, flow_id, {})
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    link.set_wifi.assert_awaited_once_with(b"HomeNet", NEW_PASSWORD, hidden=False)


async def test_an_unticked_box_leaves_the_remembered_wifi_as_it_is(
    hass: HomeAssistant, link: MagicMock
) -> None:
    """Another network without the box: the remembered one stays for the next device."""
    await remember_home_wifi(hass, link)
    flow_id = await to_wifi(hass)
    result = await provision(hass, flow_id, {"network": CAFE_KEY, REMEMBER: False})
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    await hass.config_entries.async_remove(device_entry_of(hass).entry_id)
    flow_id = await to_wifi(hass)
    result = await provision(hass, flow_id, {})
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    link.set_wifi.assert_awaited_with(b"HomeNet", PASSWORD, hidden=False)


async def test_a_remembered_wifi_without_its_key_is_not_offered(
    hass: HomeAssistant, caplog: pytest.LogCaptureFixture
) -> None:
    """The entry came without the key file (another Home Assistant): type the password."""
    sealed = wifi_memory.seal(
        wifi_memory.new_key(), HID, wifi_memory.RememberedWifi(b"HomeNet", PASSWORD, hidden=False)
    )
    entry = household_entry(hass)
    hass.config_entries.async_update_entry(entry, data={**entry.data, CONF_REMEMBERED_WIFI: sealed})
    flow_id = await to_wifi(hass)
    result = await submit(hass, flow_id, {"network": HOME_KEY})
    assert result["errors"] == {"passphrase": "passphrase_required"}
    assert defaults(result)[REMEMBER] is False
    assert "remembered Wi-Fi of Home cannot be read" in caplog.text
    assert PASSWORD not in caplog.text


async def test_removing_the_household_destroys_its_wifi_key(
    hass: HomeAssistant, link: MagicMock, hass_storage: dict[str, Any]
) -> None:
    entry = await remember_home_wifi(hass, link)
    await hass.config_entries.async_remove(entry.entry_id)
    await hass.async_block_till_done()
    assert hass_storage[wifi_memory.STORAGE_KEY]["data"]["keys"] == {}


def test_the_wifi_trust_text_says_a_remembered_password_is_kept_encrypted() -> None:
    step = STRINGS["step"]["wifi"]
    assert "only to the device" in step["description"]
    # Said once, where the switch is: kept, encrypted, for the household's next devices.
    remember = step["data_description"][REMEMBER]
    assert "encrypted in Home Assistant" in remember
    kept = [s for s in _sentences(step["description"]) if "kept" in s or "box" in s]
    assert all("encrypted in Home Assistant" in s for s in kept), kept
    assert "{household}" in remember
    assert "remembered" in step["data_description"]["passphrase"]


async def test_the_first_device_of_a_new_household_can_remember_the_wifi(
    hass: HomeAssistant,
) -> None:
    """Signed in inside the flow: the household entry created with the device remembers it."""
    result = await start_discovery(hass)
    result = await submit(hass, result["flow_id"], {})
    result = await submit(hass, result["flow_id"], SIGN_IN)
    result = await submit(hass, result["flow_id"], {"setup_code": QR})
    assert result["step_id"] == "wifi"
    assert defaults(result)[REMEMBER] is False
    placeholders = result["description_placeholders"]
    assert placeholders is not None
    assert placeholders["household"] == "Home"
    result = await provision(hass, result["flow_id"], {**HOME_WIFI, REMEMBER: True})
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    household = [e for e in hass.config_entries.async_entries(DOMAIN) if e.unique_id == HID]
    assert await wifi_memory.async_recall(hass, household[0]) == wifi_memory.RememberedWifi(
        b"HomeNet", PASSWORD, hidden=False
    )


async def test_a_rejected_remembered_network_the_device_did_not_see(
    hass: HomeAssistant, link: MagicMock
) -> None:
    """The remembered network stays offered; after the rejection it needs a typed password."""
    await remember_home_wifi(hass, link)
    link.scan_wifi.return_value = (CAFE,)
    flow_id = await to_wifi(hass)
    link.status.side_effect = [
        StatusResult(state=DeviceState.PROVISIONING, diagnostic=DiagnosticCode.WIFI_AUTH_FAILED),
        StatusResult(state=DeviceState.COMMITTED),
    ]
    result = await provision(hass, flow_id, {})
    assert result["errors"] == {"base": "remembered_wifi_rejected"}
    result = await submit(hass, flow_id, {})
    assert result["errors"] == {"passphrase": "passphrase_required"}
    result = await provision(
        hass, flow_id, {"network": "remembered_network", "passphrase": NEW_PASSWORD}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    link.set_wifi.assert_awaited_with(b"HomeNet", NEW_PASSWORD, hidden=False)


# --- fewer forms: the setup code on the discovery's first screen (issue 15 items 2, 3, 10) ----

OTHER_WIFI = "other_wifi"


def fields(result: Mapping[str, Any]) -> list[str]:
    """The form's field names, in order."""
    return [str(key.schema) for key in result["data_schema"].schema]


async def test_a_later_device_is_one_form_when_the_remembered_network_is_seen(
    hass: HomeAssistant, link: MagicMock
) -> None:
    """Code on the discovery's screen, the remembered network seen: no other form."""
    await remember_home_wifi(hass, link)
    result = await start_discovery(hass)
    assert fields(result) == ["setup_code", "name", OTHER_WIFI]
    assert defaults(result) == {OTHER_WIFI: False}
    assert suggested(result) == {"name": DEFAULT_NAME}
    # The trust text of the skipped Wi-Fi form is said where the choice is made.
    placeholders = result["description_placeholders"]
    assert placeholders is not None
    assert placeholders["wifi"] == "HomeNet"
    step = STRINGS["step"]["discovery_confirm"]
    help_text = step["data_description"][OTHER_WIFI]
    assert "{wifi}" in help_text
    assert "only to the device" in help_text
    # As on the code form: a typed code goes to the account service, a QR code stays here.
    typed = [s for s in _sentences(step["description"]) if "typed code" in s]
    assert typed
    assert all("account service" in s for s in typed), typed
    assert "QR text stays in Home Assistant." in _sentences(step["description"])
    result = await provision(hass, result["flow_id"], {"setup_code": QR, "name": DEFAULT_NAME})
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    assert result["title"] == DEFAULT_NAME
    link.set_wifi.assert_awaited_once_with(b"HomeNet", PASSWORD, hidden=False)


async def test_a_later_device_can_choose_another_network(
    hass: HomeAssistant, link: MagicMock
) -> None:
    """Another network chosen on the first screen: the Wi-Fi form, the remembered one first."""
    await remember_home_wifi(hass, link)
    result = await start_discovery(hass)
    result = await submit(hass, result["flow_id"], {"setup_code": QR, OTHER_WIFI: True})
    assert result["step_id"] == "wifi", result
    assert defaults(result) == {"network": HOME_KEY, REMEMBER: True}
    result = await provision(hass, result["flow_id"], {"network": CAFE_KEY, REMEMBER: False})
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    link.set_wifi.assert_awaited_once_with(CAFE.ssid, None, hidden=False)


async def test_a_later_device_whose_scan_misses_the_remembered_network_shows_the_wifi_form(
    hass: HomeAssistant, link: MagicMock
) -> None:
    await remember_home_wifi(hass, link)
    link.scan_wifi.return_value = (CAFE,)
    result = await start_discovery(hass)
    result = await submit(hass, result["flow_id"], {"setup_code": QR})
    assert result["step_id"] == "wifi", result
    assert defaults(result) == {"network": onboarding.REMEMBERED_NETWORK, REMEMBER: True}
    link.set_wifi.assert_not_awaited()


async def test_a_rejected_remembered_password_after_the_one_form_flow(
    hass: HomeAssistant, link: MagicMock
) -> None:
    """The skipped Wi-Fi form comes back with the reason, the remembered network chosen."""
    await remember_home_wifi(hass, link)
    link.status.side_effect = [
        StatusResult(state=DeviceState.PROVISIONING, diagnostic=DiagnosticCode.WIFI_AUTH_FAILED),
        StatusResult(state=DeviceState.COMMITTED),
    ]
    result = await start_discovery(hass)
    result = await provision(hass, result["flow_id"], {"setup_code": QR})
    assert (result["step_id"], result["errors"]) == ("wifi", {"base": "remembered_wifi_rejected"})
    assert suggested(result) == {"network": HOME_KEY}
    result = await provision(hass, result["flow_id"], {"network": HOME_KEY, "passphrase": PASSWORD})
    assert result["type"] is FlowResultType.CREATE_ENTRY, result


@pytest.mark.parametrize(
    ("code", "error"),
    [("12345-67891", "setup_code_typo"), (OTHER_QR, "qr_other_device")],
    ids=["typo", "other_device"],
)
async def test_a_wrong_code_on_the_first_screen_clears_only_the_code(
    hass: HomeAssistant, link: MagicMock, device: MagicMock, code: str, error: str
) -> None:
    await remember_home_wifi(hass, link)
    device.connect.reset_mock()
    result = await start_discovery(hass)
    typed = {"setup_code": code, "name": "Kitchen sensor", OTHER_WIFI: True}
    result = await submit(hass, result["flow_id"], typed)
    assert (result["step_id"], result["errors"]) == ("discovery_confirm", {"setup_code": error})
    assert suggested(result) == {"name": "Kitchen sensor", OTHER_WIFI: True}
    device.connect.assert_not_awaited()
    result = await submit(hass, result["flow_id"], {**typed, "setup_code": QR})
    assert result["step_id"] == "wifi", result
    result = await provision(hass, result["flow_id"], HOME_WIFI)
    assert (result["type"], result["title"]) == (FlowResultType.CREATE_ENTRY, "Kitchen sensor")


async def test_the_first_device_needs_two_forms_before_the_wifi(
    hass: HomeAssistant, device: MagicMock
) -> None:
    """Code and name on the discovery's screen, then the one sign-in form, then the Wi-Fi."""
    result = await start_discovery(hass)
    assert fields(result) == ["setup_code", "name"]  # no remembered Wi-Fi without a household
    forms = [result["step_id"]]
    result = await submit(hass, result["flow_id"], {"setup_code": MANUAL, "name": "Hall"})
    forms.append(result["step_id"])
    result = await submit(hass, result["flow_id"], SIGN_IN)
    assert result["step_id"] == "wifi", result
    assert forms == ["discovery_confirm", "account"]
    result = await provision(hass, result["flow_id"], HOME_WIFI)
    assert (result["type"], result["title"]) == (FlowResultType.CREATE_ENTRY, "Hall")
    assert device.connect.call_args.kwargs["device_public_key"] == IDENTITY.public_key


async def test_a_wrong_first_device_code_is_asked_again_after_the_sign_in(
    hass: HomeAssistant, device: MagicMock
) -> None:
    """Checked once signed in: the code form, the typed name kept, only the code cleared."""
    device.connect.side_effect = [
        SetupCodeRejectedError("no"),
        device.connect.return_value,
    ]
    result = await start_discovery(hass)
    result = await submit(hass, result["flow_id"], {"setup_code": QR, "name": "Hall"})
    result = await submit(hass, result["flow_id"], SIGN_IN)
    assert (result["step_id"], result["errors"]) == (
        "credentials",
        {"setup_code": "wrong_setup_code"},
    )
    assert suggested(result) == {"name": "Hall"}
    result = await submit(hass, result["flow_id"], {"setup_code": QR, "name": "Hall"})
    assert result["step_id"] == "wifi", result


async def test_the_first_screen_without_a_code_asks_for_it_later(hass: HomeAssistant) -> None:
    """The code is optional there (a QR code read later): the code form follows the sign-in."""
    household_entry(hass)
    result = await start_discovery(hass)
    result = await submit(hass, result["flow_id"], {"name": "Hall"})
    assert result["step_id"] == "credentials", result
    assert suggested(result) == {"name": "Hall"}


@pytest.mark.parametrize(
    "damage",
    ["another key", "another household", "tampered", "not base64"],
)
def test_a_sealed_wifi_opens_only_with_its_key_for_its_household(damage: str) -> None:
    key = wifi_memory.new_key()
    wifi = wifi_memory.RememberedWifi(b"HomeNet", PASSWORD, hidden=True)
    sealed = wifi_memory.seal(key, HID, wifi)
    assert wifi_memory.unseal(key, HID, sealed) == wifi
    assert PASSWORD not in repr(wifi)
    household = OTHER_HID if damage == "another household" else HID
    if damage == "another key":
        key = wifi_memory.new_key()
    elif damage == "tampered":
        sealed = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    elif damage == "not base64":
        sealed = "*" + sealed
    with pytest.raises(wifi_memory.WifiMemoryError):
        wifi_memory.unseal(key, household, sealed)


# --- the add-on (Home Assistant OS): the Supervisor's discovery -----------------------------

ADDON_URL = "http://2f5a1c3e-iot-onboard-relay:8080"
ADDON_TOKEN = "t" * 43


def redeemable(hass: HomeAssistant, account: MagicMock) -> None:
    """The add-on's service answers the redemption with a new household (HA is "Our home")."""
    hass.config.location_name = "Our home"
    account.base_url = ADDON_URL
    account.redeem_provisioning.return_value = (SignedIn(account=ACCOUNT, tokens=TOKENS), HOME)


def addon_discovery(**config: Any) -> HassioServiceInfo:
    """What the Supervisor hands the flow for the add-on's ``POST /discovery``."""
    return HassioServiceInfo(
        config={"url": ADDON_URL, "token": ADDON_TOKEN, **config},
        name="IoT Onboard account service",
        slug="2f5a1c3e_iot_onboard_relay",
        uuid="0123456789abcdef0123456789abcdef",
    )


async def test_the_addon_links_a_new_household_after_one_confirm(
    hass: HomeAssistant, account: MagicMock, account_cls: MagicMock
) -> None:
    redeemable(hass, account)
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_HASSIO}, data=addon_discovery()
    )
    assert (result["type"], result["step_id"]) == (FlowResultType.FORM, "hassio_confirm")
    assert result["description_placeholders"] == {
        "addon": "IoT Onboard account service",
        "url": ADDON_URL,
    }
    account.redeem_provisioning.assert_not_called()  # nothing is spent before the confirm
    # The service is still starting: the confirm says so and can be tried again.
    account.redeem_provisioning.side_effect = [AccountConnectionError("refused"), None]
    result = await submit(hass, result["flow_id"], {})
    assert result["errors"] == {"base": "addon_unreachable"}
    account.redeem_provisioning.side_effect = None
    result = await submit(hass, result["flow_id"], {})
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == "Home"
    assert result["result"].unique_id == HID
    assert result["data"][CONF_ACCOUNT_URL] == ADDON_URL
    assert result["data"][CONF_HOUSEHOLD_ID] == HID
    account_cls.assert_called_with(ADDON_URL, session=ANY)
    account.redeem_provisioning.assert_called_with(ADDON_TOKEN, "Our home")
    account.sign_in.assert_not_called()


async def test_a_spent_addon_token_ends_with_the_next_step(
    hass: HomeAssistant, account: MagicMock
) -> None:
    account.redeem_provisioning.side_effect = ProvisioningTokenInvalidError(
        401, "provisioning_token_invalid", ""
    )
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_HASSIO}, data=addon_discovery()
    )
    result = await submit(hass, result["flow_id"], {})
    assert (result["type"], result["reason"]) == (FlowResultType.ABORT, "addon_token_invalid")
    assert "Restart the IoT Onboard add-on" in STRINGS["abort"]["addon_token_invalid"]


@pytest.mark.parametrize(
    "config",
    [
        {"url": "ftp://x"},
        {"url": "http://user@host:8080"},
        {"url": "http://[::1"},
        {"url": 5},
        {"token": ""},
        {"token": 1},
    ],
)
async def test_a_malformed_addon_announcement_is_refused(
    hass: HomeAssistant, account: MagicMock, config: dict[str, Any]
) -> None:
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_HASSIO}, data=addon_discovery(**config)
    )
    assert (result["type"], result["reason"]) == (FlowResultType.ABORT, "invalid_discovery_info")
    account.redeem_provisioning.assert_not_called()


async def test_an_addon_already_linked_is_not_offered_again(
    hass: HomeAssistant, account: MagicMock
) -> None:
    entry = household_entry(hass)
    hass.config_entries.async_update_entry(entry, data={**entry.data, CONF_ACCOUNT_URL: ADDON_URL})
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_HASSIO}, data=addon_discovery()
    )
    assert (result["type"], result["reason"]) == (FlowResultType.ABORT, "already_configured")
    account.redeem_provisioning.assert_not_called()


# --- installing the add-on from the integration (Home Assistant OS) -------------------------


@dataclasses.dataclass
class Supervisor:
    """The Supervisor as the add-on setup sees it: its store client and the add-on's manager."""

    client: MagicMock
    manager: MagicMock


@pytest.fixture
def supervisor() -> Generator[Supervisor]:
    """Home Assistant OS with a mocked Supervisor (as core's matter and zwave_js tests do)."""
    client = MagicMock()
    client.store.repositories_list = AsyncMock(return_value=[])
    client.store.add_repository = AsyncMock()
    manager = create_autospec(AddonManager, instance=True)
    manager.async_get_addon_info.side_effect = [
        addon_info(AddonState.NOT_INSTALLED),
        addon_info(AddonState.NOT_RUNNING),
    ]
    # Started: it announces itself once its service answers (the first look finds nothing).
    manager.async_get_addon_discovery_info.side_effect = [
        AddonError("not yet"),
        {"url": ADDON_URL, "token": ADDON_TOKEN},
    ]
    with (
        patch("custom_components.iot_onboard.config_flow.is_hassio", return_value=True),
        patch("custom_components.iot_onboard.addon.get_supervisor_client", return_value=client),
        patch("custom_components.iot_onboard.addon.get_addon_manager", return_value=manager),
        patch("custom_components.iot_onboard.addon.ANNOUNCE_POLL", 0),
    ):
        yield Supervisor(client, manager)


def addon_info(state: AddonState) -> AddonInfo:
    return AddonInfo(
        available=True,
        hostname=None,
        options={},
        state=state,
        update_available=False,
        version=None,
    )


async def install_addon(hass: HomeAssistant) -> Any:
    """The user's path on Home Assistant OS: Add integration → the add-on; its outcome."""
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    assert result["type"] is FlowResultType.MENU
    assert result["menu_options"] == ["install_addon", "account"]
    result = await submit(hass, result["flow_id"], {"next_step_id": "install_addon"})
    assert result["type"] is FlowResultType.SHOW_PROGRESS
    assert result["progress_action"] == "install_addon"
    await hass.async_block_till_done()
    return await submit(hass, result["flow_id"])


async def test_the_addon_is_installed_started_and_linked_with_nothing_typed(
    hass: HomeAssistant, account: MagicMock, supervisor: Supervisor
) -> None:
    redeemable(hass, account)
    result = await install_addon(hass)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"][CONF_ACCOUNT_URL] == ADDON_URL
    assert result["data"][CONF_HOUSEHOLD_ID] == HID
    supervisor.client.store.add_repository.assert_awaited_once()
    (options,) = supervisor.client.store.add_repository.await_args.args
    assert options.repository == "https://github.com/iot-onboard/iot-onboard"
    supervisor.manager.async_install_addon.assert_awaited_once()
    supervisor.manager.async_start_addon.assert_awaited_once()
    account.redeem_provisioning.assert_awaited_once_with(ADDON_TOKEN, "Our home")
    account.sign_in.assert_not_called()


async def test_an_installed_running_addon_is_only_linked(
    hass: HomeAssistant, account: MagicMock, supervisor: Supervisor
) -> None:
    repository = MagicMock(source="https://github.com/iot-onboard/iot-onboard")
    supervisor.client.store.repositories_list.return_value = [repository]
    supervisor.manager.async_get_addon_info.side_effect = [addon_info(AddonState.RUNNING)]
    supervisor.manager.async_get_addon_discovery_info.side_effect = [
        {"url": ADDON_URL, "token": ADDON_TOKEN}
    ]
    account.redeem_provisioning.return_value = (SignedIn(account=ACCOUNT, tokens=TOKENS), HOME)
    result = await install_addon(hass)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    supervisor.client.store.add_repository.assert_not_awaited()
    supervisor.manager.async_install_addon.assert_not_awaited()
    supervisor.manager.async_start_addon.assert_not_awaited()


async def test_a_failed_install_names_the_add_on_log(
    hass: HomeAssistant, account: MagicMock, supervisor: Supervisor
) -> None:
    supervisor.manager.async_install_addon.side_effect = AddonError("no space left")
    result = await install_addon(hass)
    assert (result["type"], result["reason"]) == (FlowResultType.ABORT, "addon_install_failed")
    assert "its log" in STRINGS["abort"]["addon_install_failed"]
    account.redeem_provisioning.assert_not_called()


@pytest.mark.usefixtures("account")
async def test_an_addon_that_never_announces_ends_with_its_log(
    hass: HomeAssistant, supervisor: Supervisor
) -> None:
    supervisor.manager.async_get_addon_discovery_info.side_effect = AddonError("not yet")
    with patch("custom_components.iot_onboard.addon.ANNOUNCE_TIMEOUT", 0.05):
        result = await install_addon(hass)
    assert (result["type"], result["reason"]) == (FlowResultType.ABORT, "addon_not_announced")


@pytest.mark.usefixtures("supervisor")
async def test_a_started_addon_not_answering_yet_is_retried_in_place(
    hass: HomeAssistant, account: MagicMock
) -> None:
    account.redeem_provisioning.side_effect = [
        AccountConnectionError("refused"),
        (SignedIn(account=ACCOUNT, tokens=TOKENS), HOME),
    ]
    result = await install_addon(hass)
    assert (result["step_id"], result["errors"]) == (
        "hassio_confirm",
        {"base": "addon_unreachable"},
    )
    result = await submit(hass, result["flow_id"], {})
    assert result["type"] is FlowResultType.CREATE_ENTRY


@pytest.mark.usefixtures("supervisor")
async def test_the_addons_own_card_goes_once_the_flow_linked_it(
    hass: HomeAssistant, account: MagicMock
) -> None:
    """The started add-on's discovery card would redeem a spent token: it is taken away."""
    card = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_HASSIO}, data=addon_discovery()
    )
    assert card["step_id"] == "hassio_confirm"
    account.redeem_provisioning.return_value = (SignedIn(account=ACCOUNT, tokens=TOKENS), HOME)
    result = await install_addon(hass)
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert [flow["flow_id"] for flow in hass.config_entries.flow.async_progress()] == []
    account.redeem_provisioning.assert_awaited_once()


async def test_without_the_supervisor_the_account_form_comes_first(hass: HomeAssistant) -> None:
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    assert (result["type"], result["step_id"]) == (FlowResultType.FORM, "account")


def household_hub(hass: HomeAssistant, account: MagicMock) -> tuple[MqttHub, IotOnboardCoordinator]:
    """The household entry with its runtime's coordinator and hub (set up, not connected: a
    test hands it the broker's messages)."""
    entry = household_entry(hass)
    coordinator = IotOnboardCoordinator(hass, entry, account, MagicMock())
    hub = MqttHub(
        HubCredentials(
            host="192.0.2.1",
            port=1883,
            tls=False,
            username=f"hub-{HID}",
            password="hub-pass-1",  # noqa: S106 - never used: nothing connects
        ),
        coordinator,
        credentials_provider=AsyncMock(),
        client_id=f"hub-{HID}",
    )
    coordinator._hub = hub
    entry.runtime_data = MagicMock(account=account, coordinator=coordinator)
    return hub, coordinator


async def test_the_flow_ends_when_the_running_hub_sees_the_device_online(
    hass: HomeAssistant, account: MagicMock, link: MagicMock
) -> None:
    """Issue 15: the household's hub (running) hears the device's retained availability
    "online"; the flow asks the claim then and ends, owned by this household, without another
    poll of the device (which answers no status after committing)."""
    hub, coordinator = household_hub(hass, account)
    flow_id = await to_wifi(hass)
    silent: asyncio.Future[StatusResult] = hass.loop.create_future()

    async def online_then_silent(*, wait: int = 0) -> StatusResult:
        del wait
        hub._dispatch(f"iob/{DEVICE_ID}/availability", b"online")  # as the broker delivers it
        return await silent  # the device answers no more

    link.status.side_effect = online_then_silent
    account.claim_status.side_effect = [
        claim_status(ClaimState.PENDING),  # reuse check before set_claim
        claim_status(ClaimState.OWNED),  # asked once the hub saw the device online
    ]
    try:
        async with asyncio.timeout(10):  # a bound: the commit's own is 180 s + the margin
            result = await provision(hass, flow_id, HOME_WIFI)
    finally:
        silent.cancel()
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    assert link.status.await_count == 1
    assert coordinator._listeners[DEVICE_ID] == []  # the flow stopped listening


async def test_the_device_online_at_the_hub_with_its_claim_pending_is_not_done(
    hass: HomeAssistant, account: MagicMock, link: MagicMock
) -> None:
    """Online at the hub but the claim not owned yet: the flow waits for the device's verdict
    (availability never decides; the claim of this household does)."""
    hub, _ = household_hub(hass, account)
    flow_id = await to_wifi(hass)
    answers = [
        StatusResult(state=DeviceState.PROVISIONING, diagnostic=DiagnosticCode.WIFI_AUTH_FAILED),
        StatusResult(state=DeviceState.COMMITTING),
    ]

    async def online_then_rolled_back(*, wait: int = 0) -> StatusResult:
        del wait
        hub._dispatch(f"iob/{DEVICE_ID}/availability", b"online")
        await asyncio.sleep(0.05)  # the flow asks the claim meanwhile: still pending
        return answers.pop()

    link.status.side_effect = online_then_rolled_back
    result = await provision(hass, flow_id, HOME_WIFI)
    assert result["errors"] == {"base": "wifi_auth_failed"}
    assert link.status.await_count == 2


# --- joining by the router's WPS push button (a device that names "wps", over the LAN) --------

WPS = "wps"
#: The Wi-Fi form with WPS chosen for HomeNet (WPA2).
WPS_JOIN = {"network": HOME_KEY, WPS: True}


async def wifi_form(hass: HomeAssistant) -> Any:
    """The Wi-Fi form of a discovered device, as first shown."""
    flow_id = await to_credentials(hass)
    result = await submit(hass, flow_id, {"setup_code": QR})
    assert result["step_id"] == "wifi", result
    return result


@pytest.fixture
def wps_link(link: MagicMock) -> MagicMock:
    """A device reached over the LAN that names ``wps`` when the handshake finishes."""
    link.supports_wps = True
    return link


async def test_wps_is_not_offered_to_an_older_device(hass: HomeAssistant, link: MagicMock) -> None:
    household_entry(hass)
    result = await wifi_form(hass)
    assert WPS not in fields(result)
    assert {"network", "passphrase"} <= set(fields(result))
    with pytest.raises(InvalidData):  # nor accepted behind the form's back
        await submit(hass, result["flow_id"], WPS_JOIN)
    link.set_wifi.assert_not_awaited()


@pytest.mark.usefixtures("wps_link")
async def test_wps_is_offered_to_a_device_that_names_it(hass: HomeAssistant) -> None:
    household_entry(hass)
    result = await wifi_form(hass)
    assert WPS in fields(result)
    assert defaults(result)[WPS] is False  # the password stays the default way
    # Required is only the network: the password may be left out for WPS.
    required = {
        str(key.schema) for key in result["data_schema"].schema if isinstance(key, vol.Required)
    }
    assert required == {"network"}


@pytest.mark.usefixtures("account")
async def test_a_wps_join_sends_no_password_and_onboards_the_device(
    hass: HomeAssistant, wps_link: MagicMock
) -> None:
    """WPS chosen: the step that says what to press, then the usual commit with ``wps``."""
    entry = household_entry(hass)
    result = await wifi_form(hass)
    flow_id = result["flow_id"]
    # A password typed all the same is neither sent nor kept: the router hands the key over.
    result = await submit(hass, flow_id, {**WPS_JOIN, "passphrase": PASSWORD, REMEMBER: True})
    assert result["type"] is FlowResultType.FORM, result
    assert (result["step_id"], result["errors"]) == ("wps", {})
    assert fields(result) == ["use_passphrase"]
    wps_link.set_wifi.assert_not_awaited()  # nothing is sent before the button is pressed
    result = await provision(hass, flow_id, {})
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    wps_link.set_wifi.assert_awaited_once_with(b"HomeNet", None, wps=True)
    wps_link.set_claim.assert_awaited_once()
    wps_link.commit.assert_awaited_once()
    assert DEVICE_ID in records(hass, entry)
    # The box was ticked, but HA never had this network's password: nothing is remembered.
    assert CONF_REMEMBERED_WIFI not in entry.data
    assert PASSWORD not in str(hass.config_entries.flow.async_progress())


async def test_a_wps_join_neither_uses_nor_replaces_the_remembered_wifi(
    hass: HomeAssistant, wps_link: MagicMock
) -> None:
    entry = await remember_home_wifi(hass, wps_link)
    remembered = entry.data[CONF_REMEMBERED_WIFI]
    result = await wifi_form(hass)
    assert defaults(result) == {"network": HOME_KEY, WPS: False, REMEMBER: True}
    result = await submit(hass, result["flow_id"], WPS_JOIN)
    assert result["step_id"] == "wps"
    result = await provision(hass, result["flow_id"], {})
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    # Not the remembered password: the router's key.
    wps_link.set_wifi.assert_awaited_once_with(b"HomeNet", None, wps=True)
    assert entry.data[CONF_REMEMBERED_WIFI] == remembered
    recalled = await wifi_memory.async_recall(hass, entry)
    assert recalled is not None
    assert recalled.passphrase == PASSWORD


@pytest.mark.parametrize(
    ("wifi", "error"),
    [
        ({"network": CAFE_KEY}, {"base": "wps_not_possible"}),  # open: no key to hand over
        ({"network": "hidden_network", "hidden_ssid": "Attic"}, {"base": "wps_not_possible"}),
        ({"network": "keep_ethernet"}, {"base": "wps_not_possible"}),
        ({"network": OLD_KEY}, {"network": "unsupported_security"}),  # WEP
    ],
    ids=["open", "hidden", "ethernet", "wep"],
)
async def test_wps_only_for_a_secured_network_the_device_sees(
    hass: HomeAssistant, wps_link: MagicMock, wifi: dict[str, Any], error: dict[str, str]
) -> None:
    household_entry(hass)
    result = await wifi_form(hass)
    result = await submit(hass, result["flow_id"], {**wifi, WPS: True})
    assert (result["step_id"], result["errors"]) == ("wifi", error)
    assert suggested(result)[WPS] is True  # the choice is kept: pick another network
    wps_link.set_wifi.assert_not_awaited()


@pytest.mark.usefixtures("account")
async def test_wps_failed_is_shown_on_the_wps_step_then_pressed_again(
    hass: HomeAssistant, wps_link: MagicMock
) -> None:
    """The router handed over no key: its cause and next step, WPS still chosen; retried."""
    entry = household_entry(hass)
    wps_link.status.side_effect = [
        StatusResult(state=DeviceState.COMMITTING),
        StatusResult(state=DeviceState.PROVISIONING, diagnostic=DiagnosticCode.WPS_FAILED),
        StatusResult(state=DeviceState.COMMITTED),
    ]
    result = await wifi_form(hass)
    flow_id = result["flow_id"]
    result = await submit(hass, flow_id, WPS_JOIN)
    result = await provision(hass, flow_id, {})
    assert result["type"] is FlowResultType.FORM, result
    assert (result["step_id"], result["errors"]) == ("wps", {"base": "wps_failed"})
    text = STRINGS["error"]["wps_failed"]
    assert DiagnosticCode.WPS_FAILED.message in text
    assert DiagnosticCode.WPS_FAILED.next_step in text
    # Pressed again, submitted again: the same network by WPS, in the same session.
    result = await provision(hass, flow_id, {})
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    assert wps_link.set_wifi.await_args_list == [call(b"HomeNet", None, wps=True)] * 2
    assert DEVICE_ID in records(hass, entry)


@pytest.mark.usefixtures("account")
async def test_after_wps_failed_the_password_can_be_typed_instead(
    hass: HomeAssistant, wps_link: MagicMock
) -> None:
    household_entry(hass)
    wps_link.status.side_effect = [
        StatusResult(state=DeviceState.PROVISIONING, diagnostic=DiagnosticCode.WPS_FAILED),
        StatusResult(state=DeviceState.COMMITTED),
    ]
    result = await wifi_form(hass)
    flow_id = result["flow_id"]
    await submit(hass, flow_id, WPS_JOIN)
    result = await provision(hass, flow_id, {})
    assert result["errors"] == {"base": "wps_failed"}
    result = await submit(hass, flow_id, {"use_passphrase": True})
    # Back on the Wi-Fi form: the same network, WPS no longer chosen, no error left.
    assert (result["step_id"], result["errors"]) == ("wifi", {})
    assert suggested(result) == {"network": HOME_KEY, WPS: False}
    result = await submit(hass, flow_id, {"network": HOME_KEY, WPS: False})
    assert result["errors"] == {"passphrase": "passphrase_required"}
    result = await provision(hass, flow_id, HOME_WIFI)
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    wps_link.set_wifi.assert_awaited_with(b"HomeNet", PASSWORD, hidden=False)


@pytest.mark.usefixtures("account")
async def test_another_failure_of_a_wps_join_is_shown_on_the_wifi_form(
    hass: HomeAssistant, wps_link: MagicMock
) -> None:
    """Not the router's WPS: the Wi-Fi form with its cause, WPS still chosen there."""
    household_entry(hass)
    wps_link.status.side_effect = [
        StatusResult(state=DeviceState.PROVISIONING, diagnostic=DiagnosticCode.DHCP_TIMEOUT),
    ]
    result = await wifi_form(hass)
    flow_id = result["flow_id"]
    await submit(hass, flow_id, WPS_JOIN)
    result = await provision(hass, flow_id, {})
    assert (result["step_id"], result["errors"]) == ("wifi", {"base": "dhcp_timeout"})
    assert suggested(result) == WPS_JOIN


def test_the_wps_step_says_what_to_press_and_where_the_key_goes() -> None:
    step = STRINGS["step"]["wps"]
    assert (
        "Press the WPS button on your router (it usually blinks), then select Submit within "
        "two minutes." in step["description"]
    )
    assert "the key goes from the router to the device" in step["description"]
    assert "Home Assistant never sees it" in step["description"]
    wifi = STRINGS["step"]["wifi"]
    assert WPS in wifi["data"]
    assert "none is remembered" in wifi["data_description"][WPS]
