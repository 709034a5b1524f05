"""The broker adapter contract: what every adapter must do, checked through MQTT itself.

Runs once per adapter in ``conftest.ADAPTERS`` (today Mosquitto). Nothing here looks inside the
broker: each property is shown by what real MQTT clients with the credentials can and cannot do.
"""

from __future__ import annotations

import asyncio
import secrets
import socket

import aiomqtt
import pytest

from cloud_relay.broker import (
    BrokerAdapter,
    BrokerState,
    BrokerUnavailableError,
    DeviceCredential,
    HubCredential,
    HubState,
    InvalidCredentialError,
    InvalidIdentifierError,
    ReconcileReport,
)

from .harness import (
    CREDENTIALS_REFUSED,
    GRANTED_QOS1,
    NOT_AUTHORIZED,
    BrokerHarness,
    assert_connected,
    assert_disconnected,
    connect_code,
    next_message,
    record_puback_codes,
    subscribe_code,
)


def device(device_id: str) -> DeviceCredential:
    return DeviceCredential(device_id, secrets.token_urlsafe(16))


def hub(household_id: str) -> HubCredential:
    return HubCredential(household_id, secrets.token_urlsafe(16))


async def test_device_touches_only_its_own_subtree(
    harness: BrokerHarness, adapter: BrokerAdapter
) -> None:
    dev_a, dev_b = device("DEVA"), device("DEVB")
    await adapter.put_device(dev_a)
    await adapter.put_device(dev_b)

    async with (
        harness.observer() as observer,
        harness.mqtt(dev_a.username, dev_a.password) as a,
        harness.mqtt(dev_b.username, dev_b.password) as b,
    ):
        await observer.subscribe("iob/#", qos=1)
        a_pubacks = record_puback_codes(a)

        assert await subscribe_code(a, "iob/DEVA/#") == GRANTED_QOS1
        assert await subscribe_code(a, "iob/DEVA/cmd/+") == GRANTED_QOS1
        assert await subscribe_code(a, "iob/DEVB/#") == NOT_AUTHORIZED
        assert await subscribe_code(a, "iob/+/state/#") == NOT_AUTHORIZED
        assert await subscribe_code(a, "#") == NOT_AUTHORIZED

        await a.publish("iob/DEVA/state/t", b"21.5", qos=1)
        assert await next_message(observer) == ("iob/DEVA/state/t", b"21.5")
        assert await next_message(a) == ("iob/DEVA/state/t", b"21.5")

        # Forged: refused in the PUBACK and never delivered (the observer's next message is the
        # device's following one).
        await a.publish("iob/DEVB/state/t", b"forged", qos=1)
        await a.publish("elsewhere/x", b"forged", qos=1)
        await a.publish("iob/DEVA/state/t", b"after", qos=1)
        assert await next_message(observer) == ("iob/DEVA/state/t", b"after")
        assert a_pubacks == [0, NOT_AUTHORIZED, NOT_AUTHORIZED, 0]
        assert await next_message(a) == ("iob/DEVA/state/t", b"after")

        # B's own traffic reaches the observer but not A.
        await b.publish("iob/DEVB/state/t", b"b", qos=1)
        assert await next_message(observer) == ("iob/DEVB/state/t", b"b")
        await a.publish("iob/DEVA/state/t", b"marker", qos=1)
        assert await next_message(a) == ("iob/DEVA/state/t", b"marker")


