"""A household's life with its devices, end to end on the whole real stack (no fakes).

One demo stack per module (Mosquitto with dynamic security, the account service, two simulated
devices, Home Assistant with the integration): both devices are onboarded through Home
Assistant's own zeroconf discovery and config flow, as in test_onboarding_through_ha.py, and
the owner maps the household roles in the entry's options as a person does (the owner's Home
Assistant user to ``owner``, the second user to ``viewer``). The cases then share that stack, in
file order; the two that end a device's membership (transfer, release) each use their own
device and come last:

1. device → Home Assistant: the device's own state changes reach the entities;
2. Home Assistant → device: actions called through HA's REST API change the device;
3. a viewer reads everything and is refused control with the integration's message;
4. transfer (device 2): offered through HA, accepted by a second account at the account
   service; it leaves this household's entry and hub, the new household's hub gets it;
5. release (device 1): through HA; gone from HA, the account service and the broker.

What the device itself says is read from MQTT (what it published, watched as the broker's admin:
the household hub's credential is bound to the client id Home Assistant's hub holds) and from
its ``status --json``.

Two gaps these cases found are closed, and the cases check it without workarounds:

* a transfer accepted at the account service disconnects the old household's hub session, so
  its Home Assistant reconnects, re-reads the device list and drops the device by itself (no
  entry reload, no wait for the 15-minute refresh);
* a released device returns to unclaimed by itself (DESIGN: "the device returns to
  unclaimed"): refused by the broker, it asks the account service with its own signed request,
  hears "unowned", wipes its claim and opens its provisioning window, keeping its Wi-Fi.
"""

from __future__ import annotations

import asyncio
import functools
import json
import operator
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiomqtt
import pytest

from cloud_relay.broker.local import DYNSEC_CONTROL_TOPIC

from .helpers import (
    REPO,
    Orchestrator,
    get,
    ha_token,
    kill_leftovers,
    processes_mentioning,
    ws_answer,
)
from .test_onboarding_through_ha import Ha, network_value, sign_in, wait_for

DOMAIN: Final = "iot_onboard"
HOUSEHOLD: Final = "Demo home"
OTHER_HOUSEHOLD: Final = "The neighbours"
OTHER_ACCOUNT: Final = {"email": "neighbour@demo.invalid", "password": "neighbour-pass-2024"}
# Bounds, not expectations (the machine is shared): discovery ~1 s, a commit a few seconds,
# a state from the device to HA or back well under a second.
DISCOVERY_TIMEOUT: Final = 60.0
COMMIT_TIMEOUT: Final = 240.0
ENTITIES_TIMEOUT: Final = 90.0
CHANGE_TIMEOUT: Final = 60.0
MQTT_TIMEOUT: Final = 30.0
#: The simulated temperature is sampled every 5 s and drifts by up to 0.2 °C.
DRIFT_TIMEOUT: Final = 90.0
#: MQTT 5 SUBACK / CONNACK codes at or above this are failures.
MQTT_FAILURE: Final = 0x80
NOT_AUTHORIZED: Final = frozenset({0x86, 0x87, 4, 5})


# --- the stack ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Device:
    """One onboarded device as the tests address it."""

    device_id: str
    data_dir: str
    #: Home Assistant's device registry id (what the integration's actions take).
    registry_id: str
    #: entity key (``relay``, ``temperature``, …) → entity id.
    entities: dict[str, str]


