"""Shared by every test tree; imports nothing from Home Assistant."""

pytest_plugins = [
    "tests.plugins.clock",
    "tests.plugins.lossy_proxy",
    "tests.plugins.mosquitto",
    "tests.plugins.scripted_service",
    "tests.plugins.strict",
]
