"""A real Mosquitto broker with the dynamic-security plugin, as pytest fixtures.

Load it in a test tree with ``pytest_plugins = ["tests.plugins.mosquitto"]`` in its conftest (or
``pytest -p tests.plugins.mosquitto``). This module never imports ``homeassistant``.

Fixtures:

* ``mosquitto_broker`` -- a fresh broker for one test (≈ 0.1 s to start): a :class:`MosquittoBroker`
  with host, port and the dynsec admin credentials.
* ``mosquitto_process`` -- the :class:`MosquittoProcess` behind ``mosquitto_broker`` (same
  instance in one test), for tests that ``restart()`` or ``stop()`` the broker.
* ``mosquitto_session_process`` -- one broker shared by the whole session (session-scoped, for
  other session-scoped fixtures); ``mosquitto_broker_session`` hands its :class:`MosquittoBroker`
  to a test. Tests on the shared broker must use their own usernames, roles and topics, and must
  not restart it.
* ``iob_socket_allowed`` / ``iob_socket_allowed_session`` -- hooks, no-ops here, see below.

Sockets under Home Assistant's test plugin: pytest-homeassistant-custom-component (phcc) blocks
socket creation before every test (``pytest_socket.disable_socket``); a test that opens real
sockets must ask for phcc's ``socket_enabled``. The broker fixtures open sockets themselves (free
port, readiness probe) and so do the tests' MQTT clients, so every fixture here that hands out a
broker asks for ``iob_socket_allowed``, and the session-scoped process asks for
``iob_socket_allowed_session`` (a session-scoped fixture cannot ask for the function-scoped
``socket_enabled``). Outside Home Assistant both are no-ops. The Home Assistant test tree
overrides them in its conftest::

    @pytest.fixture
    def iob_socket_allowed(socket_enabled: None) -> None:
        '''Real sockets (loopback only: phcc still allows only 127.0.0.1).'''

    @pytest.fixture(scope="session")
    def iob_socket_allowed_session() -> None:
        '''Let the shared broker start; phcc disables sockets again before the next test.'''
        pytest_socket.enable_socket()

The broker itself (:class:`MosquittoProcess`, :class:`MosquittoBroker`, :func:`find_mosquitto`,
:func:`dynsec_command` and their errors) lives in :mod:`cloud_relay.broker.local`, which needs no
pytest and is what the demo stack uses too; it is re-exported here for the tests. Its docstring
explains the data directory when running as root (the broker drops to the ``mosquitto`` user).

PYTEST_DONT_REWRITE: this module has no assertions; the marker keeps pytest quiet when a test
module imports it before its ``pytest_plugins`` entry registers it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from cloud_relay.broker.local import (
    DYNSEC_CONTROL_TOPIC,
    DYNSEC_RESPONSE_TOPIC,
    DynsecError,
    MosquittoBroker,
    MosquittoError,
    MosquittoInstallation,
    MosquittoNotInstalledError,
    MosquittoProcess,
    dynsec_command,
    find_mosquitto,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "DYNSEC_CONTROL_TOPIC",
    "DYNSEC_RESPONSE_TOPIC",
    "DynsecError",
    "MosquittoBroker",
    "MosquittoError",
    "MosquittoInstallation",
    "MosquittoNotInstalledError",
    "MosquittoProcess",
    "create_scoped_client",
    "dynsec_command",
    "find_mosquitto",
]


async def create_scoped_client(
    broker: MosquittoBroker, *, username: str, password: str, rolename: str, subtree: str
) -> None:
    """A dynamic-security client whose role may publish, subscribe and receive ``subtree``."""
    acls = [
        {"acltype": acltype, "topic": subtree, "allow": True}
        for acltype in ("publishClientSend", "subscribePattern", "publishClientReceive")
    ]
    await dynsec_command(
        broker,
        [
            {"command": "createRole", "rolename": rolename, "acls": acls},
            {
                "command": "createClient",
                "username": username,
                "password": password,
                "roles": [{"rolename": rolename}],
            },
        ],
    )


# -- pytest fixtures ---------------------------------------------------------------------------


@pytest.fixture
def iob_socket_allowed() -> None:
    """Hook: make real sockets usable in this test. A no-op here.

    The Home Assistant test tree overrides it to request phcc's ``socket_enabled`` (phcc blocks
    socket creation in every test).
    """


@pytest.fixture(scope="session")
def iob_socket_allowed_session() -> None:
    """Hook: make sockets usable while the session broker starts. A no-op here.

    The Home Assistant test tree overrides it with a session-scoped fixture calling
    ``pytest_socket.enable_socket()``.
    """


def _start_or_fail(process: MosquittoProcess, hook: str) -> None:
    try:
        process.start()
    except MosquittoError as err:
        process.close()
        # Fail, never skip: CI must fail when a required service cannot start.
        pytest.fail(f"Mosquitto could not be started: {err}", pytrace=False)
    except BaseException as err:
        process.close()
        if type(err).__name__ == "SocketBlockedError":  # pytest-socket, used by phcc
            pytest.fail(
                f"Mosquitto could not be started: sockets are blocked in this test tree; "
                f"override the `{hook}` fixture (see tests/plugins/mosquitto.py).",
                pytrace=False,
            )
        raise


@pytest.fixture
def mosquitto_process(
    iob_socket_allowed: None,  # noqa: ARG001 - requested for its effect (sockets)
) -> Iterator[MosquittoProcess]:
    """A fresh broker for this test, as its supervisor (``restart()``, ``stop()``)."""
    process = MosquittoProcess()
    _start_or_fail(process, "iob_socket_allowed")
    try:
        yield process
    finally:
        process.close()


@pytest.fixture
def mosquitto_broker(mosquitto_process: MosquittoProcess) -> MosquittoBroker:
    """A fresh broker for this test: loopback host, port and dynsec admin credentials."""
    return mosquitto_process.broker


@pytest.fixture(scope="session")
def mosquitto_session_process(
    iob_socket_allowed_session: None,  # noqa: ARG001 - requested for its effect (sockets)
) -> Iterator[MosquittoProcess]:
    """One broker for the whole session (do not restart it: other tests share it)."""
    process = MosquittoProcess()
    _start_or_fail(process, "iob_socket_allowed_session")
    try:
        yield process
    finally:
        process.close()


@pytest.fixture
def mosquitto_broker_session(
    iob_socket_allowed: None,  # noqa: ARG001 - requested for its effect (sockets)
    mosquitto_session_process: MosquittoProcess,
) -> MosquittoBroker:
    """The session's shared broker; use test-specific usernames, roles and topics on it."""
    if not mosquitto_session_process.running:
        tail = mosquitto_session_process.log_tail()
        pytest.fail(f"the session's Mosquitto is no longer running.\n{tail}", pytrace=False)
    return mosquitto_session_process.broker
