# shellcheck shell=bash
# Shared by scripts/setup, scripts/test, scripts/lock and scripts/develop. Source it; do not run it.
#
# Two Home Assistant environments are kept:
#   oldest  .venv (in the checkout)      Python 3.13 + the HA in hacs.json's minimum
#   newest  $IOB_CACHE_DIR/forky-py314   Python 3.14 + the HA the newest phcc pins, inside a
#           (a Debian forky root, used   Debian forky root when the host has no Python 3.14;
#           through chroot)              the root is cached between runs and rebuilt if missing.
# Each is pinned exactly by requirements/<env>.lock (regenerate with scripts/lock).
# A third, HA-free environment runs the device's code on its own Python:
#   device311 .venv-py311 (in the checkout)  Python 3.11, Raspberry Pi OS Bookworm's (Debian's
#             /usr/bin/python3.11 when present: the same 3.11.2 build as on the Pi)

set -euo pipefail

# shellcheck disable=SC2034 # used by scripts/test and scripts/lint
SHELL_SCRIPTS=(scripts/setup scripts/test scripts/lint scripts/lock scripts/develop scripts/bench scripts/build-deb scripts/vm-image scripts/lib.sh .ci/run
  addon/iot_onboard_relay/rootfs/run.sh scripts/addon-image)

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
IOB_CACHE_DIR="${IOB_CACHE_DIR:-/var/cache/iot-onboard}"
FORKY_ROOT="$IOB_CACHE_DIR/forky-py314"
FORKY_VENV=/opt/venv              # inside the root
FORKY_REPO=/repo                  # where the checkout is bind-mounted inside the root
DEBIAN_MIRROR="${IOB_DEBIAN_MIRROR:-}"

# Debian packages the tests and the demo need on the host (chromium: the browser test drives
# Debian's build through Playwright; never `playwright install`, it downloads browsers; podman
# and runc build and run the add-on's image, see addon_podman; rabbitmq-server: the clustered
# broker's auth tests, tests/relay/broker/test_broker_auth.py; haproxy: the load balancer in
# front of several service processes, tests/relay/test_processes.py).
HOST_PACKAGES=(mosquitto mosquitto-clients dbus libdbus-1-dev libglib2.0-dev debootstrap iproute2
  postgresql shellcheck chromium qemu-system-x86 qemu-utils podman runc rabbitmq-server haproxy)
# ... and inside the forky root (the newest-HA tests start the same services).
FORKY_PACKAGES=(python3.14 python3.14-venv python3.14-dev ca-certificates build-essential
  mosquitto mosquitto-clients dbus libdbus-1-dev libglib2.0-dev pkg-config iproute2)

# The VM stage (tests/vm, scripts/vm-image): one Debian image per suite, cached like the forky
# root. Inside: the kernel (mac80211_hwsim), systemd, NetworkManager and wpa_supplicant for the
# agent; hostapd, dnsmasq and Mosquitto for the home router and the account service; BlueZ and
# its test tools (btvirt: emulated controllers over hci_vhci) for the BLE side; what the agent's
# package depends on. (debootstrap resolves no virtual packages: libpam-systemd, or
# polkitd stays unconfigured.)
# shellcheck disable=SC2034 # used by scripts/vm-image and scripts/test
VM_SUITES=(bookworm trixie)
VM_PACKAGES=(linux-image-amd64 initramfs-tools systemd-sysv libpam-systemd dbus udev kmod
  iproute2 network-manager wpasupplicant hostapd dnsmasq-base iw wireless-regdb bluez
  bluez-test-tools polkitd adduser python3 python3-venv mosquitto ca-certificates procps)

# The Python packages each environment installs; versions come from its lock file.
OLDEST_PYTHON_VERSION=3.13
NEWEST_PYTHON_VERSION=3.14
DEVICE_PYTHON_VERSION=3.11
PROJECT_EXTRAS="device,relay,test"
# The test code that also runs on the device's Python 3.11 (scripts/test; ruff's
# per-file-target-version in pyproject.toml lists the same).
# shellcheck disable=SC2034 # used by scripts/test and scripts/lint
PY311_TEST_PATHS=(tests/protocol tests/device tests/relay tests/plugins tests/conftest.py
  tests/raw_http.py tests/test_packaging.py tests/integration/ble_bridge.py tests/vm/driver.py)

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }
is_debian() { [ -r /etc/debian_version ] && command -v apt-get >/dev/null 2>&1; }

