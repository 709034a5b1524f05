"""The shared protocol package, the device and the account service import without HA."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import textwrap
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent

# Runs in a fresh interpreter: any import of homeassistant fails as if it were not installed.
_PROBE = textwrap.dedent(
    """
    import importlib.abc, json, sys

    class NoHomeAssistant(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "homeassistant" or name.startswith("homeassistant."):
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)")
            return None

    sys.meta_path.insert(0, NoHomeAssistant())
    import iob_protocol, device_firmware, cloud_relay  # noqa: E401
    import iob_protocol.errors
    print(json.dumps({
        "loaded": sorted(m for m in sys.modules if m.split(".")[0] in
                         {"iob_protocol", "device_firmware", "cloud_relay"}),
        "ha": sorted(m for m in sys.modules if m.split(".")[0] == "homeassistant"),
        "protocol_file": iob_protocol.__file__,
    }))
    """
)


def test_shared_packages_import_without_homeassistant() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=False, cwd="/"
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ha"] == []
    assert {"iob_protocol", "device_firmware", "cloud_relay"} <= set(report["loaded"])
    # The top-level package is the one inside the integration folder, not a copy.
    assert (
        Path(report["protocol_file"])
        .resolve()
        .is_relative_to(REPO / "custom_components" / "iot_onboard" / "iob_protocol")
    )


def test_blocker_really_blocks_homeassistant() -> None:
    """A positive control: the probe's blocker makes an HA import fail."""
    probe = _PROBE.split("import iob_protocol")[0] + "import homeassistant\n"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=False, cwd="/"
    )
    assert result.returncode != 0
    assert "blocked by the test" in result.stderr


def test_protocol_package_has_no_homeassistant_import() -> None:
    package = REPO / "custom_components" / "iot_onboard" / "iob_protocol"
    sources = list(package.rglob("*.py"))
    assert sources
    for source in sources:
        text = source.read_text()
        assert "import homeassistant" not in text, source
        assert "from homeassistant" not in text, source


# --------------------------------------------------------------------------- the release
#
# What `pip install iot-onboard` gives: the sdist and the wheel are built as a release is (the
# wheel from the sdist), the wheel is installed into a fresh venv outside the checkout, and every
# module and both console scripts run from there.

#: Top-level import name -> its source folder in the checkout.
_PACKAGES = {
    "iob_protocol": REPO / "custom_components" / "iot_onboard" / "iob_protocol",
    "device_firmware": REPO / "device_firmware",
    "cloud_relay": REPO / "cloud_relay",
}
#: Checkout folders that are environments, caches or outputs, never sources.
_NOT_SOURCES = {
    ".venv",
    ".git",
    ".cache",
    "config",
    "artifacts",
    ".demo",
    "build",
    "dist",
    "htmlcov",
}
_CACHES = shutil.ignore_patterns(
    "__pycache__",
    "*.py[cod]",
    "*.egg-info",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".hypothesis",
    ".coverage*",
)


def _source_modules() -> set[str]:
    """Every module of the three packages, from the folders (a package has an __init__.py)."""
    modules: set[str] = set()
    for name, root in _PACKAGES.items():
        for source in root.rglob("*.py"):
            parts = source.relative_to(root).with_suffix("").parts
            folders = [root.joinpath(*parts[:i]) for i in range(len(parts))]
            if "__pycache__" in parts or not all((f / "__init__.py").is_file() for f in folders):
                continue
            dotted = ".".join((name, *parts))
            modules.add(dotted.removesuffix(".__init__"))
    return modules


def _package_data() -> set[str]:
    """Files besides Python sources that the packages ship (paths as installed)."""
    data: set[str] = set()
    for name, root in _PACKAGES.items():
        for path in root.rglob("*"):
            if (
                path.is_file()
                and path.suffix not in {".py", ".pyc"}
                and "__pycache__" not in (path.parts)
            ):
                data.add(f"{name}/{path.relative_to(root).as_posix()}")
    return data


@dataclass(frozen=True)
class Release:
    sdist: Path
    wheel: Path


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Release:
    """Build the sdist, then the wheel from it, offline, from a copy of the checkout."""
    tmp = tmp_path_factory.mktemp("release")
    source = tmp / "iot-onboard"

    def ignore(folder: str, names: list[str]) -> set[str]:
        top = set(names) & _NOT_SOURCES if Path(folder) == REPO else set()
        return top | _CACHES(folder, names)

    shutil.copytree(REPO, source, ignore=ignore, symlinks=True)
    result = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", tmp / "dist", source],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (sdist,) = (tmp / "dist").glob("*.tar.gz")
    (wheel,) = (tmp / "dist").glob("*.whl")
    return Release(sdist=sdist, wheel=wheel)


