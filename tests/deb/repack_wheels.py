"""Repack the installed dependencies of ``iot-onboard[device]`` as wheels (run by Python 3.11).

    python repack_wheels.py PYPROJECT OUTDIR

tests/test_deb.py gives the result to ``scripts/build-deb --wheels``: a wheelhouse made offline
from the device311 venv, so the package's postinst resolves and installs every dependency with
``--no-index`` as it does on a device. Each wheel holds the files its distribution's RECORD lists
(bytecode left out) and is named with the first tag of its WHEEL file.
"""

from __future__ import annotations

import importlib.metadata as md
import sys
import tomllib
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name


def closure(requirements: list[Requirement]) -> dict[str, md.Distribution]:
    """Every installed distribution the requirements need, on this interpreter."""
    found: dict[str, md.Distribution] = {}
    todo = [(req, "") for req in requirements]
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(req.name)
        extras = sorted(req.extras)
        key = name + "[" + ",".join(extras) + "]"
        if key in found:
            continue
        dist = md.distribution(name)
        found[key] = dist
        for spec in dist.requires or []:
            todo.extend((Requirement(spec), wanted) for wanted in ["", *extras])
    return {canonicalize_name(d.metadata["Name"]): d for d in found.values()}


def repack(dist: md.Distribution, outdir: Path) -> Path:
    files = [f for f in dist.files or [] if "__pycache__" not in f.parts and ".." not in f.parts]
    info = next(f for f in files if f.name == "WHEEL" and f.parent.name.endswith(".dist-info"))
    tag = next(
        line.split(": ", 1)[1] for line in info.read_text().splitlines() if line.startswith("Tag: ")
    )
    name = canonicalize_name(dist.metadata["Name"]).replace("-", "_")
    wheel = outdir / f"{name}-{dist.version}-{tag}.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in files:
            if file.name not in {"INSTALLER", "direct_url.json", "REQUESTED"}:
                zf.write(Path(str(file.locate())), file.as_posix())
    return wheel


def main() -> None:
    pyproject, outdir = Path(sys.argv[1]), Path(sys.argv[2])
    project = tomllib.loads(pyproject.read_text())["project"]
    specs = [*project["dependencies"], *project["optional-dependencies"]["device"]]
    for dist in closure([Requirement(spec) for spec in specs]).values():
        print(repack(dist, outdir).name)  # noqa: T201 (the test logs what it repacked)


if __name__ == "__main__":
    main()
