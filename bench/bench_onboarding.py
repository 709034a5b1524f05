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

Both wait on the same device-side commit; the difference is Home Assistant's flow (its 1 s
polling of the commit), the entry reload that adds the device, and building its entities.

    .venv/bin/python bench/bench_onboarding.py [--devices 50] [--batch 10] [--quick] [--json FILE]
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, Final, NoReturn

import aiohttp
from clients import HaApi, RelayApi, entities_ready, wait_for
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


async def through_ha(ha: HaApi, device: DeviceFacts) -> float:
    """Seconds from finding the listed discovery flow to every entity available."""
    flow = await wait_for(
        f"Home Assistant discovering {device.device_id}",
        lambda: _discovered(ha, device.device_id),
        lambda found: found is not None,
        DISCOVERY_TIMEOUT,
        poll=POLL,
    )
    started = time.perf_counter()
    if flow is None:  # pragma: no cover - wait_for returned it
        raise BenchError("no flow")
    flow_id = flow["flow_id"]
    step = await ha.flow_step(flow_id, {})
    if step.get("step_id") != "credentials":
        raise_step("credentials", step)
    step = await ha.flow_step(flow_id, {"setup_code": device.qr_payload})
    if step.get("step_id") != "wifi":
        raise_step("wifi", step)
    step = await ha.flow_step(
        flow_id,
        {"network": "ssid:" + HOME_WIFI.ssid.encode().hex(), "passphrase": HOME_WIFI.passphrase},
    )
    if step.get("type") != "progress":
        raise_step("progress", step)
    done = await wait_for(
        f"the commit of {device.device_id}",
        lambda: ha.call(f"/api/config/config_entries/flow/{flow_id}"),
        lambda now: now.get("type") != "progress",
        COMMIT_TIMEOUT,
        poll=POLL,
    )
    if done.get("type") != "create_entry":
        raise_step("the device's create_entry", done)
    await wait_for(
        f"the entities of {device.device_id}, available",
        lambda: ha.device_states(device.device_id),
        lambda states: entities_ready(states, ENTITIES),
        ENTITIES_TIMEOUT,
        poll=POLL,
    )
    return time.perf_counter() - started


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
        ha_seconds: list[float] = []
        for number, device in enumerate(ha_devices, start=1):
            ha_seconds.append(await through_ha(home.ha, device))
            say(f"through HA {number}/{len(ha_devices)}: {ha_seconds[-1]:.2f} s")
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