@dataclass(frozen=True, slots=True)
class Household:
    """The module's onboarded stack."""

    ready: dict[str, Any]
    owner: Ha
    viewer: Ha
    #: The viewer's Home Assistant user id.
    viewer_user_id: str
    entry_id: str
    relay_url: str
    relay_token: str
    household_id: str
    devices: tuple[Device, Device]

    def hub(self) -> dict[str, Any]:
        """The household hub's MQTT credentials, as the account service hands them to HA."""
        hub: dict[str, Any] = relay(
            self.relay_url, f"/v1/households/{self.household_id}/hub", self.relay_token
        )
        return hub

    def observer(self) -> dict[str, Any]:
        """A broker client of the test's own that may watch and command ``iob/#``.

        Not the hub's credential: it is bound to the client id Home Assistant's hub holds, and
        a second session with it would take that one over. Not the bare dynsec admin either: it
        may subscribe but not publish device commands. The admin creates this client once, as an
        operator's tool would be set up (docs/broker.md).
        """
        broker = self.ready["broker"]
        credentials = {
            "host": broker["host"],
            "port": broker["port"],
            "username": OBSERVER,
            "password": OBSERVER_PASSWORD,
        }
        asyncio.run(_create_observer(broker))  # a no-op for the broker once it exists
        return credentials

    def relay_devices(self, household_id: str | None = None, token: str | None = None) -> set[str]:
        """The device ids a household's device list shows at the account service."""
        listing = relay(
            self.relay_url,
            f"/v1/households/{household_id or self.household_id}/devices",
            token or self.relay_token,
        )
        return {d["device_id"] for d in listing["devices"]}


def relay(
    base: str, path: str, token: str | None, body: dict[str, Any] | None = None, status: int = 200
) -> Any:
    """One account-service request (GET, or POST with ``body``); its JSON answer."""
    got, raw = get(f"{base}{path}", body, token=token)
    assert got == status, f"{path}: HTTP {got} (wanted {status}): {raw!r}"
    return json.loads(raw) if raw else None


def ws(ha: Ha, command: dict[str, Any]) -> Any:
    answer = ws_answer(ha.base, ha.token, command)
    assert answer["success"], answer
    return answer["result"]


def onboard(ha: Ha, ready: dict[str, Any], device: dict[str, Any]) -> dict[str, Any]:
    """A person onboards the discovered ``device``; the flow's last result."""
    flow = wait_for(
        f"the zeroconf discovery flow of {device['device_id']}",
        lambda: next(
            (
                f
                for f in ha.discovered()
                if f["context"]["source"] == "zeroconf"
                # the flow's unique id: the device id, or its short id (its first characters,
                # what the Bluetooth advertisement carries too)
                and f["context"].get("unique_id")
                and device["device_id"].startswith(f["context"]["unique_id"])
            ),
            None,
        ),
        DISCOVERY_TIMEOUT,
    )
    flow_id = flow["flow_id"]
    result = ha.step(flow_id, {})
    if result["step_id"] == "account":  # the first device: no household entry yet
        account = next(a for a in ready["account_service"]["accounts"] if not a["admin"])
        result = ha.step(flow_id, sign_in(ready, account))
        if result["step_id"] == "household":
            result = ha.step(flow_id, {"household_name": HOUSEHOLD})
    assert result["step_id"] == "credentials", result
    result = ha.step(flow_id, {"setup_code": device["qr_payload"]})
    assert result["step_id"] == "wifi", result
    home = next(w for w in ready["wifi"] if w["ssid"] == "Home")
    result = ha.step(
        flow_id, {"network": network_value(result, home["ssid"]), "passphrase": home["passphrase"]}
    )
    if result["type"] != "progress":  # the commit ended inside the flow's inline wait
        return result

    def finished() -> dict[str, Any] | None:
        now: dict[str, Any] = ha.call(f"/api/config/config_entries/flow/{flow_id}")
        return None if now["type"] == "progress" else now

    return wait_for(f"the commit of {device['device_id']}", finished, COMMIT_TIMEOUT)


def entity_ids(ha: Ha, device_id: str, *, enabled_only: bool = False) -> dict[str, str]:
    """The integration's entities of ``device_id`` in HA's entity registry: key → entity id.

    ``enabled_only``: without the disabled ones (diagnostic sensors are disabled by default).
    """
    entries = ws(ha, {"type": "config/entity_registry/list"})
    prefix = f"{device_id}_"
    return {
        e["unique_id"].removeprefix(prefix): e["entity_id"]
        for e in entries
        if e["platform"] == DOMAIN
        and e["unique_id"].startswith(prefix)
        and not (enabled_only and e["disabled_by"])
    }


def registry_device(ha: Ha, device_id: str) -> dict[str, Any] | None:
    """HA's device registry entry for ``device_id``, if any."""
    devices = ws(ha, {"type": "config/device_registry/list"})
    return next((d for d in devices if [DOMAIN, device_id] in d["identifiers"]), None)


