"""PostgreSQL tables of webhook endpoints and their signing secrets (ciphertexts only).

A secret is encrypted like a destination's (``crypto.encrypt_secret``: a data key per secret,
wrapped by the master key), bound to its tenant and to ``<endpoint id>/<secret id>`` so that no
row's ciphertext can be moved to another endpoint or mistaken for a destination's. A rotation
gives every current secret an ``expires_at`` (the grace period) and adds the new one; expired
rows are deleted when next touched. The tables are made with the vault's others
(``store.create_schema``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

SCHEMA = """
CREATE TABLE IF NOT EXISTS vault.webhooks (
    endpoint_id     text PRIMARY KEY,
    tenant_id       text NOT NULL,
    url             text NOT NULL,
    events          text[] NOT NULL,
    description     text NOT NULL DEFAULT '',
    enabled         boolean NOT NULL DEFAULT true,
    disabled_reason text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS webhooks_by_tenant ON vault.webhooks (tenant_id);
CREATE TABLE IF NOT EXISTS vault.webhook_secrets (
    endpoint_id  text NOT NULL REFERENCES vault.webhooks ON DELETE CASCADE,
    secret_id    text NOT NULL,
    ciphertext   bytea NOT NULL,
    wrapped_key  bytea NOT NULL,
    key_version  integer NOT NULL,
    fingerprint  text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,  -- NULL: the current secret
    PRIMARY KEY (endpoint_id, secret_id)
);
"""


@dataclass(frozen=True)
class EndpointRow:
    endpoint_id: str
    tenant_id: str
    url: str
    events: list[str]
    description: str
    enabled: bool
    disabled_reason: str
    created_at: datetime


@dataclass(frozen=True)
class SecretRow:
    endpoint_id: str
    secret_id: str
    ciphertext: bytes
    wrapped_key: bytes
    key_version: int
    fingerprint: str
    created_at: datetime
    expires_at: datetime | None


def aad_id(endpoint_id: str, secret_id: str) -> str:
    """What a secret's ciphertext is bound to (with the tenant)."""
    return f"{endpoint_id}/{secret_id}"


def _endpoint(r: asyncpg.Record) -> EndpointRow:
    return EndpointRow(
        endpoint_id=r["endpoint_id"],
        tenant_id=r["tenant_id"],
        url=r["url"],
        events=list(r["events"]),
        description=r["description"],
        enabled=r["enabled"],
        disabled_reason=r["disabled_reason"],
        created_at=r["created_at"],
    )


def _secret(r: asyncpg.Record) -> SecretRow:
    return SecretRow(
        endpoint_id=r["endpoint_id"],
        secret_id=r["secret_id"],
        ciphertext=bytes(r["ciphertext"]),
        wrapped_key=bytes(r["wrapped_key"]),
        key_version=r["key_version"],
        fingerprint=r["fingerprint"],
        created_at=r["created_at"],
        expires_at=r["expires_at"],
    )


async def insert(pool: asyncpg.Pool, endpoint: EndpointRow, secret: SecretRow) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            """INSERT INTO vault.webhooks (endpoint_id, tenant_id, url, events, description)
               VALUES ($1, $2, $3, $4, $5)""",
            endpoint.endpoint_id,
            endpoint.tenant_id,
            endpoint.url,
            endpoint.events,
            endpoint.description,
        )
        await _insert_secret(conn, secret)


async def _insert_secret(conn: asyncpg.Connection, secret: SecretRow) -> None:
    await conn.execute(
        """INSERT INTO vault.webhook_secrets
               (endpoint_id, secret_id, ciphertext, wrapped_key, key_version, fingerprint)
           VALUES ($1, $2, $3, $4, $5, $6)""",
        secret.endpoint_id,
        secret.secret_id,
        secret.ciphertext,
        secret.wrapped_key,
        secret.key_version,
        secret.fingerprint,
    )


async def get(pool: asyncpg.Pool, tenant_id: str, endpoint_id: str) -> EndpointRow | None:
    """One endpoint of ``tenant_id``; ``"*"`` (the notifier) looks across tenants."""
    r = await pool.fetchrow(
        "SELECT * FROM vault.webhooks WHERE endpoint_id = $1 AND ($2 = '*' OR tenant_id = $2)",
        endpoint_id,
        tenant_id,
    )
    return _endpoint(r) if r else None


async def list_for(
    pool: asyncpg.Pool, tenant_id: str, event_type: str = "", *, enabled_only: bool = False
) -> list[EndpointRow]:
    rows = await pool.fetch(
        """SELECT * FROM vault.webhooks
           WHERE ($1 = '*' OR tenant_id = $1)
             AND ($2 = '' OR cardinality(events) = 0 OR $2 = ANY(events))
             AND (enabled OR NOT $3)
           ORDER BY created_at, endpoint_id""",
        tenant_id,
        event_type,
        enabled_only,
    )
    return [_endpoint(r) for r in rows]


