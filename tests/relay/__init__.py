"""Tests of the account service (cloud_relay), on SQLite and on PostgreSQL."""