def states(ha: Ha) -> dict[str, dict[str, Any]]:
    return {s["entity_id"]: s for s in ha.call("/api/states")}


def available_entities(ha: Ha, device_id: str) -> dict[str, str] | None:
    """key → entity id once the device has entities of every platform, all available."""
    ids = entity_ids(ha, device_id, enabled_only=True)
    now = states(ha)
    platforms = {entity_id.split(".")[0] for entity_id in ids.values()}
    if not {"sensor", "binary_sensor", "switch", "button", "number"} <= platforms:
        return None
    if any(now.get(e, {}).get("state", "unavailable") == "unavailable" for e in ids.values()):
        return None
    return ids


def map_role(ha: Ha, entry_id: str, user_id: str, role: str) -> None:
    """Options → "A Home Assistant user's household role", as the owner does it in the UI."""
    flow = ha.call("/api/config/config_entries/options/flow", {"handler": entry_id})
    assert flow["type"] == "menu", flow
    path = f"/api/config/config_entries/options/flow/{flow['flow_id']}"
    form = ha.call(path, {"next_step_id": "user_role"})
    assert form["step_id"] == "user_role", form
    done = ha.call(path, {"user": user_id, "role": role})
    assert done["type"] == "create_entry", done


def device_status(device: Device) -> dict[str, Any]:
    """``python -m device_firmware --data-dir … status --json`` (the device's own view)."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "device_firmware",
            "--data-dir",
            device.data_dir,
            "status",
            "--json",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    status: dict[str, Any] = json.loads(done.stdout)
    return status


def device_mqtt_credentials(device: Device) -> dict[str, Any]:
    """The MQTT credentials the device saved with its claim (its state file)."""
    document = json.loads((Path(device.data_dir) / "state.json").read_text(encoding="utf-8"))
    mqtt: dict[str, Any] = document["mqtt"]
    # The broker accepts the device's credential only with the device's own client id (a
    # connection with it takes the device's session over; the device reconnects).
    return {**mqtt, "client_id": mqtt.get("client_id") or mqtt["username"]}


# --- MQTT as a client of its own ------------------------------------------------------------


OBSERVER: Final = "e2e-observer"
OBSERVER_PASSWORD: Final = "e2e-observer-" + "x" * 24


async def _create_observer(broker: dict[str, Any]) -> None:
    """Create the observer's client and role as the dynsec admin; wait until it connects."""
    commands = [
        {
            "command": "createRole",
            "rolename": OBSERVER,
            "acls": [
                {"acltype": acltype, "topic": "iob/#", "allow": True}
                for acltype in (
                    "publishClientSend",
                    "publishClientReceive",
                    "subscribeLiteral",
                    "subscribePattern",
                )
            ],
        },
        {
            "command": "createClient",
            "username": OBSERVER,
            "password": OBSERVER_PASSWORD,
            "roles": [{"rolename": OBSERVER}],
        },
    ]
    admin = {**broker, "username": broker["admin_username"], "password": broker["admin_password"]}
    async with _client(admin, "admin") as client:
        await client.publish(DYNSEC_CONTROL_TOPIC, json.dumps({"commands": commands}), qos=1)
    observer = {**broker, "username": OBSERVER, "password": OBSERVER_PASSWORD}
    async with asyncio.timeout(MQTT_TIMEOUT * 3):
        while True:
            try:
                async with _client(observer, "observer-check"):
                    return
            except aiomqtt.MqttError:
                await asyncio.sleep(0.2)


def _client(credentials: dict[str, Any], name: str) -> aiomqtt.Client:
    # The broker accepts an IoT Onboard credential only with its own client id (its answer's
    # ``client_id``, docs/broker.md); the admin (the observer) has none bound.
    identifier = credentials.get("client_id") or f"e2e-household-{name}-{time.monotonic_ns()}"
    return aiomqtt.Client(
        credentials["host"],
        credentials["port"],
        username=credentials["username"],
        password=credentials["password"],
        identifier=identifier,
        protocol=aiomqtt.ProtocolVersion.V5,
        timeout=MQTT_TIMEOUT,
    )


