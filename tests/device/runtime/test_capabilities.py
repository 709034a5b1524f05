"""Capabilities: descriptors, state encoding, command validation, system sensors, GPIO logic."""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path
from types import SimpleNamespace

import pytest

import device_firmware.capabilities.gpio as gpio_module
from device_firmware.capabilities import (
    GPIOD_AVAILABLE,
    Capability,
    CapabilityError,
    CommandRejectedError,
    EntityCategory,
    EntityDescriptor,
    GpioResetButton,
    GpioSwitch,
    LongPressDetector,
    Platform,
    StateClass,
    default_capabilities,
    format_state,
    gpio_switch,
    reset_button,
    system_capabilities,
)
from device_firmware.capabilities.simulated import (
    SimulatedButton,
    SimulatedMotion,
    SimulatedNumber,
    SimulatedSwitch,
    SimulatedTemperature,
)
from device_firmware.capabilities.system import cpu_temperature_zone

WAIT = 5.0


def _fake_root(root: Path) -> Path:
    """A Pi-like /sys and /proc: CPU and GPU thermal zones, load, memory, boot time, Wi-Fi."""
    for index, (kind, millidegrees) in enumerate(
        [("gpu-thermal", "39000"), ("cpu-thermal", "48312")]
    ):
        zone = root / f"sys/class/thermal/thermal_zone{index}"
        zone.mkdir(parents=True)
        (zone / "type").write_text(f"{kind}\n")
        (zone / "temp").write_text(f"{millidegrees}\n")
    proc = root / "proc"
    (proc / "net").mkdir(parents=True)
    (proc / "loadavg").write_text("0.52 0.40 0.33 1/123 4567\n")
    (proc / "meminfo").write_text(
        "MemTotal:        1000000 kB\nMemFree:          100000 kB\nMemAvailable:     250000 kB\n"
    )
    (proc / "stat").write_text("cpu  1 2 3 4\nbtime 1700000000\nprocesses 42\n")
    (proc / "net/wireless").write_text(
        "Inter-| sta-|   Quality        |   Discarded packets               | Missed | WE\n"
        " face | tus | link level noise |  nwid  crypt   frag  retry   misc | beacon | 22\n"
        " wlan0: 0000   58.  -52.  -256        0      0      0      0     43        0\n"
    )
    return root


async def _values(capabilities: list[Capability]) -> dict[str, object]:
    return {capability.key: await capability.read() for capability in capabilities}


# --- descriptors and encodings ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"key": "Bad-Key"}, "must match"),
        ({"key": "x/y"}, "must match"),
        ({"platform": Platform.NUMBER}, "needs min, max and step"),
        ({"platform": Platform.NUMBER, "min": 5.0, "max": 1.0, "step": 1.0}, "min < max"),
        ({"platform": Platform.NUMBER, "min": 0.0, "max": 1.0, "step": 0.0}, "step > 0"),
        ({"min": 1.0}, "numbers only"),
        ({"platform": Platform.SWITCH, "state_class": StateClass.MEASUREMENT}, "sensors only"),
    ],
)
def test_descriptor_validation(changes: dict[str, object], message: str) -> None:
    values: dict[str, object] = {"key": "ok", "platform": Platform.SENSOR, "name": "Ok", **changes}
    with pytest.raises(ValueError, match=message):
        EntityDescriptor(**values)  # type: ignore[arg-type]


def test_descriptor_json_leaves_out_absent_fields() -> None:
    descriptor = EntityDescriptor(
        key="power",
        platform=Platform.SENSOR,
        name="Power",
        device_class="power",
        unit="W",
        state_class=StateClass.MEASUREMENT,
        entity_category=EntityCategory.DIAGNOSTIC,
    )
    assert descriptor.to_json() == {
        "key": "power",
        "platform": "sensor",
        "name": "Power",
        "device_class": "power",
        "unit": "W",
        "state_class": "measurement",
        "entity_category": "diagnostic",
    }
    assert descriptor.readable
    assert not descriptor.commandable


@pytest.mark.parametrize(
    ("value", "payload"),
    [
        (True, "on"),
        (False, "off"),
        (None, "unknown"),
        (21.5, "21.5"),
        (float("nan"), "unknown"),
        (3, "3"),
        ("2023-11-14T22:13:20+00:00", "2023-11-14T22:13:20+00:00"),
    ],
)
def test_format_state(value: object, payload: str) -> None:
    assert format_state(value) == payload  # type: ignore[arg-type]


