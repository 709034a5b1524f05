"""Tests of the broker adapters, against a real Mosquitto."""
