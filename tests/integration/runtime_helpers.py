"""Helpers of the runtime tests: fake device processes, a descriptor, waiting, set-up."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import secrets
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import ip_address
from typing import Any, Self

import aiohttp
import aiomqtt
from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import Context, HomeAssistant
from homeassistant.helpers.service_info.zeroconf import ZeroconfServiceInfo
from pytest_homeassistant_custom_component.common import MockConfigEntry

from custom_components.iot_onboard.account_client import AccountClient, SignedIn
from custom_components.iot_onboard.const import (
    CONF_ACCOUNT_ID,
    CONF_ACCOUNT_URL,
    CONF_EMAIL,
    CONF_HOUSEHOLD_ID,
    DOMAIN,
    EXTERNAL_ID_PREFIX,
)
from custom_components.iot_onboard.hub import HubCredentials
from custom_components.iot_onboard.iob_protocol.account_api import MqttCredentials, Owned, Role
from custom_components.iot_onboard.iob_protocol.canonical import b64url_encode
from custom_components.iot_onboard.iob_protocol.claim import ClaimConfirmation
from custom_components.iot_onboard.iob_protocol.identity import DeviceIdentity
from custom_components.iot_onboard.iob_protocol.payload import SetupCode, SetupVerifier
from tests.integration.fake_account import FakeAccountService
from tests.integration.fake_device import fake_device_command
from tests.integration.onboarding_services import AccountService
from tests.plugins.mosquitto import MosquittoBroker, dynsec_command

#: One entity per platform plus system sensors and one the integration does not translate.
META: dict[str, Any] = {
    "protocol": 1,
    "device": {
        "id": "DEVICE",
        "manufacturer": "IoT Onboard",
        "name": "Kitchen sensor",
        "model": "pi-sensor",
        "sw_version": "1.2.0",
    },
    "entities": [
        {
            "key": "temperature",
            "platform": "sensor",
            "name": "Temperature",
            "translation_key": "temperature",
            "device_class": "temperature",
            "unit": "°C",
            "state_class": "measurement",
            "suggested_display_precision": 1,
        },
        {
            "key": "cpu_temperature",
            "platform": "sensor",
            "name": "CPU temperature",
            "translation_key": "cpu_temperature",
            "device_class": "temperature",
            "unit": "°C",
            "state_class": "measurement",
            "entity_category": "diagnostic",
        },
        {
            "key": "last_boot",
            "platform": "sensor",
            "name": "Last boot",
            "translation_key": "last_boot",
            "device_class": "timestamp",
            "entity_category": "diagnostic",
        },
        {
            "key": "air_quality",
            "platform": "sensor",
            "name": "Air quality index",
            "icon": "mdi:air-filter",
            "state_class": "measurement",
        },
        {
            "key": "motion",
            "platform": "binary_sensor",
            "name": "Motion",
            "translation_key": "motion",
            "device_class": "motion",
        },
        {
            "key": "relay",
            "platform": "switch",
            "name": "Relay",
            "translation_key": "relay",
            "device_class": "outlet",
        },
        {
            "key": "identify",
            "platform": "button",
            "name": "Identify",
            "translation_key": "identify",
            "device_class": "identify",
            "entity_category": "config",
        },
        {
            "key": "setpoint",
            "platform": "number",
            "name": "Setpoint",
            "translation_key": "setpoint",
            "device_class": "temperature",
            "unit": "°C",
            "entity_category": "config",
            "min": 10.0,
            "max": 30.0,
            "step": 0.5,
        },
    ],
}
STATES: dict[str, str] = {
    "temperature": "21.5",
    "cpu_temperature": "48.2",
    "last_boot": "2026-11-20T08:00:00+00:00",
    "air_quality": "17",
    "motion": "off",
    "relay": "off",
    "setpoint": "20.0",
}
ENTITY_COUNT = len(META["entities"])
#: Diagnostic sensors are registered disabled (the user enables them): their keys in META.
DISABLED_KEYS = frozenset(
    e["key"]
    for e in META["entities"]
    if e["platform"] == "sensor" and e.get("entity_category") == "diagnostic"
)


def meta_for(device_id: str, name: str = "Kitchen sensor", **extra: Any) -> dict[str, Any]:
    """The descriptor for ``device_id``."""
    meta = copy.deepcopy(META)
    meta["device"]["id"] = device_id
    meta["device"]["name"] = name
    meta.update(extra)
    return meta


class DeviceProcesses:
    """Fake device subprocesses of one test; every one is stopped by its pid."""

    def __init__(self) -> None:
        """No process yet."""
        self._processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, command: list[str], device_id: str) -> None:
        """Start a fake device (it connects, publishes and serves commands)."""
        self._processes[device_id] = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def kill(self, device_id: str) -> None:
        """SIGKILL: the broker sees the connection drop and publishes the will."""
        process = self._processes.pop(device_id)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=5)

    def stop_all(self) -> None:
        """Stop every process still running."""
        for device_id in list(self._processes):
            process = self._processes.pop(device_id)
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


async def wait_for(
    hass: HomeAssistant,
    condition: Callable[[], bool],
    what: str,
    timeout: float = 15.0,  # noqa: ASYNC109 - the test's patience, named in the failure
) -> None:
    """Let the event loop run until ``condition`` holds (messages arrive over real sockets)."""
    try:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.02)
                await hass.async_block_till_done()
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def start_device(
    service: FakeAccountService,
    processes: DeviceProcesses,
    device_id: str,
    *,
    access: str = "owner",
    name: str = "Kitchen sensor",
    **meta_extra: Any,
) -> None:
    """Claim ``device_id`` (broker client, household list) and start its process."""
    await service.add_device(device_id, access)
    processes.start(
        service.device_command(device_id, meta_for(device_id, name, **meta_extra), STATES),
        device_id,
    )


async def setup_entry(
    hass: HomeAssistant,
    service: FakeAccountService | RealAccount,
    options: dict[str, Any] | None = None,
    extra_data: dict[str, Any] | None = None,
    *,
    household: tuple[str, str] | None = None,
) -> MockConfigEntry:
    """Add and set up the household entry (of ``household``: id and title, when given)."""
    household_id, title = household or (service.household_id, "Home")
    entry = MockConfigEntry(
        domain=DOMAIN,
        title=title,
        unique_id=household_id,
        data={**service.entry_data(), CONF_HOUSEHOLD_ID: household_id, **(extra_data or {})},
        options=options or {},
    )
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    return entry


def entity_ids(
    hass: HomeAssistant, entry: MockConfigEntry, *, enabled_only: bool = False
) -> list[str]:
    """Entity ids of the entry in the registry, sorted (with ``enabled_only``: not disabled)."""
    from homeassistant.helpers import entity_registry as er  # noqa: PLC0415

    return sorted(
        e.entity_id
        for e in er.async_entries_for_config_entry(er.async_get(hass), entry.entry_id)
        if not (enabled_only and e.disabled)
    )


async def observer(broker: MosquittoBroker, name: str = "observer") -> aiomqtt.Client:
    """A client that may read everything under ``iob/`` (to see the hub's commands)."""
    password = "observer-pass-1"  # noqa: S105 - a throwaway test broker account
    await dynsec_command(
        broker,
        [
            {
                "command": "createRole",
                "rolename": name,
                "acls": [
                    {"acltype": "subscribePattern", "topic": "iob/#", "allow": True},
                    {"acltype": "publishClientReceive", "topic": "iob/#", "allow": True},
                ],
            },
            {
                "command": "createClient",
                "username": name,
                "password": password,
                "roles": [{"rolename": name}],
            },
        ],
    )
    return aiomqtt.Client(broker.host, broker.port, username=name, password=password)


async def publish_as_device(
    service: FakeAccountService, device_id: str, topic: str, payload: bytes, *, retain: bool = True
) -> None:
    """Publish on the device's subtree with the device's own credentials, beside the running
    device (the stand-in's broker accounts bind no client id)."""
    credentials = MqttCredentials(
        host=service.broker.host,
        port=service.broker.port,
        tls=False,
        username=device_id,
        password=service.device_passwords[device_id],
    )
    await publish_with(credentials, topic, payload, retain=retain)


async def publish_with(
    credentials: MqttCredentials, topic: str, payload: bytes, *, retain: bool = True
) -> None:
    """Publish on the device's subtree ``iob/<username>/`` with the device's broker account.

    With the account's bound client id when it names one (the real service's do): the broker
    then takes the device's own session over, so stop the device's process first.
    """
    device_id = credentials.username
    async with aiomqtt.Client(
        credentials.host,
        credentials.port,
        username=device_id,
        password=credentials.password,
        identifier=credentials.client_id or f"{device_id}-test",
    ) as client:
        await client.publish(f"iob/{device_id}/{topic}", payload, qos=1, retain=retain)


async def owner_context(hass: HomeAssistant, service: FakeAccountService) -> Context:
    """A Home Assistant user linked to the household's owner, as an action's context."""
    user = await hass.auth.async_create_user("Owner", group_ids=["system-users"])
    service.link_owner(EXTERNAL_ID_PREFIX + user.id)
    return Context(user_id=user.id)


def state_of(hass: HomeAssistant, entity_id: str) -> str | None:
    """The entity's state, or None when it does not exist."""
    state = hass.states.get(entity_id)
    return None if state is None else state.state


#: The real service's operator (a service administrator): ``real_account_process`` makes it.
OPERATOR = ("operator@example.com", "operator-pass-1")


@dataclass(frozen=True)
class RealAccount:
    """An owner signed up at the real account service, with a household: made through the
    service's /v1 API by the integration's own client, as the config flow makes them."""

    service: AccountService
    http: aiohttp.ClientSession
    owner: AccountClient
    signed_in: SignedIn
    household_id: str
    #: The account's password (account deletion asks for it again).
    password: str = field(default="", repr=False)

    @classmethod
    async def sign_up(cls, service: AccountService, http: aiohttp.ClientSession) -> Self:
        """Sign an owner up and create the household "Home"."""
        owner = AccountClient(service.url, session=http)
        email = f"owner-{secrets.token_hex(4)}@example.com"
        password = secrets.token_urlsafe(16)
        signed_in = await owner.sign_up(email, password, "Owner")
        home = await owner.create_household("Home")
        return cls(service, http, owner, signed_in, home.household_id, password)

    def entry_data(self) -> dict[str, Any]:
        """What the config flow stores for this household (const.py's layout)."""
        return {
            CONF_ACCOUNT_URL: self.service.url,
            CONF_ACCOUNT_ID: self.signed_in.account.account_id,
            CONF_EMAIL: self.signed_in.account.email,
            CONF_HOUSEHOLD_ID: self.household_id,
            **self.signed_in.tokens.as_entry_data(),
        }

    async def join(self, role: str, name: str = "Member") -> Self:
        """A new account invited into the household with ``role`` and joined (the invitee's
        own sign-up and ``/v1/invitations/accept``): the same household, another account."""
        path = f"/v1/households/{self.household_id}/invitations"
        invitation = await self._post(path, {"role": role}, self.signed_in)
        client = AccountClient(self.service.url, session=self.http)
        email = f"{role}-{secrets.token_hex(4)}@example.com"
        password = secrets.token_urlsafe(16)
        signed_in = await client.sign_up(email, password, name)
        await self._post("/v1/invitations/accept", {"token": invitation["token"]}, signed_in)
        return type(self)(self.service, self.http, client, signed_in, self.household_id, password)

    async def _post(self, path: str, body: dict[str, Any], caller: SignedIn) -> Any:
        """A POST to the service as ``caller``; its 201 answer."""
        async with self.http.post(
            self.service.url + path,
            json=body,
            headers={"Authorization": f"Bearer {caller.tokens.access_token}"},
        ) as reply:
            assert reply.status == 201, await reply.text()
            return await reply.json()

    async def get(self, path: str) -> Any:
        """A GET of the household's ``/v1/households/<id>`` + ``path``, as its owner."""
        async with self.http.get(
            f"{self.service.url}/v1/households/{self.household_id}{path}",
            headers={"Authorization": f"Bearer {self.signed_in.tokens.access_token}"},
        ) as reply:
            assert reply.status == 200, await reply.text()
            return await reply.json()

    async def audit_actions(self) -> list[str]:
        """What the service recorded for the household, newest first (its audit log)."""
        page = await self.get("/audit")
        return [event["action"] for event in page["events"]]

    async def hub_credentials(self) -> HubCredentials:
        """The household hub's broker account, as the service hands it to Home Assistant."""
        return await self.owner.hub_credentials(self.household_id)

    async def claim_new_device(self) -> Owned:
        """A new device made in the factory and claimed into the household, by the real API.

        The device's side is the sans-I/O protocol (the integration's ``iob_protocol``): a new
        identity and setup code, its factory record imported as the operator does (``registry
        import``), a claim token from the owner and the device's signed confirmation; the
        answer carries the device's own broker account, made by the service.
        """
        identity = DeviceIdentity.generate()
        verifier = SetupVerifier.create(SetupCode.generate(identity.device_id))
        record = {
            "device_id": identity.device_id,
            "model": "pi-test",
            "public_key": b64url_encode(identity.public_key),
            "setup_verifier": verifier.encode(),
        }
        operator = await AccountClient(self.service.url, session=self.http).sign_in(*OPERATOR)
        async with self.http.post(
            f"{self.service.url}/v1/admin/registry/import",
            json={"records": [record]},
            headers={"Authorization": f"Bearer {operator.tokens.access_token}"},
        ) as reply:
            assert reply.status == 200, await reply.text()
        claim = await self.owner.create_claim(self.household_id, identity.device_id)
        confirmation = ClaimConfirmation.create(identity, claim.token)
        async with self.http.post(
            f"{self.service.url}/v1/claims/confirm",
            json={"confirmation": json.loads(confirmation.to_json())},
        ) as reply:
            assert reply.status == 200, await reply.text()
            return Owned.parse(await reply.json())


async def real_owner_context(hass: HomeAssistant, account: RealAccount) -> Context:
    """A Home Assistant user linked to the household's owner at the real service (the member's
    ``external_id``, set through the API), as an action's context."""
    user = await hass.auth.async_create_user("Owner", group_ids=["system-users"])
    members = await account.owner.members(account.household_id)
    owner = next(m for m in members if m.role is Role.OWNER)
    await account.owner.update_member(
        account.household_id, owner.member_id, external_id=EXTERNAL_ID_PREFIX + user.id
    )
    return Context(user_id=user.id)


async def start_claimed_device(
    account: RealAccount,
    processes: DeviceProcesses,
    *,
    name: str = "Kitchen sensor",
    **meta_extra: Any,
) -> Owned:
    """Claim a new device at the real service and start its process with the broker account
    the service made; returns the service's answer (the device id and that account)."""
    owned = await account.claim_new_device()
    mqtt = owned.mqtt
    processes.start(
        fake_device_command(
            mqtt.host,
            mqtt.port,
            device_id=owned.device_id,
            password=mqtt.password,
            meta=meta_for(owned.device_id, name, **meta_extra),
            states=STATES,
        ),
        owned.device_id,
    )
    return owned


async def set_up(hass: HomeAssistant, entry: MockConfigEntry) -> ConfigEntryState:
    """Add ``entry`` and set it up (a failure is a state, not an exception); its state."""
    entry.add_to_hass(hass)
    await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    return entry.state


def flow_sources(hass: HomeAssistant) -> list[str]:
    """The sources of this integration's flows in progress (a reauth shows as ``reauth``)."""
    flows = hass.config_entries.flow.async_progress_by_handler(DOMAIN)
    return [flow["context"]["source"] for flow in flows]


async def kitchen_relay_off(hass: HomeAssistant) -> None:
    """Until the demo-named device's relay entity exists and reads off."""
    await wait_for(
        hass,
        lambda: (
            hass.states.get("switch.kitchen_sensor_relay") is not None
            and state_of(hass, "switch.kitchen_sensor_relay") == "off"
        ),
        "the device's entities",
    )


def device_advertisement(
    device_id: str,
    *,
    host: str = "192.0.2.10",
    port: int | None = 8423,
    model: str = "pi-test",
    state: str = "unclaimed",
    protocol: str = "1",
    name: str | None = None,
) -> ZeroconfServiceInfo:
    """A device's ``_iot-onboard._tcp`` record as Home Assistant's zeroconf hands it over."""
    named = {} if name is None else {"name": name}
    return ZeroconfServiceInfo(
        ip_address=ip_address(host),
        ip_addresses=[ip_address(host)],
        port=port,
        hostname=f"iob-{device_id.lower()}.local.",
        type="_iot-onboard._tcp.local.",
        name=f"iob-{device_id}._iot-onboard._tcp.local.",
        properties={
            "id": device_id,
            "model": model,
            "firmware": "1.0",
            "state": state,
            "protocol": protocol,
            **named,
        },
    )
