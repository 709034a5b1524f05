"""A device speaking the IoT Onboard MQTT topics, run as a subprocess by the runtime tests.

It connects with its own dynamic-security credentials and a retained will (``offline``),
publishes retained ``online``, its capability descriptor and states, and answers commands the
way device_firmware's runtime does (switch and number: the new state at once; button: a
``pressed`` diagnostic event). It reconnects after a broker restart and re-publishes. Killing
it with SIGKILL makes the broker publish the will: the real LWT path. It imports only aiomqtt
(the HA test tree must not import device_firmware).

Usage: ``python fake_device.py HOST PORT DEVICE_ID PASSWORD META_JSON STATES_JSON``; prints
``ready`` on stdout after the first announcement.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import aiomqtt


def fake_device_command(
    host: str, port: int, *, device_id: str, password: str, meta: Any, states: dict[str, str]
) -> list[str]:
    """The command line of a fake device process with the device's broker account."""
    return [
        sys.executable,
        str(Path(__file__)),
        host,
        str(port),
        device_id,
        password,
        json.dumps(meta),
        json.dumps(states),
    ]


async def _serve(argv: list[str]) -> None:
    host, port, device_id, password, meta_text, states_text = argv
    meta = json.loads(meta_text)
    states: dict[str, str] = json.loads(states_text)
    platforms = {entity["key"]: entity["platform"] for entity in meta["entities"]}
    base = f"iob/{device_id}"
    announced = False
    while True:
        try:
            async with aiomqtt.Client(
                host,
                int(port),
                username=device_id,
                password=password,
                identifier=device_id,
                protocol=aiomqtt.ProtocolVersion.V5,
                will=aiomqtt.Will(f"{base}/availability", b"offline", qos=1, retain=True),
                keepalive=5,
            ) as client:
                await client.subscribe(f"{base}/cmd/+", qos=1)
                await client.publish(f"{base}/availability", b"online", qos=1, retain=True)
                await client.publish(f"{base}/meta", json.dumps(meta).encode(), qos=1, retain=True)
                for key, value in states.items():
                    await client.publish(f"{base}/state/{key}", value.encode(), qos=1, retain=True)
                if not announced:
                    sys.stdout.write("ready\n")
                    sys.stdout.flush()
                    announced = True
                async for message in client.messages:
                    key = str(message.topic).rsplit("/", 1)[-1]
                    payload = bytes(message.payload).decode()
                    platform = platforms.get(key)
                    if platform in {"switch", "number"}:
                        states[key] = payload
                        await client.publish(
                            f"{base}/state/{key}", payload.encode(), qos=1, retain=True
                        )
                    event = {"event": "pressed" if platform == "button" else "command", "key": key}
                    event["payload"] = payload
                    await client.publish(f"{base}/diag", json.dumps(event).encode(), qos=1)
        except aiomqtt.MqttError:
            await asyncio.sleep(0.2)


if __name__ == "__main__":
    asyncio.run(_serve(sys.argv[1:]))
