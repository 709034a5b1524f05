"""The Docker Compose example runs the add-on's image with what the runner expects.

The image is built from the same recipe without a registry by scripts/addon-image and run under
podman by ``test_image.py``; the runner without a Supervisor is tested in ``test_run_script.py``.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import yaml

from cloud_relay.addon import HTTP_PORT, MQTT_PORT

ADDON = Path(__file__).parents[2] / "addon" / "iot_onboard_relay"


def _compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ADDON / "compose.yaml").read_text())
    (service,) = document["services"].values()
    return service  # type: ignore[no-any-return]


def test_the_compose_example_maps_the_runners_ports_and_data() -> None:
    service = _compose()
    assert service["ports"] == [f"{HTTP_PORT}:{HTTP_PORT}", f"{MQTT_PORT}:{MQTT_PORT}"]
    assert service["volumes"] == ["./data:/data"]
    assert "SUPERVISOR_TOKEN" not in service["environment"]  # the runner's "no Supervisor" path
    assert service["build"]["context"] == "."
    assert (ADDON / service["build"]["context"] / "Dockerfile").is_file()


def test_the_compose_example_builds_the_released_version() -> None:
    pyproject = tomllib.loads((ADDON.parents[1] / "pyproject.toml").read_text())
    addon = yaml.safe_load((ADDON / "config.yaml").read_text())
    version = pyproject["project"]["version"]
    assert addon["version"] == version
    service = _compose()
    assert service["build"]["args"]["BUILD_VERSION"] == version
    assert service["image"].endswith(f":{version}")
