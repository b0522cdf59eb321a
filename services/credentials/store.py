"""PostgreSQL schema ``vault``: destinations (ciphertexts only). Grants live in the VAULT stream.

Every query names the tenant: a tenant can never read, list or delete another tenant's row.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from . import reckeys, webhook_store

log = logging.getLogger(__name__)

SCHEMA_LOCK = 0x7265737661756C74  # pg_advisory_xact_lock id: "resvault"
CHANGED_CHANNEL = "vault_destination_changed"  # NOTIFY payload: the destination id, nothing else

SCHEMA = f"""
CREATE SCHEMA IF NOT EXISTS vault;
CREATE TABLE IF NOT EXISTS vault.destinations (
    destination_id text PRIMARY KEY,
    tenant_id      text NOT NULL,
    name           text NOT NULL,
    provider       text NOT NULL,
    public_config  jsonb NOT NULL,
    secret_fields  text[] NOT NULL,
    ciphertext     bytea NOT NULL,
    wrapped_key    bytea NOT NULL,
    key_version    integer NOT NULL,
    fingerprint    text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, name)
);
-- Every update (key rewrap) or delete is announced, so caches of rows (rows.py) drop them.
CREATE OR REPLACE FUNCTION vault.destination_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{CHANGED_CHANNEL}', OLD.destination_id);
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS destination_changed ON vault.destinations;
CREATE TRIGGER destination_changed AFTER UPDATE OR DELETE ON vault.destinations
    FOR EACH ROW EXECUTE FUNCTION vault.destination_changed();
