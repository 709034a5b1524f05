#!/bin/sh
# The VM stage's test hook: runs inside the guest (scripts/vm-image's iob-vmtest.service starts
# it at boot from the 9p share; the VM powers off when it ends). tests/vm/test_vm.py reads
# out/results.json. No network reaches the guest (-nic none): everything crosses simulated air.
#
#   radio 0 -> namespace "router": hostapd (the home network), dnsmasq (DHCP, DNS), Mosquitto and
#              the account service on 192.168.50.1 (relay.home.arpa), reachable only over the air
#   radio 1 -> the device: NetworkManager, the agent installed from the .deb, run by systemd
#   radio 2 -> a phone-like station in namespace "phone" (wpa_supplicant) that joins the
#              agent's setup hotspot (setup_hotspot)
#   radio 3 -> a second access point: the office's other one, then a café's guest network in
#              namespace "cafe" (the environments, at the end)
#   BLE      -> two emulated controllers (btvirt over hci_vhci) under one bluetoothd: hci0 for
#              the device (factory-provision --self-test checks it), hci1 for the other side
#
# $SHARE/scenarios (tests/vm/test_vm.py writes it from IOB_VM_SCENARIOS): "all", "factory" to
# end after the factory line (install, self-test, registry import), "ble" to run only the
# onboarding over Bluetooth after it, "wps" only the joins by the router's WPS button, or
# "environments" only the three environments (office, home, difficult), for a short run.
set -u
SHARE=/mnt/share
OUT=$SHARE/out
mkdir -p "$OUT"
exec >"$OUT/guest.log" 2>&1
RESULTS=$OUT/results.jsonl
: >"$RESULTS"
WORK=/var/lib/iob-vm
mkdir -p "$WORK"
SSID=iob-home
PASSPHRASE="correct horse battery"
ROUTER_IP=192.168.50.1
RELAY_PORT=8080
SERVICE_URL="http://relay.home.arpa:$RELAY_PORT"
MODEL=iob-vm-sensor
# The account service and the driver run on the agent venv's Python and packages (the same
# wheel) plus the service's own dependencies in a directory of their own: a second venv of
# everything cost about three minutes under TCG.
AGENT_PYTHON=/opt/iot-onboard/venv/bin/python
RELAY_EXTRA=/opt/iob-relay
RELAY_EXTRA_PACKAGES="aiosqlite argon2-cffi argon2-cffi-bindings asyncpg"
# Home Assistant's Bluetooth client side for the driver's ble-onboard and improv (bleak over
# BlueZ's D-Bus, bleak-retry-connector's establish_connection, py-improv-ble-client as HA's
# improv_ble uses it), with their dependencies, from the image's wheels.
HA_BLE=/opt/iob-ha-ble
HA_BLE_PACKAGES="bleak bleak-retry-connector py-improv-ble-client"
T0=$(cut -d' ' -f1 /proc/uptime)
SCENARIOS=$(cat "$SHARE/scenarios" 2>/dev/null || echo all)

say() { echo "== $(cut -d' ' -f1 /proc/uptime)s $*"; }
# record NAME JSON: one line of results (JSON that does not parse is kept as an error), with the
# guest's uptime when the step ended (the host prints the per-step times).
record() {
  python3 -c '
import json, sys
try:
    result = json.loads(sys.argv[2])
except ValueError:
    result = {"error": "not JSON: " + sys.argv[2][:2000]}
print(json.dumps({"name": sys.argv[1], "at": float(sys.argv[3]), "result": result}))' \
    "$1" "$2" "$(cut -d' ' -f1 /proc/uptime)" >>"$RESULTS"
}
json_string() { python3 -c 'import json, sys; print(json.dumps(sys.argv[1]))' "$1"; }
finish() {
  say "collecting logs"
  journalctl -b --no-pager >"$OUT/journal.log" 2>&1
  cp -r "$WORK/logs" "$OUT/" 2>/dev/null
  record timing "$(printf '{"boot_to_hook": %s, "hook_seconds": %s}' "$T0" \
    "$(awk -v t0="$T0" '{print $1 - t0}' /proc/uptime)")"
  sync
}
trap finish EXIT
mkdir -p "$WORK/logs"

say "versions"
. /etc/os-release
record versions "$(printf '{"debian": "%s", "kernel": "%s", "python": "%s", "nm": "%s", "hostapd": %s}' \
  "$VERSION_CODENAME" "$(uname -r)" "$(python3 -c 'import platform; print(platform.python_version())')" \
  "$(NetworkManager --version)" "$(json_string "$(hostapd -v 2>&1 | head -1)")")"

# ------------------------------------------------------------------ radios and the home router
say "radios"
modprobe mac80211_hwsim radios=4 || { record radios '{"error": "modprobe mac80211_hwsim failed"}'; exit 1; }
sleep 2
ls /sys/class/ieee80211/
# The first radio's phy and interface go to the router's namespace.
phy_of() { basename "$(readlink -f "/sys/class/net/$1/phy80211")"; }
ROUTER_PHY=$(phy_of wlan0)
AP2_PHY=$(phy_of wlan3)
ip netns add router
iw phy "$ROUTER_PHY" set netns name router
iw phy "$AP2_PHY" set netns name router
ip netns exec router ip link set lo up
ip netns exec router ip addr add "$ROUTER_IP/24" dev wlan0
nmcli device set wlan2 managed no || true