async def test_device_will_is_its_retained_availability(
    harness: BrokerHarness, adapter: BrokerAdapter
) -> None:
    dev_a, dev_b = device("DEVA"), device("DEVB")
    await adapter.put_device(dev_a)
    await adapter.put_device(dev_b)
    own_will = aiomqtt.Will("iob/DEVA/availability", b"offline", qos=1, retain=True)
    forged_will = aiomqtt.Will("iob/DEVA/availability", b"forged", qos=1, retain=True)

    async with harness.observer() as observer:
        await observer.subscribe("iob/+/availability", qos=1)
        async with (
            # B's will names A's topic: the broker must never send it.
            harness.mqtt(dev_b.username, dev_b.password, will=forged_will) as b,
            harness.mqtt(dev_a.username, dev_a.password, will=own_will) as a,
        ):
            await a.publish("iob/DEVA/availability", b"online", qos=1, retain=True)
            assert await next_message(observer) == ("iob/DEVA/availability", b"online")
            _drop_connection(b)  # an unclean end: the broker would send B's will now
            await assert_disconnected(b)
            _drop_connection(a)
            assert await next_message(observer) == ("iob/DEVA/availability", b"offline")
            await assert_disconnected(a)

    async with harness.observer() as late:  # retained for whoever subscribes later
        await late.subscribe("iob/DEVA/availability", qos=1)
        assert await next_message(late) == ("iob/DEVA/availability", b"offline")


def _drop_connection(client: aiomqtt.Client) -> None:
    """End the TCP connection without DISCONNECT, as a power cut would."""
    sock = client._client.socket()
    assert isinstance(sock, socket.socket)
    sock.shutdown(socket.SHUT_RDWR)


async def test_hub_control_and_viewer_shares(
    harness: BrokerHarness, adapter: BrokerAdapter
) -> None:
    dev_a, dev_b = device("DEVA"), device("DEVB")
    owner, guest = hub("home"), hub("guest")
    for dev in (dev_a, dev_b):
        await adapter.put_device(dev)
    await adapter.put_hub(owner, {"DEVA": True, "DEVB": True})
    await adapter.put_hub(guest, {"DEVA": False})  # view-only share of A

    async with (
        harness.mqtt(dev_a.username, dev_a.password) as a,
        harness.mqtt(owner.username, owner.password) as owner_hub,
        harness.mqtt(guest.username, guest.password) as guest_hub,
    ):
        await a.subscribe("iob/DEVA/cmd/#", qos=1)
        owner_pubacks = record_puback_codes(owner_hub)
        guest_pubacks = record_puback_codes(guest_hub)

        assert await subscribe_code(owner_hub, "iob/DEVA/#") == GRANTED_QOS1
        assert await subscribe_code(guest_hub, "iob/DEVA/#") == GRANTED_QOS1
        assert await subscribe_code(guest_hub, "iob/DEVB/#") == NOT_AUTHORIZED
        assert await subscribe_code(owner_hub, "iob/#") == NOT_AUTHORIZED

        # Both hubs receive the device's state.
        await a.publish("iob/DEVA/state/on", b"1", qos=1)
        assert await next_message(owner_hub) == ("iob/DEVA/state/on", b"1")
        assert await next_message(guest_hub) == ("iob/DEVA/state/on", b"1")

        # Control: the owner's command reaches the device; the viewer's is refused.
        await owner_hub.publish("iob/DEVA/cmd/on", b"0", qos=1)
        assert await next_message(a) == ("iob/DEVA/cmd/on", b"0")
        assert await next_message(owner_hub) == ("iob/DEVA/cmd/on", b"0")  # own subtree echo
        await guest_hub.publish("iob/DEVA/cmd/on", b"guest", qos=1)
        # Hubs publish commands only, never a device's state.
        await owner_hub.publish("iob/DEVA/state/on", b"forged", qos=1)
        await owner_hub.publish("iob/DEVA/cmd/on", b"marker", qos=1)
        assert await next_message(a) == ("iob/DEVA/cmd/on", b"marker")
        assert owner_pubacks == [0, NOT_AUTHORIZED, 0]
        assert guest_pubacks == [NOT_AUTHORIZED]


