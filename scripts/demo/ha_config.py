"""The demo's Home Assistant configuration directory (``configuration.yaml`` and its includes).

``configuration.yaml`` is rewritten on every start; ``automations.yaml`` and ``scripts.yaml``
are made once, as Home Assistant's own default configuration makes them, and then belong to
the automation and script editors (which save there), so what a person saved in the demo stays.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

#: Home Assistant's defaults for the files its editors save to (``homeassistant/config.py``).
_EDITOR_FILES: Final = {"automations.yaml": "[]\n", "scripts.yaml": ""}


def configuration_yaml(*, http_host: str, http_port: int) -> str:
    """The demo's configuration.yaml."""
    return f"""\
# Written by scripts/develop (the demo stack) on every start: edits here are lost.
# Deliberately not default_config (cloud, SSDP and fetches from the internet).
homeassistant:
  name: IoT Onboard demo
  latitude: 52.3731
  longitude: 4.8922
  elevation: 0
  unit_system: metric
  time_zone: UTC
  currency: EUR
  country: NL

http:
  server_host: {http_host}
  server_port: {http_port}

logger:
  default: warning
  logs:
    custom_components.iot_onboard: debug
    # A few lines per discovered record: whether HA's zeroconf saw a device at all.
    homeassistant.components.zeroconf: debug

# Discovery of the devices' _iot-onboard._tcp advertisements.
zeroconf:

# Automations and scripts made in the UI are saved to these files (kept between starts).
automation: !include automations.yaml
script: !include scripts.yaml
"""


def write_config(directory: Path, *, http_host: str, http_port: int) -> None:
    """Write configuration.yaml; make the editors' files unless they exist."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "configuration.yaml").write_text(
        configuration_yaml(http_host=http_host, http_port=http_port), encoding="utf-8"
    )
    for name, initial in _EDITOR_FILES.items():
        path = directory / name
        if not path.exists():
            path.write_text(initial, encoding="utf-8")
