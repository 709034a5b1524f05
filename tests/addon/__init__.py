import pytest

# The shared checks in standin.py report their values when they fail, as a test's asserts do.
pytest.register_assert_rewrite("tests.addon.standin")