async def test_grant_device_adds_one_device_to_a_live_hub(
    harness: BrokerHarness, adapter: BrokerAdapter
) -> None:
    """A claim's part: the household's hub gains its new device in place (subscribe, receive,
    command), keeps what it had, stays connected; a repeat changes nothing; a hub the broker
    does not have is reported (False), not created."""
    dev_a, dev_b = device("DEVA"), device("DEVB")
    household = hub("home")
    for dev in (dev_a, dev_b):
        await adapter.put_device(dev)
    await adapter.put_hub(household, {"DEVA": False})
    if not await adapter.grant_device(household, "DEVB", control=True):
        pytest.skip(f"{type(adapter).__name__} grants nothing in place (it puts the hub)")
    assert await adapter.grant_device(household, "DEVB", control=True) is True  # idempotent
    assert await adapter.grant_device(hub("nowhere"), "DEVB", control=True) is False

    async with (
        harness.mqtt(dev_a.username, dev_a.password) as a,
        harness.mqtt(dev_b.username, dev_b.password) as b,
        harness.mqtt(household.username, household.password) as hub_client,
    ):
        await b.subscribe("iob/DEVB/cmd/#", qos=1)
        pubacks = record_puback_codes(hub_client)
        assert await subscribe_code(hub_client, "iob/DEVA/#") == GRANTED_QOS1
        assert await subscribe_code(hub_client, "iob/DEVB/#") == GRANTED_QOS1
        await b.publish("iob/DEVB/state/x", b"1", qos=1)
        assert await next_message(hub_client) == ("iob/DEVB/state/x", b"1")
        await hub_client.publish("iob/DEVB/cmd/x", b"go", qos=1)
        assert await next_message(b) == ("iob/DEVB/cmd/x", b"go")
        assert await next_message(hub_client) == ("iob/DEVB/cmd/x", b"go")  # own subtree echo
        # Granted again while connected: no disconnect, and A stays view-only.
        await adapter.grant_device(household, "DEVB", control=True)
        await a.publish("iob/DEVA/state/x", b"2", qos=1)
        assert await next_message(hub_client) == ("iob/DEVA/state/x", b"2")
        await hub_client.publish("iob/DEVA/cmd/x", b"no", qos=1)
        assert pubacks == [0, NOT_AUTHORIZED]


async def test_put_hub_without_a_device_revokes_it_at_once(
    harness: BrokerHarness, adapter: BrokerAdapter
) -> None:
    dev_a, dev_b = device("DEVA"), device("DEVB")
    household = hub("home")
    for dev in (dev_a, dev_b):
        await adapter.put_device(dev)
    await adapter.put_hub(household, {"DEVA": True, "DEVB": True})

    async with (
        harness.mqtt(dev_a.username, dev_a.password) as a,
        harness.mqtt(dev_b.username, dev_b.password) as b,
        harness.mqtt(household.username, household.password) as hub_client,
    ):
        pubacks = record_puback_codes(hub_client)
        await hub_client.subscribe("iob/DEVA/#", qos=1)
        await hub_client.subscribe("iob/DEVB/#", qos=1)
        await b.publish("iob/DEVB/state/x", b"before", qos=1)
        assert await next_message(hub_client) == ("iob/DEVB/state/x", b"before")

        await adapter.put_hub(household, {"DEVA": False})  # B's share ended, A view-only

        # The hub stays connected, its old subscription to B delivers nothing more, a new one
        # is refused, and it can no longer command A.
        await b.publish("iob/DEVB/state/x", b"after", qos=1)
        await a.publish("iob/DEVA/state/x", b"marker", qos=1)
        assert await next_message(hub_client) == ("iob/DEVA/state/x", b"marker")
        assert await subscribe_code(hub_client, "iob/DEVB/state/#") == NOT_AUTHORIZED
        await hub_client.publish("iob/DEVA/cmd/x", b"1", qos=1)
        assert pubacks == [NOT_AUTHORIZED]


async def test_remove_device_kicks_the_session_and_locks_it_out(
    harness: BrokerHarness, adapter: BrokerAdapter
) -> None:
    dev = device("DEVA")
    await adapter.put_device(dev)
    async with harness.mqtt(dev.username, dev.password) as session:
        await assert_connected(session, "iob/DEVA/state/x")
        await adapter.remove_device("DEVA")
        await assert_disconnected(session)
    assert await connect_code(harness, dev.username, dev.password) in CREDENTIALS_REFUSED