# ------------------------------------------------------------------ BLE: emulated controllers
# btvirt -l2: two LE controllers over hci_vhci; bluetoothd (bluetooth.service) takes them as
# hci0 and hci1. Started here, waited for before the factory line (ble_up). Emulation quirk:
# under load a controller's init can time out (bluetoothd: "Opcode 0x0c03 failed: -110") and
# the adapter never appears; a new btvirt then works.
BLE_ATTEMPTS=0
start_btvirt() {
  BLE_ATTEMPTS=$((BLE_ATTEMPTS + 1))
  btvirt -l2 >>"$WORK/logs/btvirt.log" 2>&1 &
  echo $! >"$WORK/btvirt.pid"
}
# An adapter bluetoothd has taken (busctl introspect succeeds on a missing object: read a property).
adapter_up() { busctl --system get-property org.bluez "/org/bluez/$1" org.bluez.Adapter1 Address >/dev/null 2>&1; }
# ble_up: both adapters in bluetoothd within 20 s, else btvirt again (3 attempts in all).
ble_up() {
  while :; do
    for _ in $(seq 1 40); do
      adapter_up hci0 && adapter_up hci1 && return 0
      sleep 0.5
    done
    [ "$BLE_ATTEMPTS" -lt 3 ] || return 1
    say "BLE controllers not up; btvirt again"
    stop_pidfile "$WORK/btvirt.pid"
    systemctl restart bluetooth.service
    start_btvirt
  done
}
modprobe hci_vhci || true
systemctl start bluetooth.service
start_btvirt

write_hostapd() {  # write_hostapd EXTRA-LINES...
  {
    printf 'interface=wlan0\ndriver=nl80211\nssid=%s\nhw_mode=g\nchannel=6\n' "$SSID"
    printf 'ctrl_interface=/run/hostapd\n'
    printf '%s\n' "$@"
  } >"$WORK/hostapd.conf"
}
start_hostapd() {
  ip netns exec router hostapd -B -P "$WORK/hostapd.pid" -f "$WORK/logs/hostapd.log" "$WORK/hostapd.conf"
}
stop_pidfile() { [ -f "$1" ] && kill "$(cat "$1")" 2>/dev/null; sleep 1; rm -f "$1"; }
# The router's LAN interface: the home radio itself, or the office's bridge of its two.
LAN_IF=wlan0
start_dnsmasq() {  # start_dnsmasq EXTRA-OPTIONS...: DHCP and DNS for the home network
  ip netns exec router dnsmasq --conf-file=/dev/null --user=root --group=root --interface="$LAN_IF" --bind-interfaces \
    --no-resolv --no-hosts --pid-file="$WORK/dnsmasq.pid" --dhcp-leasefile="$WORK/dnsmasq.leases" \
    --log-facility="$WORK/logs/dnsmasq.log" --log-dhcp --log-queries "$@"
}
DHCP="--dhcp-range=192.168.50.100,192.168.50.150,255.255.255.0,1h"
DNS="--address=/relay.home.arpa/$ROUTER_IP"

write_hostapd wpa=2 wpa_key_mgmt=WPA-PSK rsn_pairwise=CCMP "wpa_passphrase=$PASSPHRASE"
start_hostapd
ip netns exec router ip link set wlan0 up
start_dnsmasq "$DHCP" "$DNS"

# ------------------------------------------------------------------ Mosquitto, account service
say "broker and account service"
BROKER_PASSWORD=vm-broker-admin-password
mkdir -p "$WORK/broker"
mosquitto_ctrl dynsec init "$WORK/broker/dynsec.json" iob-admin "$BROKER_PASSWORD" >/dev/null
chown -R mosquitto:mosquitto "$WORK/broker"
chmod 0755 "$WORK"
cat >"$WORK/broker/mosquitto.conf" <<EOF
listener 1883
allow_anonymous false
plugin /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so
plugin_opt_config_file $WORK/broker/dynsec.json
persistence false
log_dest file $WORK/broker/mosquitto.log
user mosquitto
EOF
ip netns exec router mosquitto -c "$WORK/broker/mosquitto.conf" -d

say "installing the device package"
DEB=$(ls "$SHARE"/iot-onboard-device_*.deb)
cp "$DEB" /tmp/
start=$(cut -d' ' -f1 /proc/uptime)
if apt-get install -y "/tmp/$(basename "$DEB")" >"$WORK/logs/apt.log" 2>&1; then
  install_rc=0
else
  install_rc=$?
fi
install_seconds=$(awk -v t0="$start" '{print $1 - t0}' /proc/uptime)
# The documented permissions (docs/device.md): the data directory 0700 iob, the unit's user.
record install "$(printf '{"rc": %s, "seconds": %s, "data_dir": "%s", "user": %s, "venv_python": %s, "enabled": "%s"}' \
  "$install_rc" "$install_seconds" "$(stat -c '%a %U:%G' /var/lib/iot-onboard 2>&1)" \
  "$(json_string "$(id iob 2>&1)")" \
  "$(json_string "$(/opt/iot-onboard/venv/bin/python -c 'import sys; print(sys.version.split()[0])' 2>&1)")" \
  "$(systemctl is-enabled iot-onboard-device.service 2>&1)")"
[ "$install_rc" -eq 0 ] || exit 1

# shellcheck disable=SC2086 # a list of names
$AGENT_PYTHON -m pip install -q --no-index --no-deps --no-compile --disable-pip-version-check \
  --target "$RELAY_EXTRA" --find-links /usr/share/iot-onboard/wheels $RELAY_EXTRA_PACKAGES \
  >"$WORK/logs/relay-pip.log" 2>&1 \
  || { record relay '{"error": "pip could not install the account service"}'; exit 1; }
