"""Onboarding end to end: a real device agent, a real account service, a real Mosquitto.

The device (``python -m device_firmware run``, simulated Wi-Fi with HomeNet and an open café
network) and the account service (``python -m cloud_relay serve`` on SQLite, administering the
test's Mosquitto through dynamic security) run as subprocesses on 127.0.0.1
(tests/integration/onboarding_services.py), stopped by pid.

* Discovery: the zeroconf record is built from the device's own advertisement data (its
  ``/iob/v1/info`` carries the TXT record's fields; nothing multicasts). The user signs up
  inside the discovery flow, creates the household, pastes the QR code, chooses HomeNet with a
  wrong password (WIFI_AUTH_FAILED is shown, the device rolls back), retries with the right one,
  and the household entry is created with the device in it and loads. Then the button opens
  the claimed device's window for its owner, and the reconfigure flow moves it to the café
  network with the owner secret alone.
* Manual add: an existing household, the device's address and its typed code (the registry
  key comes from the service's device-key lookup).
* The account client against the real /v1 API: every call the runtime uses.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from homeassistant.config_entries import (
    SOURCE_USER,
    SOURCE_ZEROCONF,
    ConfigEntry,
    ConfigEntryState,
    ConfigFlowResult,
)
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers.aiohttp_client import async_get_clientsession

from custom_components.iot_onboard import commit_engine
from custom_components.iot_onboard.account_client import (
    AccountClient,
    ClaimRejectedError,
    DeviceAccess,
    DeviceKeyNotFoundError,
    Role,
    ShareAccess,
    TokenSet,
    TransferStatus,
)
from custom_components.iot_onboard.const import CONF_HOUSEHOLD_ID, DOMAIN
from custom_components.iot_onboard.device_client import DeviceClient
from custom_components.iot_onboard.helpers import (
    device_entries,
    device_entry,
    device_entry_ids,
    find_device,
    household_entry,
)
from custom_components.iot_onboard.iob_protocol import (
    DiagnosticCode,
    ManualCode,
    OwnerSecret,
    SetupCode,
    b64url_decode,
    public_key_fingerprint,
)
from tests.integration.onboarding_services import (
    HOME_PASSPHRASE,
    HOME_SSID,
    LOOPBACK,
    NETWORKS,
    AccountService,
    Device,
    after_progress,
    change_wifi,
    discovered,
    discovery_of,
    network_option,
    new_household_onboards,
    qr_text,
    running_services,
    settled_status,
    sign_up,
    submit_wifi,
)
from tests.plugins.lossy_proxy import lossy_proxy
from tests.plugins.mosquitto import MosquittoBroker


def _success_screen(hass: HomeAssistant, created: ConfigEntry, device_id: str) -> ConfigEntry:
    """The device entry ends the flow; its registry device is listed under it; the household.

    Home Assistant's create-entry screen lists the devices whose config entries include the
    new entry, with the area picker: the device must be there when the flow returns.
    """
    assert created.unique_id == device_id
    registered = find_device(hass, device_id, created.entry_id)
    assert registered is not None
    assert created.entry_id in device_entry_ids(registered)
    household = household_entry(hass, created.data[CONF_HOUSEHOLD_ID])
    assert household is not None
    return household


async def _name_the_model(relay: AccountService, device: Device) -> str:
    """The operator names the model: a device without a name of its own is offered by it."""
    await asyncio.to_thread(relay.set_model, "pi-test", "Test sensor")
    return f"Test sensor {device.device_id[-4:]}"


def offered_name(result: ConfigFlowResult) -> object:
    """The name field's suggested value on the setup-code form."""
    schema = result["data_schema"]
    assert schema is not None
    suggested = {str(key): (key.description or {}).get("suggested_value") for key in schema.schema}
    return suggested["name"]