def _code(reason: object) -> int:
    """An MQTT reason code (paho's ReasonCode or a plain int) as a number."""
    value = getattr(reason, "value", reason)
    return value if isinstance(value, int) else MQTT_FAILURE


def _failed(codes: object) -> bool:
    items = list(codes) if isinstance(codes, list | tuple) else [codes]
    return any(_code(code) >= MQTT_FAILURE for code in items)


def watch_topic(
    credentials: dict[str, Any],
    topic: str,
    until: Callable[[list[str]], bool],
    timeout: float,
    *,
    action: Callable[[], None] | None = None,
) -> list[str]:
    """Payloads on ``topic`` (the retained one first) until ``until(payloads)`` holds.

    ``action`` runs (in a thread) once the subscription is granted, so nothing it causes
    is missed. Fails naming the topic and what arrived when ``timeout`` passes.
    """

    async def run() -> list[str]:
        seen: list[str] = []
        try:
            async with asyncio.timeout(timeout), _client(credentials, "watch") as client:
                codes = await client.subscribe(topic, qos=1)
                assert not _failed(codes), f"the broker refused the subscription to {topic}"
                pending = None if action is None else asyncio.create_task(asyncio.to_thread(action))
                async for message in client.messages:
                    seen.append(message.payload.decode())
                    if until(seen):
                        break
                if pending is not None:
                    await pending
        except TimeoutError:
            pytest.fail(f"{topic}: not what was wanted within {timeout} s; got {seen}")
        return seen

    return asyncio.run(run())


def retained(credentials: dict[str, Any], topic: str) -> str:
    """The retained payload of ``topic`` now."""
    return watch_topic(credentials, topic, bool, MQTT_TIMEOUT)[0]


def publish(credentials: dict[str, Any], topic: str, payload: str) -> None:
    async def run() -> None:
        async with asyncio.timeout(MQTT_TIMEOUT), _client(credentials, "publish") as client:
            await client.publish(topic, payload, qos=1)

    asyncio.run(run())


def subscription_refused(credentials: dict[str, Any], topic: str) -> bool:
    """Whether the broker refuses these credentials a subscription to ``topic`` (SUBACK)."""

    async def run() -> bool:
        async with asyncio.timeout(MQTT_TIMEOUT), _client(credentials, "suback") as client:
            return _failed(await client.subscribe(topic, qos=1))

    return asyncio.run(run())


def connection_refused(credentials: dict[str, Any]) -> bool:
    """Whether the broker refuses these credentials at CONNECT (not authorized)."""

    async def run() -> bool:
        try:
            async with asyncio.timeout(MQTT_TIMEOUT), _client(credentials, "connect"):
                return False
        except aiomqtt.MqttCodeError as err:
            return _code(err.rc) in NOT_AUTHORIZED

    return asyncio.run(run())


