"""The demo devices' names, so every demo gives them the same entity ids.

Home Assistant names a device from its capability descriptor (the device agent's ``name``) and
makes its entity ids from that name: device 1 is "Kitchen sensor", so its relay is
``switch.kitchen_sensor_relay`` in every demo, as docs/user-guide.md's example says
(tests/test_user_guide.py checks the guide against these names).
"""

from __future__ import annotations

from typing import Final

#: At most this many devices (``--devices``).
MAX_DEVICES: Final = 20
_ROOMS: Final = ("Kitchen", "Hallway", "Garden", "Bedroom", "Office", "Garage")


def device_name(index: int) -> str:
    """The name of demo device ``index`` (1-based): a room, then numbered ones."""
    if not 1 <= index <= MAX_DEVICES:
        raise ValueError(f"demo device index must be 1-{MAX_DEVICES}, not {index}")
    if index <= len(_ROOMS):
        return f"{_ROOMS[index - 1]} sensor"
    return f"Demo sensor {index}"