"""


@dataclass(frozen=True)
class DestinationRow:
    destination_id: str
    tenant_id: str
    name: str
    provider: str
    public_config: dict[str, Any]
    secret_fields: list[str]
    ciphertext: bytes
    wrapped_key: bytes
    key_version: int
    fingerprint: str
    created_at: datetime


class DuplicateName(Exception):
    pass


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def connect(url: str, *, attempts: int = 30, max_size: int = 5) -> asyncpg.Pool:
    """A pool to ``url``, retried while the database is still starting."""
    delay = 0.2
    for attempt in range(1, attempts + 1):
        try:
            pool = await asyncpg.create_pool(
                url,
                min_size=1,
                max_size=max_size,
                init=_init_connection,
            )
            assert pool is not None
            return pool
        except (OSError, asyncpg.PostgresError) as exc:
            if attempt == attempts:
                raise
            log.warning("database not reachable yet; retrying", extra={"error": type(exc).__name__})
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
    raise AssertionError("unreachable")


async def create_schema(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn, conn.transaction():
        # Two vaults starting at once would race on CREATE ... IF NOT EXISTS: serialise them.
        await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK)
        await conn.execute(SCHEMA)
        await conn.execute(reckeys.SCHEMA)
        await conn.execute(webhook_store.SCHEMA)


# Queries are spelled out in full (no string building): every value is a $n parameter.
_INSERT = """
    INSERT INTO vault.destinations
           (destination_id, tenant_id, name, provider, public_config, secret_fields, ciphertext,
            wrapped_key, key_version, fingerprint, created_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
    RETURNING destination_id, tenant_id, name, provider, public_config, secret_fields,
              ciphertext, wrapped_key, key_version, fingerprint, created_at"""
_LIST = """
    SELECT destination_id, tenant_id, name, provider, public_config, secret_fields, ciphertext,
           wrapped_key, key_version, fingerprint, created_at
      FROM vault.destinations WHERE tenant_id = $1 ORDER BY name"""
_GET = """
    SELECT destination_id, tenant_id, name, provider, public_config, secret_fields, ciphertext,
           wrapped_key, key_version, fingerprint, created_at
      FROM vault.destinations
     WHERE tenant_id = $1 AND ($2 = '' OR destination_id = $2) AND ($3 = '' OR name = $3)"""
_DELETE = """
    DELETE FROM vault.destinations
     WHERE tenant_id = $1 AND ($2 = '' OR destination_id = $2) AND ($3 = '' OR name = $3)
    RETURNING destination_id, tenant_id, name, provider, public_config, secret_fields,
              ciphertext, wrapped_key, key_version, fingerprint, created_at"""


def row_of(record: asyncpg.Record) -> DestinationRow:
    """A destination row as selected (``vault.destinations`` or ``vault.pending_destinations``)."""
    return DestinationRow(
        destination_id=record["destination_id"],
        tenant_id=record["tenant_id"],
        name=record["name"],
        provider=record["provider"],
        public_config=dict(record["public_config"]),
        secret_fields=list(record["secret_fields"]),
        ciphertext=bytes(record["ciphertext"]),
        wrapped_key=bytes(record["wrapped_key"]),
        key_version=record["key_version"],
        fingerprint=record["fingerprint"],
        created_at=record["created_at"],
    )


async def insert_destination(pool: asyncpg.Pool, row: DestinationRow) -> DestinationRow:
    try:
        record = await pool.fetchrow(
            _INSERT,
            row.destination_id,
            row.tenant_id,
            row.name,
            row.provider,
            row.public_config,
            row.secret_fields,
            row.ciphertext,
            row.wrapped_key,
            row.key_version,
            row.fingerprint,
            row.created_at,
        )
    except asyncpg.UniqueViolationError:
        raise DuplicateName from None
    assert record is not None
    return row_of(record)


async def list_destinations(pool: asyncpg.Pool, tenant_id: str) -> list[DestinationRow]:
    records = await pool.fetch(
        _LIST,
        tenant_id,
    )
    return [row_of(r) for r in records]


async def get_destination(
    pool: asyncpg.Pool, tenant_id: str, *, destination_id: str = "", name: str = ""
) -> DestinationRow | None:
    record = await pool.fetchrow(
        _GET,
        tenant_id,
        destination_id,
        name,
    )
    return row_of(record) if record else None


async def delete_destination(
    pool: asyncpg.Pool, tenant_id: str, *, destination_id: str = "", name: str = ""
) -> DestinationRow | None:
    """Delete the row, wrapped data key included (crypto-shredding); the deleted row or None."""
    record = await pool.fetchrow(
        _DELETE,
        tenant_id,
        destination_id,
        name,
    )
    return row_of(record) if record else None


# --- key management (``resguardo keys``) -------------------------------------------------------


@dataclass(frozen=True)
class WrappedKeyRow:
    destination_id: str
    tenant_id: str
    wrapped_key: bytes
    key_version: int


async def schema_exists(pool: asyncpg.Pool) -> bool:
    return bool(await pool.fetchval("SELECT to_regclass('vault.destinations') IS NOT NULL"))


async def key_version_counts(pool: asyncpg.Pool) -> dict[int, int]:
    """How many destinations' data keys each master key version wraps."""
    records = await pool.fetch(
        "SELECT key_version, count(*) AS n FROM vault.destinations GROUP BY key_version"
    )
    return {int(r["key_version"]): int(r["n"]) for r in records}


async def wrapped_keys_not_at(
    pool: asyncpg.Pool, version: int, *, after: str = "", limit: int = 500
) -> list[WrappedKeyRow]:
    """The next ``limit`` rows (by id, after ``after``) whose data key is not wrapped under
    ``version``: only ids and wrapped keys, never a ciphertext."""
    records = await pool.fetch(
        """SELECT destination_id, tenant_id, wrapped_key, key_version
             FROM vault.destinations
            WHERE key_version <> $1 AND destination_id > $2
            ORDER BY destination_id
            LIMIT $3""",
        version,
        after,
        limit,
    )
    return [
        WrappedKeyRow(
            destination_id=r["destination_id"],
            tenant_id=r["tenant_id"],
            wrapped_key=bytes(r["wrapped_key"]),
            key_version=int(r["key_version"]),
        )
        for r in records
    ]


async def replace_wrapped_key(
    pool: asyncpg.Pool, row: WrappedKeyRow, wrapped_key: bytes, key_version: int
) -> bool:
    """Compare-and-swap: store the re-wrapped key only if the row still holds the one that was
    re-wrapped (a concurrent delete or rewrap wins; the row is then left as it is)."""
    status = await pool.execute(
        """UPDATE vault.destinations SET wrapped_key = $1, key_version = $2
            WHERE destination_id = $3 AND key_version = $4 AND wrapped_key = $5""",
        wrapped_key,
        key_version,
        row.destination_id,
        row.key_version,
        row.wrapped_key,
    )
    return bool(status == "UPDATE 1")