async def test_discovery_to_claimed_device_in_a_new_household(
    hass: HomeAssistant, services: tuple[AccountService, Device]
) -> None:
    relay, device = services
    named = await _name_the_model(relay, device)
    discovery = await discovery_of(hass, device)
    assert discovery.properties["id"] == device.device_id
    assert discovery.properties["state"] == "unclaimed"

    # No household in Home Assistant yet: sign up to the account service inside this flow;
    # the new account has no household, so the one sign-in form creates it too.
    result = await discovered(hass, device)  # past its confirm form
    flow_id = result["flow_id"]
    forms = ["discovery_confirm", result["step_id"]]  # the sign-in
    result = await sign_up(hass, flow_id, relay.url)
    forms.append(result["step_id"])  # the setup code
    assert offered_name(result) == named
    result = await hass.config_entries.flow.async_configure(
        flow_id, {"setup_code": qr_text(device), "name": named}
    )
    assert result["step_id"] == "wifi", result
    # Issue 15 item 10: at most three forms before the Wi-Fi step for the first device.
    assert forms == ["discovery_confirm", "account", "credentials"]

    # A wrong password: the device tries, rolls back, and says why over the same session.
    result = await submit_wifi(hass, result, "not the password")
    assert result["step_id"] == "wifi"
    assert result["errors"] == {"base": DiagnosticCode.WIFI_AUTH_FAILED.value.lower()}
    status = await asyncio.to_thread(device.status)
    assert (status["phase"], status["household_id"]) == ("provisioning", None)

    # The right one: joined, claim confirmed by the device, household entry created.
    result = await submit_wifi(hass, result)
    assert (result["type"], result.get("title")) == (FlowResultType.CREATE_ENTRY, named), result
    # The success screen is the device entry's (HA lists the devices of that entry, with the
    # area picker); the household entry (the hub) was created just before it.
    entry = _success_screen(hass, result["result"], device.device_id)
    household_id = entry.data[CONF_HOUSEHOLD_ID]
    assert entry.title == "Home"
    record = result["result"].data
    assert (record["host"], record["port"], record["model"]) == (LOOPBACK, device.port, "pi-test")
    assert b64url_decode(record["public_key"]) == b64url_decode(
        device.label()["factory"]["public_key"]
    )

    # The device says the same from its own shell, and the service lists it as ours.
    status = await asyncio.to_thread(device.status)
    assert (status["phase"], status["household_id"]) == ("online", household_id)
    assert status["wifi_ssid"] == HOME_SSID
    account = AccountClient(
        relay.url,
        session=async_get_clientsession(hass),
        tokens=TokenSet.from_entry_data(entry.data),
    )
    [owned] = await account.devices(household_id)
    assert (owned.device_id, owned.access) == (device.device_id, DeviceAccess.OWNER)
    # A second claim of an owned device fails with a clear reason.
    other = AccountClient(relay.url, session=async_get_clientsession(hass))
    await other.sign_up(f"eve-{secrets.token_hex(4)}@example.com", secrets.token_urlsafe(16))
    eve_home = await other.create_household("Eve")
    with pytest.raises(ClaimRejectedError):
        await other.create_claim(eve_home.household_id, device.device_id)
    await hass.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED, (entry.state, entry.reason)

    await change_wifi(hass, entry, device)


async def test_the_first_device_with_its_code_on_the_first_screen(
    hass: HomeAssistant, services: tuple[AccountService, Device]
) -> None:
    """Issue 15: the code on the discovery's screen, the one sign-in form, then the Wi-Fi."""
    relay, device = services
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_ZEROCONF}, data=await discovery_of(hass, device)
    )
    forms = [result["step_id"]]
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {"setup_code": qr_text(device), "name": "Hall sensor"}
    )
    forms.append(result["step_id"])
    result = await sign_up(hass, result["flow_id"], relay.url)
    assert result["step_id"] == "wifi", result
    assert forms == ["discovery_confirm", "account"]
    result = await submit_wifi(hass, result)
    assert (result["type"], result.get("title")) == (FlowResultType.CREATE_ENTRY, "Hall sensor")
    status = await asyncio.to_thread(device.status)
    assert (status["phase"], status["wifi_ssid"]) == ("online", HOME_SSID)


