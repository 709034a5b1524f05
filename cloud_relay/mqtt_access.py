"""A household's MQTT credentials for other tools (Node-RED, Telegraf, ...).

Each credential reaches what the household's hub reaches, read-only or with control
(docs/broker.md: it holds the hub's role, so devices joining or leaving the household need no
broker work for it). Its password is derived from the service's key and the credential id
(:func:`~cloud_relay.tokens.mqtt_password`): the database stores none, the answer to the
``POST`` shows it once, and ``broker reconcile`` can recreate the client.

Who may: admins and the owner, for every step (list, mint read or control, revoke). A
credential is not a person: it outlives the membership, or the role, of whoever minted it, like
an invitation or a share, which are the admins' too. So a viewer or member, who cannot manage
who is in the household, cannot mint lasting access for a program either, and a viewer can
never obtain control.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Final

from iob_protocol import account_api as api
from iob_protocol.canonical import JsonValue

from . import audit
from .accounts import Account
from .broker import tool_username
from .broker_sync import BrokerPlan, tool_credential
from .context import Context
from .devices import put_household_hub
from .errors import MqttCredentialLimitError, MqttCredentialNotFoundError
from .households import Households, clean_text
from .mutation import mutate
from .storage import Connection
from .tokens import new_id

#: Each credential is one client and one role on the broker: a bound on what one household adds.
MAX_PER_HOUSEHOLD: Final = 20
#: Who may list, mint and revoke (see the module docs).
MANAGING_ROLE: Final = "admin"


def _summary(row: Mapping[str, Any], household_id: str) -> api.MqttAccessSummary:
    """A credential as listed, from its row (or the values of the row being inserted)."""
    return api.MqttAccessSummary(
        credential_id=row["id"],
        household_id=household_id,
        label=row["label"],
        access=api.MqttAccess.CONTROL if row["control"] else api.MqttAccess.READ,
        username=tool_username(row["id"]),
        created_at=row["created_at"],
    )


@dataclass(frozen=True, slots=True)
class MqttAccess:
    """List, mint and revoke a household's MQTT credentials for other tools."""

    _ctx: Context
    #: Checks the caller's role.
    _households: Households

    async def listing(self, account: Account, household_id: str) -> list[api.MqttAccessSummary]:
        """The household's credentials, oldest first (no passwords: they are shown once)."""
        async with self._ctx.storage.read() as conn:
            await self._households.require(conn, household_id, account, MANAGING_ROLE)
            rows = await conn.fetch(
                "SELECT id, label, control, created_at FROM mqtt_credentials "
                "WHERE household_id = $1 ORDER BY created_at, id",
                household_id,
            )
        return [_summary(row, household_id) for row in rows]

    async def _audit(
        self,
        conn: Connection,
        account: Account,
        household_id: str,
        action: str,
        **details: JsonValue,
    ) -> None:
        await audit.append(
            conn,
            at=self._ctx.now(),
            actor=account.actor,
            action=f"mqtt_credential.{action}",
            household_id=household_id,
            details=dict(details),
        )

    async def create(
        self, account: Account, household_id: str, wanted: api.MqttAccessRequest
    ) -> api.MqttAccessCredential:
        """A new credential; its password is in the answer and nowhere else."""
        ctx = self._ctx
        row: dict[str, Any] = {
            "id": new_id(),
            "label": clean_text(wanted.label, "label"),
            "control": 1 if wanted.access is api.MqttAccess.CONTROL else 0,
        }

        async def body(conn: Connection, plan: BrokerPlan) -> api.MqttAccessCredential:
            await self._households.require(conn, household_id, account, MANAGING_ROLE)
            count = await conn.fetchval(
                "SELECT COUNT(*) FROM mqtt_credentials WHERE household_id = $1", household_id
            )
            if int(count or 0) >= MAX_PER_HOUSEHOLD:
                raise MqttCredentialLimitError(
                    f"This household already has {MAX_PER_HOUSEHOLD} MQTT credentials for other "
                    "tools; revoke one it no longer needs, then create this one."
                )
            row["created_at"] = now = ctx.now()
            await conn.execute(
                "INSERT INTO mqtt_credentials (id, household_id, label, control, created_by, "
                "created_at) VALUES ($1, $2, $3, $4, $5, $6)",
                row["id"],
                household_id,
                row["label"],
                row["control"],
                account.actor,
                now,
            )
            # The tool holds the hub's role, so the hub must be on the broker first.
            await put_household_hub(conn, plan, household_id, account, now=now)
            credential = tool_credential(
                ctx.config, row["id"], household_id, control=bool(row["control"])
            )
            await plan.put_tool(credential)
            summary = _summary(row, household_id)
            await self._audit(
                conn,
                account,
                household_id,
                "created",
                credential_id=summary.credential_id,
                label=summary.label,
                access=str(summary.access),
            )
            return api.MqttAccessCredential(
                **{item.name: getattr(summary, item.name) for item in fields(summary)},
                mqtt=ctx.mqtt_credentials(credential),
            )

        return await mutate(ctx, body)

    async def revoke(self, account: Account, household_id: str, credential_id: str) -> None:
        """Delete the credential: the broker drops its client and kicks its live session."""

        async def body(conn: Connection, plan: BrokerPlan) -> None:
            await self._households.require(conn, household_id, account, MANAGING_ROLE)
            label = await conn.fetchval(
                "SELECT label FROM mqtt_credentials WHERE id = $1 AND household_id = $2",
                credential_id,
                household_id,
            )
            if label is None:
                raise MqttCredentialNotFoundError
            await conn.execute("DELETE FROM mqtt_credentials WHERE id = $1", credential_id)
            await plan.remove_tool(credential_id)
            await self._audit(
                conn, account, household_id, "revoked", credential_id=credential_id, label=label
            )

        await mutate(self._ctx, body)
