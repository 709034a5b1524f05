"""Status LED: the state-to-pattern table, the sysfs LED class on a fake tree, GPIO drawing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import device_firmware.led as led_module
from device_firmware.led import (
    PATTERNS,
    GpioLed,
    LedPattern,
    LedState,
    PatternKind,
    StatusLed,
    SysfsLed,
    find_status_led,
    pattern_for,
)

WAIT = 5.0


def _fake_led(root: Path, name: str = "ACT", triggers: str = "none [mmc0] timer heartbeat") -> Path:
    directory = root / "sys/class/leds" / name
    directory.mkdir(parents=True)
    (directory / "trigger").write_text(triggers + "\n")
    (directory / "brightness").write_text("0\n")
    (directory / "max_brightness").write_text("255\n")
    return directory


def _read(directory: Path, name: str) -> str:
    return (directory / name).read_text().strip()


def test_every_state_has_its_documented_pattern() -> None:
    assert {state.value: pattern_for(state.value) for state in LedState} == {
        "unclaimed": LedPattern(PatternKind.BLINK, 1000, 1000),
        "provisioning": LedPattern(PatternKind.BLINK, 200, 200),
        "committing": LedPattern(PatternKind.HEARTBEAT),
        "online": LedPattern(PatternKind.ON),
        "error": LedPattern(PatternKind.BLINK, 100, 900),
        "off": LedPattern(PatternKind.OFF),
    }
    assert len({PATTERNS[state] for state in LedState}) == len(LedState)  # all distinct
    with pytest.raises(ValueError, match="rebooting"):
        pattern_for("rebooting")


async def test_sysfs_led_uses_kernel_triggers_and_restores_the_original(tmp_path: Path) -> None:
    directory = _fake_led(tmp_path)
    led = find_status_led(tmp_path)
    assert isinstance(led.driver, SysfsLed)

    await led.show("unclaimed")
    assert [_read(directory, n) for n in ("trigger", "delay_on", "delay_off")] == [
        "timer",
        "1000",
        "1000",
    ]
    await led.show(LedState.PROVISIONING)
    assert [_read(directory, n) for n in ("trigger", "delay_on", "delay_off")] == [
        "timer",
        "200",
        "200",
    ]
    await led.show("committing")
    assert _read(directory, "trigger") == "heartbeat"
    await led.show("online")
    assert (_read(directory, "trigger"), _read(directory, "brightness")) == ("none", "255")
    await led.show("error")
    assert [_read(directory, n) for n in ("trigger", "delay_on", "delay_off")] == [
        "timer",
        "100",
        "900",
    ]
    await led.show("off")
    assert (_read(directory, "trigger"), _read(directory, "brightness")) == ("none", "0")

    await led.aclose()
    assert _read(directory, "trigger") == "mmc0"  # SD activity again once the agent stops


async def test_sysfs_led_without_timer_trigger_blinks_in_software(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = _fake_led(tmp_path, name="led0", triggers="[none] mmc0")
    writes: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    real_write = led_module._write

    def recording_write(path: Path, value: str) -> None:
        real_write(path, value)
        loop.call_soon_threadsafe(writes.put_nowait, (path.name, value))

    monkeypatch.setattr(led_module, "_write", recording_write)
    led = find_status_led(tmp_path)  # ACT is missing, led0 is found

    await led.show("provisioning")
    seen: set[tuple[str, str]] = set()
    async with asyncio.timeout(WAIT):
        while not {("brightness", "255"), ("brightness", "0")} <= seen:
            seen.add(await writes.get())
    assert ("trigger", "none") in seen
    assert not (directory / "delay_on").exists()
    await led.aclose()
    assert _read(directory, "trigger") == "none"


class FakeLine:
    def __init__(self) -> None:
        self.levels: asyncio.Queue[bool] = asyncio.Queue()
        self.loop = asyncio.get_running_loop()
        self.released = False

    def set(self, *, on: bool) -> None:
        self.loop.call_soon_threadsafe(self.levels.put_nowait, on)

    def get(self) -> bool:
        return False

    def release(self) -> None:
        self.released = True


async def test_gpio_led_draws_heartbeat_and_switches_off_on_close() -> None:
    line = FakeLine()
    led = StatusLed(GpioLed(lambda: line))
    await led.show("committing")
    levels: list[bool] = []
    async with asyncio.timeout(WAIT):
        while len(levels) < 4:
            levels.append(await line.levels.get())
    assert levels == [True, False, True, False]  # two beats
    await led.aclose()
    async with asyncio.timeout(WAIT):
        while await line.levels.get():
            pass
    assert line.released


async def test_no_led_is_a_quiet_no_op(tmp_path: Path) -> None:
    led = find_status_led(tmp_path)
    assert led.driver is None
    await led.show("online")
    assert led.state is LedState.ONLINE
    await led.aclose()


class CountingDriver:
    def __init__(self) -> None:
        self.applied: list[LedPattern] = []

    async def apply(self, pattern: LedPattern) -> None:
        self.applied.append(pattern)

    async def aclose(self) -> None:
        return None


async def test_same_state_twice_changes_nothing_and_failures_disable_the_led(
    tmp_path: Path,
) -> None:
    driver = CountingDriver()
    led = StatusLed(driver)
    await led.show("online")
    await led.show("online")
    await led.show("error")
    assert driver.applied == [PATTERNS[LedState.ONLINE], PATTERNS[LedState.ERROR]]

    broken = tmp_path / "broken"
    (broken / "trigger").mkdir(parents=True)  # reading it fails like a permission error would
    failing = StatusLed(SysfsLed(broken))
    await failing.show("online")  # logged, not raised
    assert failing.driver is None


async def test_unwritable_timer_delays_fall_back_to_software(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A non-root agent may write trigger and brightness (udev rule) but not delay_on."""
    directory = _fake_led(tmp_path)
    (directory / "delay_on").mkdir()  # writing it fails, as a root-owned file would
    lit = asyncio.Event()
    real_write = led_module._write
    loop = asyncio.get_running_loop()

    def recording_write(path: Path, value: str) -> None:
        real_write(path, value)
        if path.name == "brightness" and value == "255":
            loop.call_soon_threadsafe(lit.set)

    monkeypatch.setattr(led_module, "_write", recording_write)
    led = find_status_led(tmp_path)
    await led.show("unclaimed")
    async with asyncio.timeout(WAIT):
        await lit.wait()
    assert _read(directory, "trigger") == "none"
    assert led.driver is not None  # still in use, drawn in software
    await led.aclose()
