"""Recording data keys at rest: one random 32-byte key per recording, stored only wrapped.

    master key[v] -HKDF-> wrap key --A256CBC-HS512-->  wrapped data key   (row, with v)

The data key encrypts every byte of the recording's backup (``shared.chunkcrypt``); it never
leaves the vault but sealed to one job's fresh key (``recording_keys.py``). The wrap AAD binds the
row (tenant id, recording id, key version), so a wrapped key copied into another row does not
open. Deleting the row is crypto-shredding: every copy of the backup, wherever it survives (a
replica, a snapshot, a stolen disk), is unreadable from then on. ``resguardo keys rewrap``
re-wraps these rows like destinations' (only the wrapped key is read); ``retire`` counts them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg

from shared.chunkcrypt import KEY_SIZE

from . import aead
from .crypto import FORMAT, UnknownKeyVersion
from .keys import MasterKeys

SCHEMA = """
CREATE TABLE IF NOT EXISTS vault.recording_keys (
    recording_id text PRIMARY KEY,
    tenant_id    text NOT NULL,
    wrapped_key  bytea NOT NULL,
    key_version  integer NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
"""


def wrap_aad(tenant_id: str, recording_id: str, key_version: int) -> bytes:
    return (
        f"resguardo-vault-recording-key\x00{FORMAT}\x00{tenant_id}\x00{recording_id}"
        f"\x00{key_version}"
    ).encode()


@dataclass(frozen=True)
class RecordingKeyRow:
    recording_id: str
    tenant_id: str
    wrapped_key: bytes
    key_version: int


def new_wrapped_key(keys: MasterKeys, tenant_id: str, recording_id: str) -> RecordingKeyRow:
    """A fresh random data key, wrapped under the newest master key version (the plaintext key is
    wiped before this returns: it is unwrapped again when first issued)."""
    version = keys.newest
    data_key = bytearray(os.urandom(KEY_SIZE))
    try:
        wrapped = aead.encrypt(
            keys.wrap_key(version), data_key, wrap_aad(tenant_id, recording_id, version)
        )
    finally:
        aead.wipe(data_key)
    return RecordingKeyRow(recording_id, tenant_id, wrapped, version)


def unwrap(keys: MasterKeys, row: RecordingKeyRow) -> bytearray:
    """The data key, in a buffer the caller must wipe. ``aead.AeadError`` if the row was altered
    (or moved to another recording or tenant); ``UnknownKeyVersion`` if its version is gone."""
    if not keys.has(row.key_version):
        raise UnknownKeyVersion(row.key_version)
    return aead.decrypt(
        keys.wrap_key(row.key_version),
        row.wrapped_key,
        wrap_aad(row.tenant_id, row.recording_id, row.key_version),
    )


def rewrap(keys: MasterKeys, row: RecordingKeyRow, new_version: int) -> bytes:
    """The row's data key wrapped under ``new_version``; the unwrapped key is wiped at once."""
    if not keys.has(new_version):
        raise UnknownKeyVersion(new_version)
    data_key = unwrap(keys, row)
    try:
        return aead.encrypt(
            keys.wrap_key(new_version),
            data_key,
            wrap_aad(row.tenant_id, row.recording_id, new_version),
        )
    finally:
        aead.wipe(data_key)


# --- the table ---------------------------------------------------------------------------------


def _row(record: asyncpg.Record) -> RecordingKeyRow:
    return RecordingKeyRow(
        recording_id=record["recording_id"],
        tenant_id=record["tenant_id"],
        wrapped_key=bytes(record["wrapped_key"]),
        key_version=int(record["key_version"]),
    )


_SELECT = """SELECT recording_id, tenant_id, wrapped_key, key_version
               FROM vault.recording_keys WHERE recording_id = $1"""


async def get_or_insert(
    pool: asyncpg.Pool, recording_id: str, make: Callable[[], RecordingKeyRow]
) -> tuple[RecordingKeyRow, bool]:
    """The recording's stored row, or ``make()``'s stored as it: (row, whether it was made here).
    A new key is drawn and wrapped only for a recording that has none. Two vaults racing on the
    first request store one key: the primary key decides, and the loser reads the winner's row."""
    async with pool.acquire() as conn:
        record = await conn.fetchrow(_SELECT, recording_id)
        if record is not None:
            return _row(record), False
        fresh = make()
        inserted = await conn.fetchrow(
            """INSERT INTO vault.recording_keys (recording_id, tenant_id, wrapped_key, key_version)
               VALUES ($1, $2, $3, $4)
               ON CONFLICT (recording_id) DO NOTHING
               RETURNING recording_id, tenant_id, wrapped_key, key_version""",
            fresh.recording_id,
            fresh.tenant_id,
            fresh.wrapped_key,
            fresh.key_version,
        )
        if inserted is not None:
            return _row(inserted), True
        record = await conn.fetchrow(_SELECT, recording_id)
    if record is None:  # another vault's insert won and was shredded meanwhile
        raise LookupError(recording_id)
    return _row(record), False


async def delete(pool: asyncpg.Pool, recording_id: str) -> bool:
    """Destroy the recording's wrapped key; whether there was one."""
    status = await pool.execute(
        "DELETE FROM vault.recording_keys WHERE recording_id = $1", recording_id
    )
    return bool(status == "DELETE 1")


async def table_exists(pool: asyncpg.Pool) -> bool:
    return bool(await pool.fetchval("SELECT to_regclass('vault.recording_keys') IS NOT NULL"))


async def key_version_counts(pool: asyncpg.Pool) -> dict[int, int]:
    if not await table_exists(pool):
        return {}
    records = await pool.fetch(
        "SELECT key_version, count(*) AS n FROM vault.recording_keys GROUP BY key_version"
    )
    return {int(r["key_version"]): int(r["n"]) for r in records}


async def rows_not_at(
    pool: asyncpg.Pool, version: int, *, after: str = "", limit: int = 500
) -> list[RecordingKeyRow]:
    records = await pool.fetch(
        """SELECT recording_id, tenant_id, wrapped_key, key_version
             FROM vault.recording_keys
            WHERE key_version <> $1 AND recording_id > $2
            ORDER BY recording_id
            LIMIT $3""",
        version,
        after,
        limit,
    )
    return [_row(r) for r in records]


async def replace_wrapped_key(
    pool: asyncpg.Pool, row: RecordingKeyRow, wrapped_key: bytes, key_version: int
) -> bool:
    """Compare-and-swap, as for destinations: a concurrent shred or rewrap wins."""
    status = await pool.execute(
        """UPDATE vault.recording_keys SET wrapped_key = $1, key_version = $2
            WHERE recording_id = $3 AND key_version = $4 AND wrapped_key = $5""",
        wrapped_key,
        key_version,
        row.recording_id,
        row.key_version,
        row.wrapped_key,
    )
    return bool(status == "UPDATE 1")
