"""The benchmarks' clients: Home Assistant's APIs, the account service's, and light devices.

A :class:`LightDevice` is what the memory and telemetry benchmarks connect instead of a whole
device agent: a factory identity registered at the account service, claimed through its real
API (claim, then the device's signed confirmation), connected to the broker with the MQTT
credential the service created for it, publishing on its own topics what the agent publishes
(retained availability, the simulated agent's capability descriptor, one state per entity).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import aiomqtt
from common import BenchError
from iob_protocol.canonical import b64url_encode
from iob_protocol.claim import ClaimConfirmation
from iob_protocol.identity import DeviceIdentity

from device_firmware.capabilities.simulated import simulated_capabilities

DOMAIN: Final = "iot_onboard"
#: Any syntactically valid verifier: light devices never run a handshake.
VERIFIER: Final = "iob-verifier-v1$scrypt$14$8$1$" + "A" * 22 + "$" + "A" * 43 + "$" + "A" * 43
HTTP_TIMEOUT: Final = aiohttp.ClientTimeout(total=120)
IMPORT_BATCH: Final = 200
INITIAL_STATES: Final = {"temperature": "21.0", "motion": "off", "relay": "off", "setpoint": "20.0"}


@dataclass(frozen=True, slots=True)
class Mqtt:
    """An MQTT credential as the account service hands it out."""

    host: str
    port: int
    username: str
    password: str

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Mqtt:
        """From ``{"host", "port", "username", "password", ...}``."""
        return cls(
            str(document["host"]),
            int(document["port"]),
            str(document["username"]),
            str(document["password"]),
        )


class RelayApi:
    """The account service's HTTP API as an account holder uses it."""

    def __init__(self, base: str, session: aiohttp.ClientSession) -> None:
        """Not signed in until :meth:`sign_up` or :meth:`sign_in`."""
        self.base = base
        self.session = session
        self.token = ""

    async def call(self, method: str, path: str, body: Any = None, *, expect: int = 200) -> Any:
        """One request; anything but ``expect`` is a BenchError with the body."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with self.session.request(
            method, self.base + path, json=body, headers=headers, timeout=HTTP_TIMEOUT
        ) as response:
            text = await response.text()
            if response.status != expect:
                raise BenchError(f"{method} {path}: HTTP {response.status}: {text[:500]}")
            return json.loads(text) if text else None

    async def sign_up(self, email: str, password: str) -> None:
        """Create the account and sign in."""
        answer = await self.call(
            "POST", "/v1/auth/sign-up", {"email": email, "password": password}, expect=201
        )
        self.token = answer["access_token"]

    async def sign_in(self, email: str, password: str) -> None:
        """Sign in to an existing account."""
        answer = await self.call("POST", "/v1/auth/sign-in", {"email": email, "password": password})
        self.token = answer["access_token"]

    async def create_household(self, name: str) -> str:
        """A new household this account owns; its id."""
        answer = await self.call("POST", "/v1/households", {"name": name}, expect=201)
        return str(answer["household_id"])

    async def hub(self, household: str) -> Mqtt:
        """The household hub's MQTT credential (what Home Assistant connects with)."""
        return Mqtt.from_json(await self.call("GET", f"/v1/households/{household}/hub"))

    async def claim(self, household: str, device_id: str) -> tuple[str, str]:
        """A claim for ``device_id``: (claim id, token)."""
        answer = await self.call(
            "POST", f"/v1/households/{household}/claims", {"device_id": device_id}, expect=201
        )
        return str(answer["claim_id"]), str(answer["token"])

    async def claim_status(self, claim_id: str) -> str:
        """pending, owned, expired or rejected."""
        return str((await self.call("GET", f"/v1/claims/{claim_id}"))["status"])

    async def confirm(self, identity: DeviceIdentity, token: str) -> Mqtt:
        """The device's signed confirmation (as the device sends it); its MQTT credential."""
        confirmation = ClaimConfirmation.create(identity, token)
        answer = await self.call(
            "POST", "/v1/claims/confirm", {"confirmation": json.loads(confirmation.to_json())}
        )
        return Mqtt.from_json(answer["mqtt"])


