"""The device agent's Debian package (scripts/build-deb), built offline and installed into a root.

The package is installed with the real dpkg into a scratch root (``dpkg --root`` with
``--force-script-chrootless``: the maintainer scripts run on this host with ``DPKG_ROOT`` set),
so dpkg's unpacking, conffiles and the postinst/prerm/postrm arguments are real. The installed
package is the offline variant (``--wheels``): its wheelhouse is the device311 venv's
dependencies repacked (tests/deb/repack_wheels.py), so pip really resolves and installs every
dependency with ``--no-index`` against the bundled constraints, on Debian's Python 3.11. What
this host cannot do in a scratch root is stubbed on PATH and recorded: ``adduser``/``addgroup``
(they edit the host's /etc/passwd) and ``chown`` (the user ``iob`` does not exist here).
``systemctl --root`` is the real one. Not exercised here (a VM with systemd does that): the unit
starting, polkitd reading the rule, udev applying the LED rule, pip fetching from an index (the
``_all`` package's way).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PY311_VENV = REPO / ".venv-py311"
UNIT = "iot-onboard-device.service"
DOC = REPO / "docs" / "device.md"

pytestmark = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")


@dataclass(frozen=True)
class Package:
    deb: Path
    control: Path  # the control archive, extracted


def _run(
    *args: object, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, check=False, env=env, cwd=cwd
    )
    assert result.returncode == 0, f"{args}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Package:
    out = tmp_path_factory.mktemp("deb")
    built = _run(REPO / "scripts" / "build-deb", "--out", out, "--python", sys.executable)
    deb = Path(built.stdout.strip().splitlines()[-1])
    assert deb.name == "iot-onboard-device_0.1.0_all.deb"
    control = out / "control"
    _run("dpkg-deb", "--control", deb, control)
    return Package(deb=deb, control=control)


@pytest.fixture(scope="module")
def offline_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package with a wheelhouse for this machine's CPU (Python 3.11)."""
    wheels = tmp_path_factory.mktemp("wheels")
    _run(
        _device311_python(),
        REPO / "tests" / "deb" / "repack_wheels.py",
        REPO / "pyproject.toml",
        wheels,
    )
    arch = _run("dpkg", "--print-architecture").stdout.strip()
    out = tmp_path_factory.mktemp("deb-offline")
    built = _run(
        REPO / "scripts" / "build-deb",
        *("--out", out, "--python", sys.executable, "--wheels", wheels, "--arch", arch),
    )
    deb = Path(built.stdout.strip().splitlines()[-1])
    assert deb.name == f"iot-onboard-device_0.1.0_{arch}.deb"
    postinst = _run("dpkg-deb", "--info", deb, "postinst").stdout
    assert 'OFFLINE="yes"' in postinst  # pip gets --no-index
    return deb


def _contents(deb: Path) -> dict[str, str]:
    """Path in the package -> the mode column of dpkg-deb --contents (symlinks: the target)."""
    listing = _run("dpkg-deb", "--contents", deb).stdout.splitlines()
    files: dict[str, str] = {}
    for line in listing:
        mode, _owner, _size, _date, _time, name, *rest = line.split()
        path = name.removeprefix(".")
        files[path.rstrip("/") or "/"] = rest[-1] if rest else mode
    return files


def test_control_fields(package: Package) -> None:
    info = _run("dpkg-deb", "--field", package.deb).stdout
    fields = dict(line.split(": ", 1) for line in info.splitlines() if ": " in line)
    assert fields["Package"] == "iot-onboard-device"
    assert fields["Version"] == "0.1.0"
    assert fields["Architecture"] == "all"
    depends = [d.strip() for d in fields["Depends"].split(",")]
    assert depends == [
        "python3 (>= 3.11)",
        "python3-venv",
        "network-manager",
        "bluez",
        "polkitd | policykit-1",
        "adduser",
    ]
    conffiles = (package.control / "conffiles").read_text().split()
    assert conffiles == ["/etc/iot-onboard/device.toml", "/etc/iot-onboard/requirements-extra.txt"]