# shellcheck disable=SC2086 # a list of names
$AGENT_PYTHON -m pip install -q --no-index --no-compile --disable-pip-version-check \
  --target "$HA_BLE" --find-links /usr/share/iot-onboard/wheels $HA_BLE_PACKAGES \
  >"$WORK/logs/ha-ble-pip.log" 2>&1 \
  || { record relay '{"error": "pip could not install the Bluetooth client side"}'; exit 1; }
mkdir -p "$WORK/relay"
cat >"$WORK/relay/relay.toml" <<EOF
database_url = "sqlite:///$WORK/relay/relay.db"
secret_key_file = "secret.key"

[http]
host = "0.0.0.0"
port = $RELAY_PORT

[broker]
host = "127.0.0.1"
port = 1883
username = "iob-admin"
password = "$BROKER_PASSWORD"
public_host = "relay.home.arpa"
public_port = 1883
public_tls = false
EOF
relay() {
  (cd "$WORK/relay" && exec env PYTHONPATH="$RELAY_EXTRA" "$AGENT_PYTHON" -m cloud_relay --config "$WORK/relay/relay.toml" "$@")
}
(relay init && \
  echo "vm stage maker password" | relay admin create-account maker@vm.invalid --admin --password-stdin && \
  relay admin set-model "$MODEL" --name "VM sensor" --manufacturer "IoT Onboard VM stage") \
  >"$WORK/logs/relay-init.log" 2>&1 || { record relay '{"error": "relay init failed"}'; exit 1; }

# ------------------------------------------------------------------ the factory line
# The unit as the line makes it: factory-provision --self-test as the agent's user, with the
# device's radio (wlan1) and BLE adapter (hci0); the record goes to the registry, which keeps
# the self-test with the unit.
say "BLE controllers"
start=$(cut -d' ' -f1 /proc/uptime)
if ble_up; then ble_ok=true; else ble_ok=false; fi
record bluetooth "$(printf '{"up": %s, "attempts": %s, "seconds": %s, "adapters": %s, "bluez": "%s"}' \
  "$ble_ok" "$BLE_ATTEMPTS" "$(awk -v t0="$start" '{print $1 - t0}' /proc/uptime)" \
  "$(json_string "$(busctl --system tree --list org.bluez 2>&1 | grep -x '/org/bluez/hci[0-9]*' | tr '\n' ' ')")" \
  "$(bluetoothctl --version 2>&1 | awk '{print $NF}')")"

say "factory line"
cat >/etc/iot-onboard/device.toml <<EOF
# The VM stage's factory line: the device's radio and BLE adapter for the self-test.
wifi_interface = "wlan1"
ble = true
ble_adapter = "hci0"
EOF
if runuser -u iob -- iob-device factory-provision --model "$MODEL" --output /tmp/label --self-test \
  >"$WORK/logs/factory.log" 2>&1; then
  factory_rc=0
else
  factory_rc=$?