async def test_remove_hub_kicks_the_session_and_locks_it_out(
    harness: BrokerHarness, adapter: BrokerAdapter
) -> None:
    await adapter.put_device(device("DEVA"))
    household = hub("home")
    await adapter.put_hub(household, {"DEVA": True})
    async with harness.mqtt(household.username, household.password) as session:
        await assert_connected(session, "iob/DEVA/cmd/x")
        await adapter.remove_hub("home")
        await assert_disconnected(session)
    assert await connect_code(harness, household.username, household.password) in (
        CREDENTIALS_REFUSED
    )


async def test_new_password_replaces_the_old_one_and_its_session(
    harness: BrokerHarness, adapter: BrokerAdapter
) -> None:
    old = device("DEVA")
    new = DeviceCredential("DEVA", old.password + "-rotated")
    await adapter.put_device(old)
    async with harness.mqtt(old.username, old.password) as session:
        await adapter.put_device(new)
        await assert_disconnected(session)
    assert await connect_code(harness, old.username, old.password) in CREDENTIALS_REFUSED
    assert await connect_code(harness, new.username, new.password) == 0


async def test_every_operation_is_idempotent(
    harness: BrokerHarness, adapter: BrokerAdapter
) -> None:
    dev = device("DEVA")
    household = hub("home")
    await adapter.put_device(dev)
    await adapter.put_hub(household, {"DEVA": True})
    async with (
        harness.mqtt(dev.username, dev.password) as dev_session,
        harness.mqtt(household.username, household.password) as hub_session,
    ):
        # Repeating a put changes nothing, so it disconnects nobody.
        await adapter.put_device(dev)
        await adapter.put_hub(household, {"DEVA": True})
        await assert_connected(dev_session, "iob/DEVA/state/x")
        await assert_connected(hub_session, "iob/DEVA/cmd/x")

    for _ in range(2):
        await adapter.remove_hub("home")
        await adapter.remove_device("DEVA")
    await adapter.remove_device("NEVERSEEN")
    await adapter.remove_hub("never-seen")
    assert await connect_code(harness, dev.username, dev.password) in CREDENTIALS_REFUSED
    assert await adapter.reconcile(BrokerState()) == ReconcileReport()


async def test_reconcile_creates_what_the_database_has_and_the_broker_lost(
    harness: BrokerHarness, adapter: BrokerAdapter
) -> None:
    dev = device("DEVA")
    household = hub("home")
    desired = BrokerState(devices={"DEVA": dev}, hubs={"home": HubState(household, {"DEVA": True})})
    report = await adapter.reconcile(desired)  # the crash came before the broker calls
    assert report == ReconcileReport(created=("DEVA", "hub-home"))

    async with (
        harness.mqtt(dev.username, dev.password) as dev_session,
        harness.mqtt(household.username, household.password) as hub_session,
    ):
        await hub_session.subscribe("iob/DEVA/#", qos=1)
        await dev_session.publish("iob/DEVA/state/x", b"1", qos=1)
        assert await next_message(hub_session) == ("iob/DEVA/state/x", b"1")
    assert await adapter.reconcile(desired) == ReconcileReport()


async def test_reconcile_removes_and_kicks_what_the_database_does_not_have(
    harness: BrokerHarness, adapter: BrokerAdapter
) -> None:
    kept, released = device("DEVA"), device("DEVB")
    household = hub("home")
    await adapter.put_device(kept)
    await adapter.put_device(released)
    await adapter.put_hub(household, {"DEVA": True, "DEVB": True})
    desired = BrokerState(
        devices={"DEVA": kept}, hubs={"home": HubState(household, {"DEVA": True})}
    )

    async with (
        harness.mqtt(kept.username, kept.password) as kept_session,
        harness.mqtt(released.username, released.password) as released_session,
    ):
        # The database released B, then the process died before the broker was told.
        report = await adapter.reconcile(desired)
        assert report == ReconcileReport(updated=("hub-home",), removed=("DEVB",))
        await assert_disconnected(released_session)
        await assert_connected(kept_session, "iob/DEVA/state/x")
    assert await connect_code(harness, released.username, released.password) in (
        CREDENTIALS_REFUSED
    )

    # A hub whose household is gone goes too.
    report = await adapter.reconcile(BrokerState(devices={"DEVA": kept}))
    assert report == ReconcileReport(removed=("hub-home",))
    assert await connect_code(harness, household.username, household.password) in (
        CREDENTIALS_REFUSED
    )