@pytest.mark.slow
def test_wheel_ships_every_package_and_its_data(release: Release) -> None:
    with zipfile.ZipFile(release.wheel) as zf:
        names = set(zf.namelist())
    shipped = {
        name.removesuffix(".py").replace("/", ".").removesuffix(".__init__")
        for name in names
        if name.endswith(".py")
    }
    assert _source_modules() - shipped == set()
    # Subpackages are the ones a top-level-only list left out.
    assert {"device_firmware.ble", "cloud_relay.storage", "iob_protocol"} <= shipped
    assert not any(name.startswith("custom_components/") for name in names)
    assert _package_data() - names == set()
    assert {f"{name}/py.typed" for name in _PACKAGES} <= names
    dist_info = next(n for n in names if n.endswith(".dist-info/METADATA")).rsplit("/", 1)[0]
    assert f"{dist_info}/licenses/LICENSE" in names


@pytest.mark.slow
def test_sdist_has_sources_license_readme_and_docs(release: Release) -> None:
    with tarfile.open(release.sdist) as tf:
        top = tf.getnames()[0].split("/")[0]
        names = {name.removeprefix(f"{top}/") for name in tf.getnames()}
    expected = {"LICENSE", "README.md", "pyproject.toml", "hacs.json"}
    for root in [*_PACKAGES.values(), REPO / "docs"]:
        expected |= {
            path.relative_to(REPO).as_posix()
            for path in root.rglob("*")
            if path.is_file() and "__pycache__" not in path.parts
        }
    assert expected - names == set()
    assert not any("__pycache__" in name or name.endswith(".pyc") for name in names)


_WALK = textwrap.dedent(
    """
    import importlib, json, pkgutil, sys
    modules, errors = {}, {}
    for top in sys.argv[1:]:
        package = importlib.import_module(top)
        modules[top] = package.__file__
        for info in pkgutil.walk_packages(package.__path__, top + "."):
            try:
                modules[info.name] = importlib.import_module(info.name).__file__
            except Exception as err:
                errors[info.name] = f"{type(err).__name__}: {err}"
    print(json.dumps({"modules": modules, "errors": errors}))
    """
)


@pytest.mark.slow
def test_installed_wheel_imports_everything_and_runs_its_commands(
    release: Release, tmp_path: Path
) -> None:
    """A fresh venv outside the checkout, the wheel only; dependencies from this venv."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [python, "-I", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    installed = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            python,
            "install",
            "--no-deps",
            "--no-index",
            "--no-cache-dir",
            "--disable-pip-version-check",
            release.wheel,
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert installed.returncode == 0, installed.stderr
    # The dependencies (aiohttp, cryptography, ...) are this venv's: a plain path line does not
    # run this venv's .pth files, so the checkout's editable install stays out.
    this_site = next(Path(p) for p in sys.path if p.endswith("site-packages"))
    (site / "deps-from-test-venv.pth").write_text(f"{this_site}\n")
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8"}

    walk = subprocess.run(
        [python, "-I", "-c", _WALK, *_PACKAGES],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
        env=env,
    )
    assert walk.returncode == 0, walk.stderr
    report = json.loads(walk.stdout)
    assert report["errors"] == {}
    assert set(report["modules"]) == _source_modules()
    outside = {m: f for m, f in report["modules"].items() if not Path(f).is_relative_to(site)}
    assert outside == {}

    for command, prog in [("iob-device", "iob-device"), ("iob-relay", "iob-relay")]:
        helped = subprocess.run(
            [venv / "bin" / command, "--help"],
            capture_output=True,
            text=True,
            check=False,
            cwd=tmp_path,
            env=env,
        )
        assert helped.returncode == 0, helped.stderr
        assert helped.stdout.startswith(f"usage: {prog}"), helped.stdout


def test_every_extra_is_pinned_in_both_locks() -> None:
    """scripts/setup installs with the lock as constraints: an unpinned extra floats."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = {
        canonicalize_name(Requirement(spec).name)
        for extra in ("device", "relay", "test")
        for spec in [*project["dependencies"], *project["optional-dependencies"][extra]]
    }
    assert {"build", "setuptools"} <= wanted
    for env in ("oldest", "newest"):
        lines = (REPO / "requirements" / f"{env}.lock").read_text().splitlines()
        pinned = {canonicalize_name(line.split("==")[0]) for line in lines if "==" in line}
        assert wanted - pinned == set(), env