# --- the module's stack -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def household() -> Iterator[Household]:
    """The stack with both devices onboarded and the roles mapped; stopped after the module."""
    # Not tmp_path: it lies under a root-only 0700 directory the broker's user cannot reach.
    state_dir = Path(tempfile.mkdtemp(prefix="iob-e2e-household-"))
    stack = Orchestrator("--state-dir", str(state_dir), "--ha-port", "0", "--devices", "2")
    try:
        ready = stack.wait_ready()
        base = ready["homeassistant"]["url"]
        users = {u["username"]: u for u in ready["homeassistant"]["users"]}
        owner_login = next(u for u in users.values() if u["admin"])
        guest_login = next(u for u in users.values() if not u["admin"])
        owner = Ha(base, ha_token(base, owner_login["username"], owner_login["password"]))
        viewer = Ha(base, ha_token(base, guest_login["username"], guest_login["password"]))

        first, second = ready["devices"]
        # Every device's flow ends on its own entry (the success screen with the area picker);
        # the first one created the household entry (the hub) before it.
        result = onboard(owner, ready, first)
        assert result["type"] == "create_entry", result
        result = onboard(owner, ready, second)
        assert result["type"] == "create_entry", result
        entries = [
            e for e in owner.call("/api/config/config_entries/entry") if e["domain"] == DOMAIN
        ]
        (entry,) = [e for e in entries if e["title"] == HOUSEHOLD]
        assert len(entries) == 3, entries
        devices = []
        for facts in (first, second):
            ids = wait_for(
                f"every entity of {facts['device_id']}, available",
                functools.partial(available_entities, owner, facts["device_id"]),
                ENTITIES_TIMEOUT,
            )
            found = registry_device(owner, facts["device_id"])
            assert found is not None
            devices.append(Device(facts["device_id"], facts["data_dir"], found["id"], ids))

        # The owner maps the household's people (the account service keeps the mapping).
        ha_users = {u["username"]: u["id"] for u in ws(owner, {"type": "config/auth/list"})}
        map_role(owner, entry["entry_id"], ha_users[owner_login["username"]], "owner")
        map_role(owner, entry["entry_id"], ha_users[guest_login["username"]], "viewer")

        account = next(a for a in ready["account_service"]["accounts"] if not a["admin"])
        relay_url = ready["account_service"]["url"]
        token = relay(
            relay_url,
            "/v1/auth/sign-in",
            None,
            {"email": account["email"], "password": account["password"]},
        )["access_token"]
        (mine,) = relay(relay_url, "/v1/households", token)["households"]
        assert mine["name"] == HOUSEHOLD, mine

        yield Household(
            ready=ready,
            owner=owner,
            viewer=viewer,
            viewer_user_id=ha_users[guest_login["username"]],
            entry_id=entry["entry_id"],
            relay_url=relay_url,
            relay_token=token,
            household_id=mine["household_id"],
            devices=(devices[0], devices[1]),
        )
        stack.process.send_signal(signal.SIGINT)
        assert stack.wait() == 0, stack.output
        assert processes_mentioning(str(state_dir)) == {}
    finally:
        stack.kill()
        kill_leftovers(str(state_dir))
        shutil.rmtree(state_dir, ignore_errors=True)


def state_of(ha: Ha, entity_id: str) -> str:
    state: str = ha.call(f"/api/states/{entity_id}")["state"]
    return state


def wait_state(ha: Ha, entity_id: str, wanted: Callable[[str], bool], what: str) -> str:
    """Poll the entity's state (REST) until ``wanted`` holds; fail naming ``what``."""

    def probe() -> str | None:
        state = state_of(ha, entity_id)
        return state if wanted(state) else None

    return wait_for(f"{entity_id} {what}", probe, CHANGE_TIMEOUT)


def changed_to(payload: str, seen: list[str]) -> bool:
    """After the retained payload, ``payload`` arrived last (for watch_topic)."""
    return len(seen) > 1 and seen[-1] == payload