async def remove(pool: asyncpg.Pool, tenant_id: str, endpoint_id: str) -> EndpointRow | None:
    r = await pool.fetchrow(
        "DELETE FROM vault.webhooks WHERE endpoint_id = $1 AND tenant_id = $2 RETURNING *",
        endpoint_id,
        tenant_id,
    )
    return _endpoint(r) if r else None


async def disable(
    pool: asyncpg.Pool, tenant_id: str, endpoint_id: str, reason: str
) -> EndpointRow | None:
    r = await pool.fetchrow(
        """UPDATE vault.webhooks SET enabled = false, disabled_reason = $3
           WHERE endpoint_id = $1 AND tenant_id = $2 RETURNING *""",
        endpoint_id,
        tenant_id,
        reason,
    )
    return _endpoint(r) if r else None


async def signing_secrets(pool: asyncpg.Pool, endpoint_id: str) -> list[SecretRow]:
    """The secrets that sign now, newest first; expired ones are deleted on the way."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "DELETE FROM vault.webhook_secrets WHERE endpoint_id = $1 AND expires_at <= now()",
            endpoint_id,
        )
        rows = await conn.fetch(
            """SELECT * FROM vault.webhook_secrets WHERE endpoint_id = $1
               ORDER BY created_at DESC, secret_id""",
            endpoint_id,
        )
    return [_secret(r) for r in rows]


async def rotate(pool: asyncpg.Pool, new: SecretRow, grace: timedelta) -> None:
    """Every current secret of the endpoint expires after ``grace``; ``new`` becomes current."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            """UPDATE vault.webhook_secrets SET expires_at = now() + $2
               WHERE endpoint_id = $1 AND (expires_at IS NULL OR expires_at > now() + $2)""",
            new.endpoint_id,
            grace,
        )
        await _insert_secret(conn, new)


# --- master key rotation (``resguardo keys rewrap|retire``) -------------------------------------


@dataclass(frozen=True)
class WrappedSecretRow:
    endpoint_id: str
    secret_id: str
    tenant_id: str
    wrapped_key: bytes
    key_version: int

    @property
    def aad_id(self) -> str:
        return aad_id(self.endpoint_id, self.secret_id)


async def key_version_counts(pool: asyncpg.Pool) -> dict[int, int]:
    """How many webhook secrets' data keys each master key version wraps."""
    if not await pool.fetchval("SELECT to_regclass('vault.webhook_secrets') IS NOT NULL"):
        return {}
    records = await pool.fetch(
        "SELECT key_version, count(*) AS n FROM vault.webhook_secrets GROUP BY key_version"
    )
    return {int(r["key_version"]): int(r["n"]) for r in records}


async def wrapped_keys_not_at(
    pool: asyncpg.Pool, version: int, *, after: str = "", limit: int = 500
) -> list[WrappedSecretRow]:
    """The next rows (by endpoint and secret, after ``after`` = ``aad_id``) whose data key is not
    under ``version``: ids and wrapped keys only, never a ciphertext."""
    records = await pool.fetch(
        """SELECT s.endpoint_id, s.secret_id, w.tenant_id, s.wrapped_key, s.key_version
             FROM vault.webhook_secrets s JOIN vault.webhooks w USING (endpoint_id)
            WHERE s.key_version <> $1 AND s.endpoint_id || '/' || s.secret_id > $2
            ORDER BY s.endpoint_id || '/' || s.secret_id
            LIMIT $3""",
        version,
        after,
        limit,
    )
    return [
        WrappedSecretRow(
            endpoint_id=r["endpoint_id"],
            secret_id=r["secret_id"],
            tenant_id=r["tenant_id"],
            wrapped_key=bytes(r["wrapped_key"]),
            key_version=int(r["key_version"]),
        )
        for r in records
    ]


async def replace_wrapped_key(
    pool: asyncpg.Pool, row: WrappedSecretRow, wrapped_key: bytes, key_version: int
) -> bool:
    """Compare-and-swap, as for destinations: a concurrent removal or rewrap wins."""
    status = await pool.execute(
        """UPDATE vault.webhook_secrets SET wrapped_key = $1, key_version = $2
            WHERE endpoint_id = $3 AND secret_id = $4 AND key_version = $5
              AND wrapped_key = $6""",
        wrapped_key,
        key_version,
        row.endpoint_id,
        row.secret_id,
        row.key_version,
        row.wrapped_key,
    )
    return bool(status.endswith(" 1"))
