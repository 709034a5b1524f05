"""Schema migrations, in code: each one applied once, in order, in its own transaction.

DDL is written once with ``{bytes}`` and ``{bigint}`` for the two types the engines spell
differently; engine-only statements (the audit log's append-only triggers) are listed per
dialect. Never edit a released migration: add a new one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

_TYPES: Final = {
    "sqlite": {"bytes": "BLOB", "bigint": "INTEGER"},
    "postgres": {"bytes": "BYTEA", "bigint": "BIGINT"},
}


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step."""

    version: int
    name: str
    common: tuple[str, ...]
    per_dialect: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def statements(self, dialect: str) -> list[str]:
        """The statements for ``dialect``, types filled in."""
        types = _TYPES[dialect]
        return [sql.format(**types) for sql in self.common] + list(
            self.per_dialect.get(dialect, ())
        )


_INITIAL: Final = (
    """CREATE TABLE accounts (
        id TEXT PRIMARY KEY,
        email TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL,
        display_name TEXT NOT NULL,
        is_admin INTEGER NOT NULL DEFAULT 0,
        created_at {bigint} NOT NULL,
        disabled_at {bigint}
    )""",
    """CREATE TABLE auth_families (
        id TEXT PRIMARY KEY,
        account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
        created_at {bigint} NOT NULL,
        revoked_at {bigint},
        revoke_reason TEXT
    )""",
    "CREATE INDEX auth_families_account ON auth_families (account_id)",
    """CREATE TABLE refresh_tokens (
        token_hash {bytes} PRIMARY KEY,
        family_id TEXT NOT NULL REFERENCES auth_families (id) ON DELETE CASCADE,
        created_at {bigint} NOT NULL,
        expires_at {bigint} NOT NULL,
        used_at {bigint}
    )""",
    "CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id)",
    """CREATE TABLE access_tokens (
        token_hash {bytes} PRIMARY KEY,
        family_id TEXT NOT NULL REFERENCES auth_families (id) ON DELETE CASCADE,
        account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
        expires_at {bigint} NOT NULL
    )""",
    "CREATE INDEX access_tokens_family ON access_tokens (family_id)",
    """CREATE TABLE households (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        created_at {bigint} NOT NULL
    )""",
    """CREATE TABLE members (
        id TEXT PRIMARY KEY,
        household_id TEXT NOT NULL REFERENCES households (id) ON DELETE CASCADE,
        account_id TEXT REFERENCES accounts (id) ON DELETE CASCADE,
        external_id TEXT,
        display_name TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member', 'viewer')),
        created_at {bigint} NOT NULL,
        updated_at {bigint} NOT NULL,
        CHECK (account_id IS NOT NULL OR external_id IS NOT NULL),
        UNIQUE (household_id, account_id),
        UNIQUE (household_id, external_id)
    )""",
    "CREATE UNIQUE INDEX members_one_owner ON members (household_id) WHERE role = 'owner'",
    "CREATE INDEX members_account ON members (account_id)",
    """CREATE TABLE invitations (
        id TEXT PRIMARY KEY,
        household_id TEXT NOT NULL REFERENCES households (id) ON DELETE CASCADE,
        token_hash {bytes} NOT NULL UNIQUE,
        role TEXT NOT NULL CHECK (role IN ('admin', 'member', 'viewer')),
        email TEXT,
        external_id TEXT,
        created_by TEXT NOT NULL,
        created_at {bigint} NOT NULL,
        expires_at {bigint} NOT NULL,
        accepted_at {bigint},
        accepted_by TEXT,
        revoked_at {bigint}
    )""",
    "CREATE INDEX invitations_household ON invitations (household_id)",
    """CREATE TABLE device_models (
        model TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        manufacturer TEXT NOT NULL,
        metadata TEXT NOT NULL,
        created_at {bigint} NOT NULL,
        updated_at {bigint} NOT NULL
    )""",
    """CREATE TABLE devices (
        device_id TEXT PRIMARY KEY,
        model TEXT NOT NULL REFERENCES device_models (model),
        public_key {bytes} NOT NULL,
        setup_verifier TEXT NOT NULL,
        imported_at {bigint} NOT NULL,
        household_id TEXT REFERENCES households (id),
        owned_since {bigint},
        credential_version INTEGER NOT NULL DEFAULT 0,
        preassigned_household_id TEXT REFERENCES households (id) ON DELETE SET NULL,
        order_ref TEXT,
        updated_at {bigint} NOT NULL
    )""",
    "CREATE INDEX devices_household ON devices (household_id)",
    """CREATE TABLE claims (
        id TEXT PRIMARY KEY,
        device_id TEXT NOT NULL REFERENCES devices (device_id) ON DELETE CASCADE,
        household_id TEXT NOT NULL REFERENCES households (id) ON DELETE CASCADE,
        account_id TEXT NOT NULL,
        token_hash {bytes} NOT NULL UNIQUE,
        status TEXT NOT NULL CHECK (status IN ('pending', 'owned', 'expired', 'rejected')),
        created_at {bigint} NOT NULL,
        expires_at {bigint} NOT NULL,
        completed_at {bigint}
    )""",
    "CREATE INDEX claims_device ON claims (device_id, status)",
    """CREATE TABLE shares (
        device_id TEXT NOT NULL REFERENCES devices (device_id) ON DELETE CASCADE,
        household_id TEXT NOT NULL REFERENCES households (id) ON DELETE CASCADE,
        control INTEGER NOT NULL,
        created_by TEXT NOT NULL,
        created_at {bigint} NOT NULL,
        PRIMARY KEY (device_id, household_id)
    )""",
    "CREATE INDEX shares_household ON shares (household_id)",
    """CREATE TABLE transfers (
        id TEXT PRIMARY KEY,
        device_id TEXT NOT NULL REFERENCES devices (device_id) ON DELETE CASCADE,
        from_household_id TEXT NOT NULL REFERENCES households (id) ON DELETE CASCADE,
        to_household_id TEXT NOT NULL REFERENCES households (id) ON DELETE CASCADE,
        status TEXT NOT NULL
            CHECK (status IN ('pending', 'accepted', 'declined', 'cancelled')),
        created_by TEXT NOT NULL,
        created_at {bigint} NOT NULL,
        expires_at {bigint} NOT NULL,
        completed_at {bigint}
    )""",
    "CREATE INDEX transfers_device ON transfers (device_id, status)",
    "CREATE INDEX transfers_to ON transfers (to_household_id, status)",
    """CREATE TABLE hubs (
        household_id TEXT PRIMARY KEY REFERENCES households (id) ON DELETE CASCADE,
        credential_version INTEGER NOT NULL,
        created_at {bigint} NOT NULL,
        updated_at {bigint} NOT NULL
    )""",
    """CREATE TABLE device_nonces (
        device_id TEXT NOT NULL,
        nonce {bytes} NOT NULL,
        expires_at {bigint} NOT NULL,
        PRIMARY KEY (device_id, nonce)
    )""",
    """CREATE TABLE audit_log (
        seq {bigint} PRIMARY KEY,
        at {bigint} NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        household_id TEXT,
        device_id TEXT,
        details TEXT NOT NULL,
        prev_hash {bytes} NOT NULL,
        hash {bytes} NOT NULL
    )""",
    "CREATE INDEX audit_household ON audit_log (household_id, seq)",
    "CREATE INDEX audit_device ON audit_log (device_id, seq)",
    """CREATE TABLE audit_head (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        seq {bigint} NOT NULL,
        hash {bytes} NOT NULL
    )""",
)

