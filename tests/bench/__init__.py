"""Smoke tests of the benchmark modules (bench/)."""
