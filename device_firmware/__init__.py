"""The IoT Onboard agent on the device: identity, provisioning, network, MQTT."""

#: Reported in ``info``, the zeroconf TXT record and the manufacturing record.
__version__ = "0.1.0"