_SQLITE_APPEND_ONLY: Final = (
    """CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
       BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
    """CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
       BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
    "INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, zeroblob(32))",
)

_POSTGRES_APPEND_ONLY: Final = (
    """CREATE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $body$
       BEGIN RAISE EXCEPTION 'the audit log is append-only'; END $body$""",
    """CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_log
       FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only()""",
    "INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, decode(repeat('00', 32), 'hex'))",
)

_AUDIT_CHAINS: Final = (
    # NULL: an event of the single chain of versions before 4, verified as it was, its head
    # frozen in audit_head. Every later event belongs to the chain of its household ('' for
    # events of no household), numbered chain_seq along it (cloud_relay.audit).
    "ALTER TABLE audit_log ADD COLUMN chain TEXT",
    "ALTER TABLE audit_log ADD COLUMN chain_seq {bigint}",
    "CREATE UNIQUE INDEX audit_chain_position ON audit_log (chain, chain_seq)",
    """CREATE TABLE audit_chains (
        chain TEXT PRIMARY KEY,
        seq {bigint} NOT NULL,
        hash {bytes} NOT NULL
    )""",
)

#: GCRA over the ``rate_limits`` rows (cloud_relay.ratelimit), one round trip: lock the rows
#: (made when missing, in the caller's order: sorted), take the server's clock, count the
#: event on every budget or on none. Returns the seconds to wait, 0 when counted. A refused
#: check leaves the rows it made with no time (a whole budget; the purge drops them).
_RATE_LIMIT_FUNCTION: Final = """
CREATE FUNCTION iob_rate_limit(
    budgets TEXT[], keys TEXT[], intervals DOUBLE PRECISION[], tolerances DOUBLE PRECISION[]
) RETURNS DOUBLE PRECISION LANGUAGE plpgsql AS $body$
DECLARE
    now_s DOUBLE PRECISION := extract(epoch FROM clock_timestamp());
    longest DOUBLE PRECISION := 0;
    next_tats DOUBLE PRECISION[] := '{}';
    stored DOUBLE PRECISION;
BEGIN
    -- Not flushed before the answer: the table is not WAL-logged anyway.
    PERFORM set_config('synchronous_commit', 'off', true);
    INSERT INTO rate_limits (budget, key, tat)
        SELECT wanted.budget, wanted.key, NULL
        FROM unnest(budgets, keys) WITH ORDINALITY AS wanted (budget, key, position)
        ORDER BY wanted.position
        ON CONFLICT (budget, key) DO UPDATE SET tat = rate_limits.tat;
    FOR i IN 1 .. cardinality(budgets) LOOP
        SELECT r.tat INTO stored FROM rate_limits r
            WHERE r.budget = budgets[i] AND r.key = keys[i];
        stored := greatest(coalesce(stored, now_s), now_s);
        longest := greatest(longest, stored - now_s - tolerances[i]);
        next_tats := next_tats || (stored + intervals[i]);
    END LOOP;
    IF longest > 0 THEN
        RETURN longest;
    END IF;
    UPDATE rate_limits r SET tat = counted.tat
        FROM unnest(budgets, keys, next_tats) AS counted (budget, key, tat)
        WHERE r.budget = counted.budget AND r.key = counted.key;
    RETURN 0;
END
$body$"""