def factory_record(identity: DeviceIdentity, model: str) -> dict[str, str]:
    """The registry record factory-provision would write for ``identity``."""
    return {
        "device_id": identity.device_id,
        "model": model,
        "public_key": b64url_encode(identity.public_key),
        "setup_verifier": VERIFIER,
    }


def meta(device_id: str) -> dict[str, Any]:
    """The simulated agent's capability descriptor (the same entities, from its own code)."""
    return {
        "protocol": 1,
        "device": {"id": device_id, "manufacturer": "IoT Onboard", "model": "iob-demo"},
        "entities": [c.descriptor.to_json() for c in simulated_capabilities()],
    }


def mqtt_client(credential: Mqtt, *, will: str | None = None) -> aiomqtt.Client:
    """An MQTT 5 client as the device runtime makes one (will: its availability topic).

    Its client id is the username: the broker binds every IoT Onboard user to that id (a
    device's id; ``hub-<household>`` for a hub), so a second session of one credential takes
    the first one over.
    """
    return aiomqtt.Client(
        credential.host,
        credential.port,
        username=credential.username,
        password=credential.password,
        identifier=credential.username,
        protocol=aiomqtt.ProtocolVersion.V5,
        keepalive=30,
        will=None if will is None else aiomqtt.Will(will, "offline", qos=1, retain=True),
        timeout=60,
    )


@dataclass(slots=True)
class LightDevice:
    """A claimed device as an MQTT client only (no agent process)."""

    identity: DeviceIdentity
    mqtt: Mqtt

    @property
    def device_id(self) -> str:
        """The factory id."""
        return self.identity.device_id

    def topic(self, suffix: str) -> str:
        """A topic under the device's own subtree."""
        return f"iob/{self.device_id}/{suffix}"

    @contextlib.asynccontextmanager
    async def connected(self) -> AsyncIterator[aiomqtt.Client]:
        """Connected, with availability, meta and every state published (retained)."""
        client = mqtt_client(self.mqtt, will=self.topic("availability"))
        async with client:
            await client.publish(self.topic("availability"), "online", qos=1, retain=True)
            await client.publish(
                self.topic("meta"), json.dumps(meta(self.device_id)), qos=1, retain=True
            )
            for key, value in INITIAL_STATES.items():
                await client.publish(self.topic(f"state/{key}"), value, qos=1, retain=True)
            yield client


async def claim_light_devices(
    relay: RelayApi, maker: RelayApi, household: str, count: int, *, concurrency: int = 16
) -> list[LightDevice]:
    """Register ``count`` new identities (admin import) and claim each through the real API."""
    identities = [DeviceIdentity.generate() for _ in range(count)]
    # The import endpoint's body limit: a few hundred records per request.
    for start in range(0, count, IMPORT_BATCH):
        batch = identities[start : start + IMPORT_BATCH]
        await maker.call(
            "POST",
            "/v1/admin/registry/import",
            {"records": [factory_record(i, "iob-demo") for i in batch]},
        )
    devices: list[LightDevice | None] = [None] * count
    queue = iter(range(count))

    async def worker() -> None:
        for index in queue:
            identity = identities[index]
            _, token = await relay.claim(household, identity.device_id)
            devices[index] = LightDevice(identity, await relay.confirm(identity, token))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return [d for d in devices if d is not None]


def _entity_ids(device_id: str, *, of_it: bool) -> str:
    """A template expression: the integration's entity ids of ``device_id``, or of all others.

    Devices are found by their serial number (the device id).
    """
    test = "select" if of_it else "reject"
    return (
        f"integration_entities('{DOMAIN}') | {test}('is_device_attr', 'serial_number', "
        f"'{device_id}')"
    )