async def test_reconcile_fixes_drifted_acls_and_passwords(
    harness: BrokerHarness, adapter: BrokerAdapter
) -> None:
    dev_a, dev_b = device("DEVA"), device("DEVB")
    household = hub("home")
    await adapter.put_device(dev_a)
    await adapter.put_device(dev_b)
    # The broker still has the old share (control of both); the database took it back.
    await adapter.put_hub(household, {"DEVA": True, "DEVB": True})
    rotated_b = DeviceCredential("DEVB", dev_b.password + "-rotated")
    desired = BrokerState(
        devices={"DEVA": dev_a, "DEVB": rotated_b},
        hubs={"home": HubState(household, {"DEVA": False})},
    )

    async with harness.mqtt(household.username, household.password) as hub_session:
        report = await adapter.reconcile(desired)
        assert report == ReconcileReport(updated=("DEVB", "hub-home"))
        pubacks = record_puback_codes(hub_session)
        assert await subscribe_code(hub_session, "iob/DEVB/#") == NOT_AUTHORIZED
        await hub_session.publish("iob/DEVA/cmd/x", b"1", qos=1)
        assert pubacks == [NOT_AUTHORIZED]
        assert await subscribe_code(hub_session, "iob/DEVA/#") == GRANTED_QOS1
    assert await connect_code(harness, rotated_b.username, rotated_b.password) == 0
    assert await connect_code(harness, dev_b.username, dev_b.password) in CREDENTIALS_REFUSED
    assert await adapter.reconcile(desired) == ReconcileReport()


async def test_reconcile_never_touches_the_admin_or_foreign_clients(
    harness: BrokerHarness, adapter: BrokerAdapter
) -> None:
    await harness.add_foreign_client("someone-else", "their-password")
    await harness.add_foreign_client("hub-lookalike", "their-password")
    admin_before = await harness.admin_record()
    await adapter.put_device(device("DEVA"))

    report = await adapter.reconcile(BrokerState())

    assert report == ReconcileReport(removed=("DEVA",))
    assert await harness.admin_record() == admin_before
    assert await connect_code(harness, "someone-else", "their-password") == 0
    assert await connect_code(harness, "hub-lookalike", "their-password") == 0
    await adapter.put_device(device("DEVB"))  # the adapter's own admin session still works


async def test_reconcile_of_an_in_sync_broker_disconnects_no_one(
    harness: BrokerHarness, adapter: BrokerAdapter
) -> None:
    dev = device("DEVA")
    household = hub("home")
    await adapter.put_device(dev)
    await adapter.put_hub(household, {"DEVA": True})
    desired = BrokerState(devices={"DEVA": dev}, hubs={"home": HubState(household, {"DEVA": True})})
    async with (
        harness.mqtt(dev.username, dev.password) as dev_session,
        harness.mqtt(household.username, household.password) as hub_session,
    ):
        assert await adapter.reconcile(desired) == ReconcileReport()
        await assert_connected(dev_session, "iob/DEVA/state/x")
        await assert_connected(hub_session, "iob/DEVA/cmd/x")


BAD_IDS = ["", "a/b", "a+", "a#", "#", "+", "a\x00b", "with space", "new\nline", "x" * 129]


