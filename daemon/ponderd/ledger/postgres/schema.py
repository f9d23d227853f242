"""The central schema, versioned like the SQLite one: each migration runs once, in order, in one transaction.

Amounts are whole micro-credits (bigint) with CHECK constraints, as in the
local file. The invariant the lease grant keeps (central.py: grant), per tenant
and window:

    sum over hosts of (granted if the lease is live, else spent) <= budget

so the hosts together can never be handed more than the budget, whether or
not they can reach this database afterwards.
"""

from __future__ import annotations

from typing import Any

from psycopg import conninfo

from ponderd.errors import FailedPrecondition

MIGRATIONS: tuple[str, ...] = (
    # 1: tenants, keys, leases, spend
    """
    CREATE TABLE meta (key text PRIMARY KEY, value text NOT NULL);
    CREATE TABLE tenants (
        name text PRIMARY KEY,
        enabled boolean NOT NULL DEFAULT true,
        budget_micros bigint NOT NULL CHECK (budget_micros >= 0),
        budget_window text NOT NULL CHECK (budget_window IN ('day', 'week', 'month')),
        window_start timestamptz NOT NULL,
        created_at timestamptz NOT NULL
    );
    CREATE TABLE keys (
        key_id text PRIMARY KEY,
        tenant text REFERENCES tenants(name),
        scope text NOT NULL CHECK (scope IN ('tenant', 'admin')),
        secret_sha256 text NOT NULL,
        label text NOT NULL DEFAULT '',
        created_at timestamptz NOT NULL,
        revoked_at timestamptz,
        CHECK ((scope = 'admin') = (tenant IS NULL))
    );
    CREATE TABLE leases (
        tenant text NOT NULL REFERENCES tenants(name),
        host_id text NOT NULL,
        window_start timestamptz NOT NULL,
        granted_micros bigint NOT NULL CHECK (granted_micros >= 0),
        spent_micros bigint NOT NULL DEFAULT 0 CHECK (spent_micros >= 0),
        expires_at timestamptz NOT NULL,
        returned boolean NOT NULL DEFAULT false,
        grants integer NOT NULL DEFAULT 0,
        PRIMARY KEY (tenant, host_id, window_start)
    );
    CREATE TABLE spend (
        request_id text PRIMARY KEY,
        host_id text NOT NULL,
        tenant text NOT NULL,
        at timestamptz NOT NULL,
        window_start timestamptz NOT NULL,
        status text NOT NULL,
        reserved_micros bigint NOT NULL CHECK (reserved_micros >= 0),
        cost_micros bigint NOT NULL CHECK (cost_micros >= 0 AND cost_micros <= reserved_micros),
        prompt_tokens integer NOT NULL,
        thinking_tokens integer NOT NULL,
        answer_tokens integer NOT NULL,
        -- Shipped after its host's lease had expired: spent beyond what the pool counted for it.
        late boolean NOT NULL DEFAULT false,
        shipped_at timestamptz NOT NULL,
        record jsonb NOT NULL
    );
    CREATE INDEX spend_tenant_at ON spend (tenant, at);
    CREATE INDEX spend_at ON spend (at);
    """,
    # 2: idempotency keys, fleet-wide (ledger/postgres/idempotency.py)
    """
    CREATE TABLE idempotency_keys (
        tenant text NOT NULL REFERENCES tenants(name),
        key text NOT NULL,
        fingerprint text NOT NULL,
        state text NOT NULL CHECK (state IN ('running', 'done', 'lost')),
        request_id text NOT NULL,
        host_id text NOT NULL,
        reply bytea,
        created_at timestamptz NOT NULL,
        heartbeat_at timestamptz NOT NULL,
        expires_at timestamptz NOT NULL,
        PRIMARY KEY (tenant, key),
        CHECK ((state = 'done') = (reply IS NOT NULL))
    );
    CREATE INDEX idempotency_keys_expires ON idempotency_keys (expires_at);
    """,
    # 3: key lifetime (ledger/postgres/central.py: issue_key, rotate_key, record_key_use): an expiry
    # (NULL: never), the successor of a rotated key, and when it was last used (written in batches)
    """
    ALTER TABLE keys ADD COLUMN expires_at timestamptz;
    ALTER TABLE keys ADD COLUMN last_used_at timestamptz;
    ALTER TABLE keys ADD COLUMN replaced_by text;
    """,
    # 4: policy versions, fleet-wide: `ponder admin policy reload` on any host stores its policy file's text
    # as the next version (central.publish_policy); every host puts the newest in force (Fleet.check_policy).
    """
    CREATE TABLE policy_versions (
        version bigserial PRIMARY KEY,
        sha256 text NOT NULL,
        text text NOT NULL,
        host_id text NOT NULL,
        created_at timestamptz NOT NULL
    );
    """,
)

VERSION = len(MIGRATIONS)


def safe_dsn(dsn: str) -> str:
    """The DSN without its password, for messages and logs."""
    try:
        parts = conninfo.conninfo_to_dict(dsn)
    except Exception:
        return "(a DSN that does not parse)"
    parts.pop("password", None)
    return " ".join(f"{k}={v}" for k, v in parts.items())


async def migrate(conn: Any, timezone: str) -> int:
    """Bring the central schema to VERSION; refuse one newer than this daemon, or another timezone."""
    async with conn.transaction():
        # One host migrates at a time: others wait here, then find the work done.
        await conn.execute("SELECT pg_advisory_xact_lock(7061726)")
        exists = _first(await (await conn.execute("SELECT to_regclass('meta') IS NOT NULL")).fetchone())
        version = 0
        if exists:
            row = await (await conn.execute("SELECT value FROM meta WHERE key = 'schema_version'")).fetchone()
            version = int(_first(row)) if row else 0
        if version > VERSION:
            raise FailedPrecondition(
                f"the central ledger's schema is version {version}, newer than this daemon's ({VERSION}): "
                "upgrade Ponder on this host before it joins the fleet (ledger.dsn)"
            )
        for number in range(version, VERSION):
            await conn.execute(MIGRATIONS[number])
            await conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', %s) "
                "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value", [str(number + 1)],
            )
        await conn.execute("INSERT INTO meta (key, value) VALUES ('timezone', %s) ON CONFLICT DO NOTHING", [timezone])
        zone = _first(await (await conn.execute("SELECT value FROM meta WHERE key = 'timezone'")).fetchone())
        if zone != timezone:
            raise FailedPrecondition(
                f"this host's timezone is {timezone!r} but the fleet's budget windows start at midnight in {zone!r}: "
                f"set timezone = {zone!r} (PONDER_TIMEZONE) so windows roll over fleet-wide at the same instant"
            )
    return VERSION


def _first(row: Any) -> Any:
    """The first column of a row, whether the connection gives tuples or dicts."""
    return next(iter(row.values())) if isinstance(row, dict) else row[0]