def test_switch_and_button_commands() -> None:
    switch, button = SimulatedSwitch(), SimulatedButton()
    assert switch.parse_command(b"on") is True
    assert switch.parse_command(b" OFF \n") is False
    assert button.parse_command(b"PRESS") is None
    for bad in (b"1", b"true", b"", "ein".encode("utf-16"), b"on" * 40):
        with pytest.raises(CommandRejectedError):
            switch.parse_command(bad)
    with pytest.raises(CommandRejectedError, match="press"):
        button.parse_command(b"on")
    with pytest.raises(CommandRejectedError, match="read-only"):
        SimulatedTemperature().parse_command(b"21")


@pytest.mark.parametrize("payload", [b"10", b"10.5", b"29.5", b"30", b"2.25e1"])
def test_number_commands_on_the_grid(payload: bytes) -> None:
    assert SimulatedNumber().parse_command(payload) == float(payload)


@pytest.mark.parametrize("payload", [b"9.5", b"30.5", b"22.3", b"nan", b"inf", b"warm", b""])
def test_number_commands_off_range_or_grid_are_rejected(payload: bytes) -> None:
    with pytest.raises(CommandRejectedError):
        SimulatedNumber().parse_command(payload)


# --- system sensors ---------------------------------------------------------------------------


async def test_system_sensors_read_the_fake_tree(tmp_path: Path) -> None:
    root = _fake_root(tmp_path)
    capabilities = system_capabilities(root)
    assert [c.key for c in capabilities] == [
        "cpu_temperature",
        "load_1m",
        "memory_used",
        "disk_used",
        "last_boot",
        "wifi_signal",
    ]
    values = await _values(capabilities)
    assert values["cpu_temperature"] == 48.3  # the cpu-thermal zone, not the first zone
    assert values["load_1m"] == 0.52
    assert values["memory_used"] == 75.0
    assert values["last_boot"] == "2023-11-14T22:13:20+00:00"
    assert values["wifi_signal"] == -52
    disk = values["disk_used"]
    assert isinstance(disk, float)
    assert 0.0 <= disk <= 100.0
    assert all(c.descriptor.entity_category is EntityCategory.DIAGNOSTIC for c in capabilities)


async def test_missing_sources_are_not_offered_and_vanished_ones_fail_cleanly(
    tmp_path: Path,
) -> None:
    assert [c.key for c in system_capabilities(tmp_path)] == ["disk_used"]
    assert cpu_temperature_zone(tmp_path) is None

    root = _fake_root(tmp_path / "pi")
    load = next(c for c in system_capabilities(root) if c.key == "load_1m")
    (root / "proc/loadavg").unlink()
    with pytest.raises(CapabilityError, match="load_1m"):
        await load.read()


async def test_wifi_signal_is_unknown_when_not_associated(tmp_path: Path) -> None:
    root = _fake_root(tmp_path)
    wireless = root / "proc/net/wireless"
    wireless.write_text("".join(wireless.read_text().splitlines(keepends=True)[:2]))
    signal = next(c for c in system_capabilities(root) if c.key == "wifi_signal")
    assert await signal.read() is None


def test_default_capabilities(tmp_path: Path) -> None:
    root = _fake_root(tmp_path)
    simulated = [c.key for c in default_capabilities(simulated=True, sysfs_root=root)]
    assert simulated[-5:] == ["temperature", "motion", "relay", "identify", "setpoint"]
    plain = [c.key for c in default_capabilities(simulated=False, sysfs_root=root)]
    assert "relay" not in plain
    assert "cpu_temperature" in plain
    wired = [c.key for c in default_capabilities(simulated=False, sysfs_root=root, gpio_output=17)]
    # Only offered where the libgpiod 2 bindings are installed (not in this test venv).
    assert ("gpio_output" in wired) is GPIOD_AVAILABLE
    assert (gpio_switch(17) is not None) is GPIOD_AVAILABLE
    assert (reset_button(27, lambda: None) is not None) is GPIOD_AVAILABLE


# --- simulated --------------------------------------------------------------------------------


async def test_simulated_entities() -> None:
    temperature = SimulatedTemperature(rng=random.Random(1))  # noqa: S311 - repeatable
    readings = [await temperature.read() for _ in range(500)]
    assert all(isinstance(r, float) and 15.0 <= r <= 30.0 for r in readings)
    assert len(set(readings)) > 5  # it drifts

    motion = SimulatedMotion(rng=random.Random(1), flip=1.0)  # noqa: S311 - repeatable
    assert [await motion.read() for _ in range(3)] == [True, False, True]
    pushed: list[str] = []
    motion.set_listener(lambda: pushed.append("motion"))
    motion.trigger(detected=False)
    assert pushed == ["motion"]
    assert await motion.read() is True  # flip=1.0 flips the triggered value on the next read

    switch = SimulatedSwitch()
    await switch.command(True)
    assert await switch.read() is True
    with pytest.raises(CommandRejectedError):
        await switch.command(1.0)

    presses: list[int] = []
    button = SimulatedButton(on_press=lambda: presses.append(1))
    await button.command(None)
    assert (button.presses, presses, await button.read()) == (1, [1], None)

    number = SimulatedNumber()
    await number.command(12.5)
    assert await number.read() == 12.5
    with pytest.raises(CommandRejectedError, match="not accept"):
        await SimulatedTemperature().command(1.0)