MIGRATIONS: Final = (
    Migration(
        1,
        "initial schema",
        _INITIAL,
        {"sqlite": _SQLITE_APPEND_ONLY, "postgres": _POSTGRES_APPEND_ONLY},
    ),
    Migration(2, "factory self-test per unit", ("ALTER TABLE devices ADD COLUMN self_test TEXT",)),
    Migration(
        3,
        "MQTT credentials for other tools",
        (
            # No password column: it is derived from the service's key and the id
            # (tokens.mqtt_password), so the database holds nothing that logs in.
            """CREATE TABLE mqtt_credentials (
                id TEXT PRIMARY KEY,
                household_id TEXT NOT NULL REFERENCES households (id) ON DELETE CASCADE,
                label TEXT NOT NULL,
                control INTEGER NOT NULL,
                created_by TEXT NOT NULL,
                created_at {bigint} NOT NULL
            )""",
            "CREATE INDEX mqtt_credentials_household ON mqtt_credentials (household_id)",
        ),
    ),
    Migration(
        4,
        "an audit chain per household",
        _AUDIT_CHAINS,
        {
            # Numbers without a lock (SQLite's single writer takes MAX(seq) + 1).
            "postgres": (
                "CREATE SEQUENCE audit_log_seq",
                (
                    "SELECT setval('audit_log_seq', "
                    "(SELECT COALESCE(MAX(seq), 0) + 1 FROM audit_log), false)"
                ),
            )
        },
    ),
    Migration(
        5,
        "rate limits shared by the service's processes",
        (),
        {
            # PostgreSQL only: SQLite is one process, whose limits stay in its memory
            # (cloud_relay.ratelimit). UNLOGGED: no WAL, emptied by a server crash.
            "postgres": (
                """CREATE UNLOGGED TABLE rate_limits (
                    budget TEXT NOT NULL,
                    key TEXT NOT NULL,
                    tat DOUBLE PRECISION,
                    PRIMARY KEY (budget, key)
                )""",
                _RATE_LIMIT_FUNCTION,
            )
        },
    ),
)

#: The version a fully migrated database has.
LATEST_VERSION: Final = MIGRATIONS[-1].version
