"""Provisioning mode: session host, LAN server, zeroconf and the captive page."""
