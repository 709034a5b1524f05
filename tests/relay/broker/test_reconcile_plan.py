"""The pure diff behind put_* and reconcile: observations in, dynsec commands out (no broker)."""

from __future__ import annotations

import secrets
from dataclasses import replace
from typing import Any

import pytest

from cloud_relay.broker import (
    BrokerProtocolError,
    BrokerState,
    DeviceCredential,
    HubCredential,
    HubState,
    InvalidIdentifierError,
    ReconcileReport,
    validate_device_id,
    validate_household_id,
)
from cloud_relay.broker.reconcile import (
    Acl,
    Change,
    ObservedClient,
    ObservedRole,
    desired_principals,
    device_principal,
    hub_acls,
    hub_principal,
    is_managed_client,
    owner_of_role,
    parse_client,
    parse_role,
    password_verifier,
    plan_principal,
    plan_reconcile,
)

PASSWORD = secrets.token_urlsafe(8)
DEVICE = device_principal(DeviceCredential("DEVA", PASSWORD))
IN_SYNC_CLIENT = ObservedClient(
    "DEVA", frozenset({"iob-device-DEVA"}), clientid="DEVA", textdescription=DEVICE.verifier
)
IN_SYNC_ROLE = ObservedRole("iob-device-DEVA", DEVICE.acls)


def commands(plan_commands: tuple[dict[str, Any], ...]) -> list[str]:
    return [command["command"] for command in plan_commands]


@pytest.mark.parametrize("good", ["DEVA", "0123456789ABCDEF", "é-ü", "a.b_c-d", "x" * 128])
def test_usable_ids(good: str) -> None:
    assert validate_device_id(good) == good
    assert validate_household_id(good) == good


@pytest.mark.parametrize(
    "bad", ["", "a/b", "+", "#", "a\x00", "a b", "tab\t", "\x7f", "\ud800", "x" * 129, 5, None]
)
def test_unusable_ids(bad: object) -> None:
    with pytest.raises(InvalidIdentifierError):
        validate_device_id(bad)
    with pytest.raises(InvalidIdentifierError):
        validate_household_id(bad)


def test_hub_acls_list_each_device_and_deny_the_rest() -> None:
    assert hub_acls({"A": True, "B": False}) == {
        Acl("subscribePattern", "iob/A/#"),
        Acl("publishClientReceive", "iob/A/#"),
        Acl("publishClientSend", "iob/A/cmd/#"),
        Acl("subscribePattern", "iob/B/#"),
        Acl("publishClientReceive", "iob/B/#"),
        Acl("publishClientReceive", "iob/#", allow=False, priority=-1),
    }
    assert hub_acls({}) == {Acl("publishClientReceive", "iob/#", allow=False, priority=-1)}


def test_access_values_must_be_booleans() -> None:
    with pytest.raises(InvalidIdentifierError, match="True"):
        hub_principal(HubCredential("home", "pw"), {"DEVA": "yes"})  # type: ignore[dict-item]


def test_a_missing_client_is_created_role_first() -> None:
    plan = plan_principal(DEVICE, None, None)
    assert commands(plan.commands) == ["createRole", "createClient"]
    assert plan.change is Change.CREATED
    assert plan.commands[1]["roles"] == [{"rolename": "iob-device-DEVA"}]
    assert plan.commands[1]["password"] == PASSWORD
    assert plan.commands[1]["clientid"] == "DEVA"
    assert plan.commands[1]["textdescription"] == password_verifier("DEVA", PASSWORD)
    assert PASSWORD not in plan.commands[1]["textdescription"]


def test_a_client_in_sync_needs_nothing() -> None:
    plan = plan_principal(DEVICE, IN_SYNC_CLIENT, IN_SYNC_ROLE)
    assert plan.commands == ()
    assert plan.change is Change.NONE


def test_drifted_acls_are_replaced_without_touching_the_client() -> None:
    drifted = ObservedRole("iob-device-DEVA", frozenset({Acl("subscribePattern", "#")}))
    plan = plan_principal(DEVICE, IN_SYNC_CLIENT, drifted)
    assert commands(plan.commands) == ["modifyRole"]
    assert plan.change is Change.UPDATED


def test_a_missing_role_is_created_for_an_existing_client() -> None:
    plan = plan_principal(DEVICE, IN_SYNC_CLIENT, None)
    assert commands(plan.commands) == ["createRole"]
    assert plan.change is Change.UPDATED


def test_a_wrong_password_is_set_with_its_verifier() -> None:
    stale = replace(IN_SYNC_CLIENT, textdescription=password_verifier("DEVA", "old"))
    plan = plan_principal(DEVICE, stale, IN_SYNC_ROLE)
    (modify,) = plan.commands
    assert modify["command"] == "modifyClient"
    assert modify["password"] == PASSWORD
    assert modify["textdescription"] == DEVICE.verifier
    assert modify["clientid"] == "DEVA"


@pytest.mark.parametrize("clientid", [None, "DEVB", "DEVA-x"])
def test_a_missing_or_wrong_client_id_binding_is_fixed(clientid: str | None) -> None:
    plan = plan_principal(DEVICE, replace(IN_SYNC_CLIENT, clientid=clientid), IN_SYNC_ROLE)
    (modify,) = plan.commands
    assert modify["command"] == "modifyClient"
    assert modify["clientid"] == "DEVA"
    assert "password" not in modify
    assert plan.change is Change.UPDATED


def test_a_client_made_before_the_binding_gets_binding_and_verifier() -> None:
    """An existing deployment's client: no clientid, no verifier, right role."""
    legacy = ObservedClient("DEVA", frozenset({"iob-device-DEVA"}))
    plan = plan_principal(DEVICE, legacy, IN_SYNC_ROLE)
    (modify,) = plan.commands
    assert modify["clientid"] == "DEVA"
    assert modify["password"] == PASSWORD
    assert modify["textdescription"] == DEVICE.verifier