async def test_a_lost_claim_answer_still_ends_in_the_household(
    hass: HomeAssistant, services: tuple[AccountService, Device]
) -> None:
    """The service's answer to the device's confirmation is lost after its commit (the lossy
    proxy between both, tests/plugins/lossy_proxy.py): the device retries, the service answers
    the same grant, and the flow ends with the device in the new household, online."""
    relay, device = services
    async with lossy_proxy(LOOPBACK, relay.port, drop=1) as proxy:
        flow_id = (await discovered(hass, device))["flow_id"]
        # HA and the device both reach the service through the proxy; only the device posts
        # confirmations, so only its answer is lost.
        await sign_up(hass, flow_id, proxy.url)
        result = await hass.config_entries.flow.async_configure(
            flow_id, {"setup_code": qr_text(device)}
        )
        result = await submit_wifi(hass, result)
        assert result["type"] is FlowResultType.CREATE_ENTRY, result
        assert proxy.dropped == 1
        entry = result["result"]  # the device's entry
        assert entry.unique_id == device.device_id
        household_id = entry.data[CONF_HOUSEHOLD_ID]
        status = await settled_status(device)  # the device finishes its retry by itself
        assert (status["phase"], status["household_id"]) == ("online", household_id)
        assert proxy.matched == 2  # the lost confirmation and the answered retry
        await hass.async_block_till_done()
        assert entry.state is ConfigEntryState.LOADED, (entry.state, entry.reason)


@pytest.fixture
def short_timer_services(
    mosquitto_broker: MosquittoBroker, tmp_path: Path
) -> Iterator[tuple[AccountService, Device]]:
    """As ``services``, with the device's fail-safe commit timer cut to 3 s."""
    with running_services(tmp_path, mosquitto_broker, commit_timeout=3) as running:
        yield running


@pytest.fixture
def vlan_services(
    mosquitto_broker: MosquittoBroker, tmp_path: Path
) -> Iterator[tuple[AccountService, Device]]:
    """As ``services``, with HomeNet an IoT VLAN: no route to the internet."""
    vlan = [{**NETWORKS[0], "internet": False}, *NETWORKS[1:]]
    with running_services(tmp_path, mosquitto_broker, networks=vlan) as running:
        yield running


async def test_a_device_without_internet_is_claimed_through_home_assistant(
    hass: HomeAssistant, vlan_services: tuple[AccountService, Device]
) -> None:
    """Local-only household (issue 16 item 4): the device reaches Home Assistant and the
    broker, never the account service (a proxy loses every answer to the device's health
    check, and its network has no uplink); HA reaches the service. The device hands its
    signed confirmation over the session, HA relays it, the service's MACed grant comes back
    the same way: the device ends owned and online on the broker, the flow in the household."""
    relay, device = vlan_services
    # HA's own health check at sign-in is answered (skip=1); every later one is lost.
    async with lossy_proxy(
        LOOPBACK, relay.port, method="GET", path="/v1/health", drop=1_000, skip=1
    ) as proxy:
        result = await new_household_onboards(hass, device, proxy.url)
        assert result["type"] is FlowResultType.CREATE_ENTRY, result
        assert proxy.dropped >= 1  # the device asked, and never heard the service
        entry = result["result"]
        household_id = entry.data[CONF_HOUSEHOLD_ID]
        status = await asyncio.to_thread(device.status)
        assert (status["phase"], status["household_id"]) == ("online", household_id)
        steps = ""
        for _ in range(600):  # the first MQTT connection follows the commit
            steps = await asyncio.to_thread(device.attempts)
            if "mqtt_online" in steps:
                break
            await asyncio.sleep(0.05)
        assert "claim_relayed" in steps, steps  # through HA, not by itself
        assert "NO_INTERNET" in steps, steps  # why it could not reach the service
        assert "mqtt_online" in steps, steps  # the broker is all it needs
        await hass.async_block_till_done()
        assert entry.state is ConfigEntryState.LOADED, (entry.state, entry.reason)


@pytest.fixture
def wps_services(
    mosquitto_broker: MosquittoBroker, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[AccountService, Device, bool]]:
    """As ``services``; HomeNet's router had its WPS button pressed (indirect param) or not."""
    pressed = bool(request.param)
    home = {**NETWORKS[0], "wps_pressed": pressed}
    with running_services(tmp_path, mosquitto_broker, networks=[home, *NETWORKS[1:]]) as running:
        yield (*running, pressed)


