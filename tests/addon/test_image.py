"""The add-on's image (built by scripts/addon-image) under podman, as the Supervisor starts it.

The container gets a network namespace of its own whose only link is a veth pair to the test's
namespace (tests/plugins/netns): no route leads anywhere else, so nothing in it reaches outside.
The stand-in Supervisor listens on the test's end of the veth on port 80, and ``supervisor``
resolves to it inside the container (``--add-host``), so the runner uses its default
``http://supervisor`` as on Home Assistant OS; SUPERVISOR_TOKEN, /data with options.json and the
image's own CMD are what the Supervisor gives. The test reaches the account service and the broker
at the container's end of the veth, the host name /addons/self/info reports (the Supervisor's
internal network does the same for Home Assistant).

scripts/test runs this file only when scripts/setup built the image (it prints why not
otherwise); run alone without the image, the test skips with the reason.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from cloud_relay.addon import HTTP_PORT, MQTT_PORT
from tests.addon.standin import (
    SUPERVISOR_TOKEN,
    StandInSupervisor,
    addon_data,
    announcement,
    call,
    connect,
    hub_after_sign_in,
    redeem_once,
    serve_supervisor,
    sign_up_with_household,
)
from tests.plugins.netns import DeviceNamespace, device_namespace

REPO = Path(__file__).parents[2]
ADDON = REPO / "addon" / "iot_onboard_relay"


def _run_lib(*command: str, merged: bool = False) -> subprocess.CompletedProcess[str]:
    """A function of scripts/lib.sh (addon_podman: podman on the image's own storage); with
    ``merged``, stderr goes into stdout in order (a container's log is both)."""
    return subprocess.run(
        ["bash", "-c", 'source "$0/scripts/lib.sh" && "$@"', str(REPO), *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merged else subprocess.PIPE,
        text=True,
        timeout=120,
        check=False,
    )


def _lib(*command: str, check: bool = True) -> str:
    """Its stdout; a failure names the command and its stderr."""
    done = _run_lib(*command)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(command)} exited {done.returncode}: {done.stderr}")
    return done.stdout


#: The architectures setup builds (IOB_ADDON_ARCHES; aarch64 runs under qemu-user emulation).
ARCHES = _lib("eval", 'echo "${ADDON_ARCHES[@]}"').split()


@pytest.fixture(scope="module", params=ARCHES)
def image(request: pytest.FixtureRequest) -> Iterator[str]:
    arch: str = request.param
    ref = _lib("addon_image_ref", arch).strip()
    # scripts/addon-image writes the stamp once a container of the image has run here.
    built = _run_lib("eval", f'test -f "$ADDON_IMAGE_DIR/{arch}.stamp"').returncode == 0
    if not built or _run_lib("addon_podman", "image", "exists", ref).returncode != 0:
        reason = _lib(
            "eval", f'unavailable_reason "$ADDON_IMAGE_DIR/{arch}" "run scripts/addon-image"'
        )
        pytest.skip(f"no add-on image {ref}: {reason.strip()}")
    if arch == "amd64":
        yield ref
        return
    # Another architecture's binaries run through qemu-user while this holder keeps the
    # binfmt_misc handler registered (scripts/lib.sh's with_emulation); stopped by its pid.
    holder = subprocess.Popen(
        ["bash", "-c", 'source "$0/scripts/lib.sh" && with_emulation "$1" sleep infinity',
         str(REPO), arch],
        start_new_session=True,
    )  # fmt: skip
    try:
        yield ref
    finally:
        os.killpg(holder.pid, signal.SIGTERM)
        holder.wait(30)


@dataclass
class Container:
    name: str

    def log(self) -> str:
        return _run_lib("addon_podman", "logs", self.name, merged=True).stdout

    def alive(self) -> None:
        state = _lib("addon_podman", "inspect", "--format", "{{.State.Status}}", self.name)
        assert state.strip() == "running", self.log()

    def processes(self) -> list[str]:
        """The container's command lines, pid 1 first (podman top reads them from /proc)."""
        table = _lib("addon_podman", "top", self.name, "pid", "args").splitlines()[1:]
        rows = sorted((int(pid), args.strip()) for pid, args in (r.split(None, 1) for r in table))
        return [args for _, args in rows]

    def pids(self) -> list[int]:
        """The container's pids as the container sees them (the runner logs these), pid 1 first."""
        return sorted(int(pid) for pid in _lib("addon_podman", "top", self.name, "pid").split()[1:])

    def stop(self) -> int:
        """podman stop: SIGTERM, SIGKILL only after the add-on's timeout (config.yaml: 30 s)."""
        _lib("addon_podman", "stop", "--time", "30", self.name)
        code = _lib("addon_podman", "inspect", "--format", "{{.State.ExitCode}}", self.name)
        return int(code)


@contextlib.contextmanager
def run_image(image: str, namespace: DeviceNamespace, data: Path) -> Iterator[Container]:
    container = Container(f"iob-addon-test-{secrets.token_hex(4)}")
    # No command: the image's CMD starts both services, as under the Supervisor.
    _lib(
        "addon_run", "--detach", "--name", container.name,
        "--network", f"ns:/proc/{namespace.holder.pid}/ns/net",
        "--add-host", f"supervisor:{namespace.host_address}",
        "--env", f"SUPERVISOR_TOKEN={SUPERVISOR_TOKEN}",
        "--volume", f"{data}:/data",
        image,
    )  # fmt: skip
    try:
        yield container
    finally:
        _lib("addon_podman", "rm", "--force", "--time", "0", container.name, check=False)


@pytest.fixture
def namespace() -> Iterator[DeviceNamespace]:
    with device_namespace() as made:
        yield made


@pytest.fixture
async def supervisor(namespace: DeviceNamespace) -> AsyncIterator[StandInSupervisor]:
    # The Supervisor's API is http://supervisor (port 80); the add-on's host name on its network
    # is the container's veth address; the ports are the container's own (nothing is remapped).
    stand_in = StandInSupervisor(HTTP_PORT, MQTT_PORT, hostname=namespace.device_address)
    async with serve_supervisor(stand_in, namespace.host_address, 80):
        yield stand_in


@pytest.fixture
def data_dir(namespace: DeviceNamespace) -> Iterator[Path]:
    options = {"log_level": "info", "device_host": namespace.device_address}
    with addon_data(options) as data:
        yield data


def test_the_image_has_the_dockerfiles_packages_and_cmd(image: str) -> None:
    """The built image and the Dockerfile say the same: its apt-get list is installed, the
    project is in /opt/iob with its relay extra, CMD is /run.sh; and nothing reaches out."""
    packages = _lib("addon_image_packages").split()
    assert {"mosquitto", "mosquitto-clients", "python3", "python3-venv"} <= set(packages)
    dockerfile = (ADDON / "Dockerfile").read_text()
    steps = ('CMD [ "/run.sh" ]', "COPY rootfs /", "python3 -m venv /opt/iob", "iot-onboard[relay]")
    assert [step for step in steps if step not in dockerfile] == []
    inspected = json.loads(_lib("addon_podman", "image", "inspect", image))[0]
    config = inspected["Config"]
    assert config["Cmd"] == ["/run.sh"]
    assert config["Labels"]["org.opencontainers.image.version"] == image.rsplit(":", 1)[1]
    arch = config["Labels"]["io.hass.arch"]
    assert image == _lib("addon_image_ref", arch).strip()
    assert inspected["Architecture"] == {"amd64": "amd64", "aarch64": "arm64"}[arch]
    probe = (
        "dpkg-query -W -f='${Package} ${Status}\\n' \"$@\" && "
        "/opt/iob/bin/python -c 'import cloud_relay.addon, aiosqlite, argon2, asyncpg, aiomqtt' && "
        "/opt/iob/bin/pip show -q iot-onboard && test -x /run.sh && cat /run.sh"
    )
    shown = _lib(
        "addon_run", "--rm", "--network", "none", image,
        "/bin/sh", "-c", probe, "sh", *packages,
    )  # fmt: skip
    run_script = (ADDON / "rootfs" / "run.sh").read_text()
    assert shown == "".join(f"{name} install ok installed\n" for name in packages) + run_script


async def test_the_image_starts_announces_stops_and_keeps_its_data(
    image: str, namespace: DeviceNamespace, supervisor: StandInSupervisor, data_dir: Path
) -> None:
    email, password = f"owner-{secrets.token_hex(4)}@example.com", secrets.token_urlsafe(16)
    namespace_address = namespace.device_address
    async with aiohttp.ClientSession() as http:
        with run_image(image, namespace, data_dir) as first:
            announced = await announcement(supervisor, first.alive)
            assert announced["service"] == "iot_onboard"
            url, token = announced["config"]["url"], announced["config"]["token"]
            assert url == f"http://{namespace_address}:{HTTP_PORT}"
            # The container's only link is the veth: no route leads out (ENETUNREACH).
            assert namespace.probe("192.0.2.1", 80) == "OSError 101"
            status, health = await call(http, "GET", url + "/v1/health")
            assert (status, health["status"]) == (200, "ok")
            # The image's CMD: run.sh exec'd into the runner as pid 1, which started the
            # broker and the account service.
            first_pids = first.pids()
            assert first.processes() == [
                "/opt/iob/bin/python -m cloud_relay.addon --data /data",
                "/usr/sbin/mosquitto -c /data/mosquitto/mosquitto.conf",
                "/opt/iob/bin/python -m cloud_relay --config /data/relay/relay.toml serve",
            ]
            await redeem_once(http, url, token)
            hub_url, hub = await sign_up_with_household(http, url, email, password)
            assert (hub["host"], hub["port"], hub["tls"]) == (namespace_address, MQTT_PORT, False)
            await connect(hub)  # the broker inside the container accepts the credential
            assert first.stop() == 0  # SIGTERM handled: no SIGKILL (137) after the timeout
            first_log = first.log()
        assert f"account service (pid {first_pids[2]}) answers at {url}" in first_log, first_log
        assert f"Mosquitto (pid {first_pids[1]}) listens on {MQTT_PORT}" in first_log
        assert "Traceback" not in first_log
        assert first_log.index("announced to Home Assistant") < first_log.index("stopping")
        assert not (data_dir / "relay" / "relay.db-wal").exists()
        assert supervisor.refused == []

        with run_image(image, namespace, data_dir) as second:
            again = await announcement(supervisor, second.alive)
            assert again["config"]["url"] == url
            assert again["config"]["token"] != token
            hub_again = await hub_after_sign_in(http, url, email, password, hub_url)
            assert hub_again == hub
            await connect(hub_again)
            assert second.stop() == 0