def test_ships_unit_rules_wheel_and_the_lock(package: Package) -> None:
    files = _contents(package.deb)
    shipped = {
        f"/usr/lib/systemd/system/{UNIT}": REPO / "device_firmware" / "systemd" / UNIT,
        "/usr/share/polkit-1/rules.d/50-iot-onboard.rules": (
            REPO / "packaging" / "deb" / "50-iot-onboard.rules"
        ),
        "/usr/lib/udev/rules.d/60-iot-onboard-led.rules": (
            REPO / "packaging" / "deb" / "60-iot-onboard-led.rules"
        ),
        "/usr/share/iot-onboard/constraints.txt": REPO / "requirements" / "device311.lock",
    }
    for path in [*shipped, "/usr/share/iot-onboard/wheels/iot_onboard-0.1.0-py3-none-any.whl"]:
        assert files.get(path) == "-rw-r--r--", (path, files.get(path))
    assert files["/usr/bin/iob-device"] == "/opt/iot-onboard/venv/bin/iob-device"
    # Nothing from the checkout's environments or caches, and no Python bytecode.
    assert not [p for p in files if "__pycache__" in p or p.endswith(".pyc")]


def test_maintainer_scripts_are_posix_sh_and_shellcheck_clean(package: Package) -> None:
    scripts = [package.control / name for name in ("postinst", "prerm", "postrm")]
    for script in scripts:
        assert os.access(script, os.X_OK), script
        assert script.read_text().startswith("#!/bin/sh\n")
        assert re.findall(r"@[A-Z]+@", script.read_text()) == [], script.name
        _run("sh", "-n", script)
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck is missing (scripts/setup installs it)")
    _run("shellcheck", "-s", "sh", *scripts)


# --------------------------------------------------------------------------- install, remove


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """An empty root with a dpkg database."""
    root = tmp_path / "root"
    for folder in ("info", "updates", "triggers"):
        (root / "var" / "lib" / "dpkg" / folder).mkdir(parents=True)
    for name in ("status", "available"):
        (root / "var" / "lib" / "dpkg" / name).touch()
    return root


def _device311_python() -> Path:
    python = PY311_VENV / "bin" / "python"
    if not python.exists():
        pytest.fail(f"{PY311_VENV} is missing: scripts/setup creates it")
    return python


def _python311() -> Path:
    """The interpreter behind the device311 venv (Debian's 3.11, Bookworm's build)."""
    base = _run(_device311_python(), "-c", "import sys; print(sys._base_executable)")
    return Path(base.stdout.strip()).resolve()


def _dpkg(root: Path, *args: object) -> subprocess.CompletedProcess[str]:
    stubs = root.parent / "stubs"
    if not stubs.exists():
        stubs.mkdir()
        calls = root.parent / "calls"
        for name in ("adduser", "addgroup", "chown"):
            (stubs / name).write_text(f'#!/bin/sh\necho "{name} $*" >> "{calls}"\n')
            (stubs / name).chmod(0o755)
        (stubs / "python3").symlink_to(_python311())
    env = {
        "PATH": f"{stubs}:/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "HOME": str(root.parent),
        # The machine's pip.conf (an index, caps) does not apply.
        "PIP_CONFIG_FILE": os.devnull,
    }
    return _run(
        "dpkg",
        f"--root={root}",
        "--force-script-chrootless",
        "--force-depends",
        f"--log={os.devnull}",
        *args,
        env=env,
    )