class HaApi:
    """Home Assistant's REST and websocket APIs, with an access token."""

    def __init__(self, base: str, token: str, session: aiohttp.ClientSession) -> None:
        """``token`` from the login flow (tests.stack.helpers.ha_token)."""
        self.base = base
        self.token = token
        self.session = session

    async def call(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """GET (POST with ``body``); anything but 200 is a BenchError."""
        method = "GET" if body is None else "POST"
        async with self.session.request(
            method,
            self.base + path,
            json=body,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=HTTP_TIMEOUT,
        ) as response:
            text = await response.text()
            if response.status != 200:
                raise BenchError(f"Home Assistant {path}: HTTP {response.status}: {text[:500]}")
            return json.loads(text)

    async def template(self, template: str) -> Any:
        """A rendered template, parsed as JSON (use ``| tojson``)."""
        return await self.call("/api/template", {"template": template})

    @contextlib.asynccontextmanager
    async def websocket(self) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
        """An authenticated websocket."""
        async with self.session.ws_connect(f"{self.base}/api/websocket", max_msg_size=0) as ws:
            if (await ws.receive_json())["type"] != "auth_required":
                raise BenchError("Home Assistant's websocket did not ask for auth")
            await ws.send_json({"type": "auth", "access_token": self.token})
            if (await ws.receive_json())["type"] != "auth_ok":
                raise BenchError("Home Assistant's websocket refused the token")
            yield ws

    @contextlib.asynccontextmanager
    async def events(self, *event_types: str) -> AsyncIterator[HaEvents]:
        """Home Assistant's events of ``event_types`` from now on (as its frontend hears them)."""
        async with self.websocket() as ws:
            events = HaEvents(ws)
            for event_type in event_types:
                await events.command({"type": "subscribe_events", "event_type": event_type})
            yield events

    async def ws_command(self, command: dict[str, Any]) -> Any:
        """One websocket command's result."""
        async with self.websocket() as ws:
            await ws.send_json({"id": 1, **command})
            answer = await ws.receive_json()
            if not answer.get("success"):
                raise BenchError(f"Home Assistant refused {command}: {answer}")
            return answer["result"]

    async def flow_step(self, flow_id: str, user_input: dict[str, Any]) -> dict[str, Any]:
        """Submit one config-flow step; a form that refuses the input is a BenchError."""
        result: dict[str, Any] = await self.call(
            f"/api/config/config_entries/flow/{flow_id}", user_input
        )
        if result.get("errors"):
            raise BenchError(f"the flow refused {list(user_input)}: {result}")
        return result

    async def add_household_entry(self, relay_url: str, email: str, password: str) -> None:
        """The household entry, as a person adds it: sign in, the one household is chosen."""
        result: dict[str, Any] = await self.call(
            "/api/config/config_entries/flow", {"handler": DOMAIN}
        )
        if result.get("step_id") == "user":  # a menu once entries exist
            result = await self.flow_step(result["flow_id"], {"next_step_id": "account"})
        result = await self.flow_step(
            result["flow_id"],
            {
                "account_url": relay_url,
                "email": email,
                "password": password,
                "create_account": False,
            },
        )
        if result.get("type") != "create_entry":
            raise BenchError(f"adding the household entry ended with {result}")

    async def household_entry_id(self) -> str:
        """The integration's household entry (each onboarded device has an entry too).

        Only the household entry has options (the roles): the entry list has no unique ids.
        """
        entries = await self.call("/api/config/config_entries/entry")
        for entry in entries:
            if entry["domain"] == DOMAIN and entry["supports_options"]:
                return str(entry["entry_id"])
        raise BenchError("Home Assistant has no household entry")

    async def reload_household(self) -> None:
        """Reload the entry: the coordinator re-reads the household's device list.

        The hub role allows only per-device subscriptions, so devices claimed behind Home
        Assistant's back (not through its own config flow, which reloads the entry itself)
        are seen at the next reload, reconnection or 15-minute sync.
        """
        entry_id = await self.household_entry_id()
        await self.call(f"/api/config/config_entries/entry/{entry_id}/reload", {})

    async def entity_states(self) -> list[str]:
        """The state of every entity of the integration."""
        states: list[str] = await self.template(
            f"{{{{ integration_entities('{DOMAIN}') | map('states') | list | tojson }}}}"
        )
        return states

    async def unavailable_except(self, device_id: str) -> int:
        """How many of the integration's entities are unavailable, ``device_id``'s left out."""
        count: int = await self.template(
            f"{{{{ {_entity_ids(device_id, of_it=False)} "
            "| map('states') | select('eq', 'unavailable') | list | count }}"
        )
        return count

    async def now(self) -> str:
        """Home Assistant's own clock, as an ISO time (to compare with its ``last_reported``)."""
        now: str = await self.template("{{ now().isoformat() | tojson }}")
        return now

    async def written_since_except(self, device_id: str, since: str) -> tuple[int, int]:
        """(how many, of how many) of the integration's entities were written after ``since``.

        ``device_id``'s entities are left out. ``last_reported`` moves on every state write,
        also one that changes nothing (which fires no ``state_changed``). Counted inside the
        template, which sees the live state objects (the REST API's are cached and keep the
        ``last_reported`` of the last change) and answers two numbers at any household size
        (a template's output is capped at 256 KiB: 5,000 entities' times do not fit).
        """
        counts: list[int] = await self.template(
            f"{{% set others = expand({_entity_ids(device_id, of_it=False)} | list) %}}"
            f"{{{{ [others | selectattr('last_reported', 'gt', as_datetime('{since}')) "
            "| list | count, others | count] | tojson }}"
        )
        return counts[0], counts[1]

    async def device_states(self, device_id: str) -> list[str]:
        """The states of one device's entities (found by its serial number)."""
        states: list[str] = await self.template(
            f"{{{{ {_entity_ids(device_id, of_it=True)} | map('states') | list | tojson }}}}"
        )
        return states

    async def entity_id(self, device_id: str, key: str) -> str:
        """The entity id of one device's entity (unique id ``<device_id>_<key>``)."""
        entries = await self.ws_command({"type": "config/entity_registry/list"})
        for entry in entries:
            if entry.get("unique_id") == f"{device_id}_{key}" and entry["platform"] == DOMAIN:
                return str(entry["entity_id"])
        raise BenchError(f"Home Assistant has no entity {key} of {device_id}")


class HaEvents:
    """Subscribed events on one websocket: a wait hears a change when it happens (no poll)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """``ws``: authenticated (:meth:`HaApi.websocket`)."""
        self.ws = ws
        self.ids = itertools.count(1)

    async def command(self, command: dict[str, Any]) -> Any:
        """One command's result (events that arrive before it are dropped: none is awaited)."""
        number = next(self.ids)
        await self.ws.send_json({"id": number, **command})
        while True:
            answer = await self.ws.receive_json()
            if answer.get("id") == number and answer.get("type") == "result":
                if not answer.get("success"):
                    raise BenchError(f"Home Assistant refused {command}: {answer}")
                return answer.get("result")

    async def next(self) -> dict[str, Any]:
        """The next subscribed event (``{"event_type", "data", ...}``)."""
        while True:
            message = await self.ws.receive_json()
            if message.get("type") == "event":
                event: dict[str, Any] = message["event"]
                return event


async def wait_on_events[T](
    what: str,
    events: HaEvents,
    probe: Callable[[], Awaitable[T]],
    accept: Callable[[T], bool],
    within: float,
    *,
    relevant: Callable[[dict[str, Any]], bool] = lambda _event: True,
) -> T:
    """Await ``probe()`` now and after every relevant event until ``accept`` holds for it.

    Unlike :func:`wait_for` the answer is seen as soon as the event that makes it true arrives,
    not at the next poll; BenchError after ``within`` s.
    """
    try:
        async with asyncio.timeout(within):
            while not accept(found := await probe()):
                while not relevant(await events.next()):
                    pass
    except TimeoutError:
        raise BenchError(f"{what}: not within {within:.0f} s") from None
    return found


async def wait_for[T](
    what: str,
    probe: Callable[[], Awaitable[T]],
    accept: Callable[[T], bool],
    within: float,
    *,
    poll: float = 0.5,
) -> T:
    """Await ``probe()`` until ``accept`` holds for its result; BenchError after ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        found = await probe()
        if accept(found):
            return found
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: not within {within:.0f} s (last: {str(found)[:300]})")
        await asyncio.sleep(poll)


def entities_ready(states: Sequence[str], expected: int) -> bool:
    """Every expected entity exists and none is unavailable."""
    return len(states) >= expected and "unavailable" not in states
