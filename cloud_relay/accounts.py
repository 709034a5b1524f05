"""Accounts: sign-up, sign-in (argon2id), access tokens and rotating refresh tokens.

An access token lives minutes; a refresh token is used once and replaced. Each sign-in opens
a *family*; a refresh token that comes back after it was rotated means two parties hold the
same session, so the whole family is revoked (RFC 9700 §4.14.2). Password hashing runs in a
worker thread, never on the event loop; an unknown e-mail address is checked against a dummy
hash so it costs the same time as a wrong password.
"""

from __future__ import annotations

import asyncio
import logging
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Final

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from iob_protocol import account_api as api

from . import audit
from .config import Argon2Params
from .context import Context
from .errors import (
    AdminRequiredError,
    EmailTakenError,
    InvalidCredentialsError,
    InvalidRequestError,
    InvalidTokenError,
    PasswordMismatchError,
    RefreshTokenInvalidError,
    RefreshTokenReusedError,
    StorageConflictError,
    WeakPasswordError,
)
from .ratelimit import hit_all
from .storage import Connection
from .tokens import new_id, new_token, token_hash

_LOGGER: Final = logging.getLogger(__name__)
_EMAIL_RE: Final = re.compile(r"[^@\s]{1,64}@[^@\s]{1,253}")
MIN_PASSWORD: Final = 10
MAX_PASSWORD: Final = 1024


@dataclass(frozen=True, slots=True)
class Account:
    """The signed-in principal."""

    id: str
    email: str
    display_name: str
    is_admin: bool

    def answer(self) -> api.Account:
        """The API's representation."""
        return api.Account(
            account_id=self.id,
            email=self.email,
            display_name=self.display_name,
            is_admin=self.is_admin,
        )

    @property
    def actor(self) -> str:
        """How the audit log names this account."""
        return f"account:{self.id}"

    def require_admin(self) -> None:
        """Raise unless a service administrator."""
        if not self.is_admin:
            raise AdminRequiredError


@dataclass(frozen=True, slots=True)
class TokenPair:
    """What sign-in and refresh return."""

    access_token: str
    refresh_token: str
    access_expires_in: int
    refresh_expires_in: int
    account: Account

    def answer(self) -> api.TokenPair:
        """The API's representation (OAuth 2 field names)."""
        return api.TokenPair(
            access_token=self.access_token,
            expires_in=self.access_expires_in,
            refresh_token=self.refresh_token,
            refresh_expires_in=self.refresh_expires_in,
            account=self.account.answer(),
        )


def normalize_email(email: str) -> str:
    """Case-folded and validated (the address is the account's name)."""
    email = unicodedata.normalize("NFC", email.strip()).lower()
    if not _EMAIL_RE.fullmatch(email) or len(email) > 254:  # noqa: PLR2004
        raise InvalidRequestError("email must be an e-mail address such as ada@example.com")
    return email


def _hasher(params: Argon2Params) -> PasswordHasher:
    return PasswordHasher(
        time_cost=params.time_cost,
        memory_cost=params.memory_cost_kib,
        parallelism=params.parallelism,
        type=Type.ID,
    )


def _account(row: dict[str, Any]) -> Account:
    return Account(row["id"], row["email"], row["display_name"], bool(row["is_admin"]))