def numeric(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


# --- 1. device → Home Assistant ---------------------------------------------------------------


@pytest.mark.slow
def test_device_state_changes_reach_home_assistant(household: Household) -> None:
    device = household.devices[0]
    hub = household.observer()  # sees what the household's hub sees, without taking it over
    base = f"iob/{device.device_id}"

    # The device's sensor drifts on its own: what it publishes becomes the entity's state.
    topic = f"{base}/state/temperature"
    before = float(retained(hub, topic))
    published = watch_topic(hub, topic, lambda seen: float(seen[-1]) != before, DRIFT_TIMEOUT)

    def shows_the_device_value(state: str) -> bool:
        now = float(retained(hub, topic))
        return now != before and numeric(state) == now

    wait_state(
        household.owner,
        device.entities["temperature"],
        shows_the_device_value,
        f"showing the device's new temperature (it published {published})",
    )

    # The relay switched through the device's own MQTT command path, not by Home Assistant:
    # the device switches, reports back, and the entity follows what the device reported.
    switch = device.entities["relay"]
    for payload in ("on", "off"):
        watch_topic(
            hub,
            f"{base}/state/relay",
            functools.partial(changed_to, payload),
            CHANGE_TIMEOUT,
            action=functools.partial(publish, hub, f"{base}/cmd/relay", payload),
        )
        wait_state(household.owner, switch, functools.partial(operator.eq, payload), payload)


# --- 2. Home Assistant → device ---------------------------------------------------------------


@pytest.mark.slow
def test_home_assistant_actions_change_the_device(household: Household) -> None:
    device = household.devices[0]
    owner = household.owner
    hub = household.observer()
    base = f"iob/{device.device_id}"
    switch, number = device.entities["relay"], device.entities["setpoint"]

    # switch.turn_on / turn_off through HA's REST API: the device switches and reports it.
    for service, wanted in (("turn_on", "on"), ("turn_off", "off")):
        watch_topic(
            hub,
            f"{base}/state/relay",
            functools.partial(changed_to, wanted),
            CHANGE_TIMEOUT,
            action=functools.partial(
                owner.call, f"/api/services/switch/{service}", {"entity_id": switch}
            ),
        )
        wait_state(owner, switch, functools.partial(operator.eq, wanted), wanted)

    # number.set_value: a value on the device's grid (10-30 in steps of 0.5).
    current = float(retained(hub, f"{base}/state/setpoint"))
    target = 27.5 if current != 27.5 else 12.5
    watch_topic(
        hub,
        f"{base}/state/setpoint",
        lambda seen: len(seen) > 1 and float(seen[-1]) == target,
        CHANGE_TIMEOUT,
        action=functools.partial(
            owner.call, "/api/services/number/set_value", {"entity_id": number, "value": target}
        ),
    )
    wait_state(owner, number, lambda state: numeric(state) == target, f"{target}")


# --- 3. a viewer ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_viewer_reads_but_cannot_control(household: Household) -> None:
    device = household.devices[0]
    viewer, owner = household.viewer, household.owner
    hub = household.observer()
    switch = device.entities["relay"]
    relay_state = retained(hub, f"iob/{device.device_id}/state/relay")
    registered = registry_device(owner, device.device_id)
    assert registered is not None
    name = registered["name_by_user"] or registered["name"]

    # Reading works: the viewer sees the entities and their states.
    seen = states(viewer)
    assert seen[switch]["state"] == relay_state, seen[switch]
    assert seen[device.entities["temperature"]]["state"] not in {"unknown", "unavailable"}

    # Control is refused, with the integration's message naming the role and the next step.
    for command in (
        {"domain": "switch", "service": "toggle", "target": {"entity_id": switch}},
        {
            "domain": DOMAIN,
            "service": "identify",
            "service_data": {"device_id": device.registry_id},
        },
        {"domain": DOMAIN, "service": "release", "service_data": {"device_id": device.registry_id}},
    ):
        answer = ws_answer(viewer.base, viewer.token, {"type": "call_service", **command})
        assert not answer["success"], answer
        error = answer["error"]
        assert error["code"] == "service_validation_error", error
        assert error["translation_key"] == "permission_denied_user", error
        # (the websocket API puts "Validation error: " before the integration's message)
        assert "Your household role (viewer) does not allow" in error["message"], error
        assert f"on {name}." in error["message"], error
        assert "Ask the household's owner or an admin" in error["message"], error

    # The mapping lives at the account service: the Home Assistant user is a viewer member.
    members = relay(
        household.relay_url,
        f"/v1/households/{household.household_id}/members",
        household.relay_token,
    )["members"]
    wanted = f"ha-user:{household.viewer_user_id}"
    assert [m["role"] for m in members if m["external_id"] == wanted] == ["viewer"], members

    # Nothing reached the device; it is still owned here; the owner still may switch.
    assert retained(hub, f"iob/{device.device_id}/state/relay") == relay_state
    assert device.device_id in household.relay_devices()
    flipped = "off" if relay_state == "on" else "on"
    owner.call(f"/api/services/switch/turn_{flipped}", {"entity_id": switch})
    wait_state(
        viewer,
        switch,
        functools.partial(operator.eq, flipped),
        f"{flipped} (as seen by the viewer)",
    )


# --- 4. transfer to another household -------------------------------------------------------


@pytest.mark.slow
def test_transfer_to_another_household(household: Household) -> None:
    device = household.devices[1]
    owner = household.owner
    url = household.relay_url
    old_hub = household.hub()

    # A second account with a household of its own (sign-up answers with tokens).
    other = relay(url, "/v1/auth/sign-up", None, {**OTHER_ACCOUNT, "display_name": "N"}, 201)
    other_token = other["access_token"]
    theirs = relay(url, "/v1/households", other_token, {"name": OTHER_HOUSEHOLD}, 201)
    their_id = theirs["household_id"]

    # The owner offers the device from Home Assistant; the other household accepts.
    status, raw = get(
        f"{owner.base}/api/services/{DOMAIN}/transfer?return_response",
        {"device_id": device.registry_id, "household_id": their_id},
        token=owner.token,
    )
    assert status == 200, raw
    offer = json.loads(raw)["service_response"]
    assert (offer["to_household_id"], offer["status"]) == (their_id, "pending"), offer
    assert device.device_id in household.relay_devices()  # an offer moves nothing yet
    relay(
        url, f"/v1/households/{their_id}/transfers/{offer['transfer_id']}/accept", other_token, {}
    )

    # The account service: the new household owns it, the old one no longer lists it.
    assert device.device_id in household.relay_devices(their_id, other_token)
    assert device.device_id not in household.relay_devices()

    # The broker: the old household's hub credentials no longer reach the device, the new
    # household's hub does (and gets what the device published).
    topic = f"iob/{device.device_id}/#"
    assert subscription_refused(old_hub, topic)
    new_hub = relay(url, f"/v1/households/{their_id}/hub", other_token)
    meta = json.loads(retained(new_hub, f"iob/{device.device_id}/meta"))
    assert meta["device"]["id"] == device.device_id, meta

    # Home Assistant: the device and its entities leave the first household's entry by
    # themselves, although the accept happened at the account service: the service
    # disconnected the household's hub, and Home Assistant re-read its device list on the
    # reconnect (no reload, no wait for the periodic refresh).
    def gone() -> bool | None:
        return (
            registry_device(owner, device.device_id) is None
            and not entity_ids(owner, device.device_id)
        ) or None

    wait_for(f"{device.device_id} gone from Home Assistant", gone, CHANGE_TIMEOUT)
    assert not set(device.entities.values()) & set(states(owner))
    # The other device stayed.
    assert registry_device(owner, household.devices[0].device_id) is not None


# --- 5. release -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_release_through_home_assistant(household: Household) -> None:
    device = household.devices[0]
    owner = household.owner
    credentials = device_mqtt_credentials(device)
    assert not connection_refused(credentials)  # the device's own credentials work until now
    before = device_status(device)
    assert before["household_id"] == household.household_id, before
    assert before["wifi_ssid"], before

    owner.call(f"/api/services/{DOMAIN}/release", {"device_id": device.registry_id})

    # Home Assistant: the device and its entities are gone at once.
    assert registry_device(owner, device.device_id) is None
    assert not entity_ids(owner, device.device_id)
    assert not set(device.entities.values()) & set(states(owner))
    # The account service: no longer the household's, and claimable again.
    assert device.device_id not in household.relay_devices()
    claim = relay(
        household.relay_url,
        f"/v1/households/{household.household_id}/claims",
        household.relay_token,
        {"device_id": device.device_id},
        201,
    )
    assert claim["token"], claim
    # The broker: the device's credentials are refused from now on.
    assert connection_refused(credentials)

    # The device: its session was kicked and its reconnection refused; it asked the account
    # service, heard that nobody owns it, and returned to unclaimed by itself, keeping its
    # Wi-Fi (a new owner sets it up with the label's code).

    def unclaimed_status() -> dict[str, Any] | None:
        status = device_status(device)
        return status if status["phase"] == "unclaimed" else None

    status = wait_for("the device's status to say unclaimed", unclaimed_status, CHANGE_TIMEOUT)
    assert status["household_id"] is None, status
    assert status["service_url"] is None, status
    assert status["mqtt_broker"] is None, status
    assert status["owner_secret_saved"] is False, status
    assert status["diagnostic"] is None, status
    assert status["wifi_ssid"] == before["wifi_ssid"], (status, before)
    assert status["device_id"] == device.device_id, status
    assert status["agent_pid"] is not None, status  # the agent runs on, nothing crashed
