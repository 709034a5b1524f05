"""The IoT Onboard agent on the device: identity, provisioning, network, MQTT."""
