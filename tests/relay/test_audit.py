"""The audit log: append-only, hash-chained, paginated; ``audit verify`` finds any edit."""

from __future__ import annotations

import pytest

from cloud_relay.errors import AuditChainError, StorageError

from .helpers import Api


async def _events(api: Api) -> None:
    owner, home = await api.owner_household()
    for _ in range(3):
        device = await api.device()
        await api.claim(owner, home, device)


async def test_chain_verifies_and_paginates(api: Api) -> None:
    owner, home = await api.owner_household()
    devices = [await api.device() for _ in range(3)]
    for device in devices:
        await api.claim(owner, home, device)
    report = await api.relay.verify_audit()
    assert report.count >= 7

    seen: list[int] = []
    cursor = None
    while True:
        query = f"?limit=2&cursor={cursor}" if cursor else "?limit=2"
        page = await api.request(
            "GET", f"/v1/households/{home}/audit{query}", token=owner.token, expect=200
        )
        seen += [event["seq"] for event in page.body["events"]]
        cursor = page.body["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(seen, reverse=True)
    assert len(seen) == len(set(seen)) == 7  # household.created + 3 x (claim.created, claimed)
    device_page = await api.request(
        "GET",
        f"/v1/households/{home}/devices/{devices[0].id}/audit",
        token=owner.token,
        expect=200,
    )
    assert [e["action"] for e in device_page.body["events"]] == [
        "device.claimed",
        "claim.created",
    ]
    bad = await api.request("GET", f"/v1/households/{home}/audit?limit=0", token=owner.token)
    assert bad.code == "invalid_request"


async def test_the_table_refuses_updates_and_deletes(api: Api) -> None:
    await _events(api)
    for sql in ("UPDATE audit_log SET actor = 'x'", "DELETE FROM audit_log"):
        with pytest.raises(StorageError, match="append-only"):
            async with api.relay.ctx.storage.transaction() as conn:
                await conn.execute(sql)


async def _tamper(api: Api, *statements: str) -> None:
    """Bypass the triggers, as someone with direct database access would."""
    storage = api.relay.ctx.storage
    async with storage.transaction() as conn:
        if storage.dialect == "sqlite":
            await conn.execute("DROP TRIGGER audit_log_no_update")
            await conn.execute("DROP TRIGGER audit_log_no_delete")
        else:
            await conn.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only")
        for statement in statements:
            await conn.execute(statement)


@pytest.mark.parametrize(
    ("statements", "message"),
    [
        (("UPDATE audit_log SET details = '{\"evil\":1}' WHERE seq = 3",), "event 3 was edited"),
        (
            ("UPDATE audit_log SET actor = 'account:someone-else' WHERE seq = 2",),
            "event 2 was edited",
        ),
        (("DELETE FROM audit_log WHERE seq = 4",), r"before event \d+ is missing"),
        (
            ("DELETE FROM audit_log WHERE seq = (SELECT MAX(seq) FROM audit_log)",),
            "newest events were deleted",
        ),
        (("UPDATE audit_log SET seq = seq + 100 WHERE seq = 5",), "event 105 was edited"),
    ],
)
async def test_verify_detects_tampering(
    api: Api, statements: tuple[str, ...], message: str
) -> None:
    await _events(api)
    await api.relay.verify_audit()
    await _tamper(api, *statements)
    with pytest.raises(AuditChainError, match=message):
        await api.relay.verify_audit()


async def test_admin_audit_filters_refuse_what_cannot_be_an_id(api: Api) -> None:
    """A NUL in a filter once reached PostgreSQL and came back as a 503 (found by schemathesis)."""
    admin = await api.admin()
    _owner, home = await api.owner_household()
    for query in ("household_id=a%00b", "device_id=%00", "household_id=" + "x" * 65):
        reply = await api.request("GET", f"/v1/admin/audit?{query}", token=admin.token)
        assert (reply.status, reply.code) == (400, "invalid_request"), query
    reply = await api.request(
        "GET", f"/v1/admin/audit?household_id={home}", token=admin.token, expect=200
    )
    assert reply.body["events"]
    assert {event["household_id"] for event in reply.body["events"]} == {home}
