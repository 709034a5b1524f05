"""The real add-on as Home Assistant OS runs it, for the stack tests and the browser benchmark:
the stand-in Supervisor (tests/stack/supervisor.py) serving, and the add-on's run script
started outside a container (/data in a temporary directory), announcing itself to it.

tests/stack/test_browser_addon.py and bench/bench_browser.py both start it from here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Final

from .helpers import REPO, free_port
from .supervisor import StandInSupervisor

RUN_SCRIPT: Final = REPO / "addon" / "iot_onboard_relay" / "rootfs" / "run.sh"
#: Bounds, not expectations: the add-on announces within a few seconds of its start.
ANNOUNCE_TIMEOUT: Final = 90.0


@contextmanager
def running_supervisor() -> Iterator[StandInSupervisor]:
    """The stand-in Supervisor, serving until the block ends."""
    # The add-on's container ports, moved to free ones, mapped to the same host ports.
    ports: dict[str, int | None] = {f"{port}/tcp": port for port in (free_port(), free_port())}
    stand_in = StandInSupervisor(ports=ports)
    stand_in.start()
    try:
        yield stand_in
    finally:
        stand_in.stop()


class Addon:
    """The add-on's run script with its /data (a temporary directory) and log."""

    def __init__(self, supervisor: StandInSupervisor) -> None:
        self.data = Path(tempfile.mkdtemp(prefix="iob-addon-data-"))
        self.data.chmod(0o755)  # like /data: the broker drops root and must get through
        # What the user set in the add-on's options: devices reach this host at 127.0.0.1.
        options = {"log_level": "info", "device_host": "127.0.0.1"}
        (self.data / "options.json").write_text(json.dumps(options), encoding="utf-8")
        self.log = self.data.with_name(self.data.name + ".log")
        http_port, mqtt_port = (int(p.removesuffix("/tcp")) for p in supervisor.ports)
        self.env = {
            "PATH": os.environ["PATH"],
            "IOB_ADDON_DATA": str(self.data),
            "IOB_ADDON_PYTHON": sys.executable,
            "IOB_ADDON_SUPERVISOR": f"http://{supervisor.address}",
            "IOB_ADDON_HTTP_PORT": str(http_port),
            "IOB_ADDON_MQTT_PORT": str(mqtt_port),
            # The add-on network's DNS name (the stand-in says it) does not resolve here.
            "IOB_ADDON_HOSTNAME": "localhost",
            "SUPERVISOR_TOKEN": supervisor.addon_token,
            "PYTHONPATH": str(REPO),
        }
        with self.log.open("wb") as output:
            self.process = subprocess.Popen(
                ["bash", str(RUN_SCRIPT)],
                env=self.env,
                stdout=output,
                stderr=subprocess.STDOUT,
                cwd=self.data,
            )

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def relay_cli(self, *args: str) -> str:
        """``python -m cloud_relay`` on the add-on's own configuration (a maker's import)."""
        password = (self.data / "relay" / "broker-admin.password").read_text().strip()
        result = subprocess.run(
            [sys.executable, "-m", "cloud_relay", "--config", "relay/relay.toml", *args],
            env={**self.env, "IOB_RELAY_BROKER_PASSWORD": password},
            cwd=self.data,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    def stop(self) -> int | None:
        """SIGTERM to the run script's pid (exec'd into the runner), as the Supervisor does."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def remove(self, keep: Path | None) -> None:
        if keep is not None and self.log.exists():
            shutil.copy2(self.log, keep / "addon.log")
        self.log.unlink(missing_ok=True)
        shutil.rmtree(self.data, ignore_errors=True)


def import_device(addon: Addon, label_dir: str | Path) -> None:
    """A demo device's factory record (its label directory's) into the add-on's registry,
    with its model."""
    records = Path(label_dir) / "manufacturing-records.jsonl"
    model = json.loads(records.read_text(encoding="utf-8").splitlines()[0])["model"]
    addon.relay_cli("admin", "set-model", model, "--name", "Demo sensor", "--manufacturer", "Demo")
    addon.relay_cli("registry", "import", str(records))
