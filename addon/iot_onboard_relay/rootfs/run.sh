#!/usr/bin/env bash
# The add-on's entry point (the image's CMD; s6-overlay's /init runs it, init: false).
#
# Everything is done by the Python runner, cloud_relay/addon.py: it reads /data/options.json
# itself (no bashio), so this script also runs outside a container, which is how
# tests/addon/test_run_script.py runs it:
#   IOB_ADDON_DATA     the add-on's data directory (default /data)
#   IOB_ADDON_PYTHON   the interpreter with cloud_relay installed (default /opt/iob/bin/python)
set -euo pipefail

data="${IOB_ADDON_DATA:-/data}"
python="${IOB_ADDON_PYTHON:-/opt/iob/bin/python}"

if [ ! -d "$data" ] || [ ! -w "$data" ]; then
  echo "error: the add-on's data directory $data is missing or not writable; reinstall the add-on" >&2
  exit 1
fi
if [ ! -x "$python" ]; then
  echo "error: $python is missing: the image is incomplete; rebuild the add-on" >&2
  exit 1
fi

# Files the services create are private (the database holds password hashes, the key derives
# every MQTT password); the runner sets the modes explicitly as well.
umask 077
exec "$python" -m cloud_relay.addon --data "$data"