@pytest.mark.parametrize(
    "wps_services", [True, False], ids=["pressed", "not_pressed"], indirect=True
)
async def test_a_wps_join_with_the_real_device(
    hass: HomeAssistant, wps_services: tuple[AccountService, Device, bool]
) -> None:
    """The device names "wps" over the LAN: HomeNet is joined by the router's WPS button, no
    password typed. Not pressed: WPS_FAILED on the WPS step, then the password instead."""
    relay, device, pressed = wps_services
    flow_id = (await discovered(hass, device))["flow_id"]
    await sign_up(hass, flow_id, relay.url)
    result = await hass.config_entries.flow.async_configure(
        flow_id, {"setup_code": qr_text(device)}
    )
    home = network_option(result)
    result = await hass.config_entries.flow.async_configure(flow_id, {"network": home, "wps": True})
    assert (result["step_id"], result["errors"]) == ("wps", {}), result
    progress = await hass.config_entries.flow.async_configure(flow_id, {})
    assert progress["type"] is FlowResultType.SHOW_PROGRESS, progress
    result = await after_progress(hass, flow_id)
    if not pressed:
        assert (result["step_id"], result["errors"]) == ("wps", {"base": "wps_failed"}), result
        status = await asyncio.to_thread(device.status)
        assert (status["phase"], status["household_id"]) == ("provisioning", None)
        result = await hass.config_entries.flow.async_configure(flow_id, {"use_passphrase": True})
        result = await submit_wifi(hass, result)
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    household_id = result["result"].data[CONF_HOUSEHOLD_ID]
    status = await asyncio.to_thread(device.status)
    assert (status["phase"], status["household_id"]) == ("online", household_id)
    assert status["wifi_ssid"] == HOME_SSID


async def _manual_add(hass: HomeAssistant, device: Device) -> ConfigFlowResult:
    """The household entry exists: add the device by address and typed code, then the Wi-Fi
    with the right password; what the flow shows once the device's commit has ended."""
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    assert result["type"] is FlowResultType.MENU, result
    flow_id = result["flow_id"]
    result = await hass.config_entries.flow.async_configure(
        flow_id, {"next_step_id": "manual_device"}
    )
    result = await hass.config_entries.flow.async_configure(
        flow_id, {"host": LOOPBACK, "port": device.port, "setup_code": device.manual_code}
    )
    return await submit_wifi(hass, result)