fi
DEVICE_ID=$(sed -n 's/.*"device_id": *"\([^"]*\)".*/\1/p' /tmp/label/manufacturing-records.jsonl | head -1)
QR=$(sed -n 's/^QR text: *//p' /tmp/label/*-label.txt | head -1)
relay registry import /tmp/label/manufacturing-records.jsonl >>"$WORK/logs/relay-init.log" 2>&1
import_rc=$?
# The record's self-test, the operator's screen, and what the registry kept for the unit.
record factory "$(python3 -c '
import json, sqlite3, sys
rc, import_rc, records, output, database, device_id = sys.argv[1:]
record = json.loads(open(records).readline())
with sqlite3.connect(database) as db:
    row = db.execute("SELECT self_test FROM devices WHERE device_id = ?", (device_id,)).fetchone()
print(json.dumps({
    "rc": int(rc),
    "import_rc": int(import_rc),
    "self_test": record.get("self_test"),
    "output": open(output).read()[-3000:],
    "registry": None if row is None or row[0] is None else json.loads(row[0]),
}))' "$factory_rc" "$import_rc" /tmp/label/manufacturing-records.jsonl "$WORK/logs/factory.log" \
  "$WORK/relay/relay.db" "$DEVICE_ID" 2>&1)"
[ "$factory_rc" -eq 0 ] && [ "$import_rc" -eq 0 ] || exit 1
[ "$SCENARIOS" = factory ] && exit 0

# ------------------------------------------------------------------ the agent, as the docs say
say "the agent's configuration"
cat >/etc/iot-onboard/device.toml <<EOF
# The VM stage: loopback provisioning (the test plays Home Assistant), no BLE, no hotspot;
# a lost Wi-Fi reopens the owner's window after 30 s (password_changed), not 10 minutes.
reonboard_after = 30
listen = ["127.0.0.1"]
advertise = []
wifi_interface = "wlan1"
hotspot = false
ble = false
allow_insecure_http = true
commit_timeout = 150
EOF

(cd "$WORK/relay" && exec ip netns exec router env PYTHONPATH="$RELAY_EXTRA" "$AGENT_PYTHON" -m cloud_relay \
  --config "$WORK/relay/relay.toml" serve) >"$WORK/logs/relay.log" 2>&1 &
systemctl start iot-onboard-device.service
for _ in $(seq 1 120); do
  ip netns exec router python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$RELAY_PORT/v1/health', timeout=2)" \
    2>/dev/null && python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8423/iob/v1/info', timeout=2)" \
    2>/dev/null && break
  sleep 1
done
MAINPID=$(systemctl show -p MainPID --value iot-onboard-device.service)
record agent "$(printf '{"active": "%s", "process_user": "%s", "groups": %s, "info": %s}' \
  "$(systemctl is-active iot-onboard-device.service)" "$(ps -o user= -p "$MAINPID" | tr -d ' ')" \
  "$(json_string "$(ps -o supgrp= -p "$MAINPID" | tr -d ' ')")" \
  "$(python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8423/iob/v1/info', timeout=5).read().decode())" 2>/dev/null || echo null)")"

# driver router|device SUBCOMMAND...: tests/vm/driver.py (Home Assistant's part) in the router's
# namespace (the account service, the broker) or the device's (the agent's LAN server).
driver() {
  where=$1; shift
  set -- "$AGENT_PYTHON" "$SHARE/driver.py" --relay "http://127.0.0.1:$RELAY_PORT" \
    --account "$WORK/account.json" --claim "$WORK/claim.json" --device-id "$DEVICE_ID" "$@"
  if [ "$where" = router ]; then ip netns exec router "$@"; else "$@"; fi
}
driver router account >"$WORK/account.json" || { record account "$(cat "$WORK/account.json")"; exit 1; }

# The claims: a server in the router's namespace hands each onboarding step a new one over a
# Unix socket (the steps run in the device's namespace). Under TCG each Python start costs
# seconds, so a scenario is one start of the driver, which also records what the device shows.
CLAIMS=$WORK/claims.sock
driver router claim-server --socket "$CLAIMS" >"$WORK/logs/claim-server.log" 2>&1 &
for _ in $(seq 1 120); do [ -S "$CLAIMS" ] && break; sleep 0.5; done
# step NAME SUBCOMMAND ARGS...: a driver step in the device's namespace with a new claim, its
# result and what the device shows afterwards recorded as NAME (tests/vm/driver.py --record).
step() {
  name=$1; shift
  driver device --claim-socket "$CLAIMS" --record "$name" --results "$RESULTS" \
    --since "$(date +%s)" "$@"
}

# scenario NAME SSID PASSPHRASE [--hidden|--wps|--owner-out FILE]: one onboarding through the
# agent's LAN server; its outcome, the agent's own status and NetworkManager's connections
# afterwards (a failure rolls back).
scenario() {
  name=$1; ssid=$2; passphrase=$3; shift 3
  say "scenario $name"
  step "$name" onboard --qr "$QR" --ssid "$ssid" --passphrase "$passphrase" \
    --service-url "$SERVICE_URL" "$@"
}

# ble_on: the agent with Bluetooth on (hci0), restarted as a user would after editing
# device.toml (a fresh agent: no secure session, so Improv needs the button).
ble_on() {
  say "Bluetooth on"
  sed -i 's/^ble = false/ble = true\nble_adapter = "hci0"/' /etc/iot-onboard/device.toml
  systemctl restart iot-onboard-device.service
}

# ble_onboarding: Home Assistant's side on hci1 finds the agent by its advertisement and runs the
# whole onboarding over GATT (tests/vm/driver.py ble-onboard). The service URL is the closed
# port, so the join ends with RELAY_UNREACHABLE (Wi-Fi, DHCP and DNS worked) and the device,
# unclaimed, rolls back and stays ready for the next scenario.
ble_onboarding() {
  say "scenario ble_onboarding"
  PYTHONPATH="$HA_BLE" step ble_onboarding --agent-log 'ble|bluetooth|gatt|advert' ble-onboard \
    --adapter hci1 --qr "$QR" --ssid "$SSID" --passphrase "$PASSPHRASE" --service-url "$SERVICE_URL"
}

# improv NAME PASSPHRASE [DRIVER-OPTIONS]: Improv Wi-Fi from the other controller, the button
# pressed (SIGUSR1 to the agent) after the first read; what the client saw and the agent's state.
improv() {
  name=$1; passphrase=$2; shift 2
  say "scenario $name"
  PYTHONPATH="$HA_BLE" step "$name" --agent-log 'improv|button|ble' improv --adapter hci1 \
    --ssid "$SSID" --passphrase "$passphrase" \
    --button-pid "$(systemctl show -p MainPID --value iot-onboard-device.service)" "$@"
}

# password_changed: the router's passphrase changes under the claimed, online device. Its
# watchdog sees the saved Wi-Fi down and reopens the window for the owner only (reonboard_after);
# the owner's Home Assistant (tests/vm/driver.py ble-owner) finds its advertisement, opens an
# owner session over Bluetooth with the owner secret it sent with the claim, and sends the new
# passphrase (set_wifi, commit). Online again, ownership kept.
NEW_PASSPHRASE="the router's new passphrase"
password_changed() {
  say "scenario password_changed"
  since=$(date +%s)
  router_wifi wpa=2 wpa_key_mgmt=WPA-PSK rsn_pairwise=CCMP "wpa_passphrase=$NEW_PASSPHRASE"
  outcome=$(PYTHONPATH="$HA_BLE" driver device ble-owner --adapter hci1 --owner "$WORK/owner.json" \
    --ssid "$SSID" --passphrase "$NEW_PASSPHRASE" --scan-timeout 240)
  record password_changed "$(printf '{"onboard": %s, "status": %s, "online": %s, "active": %s, "agent_log": %s}' \
    "$outcome" "$(iob-device status --json)" "$(driver router online)" \
    "$(json_string "$(nmcli -t -f NAME,DEVICE connection show --active)")" \
    "$(json_string "$(journalctl -b --no-pager -o cat --since "@$since" -u iot-onboard-device.service | tail -25)")")"
}

# lan_info HOST: the agent's GET /iob/v1/info (JSON), or null.
lan_info() {
  python3 -c "import urllib.request; print(urllib.request.urlopen('http://$1:8423/iob/v1/info', timeout=10).read().decode())" \
    2>/dev/null || echo null
}

# setup_hotspot: the agent's own setup hotspot, joined by a phone-like station on the third
# radio in a namespace of its own (wpa_supplicant with the key from the label; klibc's ipconfig
# as its DHCP client against NetworkManager's shared mode). The station fetches the captive page
# and the agent's LAN API over the hotspot. The hotspot holds the radio, so it is off in the
# other scenarios; here the agent restarts with it on (and its LAN server on every address).
setup_hotspot() {
  say "scenario setup_hotspot"
  hotspot_ssid=$(sed -n 's/^Setup Wi-Fi: *//p' /tmp/label/*-label.txt | head -1)
  hotspot_key=$(sed -n 's/^Wi-Fi key: *//p' /tmp/label/*-label.txt | head -1)
  sed -i 's/^hotspot = false/hotspot = true/; s/^listen = .*/listen = ["0.0.0.0"]/' \
    /etc/iot-onboard/device.toml
  start=$(cut -d' ' -f1 /proc/uptime) since=$(date +%s)
  systemctl restart iot-onboard-device.service
  for _ in $(seq 1 120); do
    ip -4 -o addr show wlan1 | grep -q "inet 10.42.0.1/" && break
    sleep 1
  done
  hotspot_up=$(awk -v t0="$start" '{print $1 - t0}' /proc/uptime)
  ip netns add phone
  iw phy "$(phy_of wlan2)" set netns name phone
  ip -n phone link set lo up
  { printf 'ctrl_interface=%s\n' "$WORK/phone-ctrl"; wpa_passphrase "$hotspot_ssid" "$hotspot_key"; } \
    >"$WORK/phone.conf"
  ip netns exec phone wpa_supplicant -B -i wlan2 -c "$WORK/phone.conf" -P "$WORK/phone-wpa.pid" \
    -f "$WORK/logs/phone-wpa.log"
  for _ in $(seq 1 60); do
    ip netns exec phone wpa_cli -p "$WORK/phone-ctrl" -i wlan2 status 2>/dev/null \
      | grep -q wpa_state=COMPLETED && break
    sleep 1
  done
  ip netns exec phone /usr/lib/klibc/bin/ipconfig -t 60 -c dhcp wlan2 >"$WORK/logs/phone-dhcp.log" 2>&1
  joined=$(awk -v t0="$start" '{print $1 - t0}' /proc/uptime)
  # What the phone sees: the captive page, a phone's portal probe, the agent's LAN API.
  phone=$(ip netns exec phone python3 -c '
import json, urllib.error, urllib.request

class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None

def get(url):
    try:
        with urllib.request.build_opener(NoRedirect).open(url, timeout=20) as answer:
            return answer.status, dict(answer.headers), answer.read().decode(errors="replace")
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read().decode(errors="replace")
    except OSError as err:
        return None, {}, repr(err)

page = get("http://10.42.0.1/")
probe = get("http://10.42.0.1/generate_204")
info = get("http://10.42.0.1:8423/iob/v1/info")
print(json.dumps({
    "page": {"status": page[0], "form": "<form" in page[2], "title": page[2][:300]},
    "probe": {"status": probe[0], "location": probe[1].get("Location")},
    "info": {"status": info[0], "body": info[2][:500]},
}))' 2>&1)
  record setup_hotspot "$(printf '{"hotspot_up": %s, "joined": %s, "ssid": %s, "wpa_state": %s, "phone_address": %s, "dhcp": %s, "phone": %s, "active": %s, "agent_log": %s}' \
    "$hotspot_up" "$joined" "$(json_string "$hotspot_ssid")" \
    "$(json_string "$(ip netns exec phone wpa_cli -p "$WORK/phone-ctrl" -i wlan2 status 2>&1 | grep wpa_state)")" \
    "$(json_string "$(ip -n phone -4 -o addr show wlan2 | awk '{print $4}')")" \
    "$(json_string "$(tail -5 "$WORK/logs/phone-dhcp.log")")" "$phone" \
    "$(json_string "$(nmcli -t -f NAME,DEVICE connection show --active)")" \
    "$(json_string "$(journalctl -b --no-pager -o cat --since "@$since" -u iot-onboard-device.service -u NetworkManager -u wpa_supplicant | grep -i -E 'hotspot|start AP|frequency' | tail -20)")")"
}

# The home router's variants: its Wi-Fi (hostapd) and its LAN services (dnsmasq).
router_wifi() { stop_pidfile "$WORK/hostapd.pid"; write_hostapd "$@"; start_hostapd; }
router_lan() { stop_pidfile "$WORK/dnsmasq.pid"; start_dnsmasq "$@"; }
wpa2() { router_wifi wpa=2 wpa_key_mgmt=WPA-PSK rsn_pairwise=CCMP "wpa_passphrase=$PASSPHRASE" "$@"; }
# "The internet": the agent probes 1.1.1.1:443 when the service does not answer; the router
# answers it itself, so a closed service port is RELAY_UNREACHABLE, not NO_INTERNET.
internet_up() {
  ip -n router addr add 1.1.1.1/32 dev lo
  ip netns exec router python3 -m http.server 443 --bind 1.1.1.1 >/dev/null 2>&1 &
  echo $! >"$WORK/internet.pid"
  sleep 2
}
CLOSED_URL="http://relay.home.arpa:8081"
# The captive portal's web server (portal_up [NAMESPACE ADDRESS [PORT...]]: the router's by
# default): every request but the sign-in page is redirected to it, on port 80, on 443, where
# the portal answers in TLS with its own certificate (self-signed, for its own name), as portals
# that intercept HTTPS do, and on any other PORT given (the image has no packet filter to
# redirect a port with, so the portal listens on it itself).
portal_up() {
  portal_ns=${1:-router} portal_ip=${2:-$ROUTER_IP}
  if [ $# -ge 2 ]; then shift 2; else set --; fi
  [ -f "$WORK/portal-key.pem" ] || "$AGENT_PYTHON" -c '
import datetime, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

key = ec.generate_private_key(ec.SECP256R1())
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "portal.home.arpa")])
now = datetime.datetime.now(datetime.timezone.utc)
cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("portal.home.arpa")]), False)
        .sign(key, hashes.SHA256()))