@pytest.mark.slow
def test_install_run_remove_purge_in_a_root(offline_package: Path, root: Path) -> None:
    data = root / "var" / "lib" / "iot-onboard"
    _dpkg(root, "--install", offline_package)

    calls = (root.parent / "calls").read_text().splitlines()
    assert (
        "adduser --quiet --system --group --no-create-home --home /var/lib/iot-onboard "
        "--shell /usr/sbin/nologin --gecos IoT Onboard device agent iob"
    ) in calls
    assert {"adduser --quiet iob gpio", "adduser --quiet iob netdev"} <= set(calls)
    assert f"chown iob:iob {data}" in calls
    assert data.stat().st_mode & 0o777 == 0o700
    assert (root / "etc" / "iot-onboard" / "device.toml").is_file()
    # systemctl --root enabled the unit for multi-user.target.
    wants = root / "etc" / "systemd" / "system" / "multi-user.target.wants" / UNIT
    assert str(wants.readlink()) == f"/usr/lib/systemd/system/{UNIT}"
    venv = root / "opt" / "iot-onboard" / "venv"
    assert re.fullmatch(r"venv-0\.1\.0-\w{6}", str(venv.readlink()))
    assert (venv.resolve().stat().st_mode & 0o777) == 0o755  # the user iob runs it

    # The venv is Python 3.11 (Bookworm's) with the agent and every dependency in it.
    purelib = _run(
        venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"
    ).stdout.strip()
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(root.parent)}
    helped = _run(venv / "bin" / "iob-device", "--help", env=env, cwd=root.parent)
    assert helped.stdout.startswith("usage: iob-device")
    where = _run(
        venv / "bin" / "python",
        "-c",
        "import sys, device_firmware; print(sys.version_info[:2], device_firmware.__file__)",
        env=env,
        cwd=root.parent,
    ).stdout.split(") ")
    assert where[0] == "(3, 11"
    assert Path(where[1].strip()).is_relative_to(Path(purelib))
    frozen = _run(venv / "bin" / "python", "-m", "pip", "list", "--format=freeze", env=env)
    pinned = set((REPO / "requirements" / "device311.lock").read_text().splitlines())
    installed = {
        line
        for line in frozen.stdout.splitlines()
        if not line.startswith(("pip==", "setuptools==", "iot-onboard"))
    }
    assert "cryptography" in {line.split("==")[0] for line in installed}
    # The exact versions of the lock the package carries (pip and setuptools seed the venv).
    assert installed <= pinned

    # An update (here the same version again): a new venv, the old one gone, the keys kept.
    (data / "identity.json").write_text("{}")
    first = venv.resolve()
    _dpkg(root, "--install", offline_package)
    assert venv.resolve() != first
    assert not first.exists()
    assert sorted(p.name for p in venv.parent.iterdir()) == ["venv", venv.resolve().name]
    assert (data / "identity.json").is_file()

    # remove: the program goes, the device's keys and state stay.
    _dpkg(root, "--remove", "iot-onboard-device")
    assert not (root / "opt" / "iot-onboard").exists()
    assert not (root / "usr" / "lib" / "systemd" / "system" / UNIT).exists()
    assert (data / "identity.json").is_file()
    assert (root / "etc" / "iot-onboard" / "device.toml").is_file()  # a conffile until purge

    # purge: the keys, the configuration and the enablement go too.
    _dpkg(root, "--purge", "iot-onboard-device")
    assert not data.exists()
    assert not (root / "etc" / "iot-onboard").exists()
    assert not wants.is_symlink()


# --------------------------------------------------------------------------- docs/device.md


def _fenced(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def test_device_doc_has_no_placeholders() -> None:
    text = DOC.read_text()
    assert re.findall(r"<[^>\n]*(?:URL|url)[^>\n]*>", text) == []
    assert "<release" not in text


def test_device_doc_names_the_files_the_deb_ships(package: Package) -> None:
    """Every path in the doc's table of installed files is in the package, and back."""
    text = DOC.read_text()
    section = text.split("### What the package installs", 1)[1].split("\n#", 1)[0]
    named = set(re.findall(r"^\| `(/[^`]+)` \|", section, flags=re.MULTILINE))
    files = _contents(package.deb)
    shipped = {
        path
        for path, mode in files.items()
        if not mode.startswith("d") and not path.startswith("/usr/share/doc/")
    }
    shipped = {"/usr/share/iot-onboard/wheels/" if "/wheels/" in p else p for p in shipped}
    assert named == shipped


def test_device_doc_rules_are_the_shipped_rules() -> None:
    """The appendix's polkit and udev rules are the files the package ships, not a copy."""
    text = DOC.read_text()

    def body(path: Path) -> str:
        lines = path.read_text().splitlines()
        return "\n".join(line for line in lines if not line.startswith(("//", "#"))) + "\n"

    assert body(REPO / "packaging" / "deb" / "50-iot-onboard.rules") in _fenced(text, "js")
    assert body(REPO / "packaging" / "deb" / "60-iot-onboard-led.rules") in _fenced(text, "udev")