# --- GPIO logic with fake lines ---------------------------------------------------------------


class FakeOutput:
    def __init__(self, *, broken: bool = False) -> None:
        self.value = False
        self.released = False
        self.broken = broken

    def set(self, *, on: bool) -> None:
        if self.broken:
            raise OSError(5, "Input/output error")
        self.value = on

    def get(self) -> bool:
        return self.value

    def release(self) -> None:
        self.released = True


async def test_gpio_switch_drives_and_releases_the_line() -> None:
    line = FakeOutput()
    opened: list[FakeOutput] = []

    def open_line() -> FakeOutput:
        opened.append(line)
        return line

    switch = GpioSwitch(open_line)
    assert switch.descriptor.platform is Platform.SWITCH
    assert await switch.read() is False
    await switch.command(switch.parse_command(b"on"))
    assert line.value is True
    assert await switch.read() is True
    assert len(opened) == 1  # requested once, lazily
    await switch.aclose()
    assert line.released


async def test_gpio_switch_errors_are_capability_errors() -> None:
    switch = GpioSwitch(lambda: FakeOutput(broken=True))
    with pytest.raises(CapabilityError, match="Input/output"):
        await switch.command(True)

    def busy() -> FakeOutput:
        raise OSError(16, "Device or resource busy")

    with pytest.raises(CapabilityError, match="cannot request"):
        await GpioSwitch(busy).read()


async def test_long_press_fires_once_and_short_press_never() -> None:
    fired = asyncio.Event()
    count = 0

    async def on_long_press() -> None:
        nonlocal count
        count += 1
        fired.set()

    detector = LongPressDetector(0.05, on_long_press)
    detector.pressed()
    detector.pressed()  # a bouncing edge keeps the running timer
    async with asyncio.timeout(WAIT):
        await fired.wait()
    assert count == 1

    detector.pressed()
    detector.released()  # released before the hold time: the timer is gone
    assert not detector.armed
    await asyncio.sleep(0)
    assert count == 1
    await detector.aclose()


