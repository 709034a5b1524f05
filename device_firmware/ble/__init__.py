"""BLE provisioning: the secure session's frames over GATT, and Improv Wi-Fi.

``wire`` is the contract with centrals (UUIDs, service data, state value); ``gatt`` and
``improv`` are the services as plain Python; ``loopback`` runs them in-process; ``bluez``
exports them to BlueZ over D-Bus and advertises (``advertisement``). docs/ble.md has the
details, including what a Raspberry Pi needs.
"""