@pytest.mark.parametrize("bad", BAD_IDS)
async def test_unusable_ids_are_refused_before_the_broker_is_touched(
    harness: BrokerHarness, bad: str
) -> None:
    # Nothing listens where this adapter points: reaching for the broker would raise
    # BrokerUnavailableError, so InvalidIdentifierError shows it never tried.
    async with asyncio.timeout(1):
        adapter = harness.unreachable_adapter(timeout=5.0)
        with pytest.raises(InvalidIdentifierError):
            await adapter.put_device(DeviceCredential(bad, "pw"))
        with pytest.raises(InvalidIdentifierError):
            await adapter.remove_device(bad)
        with pytest.raises(InvalidIdentifierError):
            await adapter.put_hub(HubCredential(bad, "pw"), {})
        with pytest.raises(InvalidIdentifierError):
            await adapter.put_hub(HubCredential("home", "pw"), {"DEVA": True, bad: False})
        with pytest.raises(InvalidIdentifierError):
            await adapter.remove_hub(bad)
        with pytest.raises(InvalidIdentifierError):
            await adapter.reconcile(BrokerState(devices={bad: DeviceCredential(bad, "pw")}))
        await adapter.aclose()


async def test_reserved_names_and_empty_passwords_are_refused(harness: BrokerHarness) -> None:
    adapter = harness.unreachable_adapter(timeout=5.0)
    async with asyncio.timeout(1):
        with pytest.raises(InvalidIdentifierError, match="hub-"):
            await adapter.put_device(DeviceCredential("hub-home", "pw"))
        with pytest.raises(InvalidCredentialError):
            await adapter.put_device(DeviceCredential("DEVA", ""))
        with pytest.raises(InvalidCredentialError):
            await adapter.put_hub(HubCredential("home", ""), {})
        with pytest.raises(InvalidIdentifierError, match="differs"):
            await adapter.reconcile(BrokerState(devices={"DEVA": DeviceCredential("DEVB", "pw")}))
    await adapter.aclose()


async def test_a_call_after_a_broker_restart_succeeds(
    harness: BrokerHarness, adapter: BrokerAdapter
) -> None:
    dev_a, dev_b = device("DEVA"), device("DEVB")
    await adapter.put_device(dev_a)

    await harness.restart()

    await adapter.put_device(dev_b)  # same adapter, new connection underneath
    assert await connect_code(harness, dev_a.username, dev_a.password) == 0
    assert await connect_code(harness, dev_b.username, dev_b.password) == 0
    assert await adapter.reconcile(BrokerState(devices={"DEVA": dev_a, "DEVB": dev_b})) == (
        ReconcileReport()
    )


async def test_calls_from_many_tasks_at_once(
    harness: BrokerHarness, adapter: BrokerAdapter
) -> None:
    devices = [device(f"DEV{index:02d}") for index in range(20)]
    households = [hub(f"home{index}") for index in range(5)]
    async with asyncio.TaskGroup() as group:
        for dev in devices:
            group.create_task(adapter.put_device(dev))
            group.create_task(adapter.put_device(dev))  # the same client twice at once
        for index, household in enumerate(households):
            access = {dev.device_id: index % 2 == 0 for dev in devices[index::5]}
            group.create_task(adapter.put_hub(household, access))
    desired = BrokerState(
        devices={dev.device_id: dev for dev in devices},
        hubs={
            h.household_id: HubState(h, {d.device_id: i % 2 == 0 for d in devices[i::5]})
            for i, h in enumerate(households)
        },
    )
    assert await adapter.reconcile(desired) == ReconcileReport()
    assert await connect_code(harness, devices[7].username, devices[7].password) == 0

    async with asyncio.TaskGroup() as group:
        for dev in devices:
            group.create_task(adapter.remove_device(dev.device_id))
        for household in households:
            group.create_task(adapter.remove_hub(household.household_id))
    assert await adapter.reconcile(BrokerState()) == ReconcileReport()


async def test_an_unreachable_broker_is_a_clear_error(harness: BrokerHarness) -> None:
    adapter = harness.unreachable_adapter(timeout=0.5)
    with pytest.raises(BrokerUnavailableError, match=r"127\.0\.0\.1:\d+"):
        await adapter.put_device(device("DEVA"))
    with pytest.raises(BrokerUnavailableError):
        await adapter.connect()
    await adapter.aclose()