class PipeEdges:
    """An EdgeLine whose fd is a pipe: the test writes P (pressed) and R (released)."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        self.batches = 0
        self.read = asyncio.Event()
        self.released = False

    def fileno(self) -> int:
        return self.read_fd

    def read_events(self) -> list[bool]:
        self.batches += 1
        self.read.set()
        return [byte == ord("P") for byte in os.read(self.read_fd, 64)]

    def release(self) -> None:
        self.released = True
        os.close(self.read_fd)
        os.close(self.write_fd)


async def test_reset_button_watches_edges_on_the_loop() -> None:
    edges = PipeEdges()
    fired = asyncio.Event()
    button = GpioResetButton(lambda: edges, fired.set, hold=0.05)
    await button.start()
    try:
        os.write(edges.write_fd, b"PR")  # a short press
        async with asyncio.timeout(WAIT):
            await edges.read.wait()  # both edges arrive in one batch
        assert not button.detector.armed
        assert not fired.is_set()

        os.write(edges.write_fd, b"P")  # held down
        async with asyncio.timeout(WAIT):
            await fired.wait()
    finally:
        await button.aclose()
    assert edges.released


async def test_short_press_calls_only_the_short_callback() -> None:
    shorts: list[str] = []
    longs: list[str] = []
    short_seen = asyncio.Event()

    async def on_short_press() -> None:
        shorts.append("short")
        short_seen.set()

    detector = LongPressDetector(WAIT, lambda: longs.append("long"), on_short_press=on_short_press)
    detector.pressed()
    detector.released()
    async with asyncio.timeout(WAIT):
        await short_seen.wait()
    detector.released()  # a bouncing release without a press is no second short press
    await asyncio.sleep(0)
    assert (shorts, longs) == (["short"], [])
    await detector.aclose()


async def test_long_press_calls_only_the_long_callback() -> None:
    shorts: list[str] = []
    fired = asyncio.Event()
    detector = LongPressDetector(0.05, fired.set, on_short_press=lambda: shorts.append("short"))
    detector.pressed()
    async with asyncio.timeout(WAIT):
        await fired.wait()
    detector.released()  # letting go after the long press fired is not a short press
    await asyncio.sleep(0)
    assert shorts == []
    await detector.aclose()


async def test_reset_button_reports_short_and_long_presses() -> None:
    edges = PipeEdges()
    opened: list[tuple[str, int]] = []

    def open_line(chip: str, offset: int) -> PipeEdges:
        opened.append((chip, offset))
        return edges

    short = asyncio.Event()
    long = asyncio.Event()
    button = reset_button(
        27,
        long.set,
        chip="/dev/gpiochip9",
        hold=0.05,
        on_short_press=short.set,
        open_line=open_line,
    )
    assert button is not None  # a line opener needs no libgpiod
    await button.start()
    assert opened == [("/dev/gpiochip9", 27)]
    try:
        os.write(edges.write_fd, b"PR")
        async with asyncio.timeout(WAIT):
            await short.wait()
        assert not long.is_set()

        short.clear()
        os.write(edges.write_fd, b"P")
        async with asyncio.timeout(WAIT):
            await long.wait()
        edges.read.clear()
        os.write(edges.write_fd, b"R")
        async with asyncio.timeout(WAIT):
            await edges.read.wait()
        await asyncio.sleep(0)
        assert not short.is_set()
    finally:
        await button.aclose()
    assert edges.released


# --- the libgpiod 2 adapters, against a stand-in of the bindings' API -------------------------


class _Enum:
    def __init__(self, prefix: str, *names: str) -> None:
        for name in names:
            setattr(self, name, f"{prefix}.{name}")


class FakeRequest:
    """What ``gpiod.request_lines`` returns (libgpiod 2: values per offset, an fd, edges)."""

    def __init__(self, path: str, consumer: str, config: dict[int, dict[str, object]]) -> None:
        self.path, self.consumer, self.config = path, consumer, config
        self.values: dict[int, object] = {}
        self.edges: list[SimpleNamespace] = []
        self.fd = 99
        self.released = False

    def set_value(self, offset: int, value: object) -> None:
        self.values[offset] = value

    def get_value(self, offset: int) -> object:
        return self.values.get(offset, "Value.INACTIVE")

    def read_edge_events(self) -> list[SimpleNamespace]:
        events, self.edges = self.edges, []
        return events

    def release(self) -> None:
        self.released = True


def _fake_bindings() -> tuple[SimpleNamespace, SimpleNamespace, list[FakeRequest]]:
    requests: list[FakeRequest] = []

    def request_lines(
        path: str, *, consumer: str, config: dict[int, dict[str, object]]
    ) -> FakeRequest:
        requests.append(FakeRequest(path, consumer, config))
        return requests[-1]

    line = SimpleNamespace(
        Direction=_Enum("Direction", "INPUT", "OUTPUT"),
        Value=_Enum("Value", "ACTIVE", "INACTIVE"),
        Edge=_Enum("Edge", "BOTH"),
        Bias=_Enum("Bias", "PULL_UP"),
    )
    gpiod = SimpleNamespace(
        request_lines=request_lines,
        LineSettings=lambda **settings: settings,
        EdgeEvent=SimpleNamespace(Type=_Enum("Type", "RISING_EDGE", "FALLING_EDGE")),
    )
    return gpiod, line, requests


def test_gpiod_adapters_use_the_v2_api(monkeypatch: pytest.MonkeyPatch) -> None:
    gpiod, line, requests = _fake_bindings()
    monkeypatch.setattr(gpio_module, "_GPIOD", (gpiod, line))

    output = gpio_module.GpiodOutputLine("/dev/gpiochip0", 17, active_low=True)
    (request,) = requests
    assert (request.path, request.consumer) == ("/dev/gpiochip0", "iot-onboard")
    assert request.config == {
        17: {"direction": "Direction.OUTPUT", "output_value": "Value.INACTIVE", "active_low": True}
    }
    assert output.get() is False
    output.set(on=True)
    assert request.values == {17: "Value.ACTIVE"}
    assert output.get() is True
    output.release()
    assert request.released

    edges = gpio_module.GpiodEdgeLine("/dev/gpiochip0", 27)
    settings = requests[-1].config[27]
    assert settings["edge_detection"] == "Edge.BOTH"
    assert settings["bias"] == "Bias.PULL_UP"
    assert settings["active_low"] is True
    assert edges.fileno() == 99
    requests[-1].edges = [
        SimpleNamespace(event_type="Type.RISING_EDGE"),
        SimpleNamespace(event_type="Type.FALLING_EDGE"),
    ]
    assert edges.read_events() == [True, False]  # active-low: rising means pressed


def test_without_bindings_the_adapters_refuse(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpio_module, "_GPIOD", None)
    with pytest.raises(CapabilityError, match="not installed"):
        gpio_module.GpiodOutputLine("/dev/gpiochip0", 17)