class Accounts:
    """Sign-up, sign-in, refresh, sign-out, and bearer-token authentication."""

    def __init__(self, ctx: Context) -> None:
        """Use ``ctx``'s storage, clock and limiters."""
        self._ctx = ctx
        self._hasher = _hasher(ctx.config.argon2)
        self._dummy_hash: str | None = None

    async def _hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def _verify(self, stored: str, password: str) -> bool:
        def check() -> bool:
            try:
                return self._hasher.verify(stored, password)
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                return False

        return await asyncio.to_thread(check)

    @staticmethod
    def check_password(password: str, email: str) -> None:
        """Refuse passwords that are short, huge or the e-mail address itself."""
        if len(password) < MIN_PASSWORD or password.strip().lower() == email:
            raise WeakPasswordError
        if len(password) > MAX_PASSWORD:
            raise InvalidRequestError(f"password must be at most {MAX_PASSWORD} characters")

    async def create_account(
        self, email: str, password: str, display_name: str, *, is_admin: bool = False
    ) -> Account:
        """Store a new account (sign-up, or the admin CLI)."""
        email = normalize_email(email)
        self.check_password(password, email)
        password_hash = await self._hash(password)
        account = Account(new_id(), email, display_name or email.split("@", 1)[0], is_admin)
        now = self._ctx.now()
        try:
            async with self._ctx.storage.transaction() as conn:
                await conn.execute(
                    "INSERT INTO accounts (id, email, password_hash, display_name, is_admin, "
                    "created_at) VALUES ($1, $2, $3, $4, $5, $6)",
                    account.id,
                    account.email,
                    password_hash,
                    account.display_name,
                    int(is_admin),
                    now,
                )
                await audit.append(
                    conn,
                    at=now,
                    actor=account.actor,
                    action="account.created",
                    details={"admin": is_admin},
                )
        except StorageConflictError as err:
            raise EmailTakenError from err
        return account

    async def sign_up(self, email: str, password: str, display_name: str, client: str) -> TokenPair:
        """A new account, signed in."""
        await self._ctx.limiters.sign_up_per_address.hit(client)
        account = await self.create_account(email, password, display_name)
        return await self.issue(account)

    async def sign_in(self, email: str, password: str, client: str) -> TokenPair:
        """Check the password; rate-limited per account and per client address."""
        email = normalize_email(email)
        limiters = self._ctx.limiters
        await hit_all(
            [(limiters.sign_in_per_account, email), (limiters.sign_in_per_address, client)]
        )
        async with self._ctx.storage.read() as conn:
            row = await conn.fetchrow(
                "SELECT id, email, display_name, is_admin, password_hash, disabled_at "
                "FROM accounts WHERE email = $1",
                email,
            )
        if row is None:
            if self._dummy_hash is None:
                self._dummy_hash = await self._hash("dummy password for timing")
            await self._verify(self._dummy_hash, password)
            raise InvalidCredentialsError
        if not await self._verify(row["password_hash"], password) or row["disabled_at"]:
            raise InvalidCredentialsError
        await limiters.sign_in_per_account.reset(email)
        if self._hasher.check_needs_rehash(row["password_hash"]):
            new_hash = await self._hash(password)
            async with self._ctx.storage.transaction() as conn:
                await conn.execute(
                    "UPDATE accounts SET password_hash = $1 WHERE id = $2", new_hash, row["id"]
                )
        return await self.issue(_account(row))

    async def issue(self, account: Account) -> TokenPair:
        """A new session (token family) for ``account``."""
        now = self._ctx.now()
        family = new_id()
        async with self._ctx.storage.transaction() as conn:
            await conn.execute(
                "INSERT INTO auth_families (id, account_id, created_at) VALUES ($1, $2, $3)",
                family,
                account.id,
                now,
            )
            return await self._tokens(conn, account, family, now)

    async def _tokens(self, conn: Connection, account: Account, family: str, now: int) -> TokenPair:
        config = self._ctx.config
        access, refresh = new_token(), new_token()
        await conn.execute(
            "INSERT INTO access_tokens (token_hash, family_id, account_id, expires_at) "
            "VALUES ($1, $2, $3, $4)",
            token_hash(access),
            family,
            account.id,
            now + config.access_token_ttl,
        )
        await conn.execute(
            "INSERT INTO refresh_tokens (token_hash, family_id, created_at, expires_at) "
            "VALUES ($1, $2, $3, $4)",
            token_hash(refresh),
            family,
            now,
            now + config.refresh_token_ttl,
        )
        return TokenPair(
            access, refresh, config.access_token_ttl, config.refresh_token_ttl, account
        )

    async def refresh(self, refresh_token: str) -> TokenPair:
        """Rotate: the old refresh token is spent; its reuse revokes the family."""
        now = self._ctx.now()
        reused = False
        async with self._ctx.storage.transaction() as conn:
            row = await conn.fetchrow(
                "SELECT r.family_id, r.expires_at, r.used_at, f.revoked_at, a.id, a.email, "
                "a.display_name, a.is_admin, a.disabled_at FROM refresh_tokens r "
                "JOIN auth_families f ON f.id = r.family_id "
                "JOIN accounts a ON a.id = f.account_id WHERE r.token_hash = $1",
                token_hash(refresh_token),
            )
            if row is None or row["revoked_at"] is not None or row["disabled_at"]:
                raise RefreshTokenInvalidError
            if row["used_at"] is not None:
                await self._revoke_family(conn, row["family_id"], now, "refresh token reused")
                await audit.append(
                    conn,
                    at=now,
                    actor=f"account:{row['id']}",
                    action="session.revoked",
                    details={"reason": "refresh_token_reused"},
                )
                reused = True
            elif row["expires_at"] < now:
                raise RefreshTokenInvalidError
            else:
                spent = await conn.execute(
                    "UPDATE refresh_tokens SET used_at = $1 WHERE token_hash = $2 "
                    "AND used_at IS NULL",
                    now,
                    token_hash(refresh_token),
                )
                if spent != 1:
                    raise RefreshTokenInvalidError
                return await self._tokens(conn, _account(row), row["family_id"], now)
        if reused:
            _LOGGER.warning("refresh token reuse: session family %s revoked", row["family_id"])
        raise RefreshTokenReusedError

    @staticmethod
    async def _revoke_family(conn: Connection, family: str, now: int, reason: str) -> None:
        await conn.execute(
            "UPDATE auth_families SET revoked_at = $1, revoke_reason = $2 "
            "WHERE id = $3 AND revoked_at IS NULL",
            now,
            reason,
            family,
        )
        await conn.execute("DELETE FROM access_tokens WHERE family_id = $1", family)

    async def confirm_password(self, account: Account, password: str) -> None:
        """Check a password re-entered to confirm a destructive request (sign-in's budget)."""
        limiter = self._ctx.limiters.sign_in_per_account
        await limiter.hit(account.email)
        async with self._ctx.storage.read() as conn:
            stored = await conn.fetchval(
                "SELECT password_hash FROM accounts WHERE id = $1", account.id
            )
        if stored is None or not await self._verify(stored, password):
            raise PasswordMismatchError
        await limiter.reset(account.email)

    async def sign_out(self, access_token: str) -> None:
        """Revoke the session (family) the access token belongs to."""
        now = self._ctx.now()
        async with self._ctx.storage.transaction() as conn:
            family = await conn.fetchval(
                "SELECT family_id FROM access_tokens WHERE token_hash = $1",
                token_hash(access_token),
            )
            if family is not None:
                await self._revoke_family(conn, family, now, "signed out")

    async def revoke_all(self, account_id: str, actor: str) -> int:
        """Revoke every session of an account (admin, or a password change)."""
        now = self._ctx.now()
        async with self._ctx.storage.transaction() as conn:
            families = await conn.fetch(
                "SELECT id FROM auth_families WHERE account_id = $1 AND revoked_at IS NULL",
                account_id,
            )
            for row in families:
                await self._revoke_family(conn, row["id"], now, "revoked")
            await audit.append(
                conn,
                at=now,
                actor=actor,
                action="session.revoked",
                details={"account_id": account_id, "sessions": len(families)},
            )
        return len(families)

    async def authenticate(self, access_token: str) -> Account:
        """The account behind a bearer token, or :class:`InvalidTokenError`."""
        async with self._ctx.storage.read() as conn:
            row = await conn.fetchrow(
                "SELECT a.id, a.email, a.display_name, a.is_admin, a.disabled_at, t.expires_at, "
                "f.revoked_at FROM access_tokens t JOIN auth_families f ON f.id = t.family_id "
                "JOIN accounts a ON a.id = t.account_id WHERE t.token_hash = $1",
                token_hash(access_token),
            )
        if (
            row is None
            or row["expires_at"] < self._ctx.now()
            or row["revoked_at"] is not None
            or row["disabled_at"]
        ):
            raise InvalidTokenError
        return _account(row)

    async def find(self, email: str) -> Account | None:
        """An account by e-mail address (CLI)."""
        async with self._ctx.storage.read() as conn:
            row = await conn.fetchrow(
                "SELECT id, email, display_name, is_admin FROM accounts WHERE email = $1",
                normalize_email(email),
            )
        return None if row is None else _account(row)

    async def set_admin(self, account_id: str, *, is_admin: bool, actor: str) -> None:
        """Grant or take service administration (CLI)."""
        now = self._ctx.now()
        async with self._ctx.storage.transaction() as conn:
            await conn.execute(
                "UPDATE accounts SET is_admin = $1 WHERE id = $2", int(is_admin), account_id
            )
            await audit.append(
                conn,
                at=now,
                actor=actor,
                action="account.admin_granted" if is_admin else "account.admin_revoked",
                details={"account_id": account_id},
            )

    async def purge_expired(self) -> None:
        """Drop expired access tokens and spent, expired refresh tokens."""
        now = self._ctx.now()
        async with self._ctx.storage.transaction() as conn:
            await conn.execute("DELETE FROM access_tokens WHERE expires_at < $1", now)
            await conn.execute("DELETE FROM refresh_tokens WHERE expires_at < $1", now)
