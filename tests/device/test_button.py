"""The GPIO push button in the running agent: a short press opens the provisioning window, a
long press factory-resets; without libgpiod or with an unusable line the agent carries on.

The button's line is a pipe the test writes edges to (``P`` pressed, ``R`` released), behind
the agent's ``button_line_factory``; everything past the line is the real agent.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

import pytest

import device_firmware.capabilities.gpio as gpio_module
from device_firmware.__main__ import _config, _parser
from device_firmware.agent import Agent
from device_firmware.config import DeviceConfig
from device_firmware.errors import ConfigError
from device_firmware.network.simulated import SimulatedBackend
from device_firmware.state import Phase
from tests.plugins.ports import free_port
from tests.plugins.scripted_service import ScriptedService

from .conftest import RELEASE_PATH, AgentStarter, Provisioned, home_scenario
from .test_owner_session import OLD_SSID, claim_on_disk

WAIT = 5.0
CHIP = "/dev/gpiochip7"
OFFSET = 23


class PipeButton:
    """An EdgeLine on a pipe; remembers which line the agent asked for."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        self.opened: list[tuple[str, int]] = []
        self.released = False

    def open(self, chip: str, offset: int) -> PipeButton:
        self.opened.append((chip, offset))
        return self

    def press(self, edges: bytes) -> None:
        os.write(self.write_fd, edges)

    def fileno(self) -> int:
        return self.read_fd

    def read_events(self) -> list[bool]:
        return [byte == ord("P") for byte in os.read(self.read_fd, 64)]

    def release(self) -> None:
        self.released = True
        os.close(self.read_fd)
        os.close(self.write_fd)


async def eventually(check: str, condition: Callable[[], bool]) -> None:
    """Poll ``condition`` for up to 5 s; fail naming ``check``."""
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not reached: {check}")


async def test_short_press_opens_the_window_of_an_unclaimed_device(
    start_agent: AgentStarter,
) -> None:
    button = PipeButton()
    async with start_agent(
        button_line_factory=button.open, button_gpio=OFFSET, gpio_chip=CHIP, button_hold=60.0
    ) as running:
        assert button.opened == [(CHIP, OFFSET)]
        host = running.agent.session_host
        host.close_window()  # the boot window has expired
        assert not host.window_open
        button.press(b"PR")
        await eventually("window open", lambda: host.window_open)
        assert running.agent.store.current.phase is Phase.UNCLAIMED  # a short press never resets
        await running.connected_client()  # the label's session is admitted again
    assert button.released  # closed with the agent


async def test_long_press_factory_resets_a_claimed_device(
    start_agent: AgentStarter, provisioned: Provisioned, scripted_service: ScriptedService
) -> None:
    claim_on_disk(provisioned, service_url=scripted_service.url, broker_port=free_port())
    button = PipeButton()
    async with start_agent(
        home_scenario(saved=OLD_SSID),
        button_line_factory=button.open,
        button_gpio=OFFSET,
        button_hold=0.05,
    ) as running:
        assert running.agent.store.current.claimed
        button.press(b"P")  # held down
        await eventually("reset", lambda: running.agent.store.current.phase is Phase.UNCLAIMED)
        await eventually(
            "release sent", lambda: len(scripted_service.received("POST", RELEASE_PATH)) == 1
        )
        record = running.agent.store.current
        assert (record.ownership, record.owner_secret, record.mqtt) == (None, None, None)
        button.press(b"R")  # letting go after the reset changes nothing
        await eventually("window open", lambda: running.agent.session_host.window_open)
        assert len(scripted_service.received("POST", RELEASE_PATH)) == 1
    assert button.released


async def test_an_unusable_line_leaves_the_agent_running(
    start_agent: AgentStarter, caplog: pytest.LogCaptureFixture
) -> None:
    def busy(_chip: str, _offset: int) -> PipeButton:
        raise PermissionError(13, "Permission denied", CHIP)

    with caplog.at_level(logging.WARNING, logger="device_firmware.actions"):
        async with start_agent(button_line_factory=busy, button_gpio=OFFSET) as running:
            await running.connected_client()
    assert "gpio group" in caplog.text


async def test_without_libgpiod_the_button_is_not_watched(
    provisioned: Provisioned, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(gpio_module, "GPIOD_AVAILABLE", False)
    config = provisioned.config.with_changes(button_gpio=OFFSET)
    agent = Agent(config, SimulatedBackend(home_scenario()), advertise=False)
    with caplog.at_level(logging.INFO, logger="device_firmware.actions"):
        task = asyncio.create_task(agent.run())
        async with asyncio.timeout(WAIT):
            await agent.ready()
        agent.stop()
        await task
    assert "no libgpiod 2: the button is not watched" in caplog.text


def test_button_configuration(tmp_path: Path) -> None:
    toml = tmp_path / "device.toml"
    toml.write_text('button_gpio = 17\ngpio_chip = "/dev/gpiochip4"\nbutton_hold = 5\n')
    config = DeviceConfig.load(toml)
    assert (config.button_gpio, config.gpio_chip, config.button_hold) == (17, "/dev/gpiochip4", 5.0)
    # The command line wins over the file.
    args = _parser().parse_args(["--config", str(toml), "run", "--button-gpio", "4"])
    assert _config(args).button_gpio == 4
    assert DeviceConfig().button_gpio is None  # no button unless one is configured
    for values, message in (
        ({"button_gpio": -1}, "button_gpio must be a line offset"),
        ({"button_gpio": "17"}, "button_gpio must be an integer"),
        ({"button_hold": 0}, "button_hold must be a positive"),
        ({"gpio_chip": 0}, "gpio_chip must be a string"),
    ):
        with pytest.raises(ConfigError, match=message):
            DeviceConfig.from_mapping(values)