@pytest.mark.parametrize("ha_hears_the_service", [False, True], ids=["ha_cut_off", "ha_hears"])
async def test_every_answer_lost_then_a_new_flow_onboards_into_the_same_household(
    hass: HomeAssistant,
    short_timer_services: tuple[AccountService, Device],
    ha_hears_the_service: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every answer to the device's confirmations is lost for its whole commit timer: the
    device rolls back (RELAY_UNREACHABLE) while the service records it as the household's.

    ``ha_cut_off``: Home Assistant's claim checks get no answer either (the service's uplink
    broke after it recorded the claim), so the flow shows RELAY_UNREACHABLE and the user closes
    the dialog. ``ha_hears``: Home Assistant sees the claim owned and reports the device added,
    yet the device, hearing nothing, rolls back. Either way a new flow for the same device
    (the household's own) gets a claim instead of ``already_owned``, the device confirms it,
    and the flow ends with the device added and online.

    Home Assistant long-polls the device's status, which answers when its commit ends. In
    ``ha_hears`` the device commits for longer than one long poll (its 3-s timer against a
    1-s wait, as a real device's 180-s timer against the 10-s wait), so Home Assistant checks
    the claim in between and finds it owned. In ``ha_cut_off`` the 10-s wait outlasts the
    timer and the claim checks are lost: the device's own verdict is what the flow shows.
    """
    relay, device = short_timer_services
    if ha_hears_the_service:
        monkeypatch.setattr(commit_engine, "STATUS_WAIT", 1)
    # Cut off: Home Assistant's claim checks lose their answers too, all but the first (the
    # flow's check that its claim is still pending, before it hands the token over).
    also, skip = ((), 0) if ha_hears_the_service else (("GET /v1/claims/",), 1)
    async with lossy_proxy(LOOPBACK, relay.port, drop=1_000_000, also=also, skip=skip) as proxy:
        result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
        result = await sign_up(hass, result["flow_id"], proxy.url)
        assert result["type"] is FlowResultType.CREATE_ENTRY, result
        entry = result["result"]
        household_id = entry.data[CONF_HOUSEHOLD_ID]
        await hass.async_block_till_done()

        # First flow: the service commits every confirmation, the device hears none of it.
        result = await _manual_add(hass, device)
        if ha_hears_the_service:
            assert result["type"] is FlowResultType.CREATE_ENTRY, result
            assert result["result"].unique_id == device.device_id
        else:
            assert result["type"] is FlowResultType.FORM, result
            # Whichever HA noticed first: the device's verdict, or its own failed claim check
            # once the device stopped committing.
            assert result["errors"] in (
                {"base": DiagnosticCode.RELAY_UNREACHABLE.value.lower()},
                {"base": "account_unreachable"},
            ), result
            hass.config_entries.flow.async_abort(result["flow_id"])  # the user closes it
        await hass.async_block_till_done()
        # The device's timer runs out, it rolls back by itself.
        status = await settled_status(device)
        assert status["phase"] in {"unclaimed", "provisioning"}, status
        assert status["household_id"] is None, status
        assert proxy.dropped >= 1
        account = AccountClient(
            relay.url,
            session=async_get_clientsession(hass),
            tokens=TokenSet.from_entry_data(entry.data),
        )
        assert [d.device_id for d in await account.devices(household_id)] == [device.device_id]

        # The service answers again. A new flow for the same device and household.
        stale = device_entry(hass, device.device_id)
        stale_record = None if stale is None else dict(stale.data)
        assert (stale_record is not None) is ha_hears_the_service
        proxy.drop = proxy.armed
        result = await _manual_add(hass, device)
        assert result["type"] is FlowResultType.CREATE_ENTRY, result
        household = _success_screen(hass, result["result"], device.device_id)
        assert household.entry_id == entry.entry_id
        record = dict(result["result"].data)
        assert record != stale_record  # this flow's owner secret replaced the first's
        [current] = [e for e in device_entries(hass) if e.unique_id == device.device_id]
        assert current.entry_id == result["result"].entry_id  # the stale entry is gone
        status = await asyncio.to_thread(device.status)
        assert (status["phase"], status["household_id"]) == ("online", household_id)
        [owned] = await account.devices(household_id)
        assert (owned.device_id, owned.access) == (device.device_id, DeviceAccess.OWNER)
        await hass.async_block_till_done()
        assert entry.state is ConfigEntryState.LOADED, (entry.state, entry.reason)


@pytest.mark.parametrize("services", ["Kitchen sensor"], indirect=True)
async def test_manual_add_by_address_and_typed_code(
    hass: HomeAssistant, services: tuple[AccountService, Device]
) -> None:
    """Another VLAN (no discovery): the address and the typed code, checked via the registry.

    The device has a name (device.toml): its ``/iob/v1/info`` says so and it names the entry.
    """
    relay, device = services
    result = await hass.config_entries.flow.async_init(DOMAIN, context={"source": SOURCE_USER})
    assert result["step_id"] == "account"
    result = await sign_up(hass, result["flow_id"], relay.url, household_name="Flat")
    assert result["type"] is FlowResultType.CREATE_ENTRY, result
    entry = result["result"]
    assert entry.title == "Flat"
    await hass.async_block_till_done()
    running = entry.runtime_data  # a reload of the household entry would build a new one

    result = await _manual_add(hass, device)
    assert (result["type"], result.get("title")) == (FlowResultType.CREATE_ENTRY, "Kitchen sensor")
    assert result["result"].unique_id == device.device_id
    assert result["result"].data[CONF_HOUSEHOLD_ID] == entry.data[CONF_HOUSEHOLD_ID]
    status = await asyncio.to_thread(device.status)
    assert (status["phase"], status["household_id"]) == ("online", entry.data[CONF_HOUSEHOLD_ID])
    await hass.async_block_till_done()
    # The device has an entry of its own on the running hub: the household entry was not
    # reloaded (same runtime, still loaded), and the new entry shares that runtime.
    assert entry.state is ConfigEntryState.LOADED
    assert entry.runtime_data is running
    assert result["result"].runtime_data is running


async def test_account_client_against_the_real_service(
    hass: HomeAssistant, services: tuple[AccountService, Device]
) -> None:
    """Every AccountClient call the runtime uses, against the real /v1 API and its shapes."""
    relay, device = services
    http = async_get_clientsession(hass)
    saved: list[TokenSet] = []
    owner = AccountClient(relay.url, session=http, on_tokens=saved.append)
    password = secrets.token_urlsafe(16)
    email = f"owner-{secrets.token_hex(4)}@example.com"
    await owner.sign_up(email, password, "Owner")
    assert (await owner.health()).status == "ok"
    me = await owner.me()
    assert me.email == email
    home = await owner.create_household("Home")
    assert home.role is Role.OWNER
    assert [h.household_id for h in await owner.households()] == [home.household_id]

    member = await owner.add_member(
        home.household_id, external_id="ha-user-1", display_name="Kid", role=Role.VIEWER
    )
    member = await owner.update_member(home.household_id, member.member_id, role=Role.MEMBER)
    assert member.role is Role.MEMBER
    assert {m.role for m in await owner.members(home.household_id)} == {Role.OWNER, Role.MEMBER}
    await owner.remove_member(home.household_id, member.member_id)

    await _claim_release_and_share(http, owner, home.household_id, relay, device)
    assert len(saved) == 1  # sign-up


async def _claim_release_and_share(
    http: aiohttp.ClientSession,
    owner: AccountClient,
    household_id: str,
    relay: AccountService,
    device: Device,
) -> None:
    """Hub credentials, a claim confirmed by the device, sharing, transfer, audit, release."""
    [home] = [h for h in await owner.households() if h.household_id == household_id]
    hub = await owner.hub_credentials(home.household_id)
    assert hub.username
    rotated = await owner.rotate_hub_credentials(home.household_id)
    assert rotated.password != hub.password

    # The registry key for the label's typed code (and the same refusal for a wrong code).
    key = await owner.device_key(home.household_id, device.device_id, device.manual_code)
    assert key.public_key == b64url_decode(device.label()["factory"]["public_key"])
    right = ManualCode.parse(device.manual_code)
    wrong = ManualCode(f"{(int(right.passcode) + 1) % 10**9:09d}").format()
    with pytest.raises(DeviceKeyNotFoundError):
        await owner.device_key(home.household_id, device.device_id, wrong)
    # Claim through the service and confirm through the device, as the flow does.
    claim = await owner.create_claim(home.household_id, device.device_id)
    assert (await owner.claim_status(claim.claim_id)).status.value == "pending"
    link = await DeviceClient(LOOPBACK, device.port, session=http).connect(
        SetupCode.from_json(device.label()["setup_code"]).qr_payload(
            public_key_fingerprint(b64url_decode(device.label()["factory"]["public_key"]))
        ),
        device_id=device.device_id,
    )
    await link.set_wifi(HOME_SSID.encode(), HOME_PASSPHRASE)
    await link.set_claim(
        relay.url, claim.token, owner_secret=OwnerSecret.generate(), allow_insecure_http=True
    )
    await link.commit()
    async with asyncio.timeout(60):
        # Polled like the config flow polls it.
        while (owned := await owner.claim_status(claim.claim_id)).status.value == "pending":  # noqa: ASYNC110
            await asyncio.sleep(0.2)
    assert owned.status.value == "owned"

    [summary] = await owner.devices(home.household_id)
    assert summary.access is DeviceAccess.OWNER
    assert summary.model == "pi-test"
    credentials = await owner.rotate_device_credentials(home.household_id, device.device_id)
    assert credentials.device_id == device.device_id

    neighbour = AccountClient(relay.url, session=http)
    await neighbour.sign_up(f"n-{secrets.token_hex(4)}@example.com", secrets.token_urlsafe(16))
    flat = await neighbour.create_household("Flat")
    share = await owner.share_device(
        home.household_id, device.device_id, flat.household_id, ShareAccess.READ
    )
    assert share.access is ShareAccess.READ
    [shared] = await neighbour.devices(flat.household_id)
    assert shared.access is DeviceAccess.READ
    await owner.unshare_device(home.household_id, device.device_id, flat.household_id)
    transfer = await owner.offer_transfer(home.household_id, device.device_id, flat.household_id)
    assert transfer.status is TransferStatus.PENDING

    await owner.release_device(home.household_id, device.device_id)
    assert await owner.devices(home.household_id) == []