# A stamp: the hash of everything an environment is built from, so set-up is idempotent.
env_stamp() {
  local env=$1
  cat "$REPO_ROOT/requirements/$env.in" "$REPO_ROOT/requirements/$env.lock" \
    "$REPO_ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1
}

# Newest phcc and its HA; "phcc_version" is read from requirements/<env>.in.
phcc_version() {
  sed -n 's/^pytest-homeassistant-custom-component==\(.*\)$/\1/p' "$REPO_ROOT/requirements/$1.in"
}

# ---------------------------------------------------------------- host packages

missing_host_packages() {
  local p
  for p in "${HOST_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || echo "$p"
  done
}

ensure_host_packages() {
  local missing
  mapfile -t missing < <(missing_host_packages)
  [ "${#missing[@]}" -eq 0 ] && return 0
  if ! is_debian || ! is_root; then
    cat >&2 <<EOF
error: these Debian packages are missing and this script cannot install them here
($(is_debian && echo "not root" || echo "not a Debian system")):
    ${missing[*]}
Install them (or your system's equivalents) yourself, then run scripts/setup again:
    sudo apt-get update && sudo apt-get install -y ${missing[*]}
EOF
    exit 1
  fi
  log "Installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The project's wheel, built from a copy of the checkout's files (tracked and new, never ignored
# ones), so the checkout gets no build/ or egg-info; --no-isolation: setuptools comes from the
# given Python's venv. Leaves it in WORK/dist; the build log is WORK/build.log.
build_project_wheel() {
  local python=$1 work=$2
  mkdir "$work/src"
  git -C "$REPO_ROOT" ls-files -z --cached --others --exclude-standard |
    (cd "$REPO_ROOT" && tar --null -T - --ignore-failed-read -cf -) | tar -xf - -C "$work/src"
  "$python" -m build --wheel --no-isolation --outdir "$work/dist" "$work/src" >"$work/build.log" 2>&1 ||
    { tail -n 30 "$work/build.log" >&2; die "the wheel did not build (above)"; }
}

# ---------------------------------------------------------------- pythons

# A Python interpreter of the given minor version on this host, or nothing.
find_python() {
  local want=$1 cand prefix
  # pyenv puts shims on PATH that exist but fail for versions not selected: run each candidate.
  if command -v pyenv >/dev/null 2>&1; then
    for prefix in $(pyenv versions --bare 2>/dev/null | grep -E "^${want//./\\.}\.[0-9]+$" | sort -V -r); do
      cand="$(pyenv prefix "$prefix")/bin/python$want"
      if "$cand" -c '' >/dev/null 2>&1; then echo "$cand"; return 0; fi
    done
  fi
  for cand in "python$want" "/usr/bin/python$want" "/usr/local/bin/python$want"; do
    if "$cand" -c '' >/dev/null 2>&1; then command -v "$cand"; return 0; fi
  done
  return 1
}

# pip with only the settings we choose: a machine-wide pip.conf (extra indexes, caps) must not
# change what gets installed, or the lock would not mean the same thing everywhere.
pip_clean() {
  PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1 "$@"
}

# ---------------------------------------------------------------- oldest: .venv

ensure_oldest_env() {
  local venv="$REPO_ROOT/.venv" stamp py
  stamp=$(env_stamp oldest)
  if [ -f "$venv/.iob-stamp" ] && [ "$(cat "$venv/.iob-stamp")" = "$stamp" ]; then
    return 0
  fi
  py=$(find_python "$OLDEST_PYTHON_VERSION") || die "no Python $OLDEST_PYTHON_VERSION found.
Install one (for example: pyenv install 3.13.0) and run scripts/setup again."
  log "Building .venv (Python $("$py" -c 'import platform; print(platform.python_version())'), $(grep -m1 '^homeassistant==' "$REPO_ROOT/requirements/oldest.lock"))"
  [ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
  pip_clean "$venv/bin/python" -m pip install -q --upgrade pip
  pip_clean "$venv/bin/python" -m pip install -q -c "$REPO_ROOT/requirements/oldest.lock" \
    -r "$REPO_ROOT/requirements/oldest.in" -e "${REPO_ROOT}[$PROJECT_EXTRAS]"
  echo "$stamp" >"$venv/.iob-stamp"
}

# ---------------------------------------------------------------- device311: .venv-py311

# Debian's python3.11 first: Raspberry Pi OS Bookworm ships that build (3.11.2), whose asyncio
# differs from later 3.11 releases (except*, wait_for), so the tests see what the device sees.
find_device_python() {
  local debian="/usr/bin/python$DEVICE_PYTHON_VERSION"
  if "$debian" -c '' >/dev/null 2>&1; then echo "$debian"; return 0; fi
  find_python "$DEVICE_PYTHON_VERSION"
}

ensure_device_env() {
  local venv="$REPO_ROOT/.venv-py311" stamp py
  stamp=$(env_stamp device311)
  if [ -f "$venv/.iob-stamp" ] && [ "$(cat "$venv/.iob-stamp")" = "$stamp" ]; then
    return 0
  fi
  py=$(find_device_python) || die "no Python $DEVICE_PYTHON_VERSION found (the device's Python).
On Debian bookworm: apt-get install -y python3.11 python3.11-venv; elsewhere: pyenv install 3.11.
Then run scripts/setup again."
  "$py" -c 'import ensurepip' 2>/dev/null || die "$py cannot create a venv (no ensurepip).
On Debian: apt-get install -y python3.11-venv, then run scripts/setup again."
  log "Building .venv-py311 (Python $("$py" -c 'import platform; print(platform.python_version())'), the device's Python, no Home Assistant)"
  [ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
  pip_clean "$venv/bin/python" -m pip install -q --upgrade pip
  pip_clean "$venv/bin/python" -m pip install -q -c "$REPO_ROOT/requirements/device311.lock" \
    -r "$REPO_ROOT/requirements/device311.in" -e "${REPO_ROOT}[$PROJECT_EXTRAS]"
  echo "$stamp" >"$venv/.iob-stamp"
}

# ---------------------------------------------------------------- newest: forky root

host_has_newest_python() { find_python "$NEWEST_PYTHON_VERSION" >/dev/null 2>&1; }

# Run a command inside the forky root, with the checkout at /repo, a private mount namespace
# (the bind mounts vanish with the process) and, with --isolated, a private network namespace
# with only loopback.
forky_run() {
  local net=() isolated=""
  if [ "${1:-}" = "--isolated" ]; then net=(--net); isolated=1; shift; fi
  # shellcheck disable=SC2016 # the inner script expands its own positional parameters
  ISOLATED=$isolated REPO_IN_ROOT=$FORKY_REPO unshare --mount --propagation private "${net[@]}" /bin/sh -c '
    root=$1; repo=$2; shift 2
    [ -z "$ISOLATED" ] || ip link set lo up
    mount --bind "$repo" "$root$REPO_IN_ROOT" && mount -t proc proc "$root/proc" || exit 1
    exec chroot "$root" /usr/bin/env -i PATH=/opt/venv/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      HOME=/root LANG=C.UTF-8 CI="${CI:-}" TERM="${TERM:-dumb}" /bin/sh -c "cd $REPO_IN_ROOT && exec \"\$@\"" sh "$@"
  ' sh "$FORKY_ROOT" "$REPO_ROOT" "$@" </dev/null
}

debian_mirror() {
  if [ -n "$DEBIAN_MIRROR" ]; then echo "$DEBIAN_MIRROR"; return; fi
  local uri
  uri=$(grep -hs -E '^(URIs:|deb) ' /etc/apt/sources.list /etc/apt/sources.list.d/* \
    | grep -v security | grep -oE 'https?://[^ ]+' | head -1)
  echo "${uri:-http://deb.debian.org/debian}"
}

build_forky_root() {
  is_root || die "building the Python 3.14 root needs root (debootstrap, chroot).
Either run scripts/setup as root, or install Python 3.14 on this machine and run it again."
  command -v debootstrap >/dev/null || die "debootstrap is missing: apt-get install -y debootstrap"
  local tmp="$FORKY_ROOT.partial" script=/usr/share/debootstrap/scripts/sid includes
  [ -e /usr/share/debootstrap/scripts/forky ] && script=/usr/share/debootstrap/scripts/forky
  includes=$(IFS=,; echo "${FORKY_PACKAGES[*]}")
  rm -rf "$tmp"
  mkdir -p "$IOB_CACHE_DIR"
  log "Building a Debian forky root with Python $NEWEST_PYTHON_VERSION in $FORKY_ROOT (about a minute, once)"
  debootstrap --variant=minbase --include="$includes" forky "$tmp" "$(debian_mirror)" "$script" \
    >"$IOB_CACHE_DIR/debootstrap.log" 2>&1 \
    || die "debootstrap failed; see $IOB_CACHE_DIR/debootstrap.log"
  mkdir -p "$tmp/repo"
  mv "$tmp" "$FORKY_ROOT"
}

# Packages added to FORKY_PACKAGES after the root was built are installed into it here.
ensure_forky_packages() {
  local missing
  # shellcheck disable=SC2016
  missing=$(forky_run /bin/sh -c 'for p in "$@"; do
      dpkg-query -W -f="\${Status}" "$p" 2>/dev/null | grep -q "install ok installed" || echo "$p"
    done' sh "${FORKY_PACKAGES[@]}" | tr '\n' ' ')
  [ -z "${missing// /}" ] && return 0
  log "Installing into the forky root: $missing"
  # shellcheck disable=SC2086
  forky_run /bin/sh -c "apt-get -o Acquire::Check-Valid-Until=false update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null" \
    || die "could not install $missing into $FORKY_ROOT"
}

refresh_forky_network_files() {
  cp /etc/resolv.conf /etc/hosts "$FORKY_ROOT/etc/"
  cp /etc/ssl/certs/ca-certificates.crt "$FORKY_ROOT/etc/ssl/certs/ca-certificates.crt"
}

ensure_newest_env() {
  local stamp
  if host_has_newest_python; then
    die "a host Python $NEWEST_PYTHON_VERSION is present, but this project only knows how to run
the newest-HA tests in the forky root. Use IOB_FORCE_FORKY=1 (root) or extend scripts/lib.sh."
  fi
  [ -x "$FORKY_ROOT/usr/bin/python$NEWEST_PYTHON_VERSION" ] || build_forky_root
  refresh_forky_network_files
  ensure_forky_packages
  stamp=$(env_stamp newest)
  if [ -f "$FORKY_ROOT$FORKY_VENV/.iob-stamp" ] \
    && [ "$(cat "$FORKY_ROOT$FORKY_VENV/.iob-stamp")" = "$stamp" ]; then
    return 0
  fi
  log "Building the newest-HA venv in the forky root ($(grep -m1 '^homeassistant==' "$REPO_ROOT/requirements/newest.lock"))"
  forky_run /bin/sh -c "
    set -e
    [ -x $FORKY_VENV/bin/python ] || python$NEWEST_PYTHON_VERSION -m venv $FORKY_VENV
    $FORKY_VENV/bin/python -m pip install -q --upgrade pip
    $FORKY_VENV/bin/python -m pip install -q -c requirements/newest.lock -r requirements/newest.in \
      -e '.[$PROJECT_EXTRAS]'
  "
  echo "$stamp" >"$FORKY_ROOT$FORKY_VENV/.iob-stamp"
}

# ---------------------------------------------------------------- the VM stage's images

vm_image_dir() { echo "$IOB_CACHE_DIR/vm-$1"; }

# What an image is built from: the recipe, its packages and its wheelhouse's locked versions.
vm_image_stamp() {
  cat "$REPO_ROOT/scripts/vm-image" "$REPO_ROOT/requirements/device311.lock" "$REPO_ROOT/pyproject.toml" \
    <(printf '%s\n' "${VM_PACKAGES[@]}") <(vm_wheel_requirements) | sha256sum | cut -d' ' -f1
}

# The guest's wheelhouse: the distribution's dependencies with the device and relay extras, and
# Home Assistant's BLE client side (bleak, bleak-retry-connector, py-improv-ble-client: pinned in
# device311.lock) for the BLE scenarios over real BlueZ (pip download judges markers with the
# host's Python: typing_extensions is listed itself).
vm_wheel_requirements() {
  python3 -c '
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
extras = project["optional-dependencies"]
print("\n".join(sorted(set(project["dependencies"] + extras["device"] + extras["relay"]))))
print("typing_extensions\nbleak\nbleak-retry-connector\npy-improv-ble-client")' \
    "$REPO_ROOT/pyproject.toml"
}

# Build the missing or outdated VM images. A machine that cannot (not root, no Debian mirror)
# still gets everything else; the reason is kept next to the image's place, and scripts/test
# prints it when it skips that suite's VM stage.
ensure_vm_images() {
  local suite
  for suite in "${VM_SUITES[@]}"; do
    build_or_keep_reason "$(vm_image_dir "$suite")" \
      "Debian $suite VM image, so scripts/test skips that VM stage" "$REPO_ROOT/scripts/vm-image" "$suite"
  done
}

# Run a cached image's build (COMMAND...); when it fails, keep its last lines in PLACE.unavailable
# (the reason scripts/test prints when it skips what needs the image) and warn: "no WHAT: ...".
build_or_keep_reason() {
  local place=$1 what=$2 output
  shift 2
  if output=$("$@" 2>&1); then
    rm -f "$place.unavailable"
    [ -z "$output" ] || printf '%s\n' "$output" >&2
  else
    mkdir -p "$(dirname "$place")" 2>/dev/null || true
    printf '%s\n' "$output" | tail -3 >"$place.unavailable" 2>/dev/null || true
    log "warning: no $what: $(printf '%s' "$output" | tail -1)"
  fi
}

# Why a suite's VM image is missing (for the skip message).
vm_image_unavailable_reason() {
  local dir
  dir=$(vm_image_dir "$1")
  unavailable_reason "$dir" "no image in $dir (scripts/setup builds it with scripts/vm-image $1)"
}

# The reason kept in DIR.unavailable when setup could not build DIR, else the given default.
unavailable_reason() {
  if [ -s "$1.unavailable" ]; then tr '\n' ' ' <"$1.unavailable"; else echo "$2"; fi
}

# ---------------------------------------------------------------- the add-on's image

# scripts/addon-image builds it from the Dockerfile's recipe into podman storage of its own, so
# it never touches a machine-wide image store. runc, not crun: crun refuses the hybrid cgroup
# hierarchy of these VMs. The storage driver is overlay where the kernel mounts it (a container
# starts in a second), else vfs (every container copies the whole image, ~10 s here);
# scripts/addon-image probes once and keeps the choice in storage-driver.
ADDON_DIR="$REPO_ROOT/addon/iot_onboard_relay"
ADDON_IMAGE_DIR="$IOB_CACHE_DIR/addon-image"

addon_storage_driver() {
  if [ -n "${IOB_PODMAN_STORAGE_DRIVER:-}" ]; then echo "$IOB_PODMAN_STORAGE_DRIVER"; return; fi
  cat "$ADDON_IMAGE_DIR/storage-driver" 2>/dev/null || echo vfs
}

addon_podman() {
  local driver
  driver=$(addon_storage_driver)
  podman --root "$ADDON_IMAGE_DIR/storage-$driver" --runroot "$ADDON_IMAGE_DIR/run-$driver" \
    --storage-driver "$driver" --runtime runc "$@"
}

# podman run as the tests do: podman asks for 1,048,576 open files and processes by default, and
# without CAP_SYS_RESOURCE (as in these VMs) raising a limit fails; the add-on needs far fewer.
addon_run() {
  addon_podman run --ulimit nofile=4096:4096 --ulimit nproc=4096:4096 "$@"
}

# The add-on's architectures (config.yaml's arch) that setup builds: amd64 by default; aarch64
# runs under qemu-user emulation (IOB_ADDON_ARCHES="amd64 aarch64", see with_emulation).
read -ra ADDON_ARCHES <<<"${IOB_ADDON_ARCHES:-amd64}"
[[ " ${ADDON_ARCHES[*]} " != *" aarch64 "* ]] || HOST_PACKAGES+=(qemu-user-static)

# Tagged like the Supervisor's images ({arch}-addon-{slug}), in this storage only.
addon_image_ref() {
  echo "localhost/${1:?an architecture}-iot-onboard-relay:$(sed -n 's/^version: "\(.*\)"$/\1/p' "$ADDON_DIR/config.yaml")"
}

addon_debian_arch() {
  case $1 in amd64) echo amd64 ;; aarch64) echo arm64 ;; *) die "no add-on image for $1 (amd64, aarch64)" ;; esac
}

# Run a command with the binfmt_misc handler for ARCH's binaries (qemu-user-static) registered.
# The handler lives as long as a binfmt_misc mount does: this one is in a private mount namespace
# that ends with the command, so nothing stays registered (while it runs, the kernel uses it for
# every process on the machine). Nothing to do for the host's own architecture.
with_emulation() {
  local arch=$1; shift
  [ "$arch" != amd64 ] || { "$@"; return; }
  [ -r "/usr/lib/binfmt.d/qemu-$arch.conf" ] \
    || die "no qemu-user handler for $arch: apt-get install -y qemu-user-static"
  # shellcheck disable=SC2016 # the inner script expands its own positional parameters
  unshare --mount --propagation private /bin/sh -c '
    conf=$1; shift
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || exit 1
    [ -e "/proc/sys/fs/binfmt_misc/$(cut -d: -f2 "$conf")" ] \
      || cat "$conf" >/proc/sys/fs/binfmt_misc/register || exit 1
    exec "$@"
  ' sh "/usr/lib/binfmt.d/qemu-$arch.conf" "$@"
}

# The Debian packages of the Dockerfile's apt-get install: the one list both recipes use.
addon_image_packages() {
  python3 - "$ADDON_DIR/Dockerfile" <<'EOF'
import re, sys
text = open(sys.argv[1]).read().replace("\\\n", " ")
found = re.search(r"apt-get install -y --no-install-recommends((?:\s+[a-z0-9][a-z0-9.+-]*)+)", text)
if found is None:
    sys.exit(f"{sys.argv[1]}: no 'apt-get install -y --no-install-recommends' package list")
print("\n".join(found.group(1).split()))
EOF
}

# The image's labels: build.yaml's, and the version.
addon_image_labels() {
  local arch=$1
  "$REPO_ROOT/.venv/bin/python" - "$ADDON_DIR/build.yaml" <<'EOF'
import sys, yaml
for key, value in yaml.safe_load(open(sys.argv[1]))["labels"].items():
    print(f"{key}={value}")
EOF
  echo "org.opencontainers.image.version=$(addon_image_ref "$arch" | cut -d: -f2)"
  echo "io.hass.arch=$arch"
}

# What /opt/iob holds besides the project: its dependencies with the relay extra.
addon_wheel_requirements() {
  python3 -c '
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
print("\n".join(sorted(set(project["dependencies"] + project["optional-dependencies"]["relay"]))))
print("typing_extensions")' "$REPO_ROOT/pyproject.toml"
}

addon_base_stamp() {
  cat "$REPO_ROOT/requirements/device311.lock" <(addon_image_packages) <(addon_wheel_requirements) <(echo "$1") \
    <(sed -n '/^build_base()/,/^}/p' "$REPO_ROOT/scripts/addon-image") | sha256sum | cut -d' ' -f1
}

# The base's inputs, the whole recipe, what the image takes from the add-on's folder (not its
# docs) and the wheel's sources.
addon_image_stamp() {
  {
    addon_base_stamp "$1"
    cd "$REPO_ROOT" && git ls-files -z --cached --others --exclude-standard -- pyproject.toml \
      scripts/addon-image addon/iot_onboard_relay/{Dockerfile,rootfs,config.yaml,build.yaml} \
      cloud_relay device_firmware \
      custom_components/iot_onboard/iob_protocol | sort -z | xargs -0 sha256sum
  } | sha256sum | cut -d' ' -f1
}

# Build the add-on's image when missing or outdated. A machine that cannot (no podman, not root,
# no mirror) still gets everything else; the reason is kept for tests/addon's skip message.
ensure_addon_image() {
  local arch
  for arch in "${ADDON_ARCHES[@]}"; do
    build_or_keep_reason "$ADDON_IMAGE_DIR/$arch" \
      "$arch add-on image, so scripts/test skips its container test" "$REPO_ROOT/scripts/addon-image" "$arch"
  done
}