@pytest.mark.parametrize("password_matches", [True, False])
def test_wrong_roles_or_groups_take_one_modify(password_matches: bool) -> None:
    client = ObservedClient(
        "DEVA",
        frozenset({"iob-device-DEVA", "admin"}),
        groups=frozenset({"everyone"}),
        clientid="DEVA",
        textdescription=DEVICE.verifier if password_matches else None,
    )
    plan = plan_principal(DEVICE, client, IN_SYNC_ROLE)
    assert commands(plan.commands) == ["modifyClient"]
    (modify,) = plan.commands
    assert modify["roles"] == [{"rolename": "iob-device-DEVA"}]
    assert modify["groups"] == []
    assert ("password" in modify) is not password_matches


def test_a_disabled_client_is_enabled() -> None:
    client = replace(IN_SYNC_CLIENT, disabled=True)
    plan = plan_principal(DEVICE, client, IN_SYNC_ROLE)
    assert commands(plan.commands) == ["enableClient"]


def test_ownership_comes_from_the_role_named_after_the_client() -> None:
    assert owner_of_role("iob-device-DEVA") == "DEVA"
    assert owner_of_role("iob-hub-home") == "hub-home"
    assert owner_of_role("iob-device-") is None
    assert owner_of_role("admin") is None
    assert owner_of_role("iob-custom") is None
    assert is_managed_client(IN_SYNC_CLIENT, set())
    assert is_managed_client(ObservedClient("hub-home", frozenset({"iob-hub-home"})), set())
    # Holding someone else's role does not make a client ours; being desired does.
    assert not is_managed_client(ObservedClient("other", frozenset({"iob-device-DEVA"})), set())
    assert not is_managed_client(ObservedClient("hub-x"), set())
    assert is_managed_client(ObservedClient("hub-x"), {"hub-x"})


def test_reconcile_plan_creates_updates_and_removes_only_its_own() -> None:
    desired = desired_principals(
        BrokerState(
            devices={
                "DEVA": DeviceCredential("DEVA", "pw"),
                "DEVB": DeviceCredential("DEVB", "pw"),
            },
            hubs={"home": HubState(HubCredential("home", "pw"), {"DEVA": True})},
        )
    )
    clients = {
        "iob-admin": ObservedClient("iob-admin", frozenset({"admin"})),
        "DEVA": IN_SYNC_CLIENT,
        "hub-home": ObservedClient("hub-home", frozenset({"iob-hub-home"})),
        "OLD": ObservedClient("OLD", frozenset({"iob-device-OLD"})),
        "someone": ObservedClient("someone", frozenset({"iob-device-DEVA"})),
        "hub-foreign": ObservedClient("hub-foreign"),
    }
    roles = {
        "admin": ObservedRole("admin"),
        "iob-device-DEVA": IN_SYNC_ROLE,
        "iob-hub-home": ObservedRole("iob-hub-home"),  # drifted: no ACLs
        "iob-device-OLD": ObservedRole("iob-device-OLD"),
        "iob-device-ORPHAN": ObservedRole("iob-device-ORPHAN"),
    }
    clients["DEVA"] = replace(IN_SYNC_CLIENT, textdescription=password_verifier("DEVA", "old"))
    plan = plan_reconcile(desired, clients, roles, protected={"iob-admin"})
    assert plan.report == ReconcileReport(
        created=("DEVB",), updated=("DEVA", "hub-home"), removed=("OLD", "ORPHAN")
    )
    assert [(c["command"], c.get("username") or c.get("rolename")) for c in plan.commands] == [
        ("modifyClient", "DEVA"),
        ("createRole", "iob-device-DEVB"),
        ("createClient", "DEVB"),
        ("modifyRole", "iob-hub-home"),
        ("modifyClient", "hub-home"),
        ("deleteClient", "OLD"),
        ("deleteRole", "iob-device-OLD"),
        ("deleteRole", "iob-device-ORPHAN"),
    ]


def test_reconcile_plan_refuses_to_manage_the_admin() -> None:
    desired = desired_principals(BrokerState(devices={"adm": DeviceCredential("adm", "pw")}))
    with pytest.raises(InvalidIdentifierError, match="admin"):
        plan_reconcile(desired, {}, {}, protected={"adm"})


def test_desired_state_must_be_consistent() -> None:
    with pytest.raises(InvalidIdentifierError, match="differs"):
        desired_principals(BrokerState(hubs={"home": HubState(HubCredential("away", "pw"), {})}))


def test_broker_objects_are_parsed_strictly() -> None:
    client = parse_client(
        {
            "username": "DEVA",
            "roles": [{"rolename": "r", "priority": -1}],
            "groups": [{"groupname": "g"}],
            "disabled": True,
        }
    )
    assert client == ObservedClient("DEVA", frozenset({"r"}), frozenset({"g"}), disabled=True)
    role = parse_role(
        {
            "rolename": "r",
            "acls": [{"acltype": "subscribePattern", "topic": "t", "allow": True, "priority": 3}],
        }
    )
    assert role == ObservedRole("r", frozenset({Acl("subscribePattern", "t", priority=3)}))
    for bad_client in ({}, {"username": 1}, {"username": "x", "roles": "r"}, "x"):
        with pytest.raises(BrokerProtocolError):
            parse_client(bad_client)
    for bad_role in ({}, {"rolename": "r", "acls": [{"topic": "t"}]}):
        with pytest.raises(BrokerProtocolError):
            parse_role(bad_role)