open(sys.argv[1], "wb").write(cert.public_bytes(serialization.Encoding.PEM))
open(sys.argv[2], "wb").write(key.private_bytes(serialization.Encoding.PEM,
    serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
' "$WORK/portal-cert.pem" "$WORK/portal-key.pem"
  ip netns exec "$portal_ns" python3 -c '
import http.server, ssl, sys, threading

class Portal(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/login":
            body = b"<html><body><form>Accept the terms to continue</form></body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(302)
        self.send_header("Location", "http://portal.home.arpa/login")
        self.send_header("Content-Length", "0")
        self.end_headers()
    do_POST = do_HEAD = do_GET

address = sys.argv[3]
tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
tls.load_cert_chain(sys.argv[1], sys.argv[2])
https = http.server.ThreadingHTTPServer((address, 443), Portal)
https.socket = tls.wrap_socket(https.socket, server_side=True)
threading.Thread(target=https.serve_forever, daemon=True).start()
for port in sys.argv[4:]:
    server = http.server.ThreadingHTTPServer((address, int(port)), Portal)
    threading.Thread(target=server.serve_forever, daemon=True).start()
http.server.ThreadingHTTPServer((address, 80), Portal).serve_forever()
' "$WORK/portal-cert.pem" "$WORK/portal-key.pem" "$portal_ip" "$@" >"$WORK/logs/portal.log" 2>&1 &
  echo $! >"$WORK/portal.pid"
  sleep 2
}

# bluetoothd_health: whether bluetoothd crashed during the boot (it is started again by D-Bus
# activation, and the agent registers again, but every Bluetooth link of the board is lost).
bluetoothd_health() {
  record bluetoothd "$(printf '{"crashes": %s, "journal": %s}' \
    "$(journalctl -b --no-pager -o cat -u bluetooth.service | grep -c 'Main process exited, code=killed')" \
    "$(json_string "$(journalctl -b --no-pager -k -o cat | grep -E 'bluetoothd.*(segfault|general protection)' | tail -3)")")"
}

# The joins by WPS push button (no passphrase typed): a router without WPS (WPS_FAILED at once),
# then one with WPS whose button is pressed just before the join (hostapd_cli wps_pbc: a
# two-minute window). The service port is closed, so RELAY_UNREACHABLE proves the key arrived
# and Wi-Fi, DHCP and DNS worked.
wps_scenarios() {
  wpa2
  scenario wps_off "$SSID" "" --wps
  wpa2 wps_state=2 eap_server=1 config_methods=push_button
  record wps_button "$(json_string "$(ip netns exec router hostapd_cli -p /run/hostapd -i wlan0 wps_pbc 2>&1)")"
  scenario wps_push_button "$SSID" "" --wps
  wpa2
}

# ------------------------------------------------------------------ three environments
# Issue 17, item 6: the device from the box's state (a factory reset before each) in an office,
# a typical home and a difficult place, each with the account service and Mosquitto on the
# router (the household's add-on), every attempt the user makes recorded with its diagnostic and
# when the device was online as the household's Home Assistant sees it (driver.py
# --until-online). The agent as in the other LAN scenarios: no hotspot, its LAN server on
# loopback (the test plays Home Assistant there). A weak signal is not emulated: without
# wmediumd (not packaged in Debian) mac80211_hwsim delivers every frame at one fixed level.
OFFICE_SSID=iob-office
OFFICE_PASSPHRASE="office wireless passphrase"
HOME5_SSID=iob-home-5g
CAFE_SSID=iob-cafe
CAFE_IP=10.9.0.1

# ap NAME NAMESPACE INTERFACE LINES...: one more access point (hostapd) with its own files.
ap() {
  ap_name=$1 ap_ns=$2 ap_if=$3; shift 3
  { printf 'interface=%s\ndriver=nl80211\nctrl_interface=/run/hostapd-%s\n' "$ap_if" "$ap_name"
    printf '%s\n' "$@"; } >"$WORK/hostapd-$ap_name.conf"
  ip netns exec "$ap_ns" hostapd -B -P "$WORK/hostapd-$ap_name.pid" -f "$WORK/logs/hostapd-$ap_name.log" \
    "$WORK/hostapd-$ap_name.conf"
}

# The agent's state file (docs/device.md; one key per line): its generation and phase.
STATE_FILE=/var/lib/iot-onboard/state.json
# No file yet (a device that never left the box's state): generation 0.
state_generation() {
  generation=$(sed -n 's/^ "generation": \([0-9]*\),*$/\1/p' "$STATE_FILE" 2>/dev/null)
  echo "${generation:-0}"
}
state_phase() { sed -n 's/^ "phase": "\([a-z_]*\)",*$/\1/p' "$STATE_FILE" 2>/dev/null; }

# factory_reset NAME: the device back to the box's state, as the docs' `systemctl kill -s
# SIGUSR2` (what `iob-device reset` sends; its own Python start costs seconds under TCG): the
# agent clears its claim, saved Wi-Fi and retained messages and posts its signed release. Done
# when the state file has a new generation in phase unclaimed and the LAN server answers so.
factory_reset() {
  say "factory reset ($1)"
  reset_from=$(state_generation) reset_start=$(cut -d' ' -f1 /proc/uptime)
  systemctl kill -s SIGUSR2 iot-onboard-device.service
  for _ in $(seq 1 480); do  # at most 2 minutes (the whole step took about 25 s here)
    [ "$(state_generation)" -gt "$reset_from" ] && [ "$(state_phase)" = unclaimed ] && break
    sleep 0.25
  done
  for _ in $(seq 1 60); do
    reset_info=$(lan_info 127.0.0.1)
    echo "$reset_info" | grep -q '"state": *"unclaimed"' && break
    sleep 1
  done
  record "$1" "$(printf '{"generations": [%s, %s], "seconds": %s, "info": %s, "saved": %s}' \
    "$reset_from" "$(state_generation)" "$(awk -v t0="$reset_start" '{print $1 - t0}' /proc/uptime)" \
    "$reset_info" "$(json_string "$(nmcli -t -f NAME,TYPE connection show)")")"
}

# attempt NAME SSID PASSPHRASE: one onboarding the user submits, until the device is online.
attempt() {
  say "attempt $1"
  step "$1" onboard --until-online --qr "$QR" --ssid "$2" --passphrase "$3" --service-url "$SERVICE_URL"
}

# home: the router's one network on 2.4 GHz in WPA2/WPA3 transition mode (what home routers
# ship now: PSK and SAE, management frame protection optional), DHCP and DNS from the router.
environment_home() {
  say "environment home"
  factory_reset reset_home
  router_wifi wpa=2 "wpa_key_mgmt=WPA-PSK SAE" rsn_pairwise=CCMP ieee80211w=1 \
    "wpa_passphrase=$PASSPHRASE" "sae_password=$PASSPHRASE"
  attempt env_home "$SSID" "$PASSPHRASE"
}

# office: one network from two access points (channels 1 and 11, one bridge: one LAN), clients
# isolated from each other, management frame protection, short DHCP leases.
environment_office() {
  say "environment office"
  factory_reset reset_office
  stop_pidfile "$WORK/hostapd.pid"
  stop_pidfile "$WORK/dnsmasq.pid"
  ip -n router addr del "$ROUTER_IP/24" dev wlan0
  ip -n router link add br0 type bridge
  ip -n router addr add "$ROUTER_IP/24" dev br0
  ip -n router link set br0 up
  for office_ap in "a wlan0 1" "b wlan3 11"; do
    # shellcheck disable=SC2086 # name, interface and channel
    set -- $office_ap
    ap "office-$1" router "$2" bridge=br0 "ssid=$OFFICE_SSID" hw_mode=g "channel=$3" ap_isolate=1 \
      wpa=2 wpa_key_mgmt=WPA-PSK rsn_pairwise=CCMP ieee80211w=1 "wpa_passphrase=$OFFICE_PASSPHRASE"
  done
  LAN_IF=br0
  router_lan --dhcp-range=192.168.50.100,192.168.50.150,255.255.255.0,2m "$DNS"
  attempt env_office "$OFFICE_SSID" "$OFFICE_PASSPHRASE"
}

# difficult: the household's network is 5 GHz only (channel 36; the emulated radio is
# dual-band, as on a Pi 3B+, 4 or 5); next to it, on 2.4 GHz, a café's open guest network with a
# captive portal (its own router, namespace "cafe": every name is the portal, every request a
# redirect to its sign-in page). The user picks the café's first, then the household's.
environment_difficult() {
  say "environment difficult"
  factory_reset reset_difficult
  stop_pidfile "$WORK/hostapd-office-a.pid"
  stop_pidfile "$WORK/hostapd-office-b.pid"
  ip -n router link del br0
  ip -n router addr add "$ROUTER_IP/24" dev wlan0
  LAN_IF=wlan0
  # The country's rules (wireless-regdb): the world domain lets no access point start at 5 GHz.
  iw reg set US
  sleep 2
  ap home5 router wlan0 "ssid=$HOME5_SSID" hw_mode=a channel=36 country_code=US ieee80211d=1 \
    wpa=2 wpa_key_mgmt=WPA-PSK rsn_pairwise=CCMP "wpa_passphrase=$PASSPHRASE"
  router_lan "$DHCP" "$DNS"
  ip netns add cafe
  ip netns exec router iw phy "$AP2_PHY" set netns name cafe
  ip -n cafe link set lo up
  ip -n cafe addr add "$CAFE_IP/24" dev wlan3
  ap cafe cafe wlan3 "ssid=$CAFE_SSID" hw_mode=g channel=1
  ip netns exec cafe dnsmasq --conf-file=/dev/null --user=root --group=root --interface=wlan3 \
    --bind-interfaces --no-resolv --no-hosts --pid-file="$WORK/cafe-dnsmasq.pid" \
    --dhcp-leasefile="$WORK/cafe-dnsmasq.leases" --log-facility="$WORK/logs/cafe-dnsmasq.log" \
    --dhcp-range=10.9.0.100,10.9.0.150,255.255.255.0,1h "--address=/#/$CAFE_IP"
  portal_up cafe "$CAFE_IP" "$RELAY_PORT"
  record difficult_radio "$(printf '{"regdom": %s, "home5": %s}' \
    "$(json_string "$(iw reg get 2>&1 | head -3)")" \
    "$(json_string "$(tail -3 "$WORK/logs/hostapd-home5.log")")")"
  attempt env_difficult_cafe "$CAFE_SSID" ""
  attempt env_difficult_home5 "$HOME5_SSID" "$PASSPHRASE"
}

environments() {
  SERVICE_URL="http://relay.home.arpa:$RELAY_PORT"
  environment_home
  environment_office
  environment_difficult
}

if [ "$SCENARIOS" = wps ]; then
  internet_up
  SERVICE_URL=$CLOSED_URL
  wps_scenarios
  say "done"
  exit 0
fi
if [ "$SCENARIOS" = environments ]; then
  environments
  say "done"
  exit 0
fi
if [ "$SCENARIOS" = ble ]; then
  internet_up
  SERVICE_URL=$CLOSED_URL
  ble_on
  improv improv_wrong_passphrase "not the passphrase"
  ble_onboarding
  SERVICE_URL="http://relay.home.arpa:$RELAY_PORT"
  scenario right_passphrase "$SSID" "$PASSPHRASE" --owner-out "$WORK/owner.json"
  record right_passphrase_online "$(driver router online)"
  improv improv_after_claim "$PASSPHRASE" --scan-timeout 20
  password_changed
  bluetoothd_health
  say "done"
  exit 0
fi
scenario ssid_absent "iob-nowhere" "$PASSPHRASE"
scenario wrong_passphrase "$SSID" "not the passphrase"
router_lan "$DHCP"
scenario dns_broken "$SSID" "$PASSPHRASE"
router_lan "$DHCP" "$DNS"
SERVICE_URL=$CLOSED_URL
scenario no_internet "$SSID" "$PASSPHRASE"
internet_up
scenario relay_unreachable "$SSID" "$PASSPHRASE"
# A captive portal (guest Wi-Fi): dnsmasq answers every name with the router, and its web server
# answers every request with a redirect to its sign-in page; the service is a public name over
# https: the portal answers port 443 with its own certificate. (A portal in front of an http
# service, on an open network, is the difficult environment's café, at the end.)
router_lan "$DHCP" "--address=/#/$ROUTER_IP"
portal_up
SERVICE_URL="https://relay.example.net"
scenario captive_portal_https "$SSID" "$PASSPHRASE"
stop_pidfile "$WORK/portal.pid"
router_lan "$DHCP" "$DNS"
SERVICE_URL=$CLOSED_URL
# Joins on other kinds of network: each ends at the closed service port, so the device stays
# unclaimed for the next one; RELAY_UNREACHABLE proves Wi-Fi, DHCP and DNS worked.
wpa2 ignore_broadcast_ssid=1
scenario hidden_ssid "$SSID" "$PASSPHRASE" --hidden
router_wifi wpa=2 wpa_key_mgmt=SAE rsn_pairwise=CCMP ieee80211w=2 "sae_password=$PASSPHRASE"
scenario wpa3_sae "$SSID" "$PASSPHRASE"
wps_scenarios
router_lan "$DNS"
scenario dhcp_off "$SSID" "$PASSPHRASE"
router_lan "$DHCP" "$DNS"
ble_on
improv improv_wrong_passphrase "not the passphrase"
ble_onboarding
SERVICE_URL="http://relay.home.arpa:$RELAY_PORT"
stop_pidfile "$WORK/internet.pid"
setup_hotspot
# The right passphrase, sent while the setup hotspot holds the radio (as over BLE): the commit
# takes the radio, the claim closes the window, and the hotspot must stay down.
scenario right_passphrase "$SSID" "$PASSPHRASE" --owner-out "$WORK/owner.json"
record right_passphrase_online "$(driver router online)"
improv improv_after_claim "$PASSPHRASE" --scan-timeout 20
record hotspot_after_claim "$(printf '{"address": %s, "active": %s, "phone": %s, "info": %s}' \
  "$(json_string "$(ip -4 -o addr show wlan1)")" \
  "$(json_string "$(nmcli -t -f NAME,DEVICE connection show --active)")" \
  "$(json_string "$(ip netns exec phone wpa_cli -p "$WORK/phone-ctrl" -i wlan2 status 2>&1 | grep wpa_state)")" \
  "$(lan_info 127.0.0.1)")"
# What NetworkManager itself says of a network with no way beyond the router (no_internet).
record connectivity "$(printf '{"check": "%s", "config": %s}' \
  "$(nmcli networking connectivity check 2>&1)" \
  "$(json_string "$(NetworkManager --print-config 2>&1 | sed -n '/^\[connectivity\]/,/^\[/p')")")"
password_changed
bluetoothd_health
# The environments with the agent as in the LAN scenarios (no hotspot, loopback).
sed -i 's/^hotspot = true/hotspot = false/; s/^listen = .*/listen = ["127.0.0.1"]/' \
  /etc/iot-onboard/device.toml
systemctl restart iot-onboard-device.service
for _ in $(seq 1 60); do [ "$(lan_info 127.0.0.1)" != null ] && break; sleep 1; done
environments
say "done"
