"""Onboarding latency: from Home Assistant's discovery of a device to its entities available.

The real stack (scripts/demo_stack.py's processes) with N simulated device agents, started in
batches (each a ``python -m device_firmware run`` process advertising over zeroconf on
127.0.0.1), and N more for the baseline. The household entry exists in Home Assistant. Then,
one device at a time:

* through Home Assistant: the clock starts when the benchmark finds the device's zeroconf
  discovery flow listed (the "Discovered" card a person sees; Home Assistant lists every agent
  before the first one is onboarded, so the advertisement-to-card time is not in the figure),
  the benchmark answers each step at once over the config-flow API (confirm, setup code from
  the QR payload, the "Home" network), waits for the commit and stops the clock when every
  entity of the device is in Home Assistant and available;
* baseline, the same kind of device without Home Assistant: the handshake with the QR payload,
  Wi-Fi, a claim, ``set_claim`` and ``commit`` straight over the LAN, until the account service
  says ``owned`` and the device's ``online`` is on the broker (bench/lan.py).

Both wait on the same device-side commit; the difference is Home Assistant's flow steps, the
device entry's set-up and building its entities. The benchmark waits as HA's frontend does, on
websocket events (``data_entry_flow_progressed``, ``state_changed``), so no poll interval of its
own is in the figure, and it prints each device's time per phase (see :func:`through_ha`).

    .venv/bin/python bench/bench_onboarding.py [--devices 50] [--batch 10] [--quick] [--json FILE]
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Final, NoReturn

import aiohttp
from clients import HaApi, RelayApi, entities_ready, wait_for, wait_on_events
from common import BenchError, Result, finish, isolate, parser, percentile, result, say
from demo_stack import HOME_WIFI, DeviceFacts
from lan import onboard
from stack import BenchStack, household_in_ha, running_stack

ENTITIES: Final = 5
POLL: Final = 0.2
#: Bounds, not expectations.
DISCOVERY_TIMEOUT: Final = 120.0
COMMIT_TIMEOUT: Final = 300.0
ENTITIES_TIMEOUT: Final = 120.0


async def _discovered(ha: HaApi, device_id: str) -> dict[str, Any] | None:
    flows = await ha.ws_command({"type": "config_entries/flow/progress"})
    return next(
        (
            flow
            for flow in flows
            if flow["handler"] == "iot_onboard"
            and flow["context"].get("source") == "zeroconf"
            and f"iob-{device_id}." in str(flow["context"].get("discovery_key", {}).get("key"))
        ),
        None,
    )


#: The phases of one onboarding through Home Assistant, in order (see :func:`through_ha`).
PHASES: Final = ("confirm", "handshake", "wifi", "commit", "finish", "entities")
PROGRESSED: Final = "data_entry_flow_progressed"
STATE_CHANGED: Final = "state_changed"


async def through_ha(ha: HaApi, device: DeviceFacts) -> dict[str, float]:
    """Seconds per phase from finding the listed discovery flow to every entity available.

    Waits as Home Assistant's frontend does, on events (no poll interval in the figure): the
    progress step ends with Home Assistant's ``data_entry_flow_progressed`` for the flow, then
    the flow is read again (its ``create_entry`` sets the device's entry up); the entities are
    looked at after every ``state_changed``. Phases: ``confirm`` (the discovery confirmed),
    ``handshake`` (the setup code: session and claim check), ``wifi`` (the network submitted,
    the progress shown; or, for a commit that ended inside the flow's inline wait, the whole
    commit and the device's entry, with ``commit`` and ``finish`` zero), ``commit`` (until
    Home Assistant says the outcome is known),
    ``finish`` (the flow read again: the device's entry created and set up), ``entities``
    (every entity of the device in Home Assistant and available).
    """
    flow = await wait_for(
        f"Home Assistant discovering {device.device_id}",
        lambda: _discovered(ha, device.device_id),
        lambda found: found is not None,
        DISCOVERY_TIMEOUT,
        poll=POLL,
    )
    if flow is None:  # pragma: no cover - wait_for returned it
        raise BenchError("no flow")
    flow_id = flow["flow_id"]
    async with ha.events(PROGRESSED, STATE_CHANGED) as events:
        marks = [time.perf_counter()]
        step = await ha.flow_step(flow_id, {})
        marks.append(time.perf_counter())
        if step.get("step_id") != "credentials":
            raise_step("credentials", step)
        step = await ha.flow_step(flow_id, {"setup_code": device.qr_payload})
        marks.append(time.perf_counter())
        if step.get("step_id") != "wifi":
            raise_step("wifi", step)
        network = "ssid:" + HOME_WIFI.ssid.encode().hex()
        step = await ha.flow_step(flow_id, {"network": network, "passphrase": HOME_WIFI.passphrase})
        marks.append(time.perf_counter())
        if step.get("type") == "progress":
            try:
                async with asyncio.timeout(COMMIT_TIMEOUT):
                    while not _progressed(await events.next(), flow_id):
                        pass
            except TimeoutError:
                raise BenchError(f"the commit of {device.device_id}: no outcome") from None
            marks.append(time.perf_counter())
            done = await ha.call(f"/api/config/config_entries/flow/{flow_id}")
            marks.append(time.perf_counter())
        else:  # the commit ended inside the flow's inline wait: in the "wifi" phase
            done = step
            marks += [marks[-1], marks[-1]]
        if done.get("type") != "create_entry":
            raise_step("the device's create_entry", done)
        await wait_on_events(
            f"the entities of {device.device_id}, available",
            events,
            lambda: ha.device_states(device.device_id),
            lambda states: entities_ready(states, ENTITIES),
            ENTITIES_TIMEOUT,
            relevant=lambda event: event["event_type"] == STATE_CHANGED,
        )
        marks.append(time.perf_counter())
    return {phase: marks[number + 1] - marks[number] for number, phase in enumerate(PHASES)} | {
        "total": marks[-1] - marks[0]
    }


def _progressed(event: dict[str, Any], flow_id: str) -> bool:
    return bool(event["event_type"] == PROGRESSED and event["data"].get("flow_id") == flow_id)


def raise_step(wanted: str, step: dict[str, Any]) -> NoReturn:
    """The flow went somewhere else than the benchmark expects."""
    raise BenchError(f"expected the {wanted} step, Home Assistant answered {step}")


async def lan_baseline(
    stack: BenchStack, session: aiohttp.ClientSession, devices: list[DeviceFacts]
) -> list[float]:
    """Seconds of each device's bare handshake + Wi-Fi + claim + commit over the LAN.

    The devices go to a new account's household that Home Assistant does not hold.
    """
    lan_relay = RelayApi(stack.relay_url, session)
    await lan_relay.sign_up("baseline@bench.invalid", "benchmark password")
    lan_household = await lan_relay.create_household("baseline")
    hub = await lan_relay.hub(lan_household)
    lan_seconds: list[float] = []
    for number, device in enumerate(devices, start=1):
        lan_seconds.append(
            await onboard(
                device.url,
                device.qr_payload,
                wifi=(HOME_WIFI.ssid, HOME_WIFI.passphrase),
                relay=lan_relay,
                household=lan_household,
                hub=hub,
                session=session,
            )
        )
        say(f"baseline {number}/{len(devices)}: {lan_seconds[-1]:.2f} s")
    return lan_seconds


async def measure(
    stack: BenchStack, baseline_devices: list[DeviceFacts], ha_devices: list[DeviceFacts]
) -> tuple[list[Result], dict[str, Any]]:
    """Each baseline device over the LAN, then each device through Home Assistant."""
    async with aiohttp.ClientSession() as session:
        home = await household_in_ha(stack, session, "onboarding")
        lan_seconds = await lan_baseline(stack, session, baseline_devices)
        phases: list[dict[str, float]] = []
        for number, device in enumerate(ha_devices, start=1):
            phases.append(await through_ha(home.ha, device))
            say(
                f"through HA {number}/{len(ha_devices)}: {phases[-1]['total']:.3f} s ("
                + ", ".join(f"{phase} {phases[-1][phase]:.3f}" for phase in PHASES)
                + ")"
            )
    ha_seconds = [one["total"] for one in phases]
    label = "bare handshake+commit over LAN"
    count = len(ha_devices)
    rows = [
        result(
            f"onboarding: discovery → entities available, p50 (N={count})",
            percentile(ha_seconds, 0.5),
            "s",
            percentile(lan_seconds, 0.5),
            label,
        ),
        result(
            f"onboarding: discovery → entities available, p95 (N={count})",
            percentile(ha_seconds, 0.95),
            "s",
            percentile(lan_seconds, 0.95),
            label,
        ),
    ]
    facts = {
        "devices_through_ha": count,
        "devices_baseline": len(baseline_devices),
        "seconds_through_ha": [round(s, 3) for s in ha_seconds],
        "seconds_baseline": [round(s, 3) for s in lan_seconds],
        "phase_seconds_p50": {
            phase: round(percentile([one[phase] for one in phases], 0.5), 3) for phase in PHASES
        },
    }
    return rows, facts


def main() -> None:
    """Start the stack and the agents, measure, print and write the results."""
    options = parser(__doc__)
    options.add_argument("--devices", type=int, help="devices through HA (50; --quick: 1)")
    options.add_argument("--batch", type=int, default=10, help="agents started at once (10)")
    args = options.parse_args()
    count = args.devices or (1 if args.quick else 50)
    isolated = isolate()
    with running_stack(label="onboarding", agents=2 * count, batch=args.batch) as stack:
        baseline_devices, ha_devices = stack.devices[:count], stack.devices[count:]
        rows, facts = asyncio.run(measure(stack, baseline_devices, ha_devices))
    finish("onboarding", rows, args, isolated=isolated, batch=args.batch, **facts)


if __name__ == "__main__":
    main()
