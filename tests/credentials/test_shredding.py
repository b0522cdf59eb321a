"""Crypto-shredding: deleting a destination destroys its data key, so surviving copies of its
ciphertext no longer open in the vault; rotating, rewrapping and retiring the master key does the
same for whole-row backups taken before the rewrap."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from nats.js import JetStreamContext

from services.credentials import admin
from shared.ids import new_recording_id, new_tenant_id
from shared.vault_rpc import GrantReply

from .helpers import VaultClient, publish_attempt, publish_started

CANARY = "CANARY-shred-71c0d2e4"


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    assert p is not None
    yield p
    await p.close()


async def create(client: VaultClient, tenant: str, name: str) -> str:
    reply = await client.create(
        tenant,
        name,
        "s3",
        {"bucket": "b-" + name, "access_key_id": "AKIDSHRED", "secret_access_key": CANARY},
    )
    assert reply.destination is not None, reply.problem
    return reply.destination.destination_id


async def saved_row(pool: asyncpg.Pool, dest: str) -> dict[str, Any]:
    record = await pool.fetchrow("SELECT * FROM vault.destinations WHERE destination_id = $1", dest)
    assert record is not None
    return dict(record)


async def restore(pool: asyncpg.Pool, row: dict[str, Any], **override: Any) -> None:
    """Put a (possibly partial) copy of a deleted row back, as a restored backup would."""
    values = {**row, **override}
    columns = list(values)
    placeholders = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
    await pool.execute(
        f"INSERT INTO vault.destinations ({', '.join(columns)}) VALUES ({placeholders})",
        *[values[c] for c in columns],
    )


async def ask(
    client: VaultClient, js: JetStreamContext, tenant: str, dest: str
) -> tuple[GrantReply, Any]:
    """A genuine upload job for ``dest`` and the vault's answer to its grant request."""
    rid = new_recording_id()
    await publish_started(js, rid, tenant, dest)
    await publish_attempt(js, rid, tenant, dest, f"{rid}:1")
    return await client.grant(
        job_id=f"{rid}:1", recording_id=rid, tenant_id=tenant, destination_id=dest
    )


async def test_a_deleted_destinations_ciphertext_no_longer_decrypts(
    client: VaultClient, js: JetStreamContext, pool: asyncpg.Pool
) -> None:
    tenant = new_tenant_id()
    doomed = await create(client, tenant, "doomed")
    survivor = await create(client, tenant, "survivor")
    copy = await saved_row(pool, doomed)  # e.g. a dump of the ciphertext column, a backup
    reply, grant = await ask(client, js, tenant, doomed)
    assert grant is not None and grant.secret["secret_access_key"] == CANARY  # it did open

    deleted = await client.delete(tenant, name="doomed")
    assert deleted.destination is not None
    everything = "\n".join(
        r["t"] for r in await pool.fetch("SELECT t::text AS t FROM vault.destinations t")
    )
    assert copy["wrapped_key"].hex() not in everything  # the data key is gone from the vault

    # The saved ciphertext, put back under its own id and tenant: the only data keys left are
    # other destinations', and none of them opens it.
    other = await saved_row(pool, survivor)
    await restore(
        pool,
        copy,
        wrapped_key=other["wrapped_key"],
        key_version=other["key_version"],
        name="restored",
    )
    reply, grant = await ask(client, js, tenant, doomed)
    assert grant is None and reply.problem is not None
    assert reply.problem.status == 500 and "could not be decrypted" in reply.problem.message
    assert CANARY not in reply.problem.message


async def test_retiring_the_master_key_shreds_whole_row_backups(
    client: VaultClient, js: JetStreamContext, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    source = admin.KeySource(
        env_value="", key_file=tmp_path / "vault-data" / "keys" / "master.keys"
    )
    tenant = new_tenant_id()
    doomed = await create(client, tenant, "doomed")
    await create(client, tenant, "kept")
    backup = await saved_row(pool, doomed)  # the whole row: ciphertext and wrapped key
    assert (await client.delete(tenant, name="doomed")).destination is not None

    # Honest limit: while master key version 1 exists, a whole-row backup still opens.
    await restore(pool, backup)
    reply, grant = await ask(client, js, tenant, doomed)
    assert grant is not None, reply.problem
    assert (await client.delete(tenant, name="doomed")).destination is not None

    # Rotate, rewrap what is still live, retire version 1: the backup is now unreadable.
    admin.rotate(source)
    assert (await admin.rewrap(pool, source.load())).ok
    await admin.retire(pool, source, 1)
    await restore(pool, backup)
    reply, grant = await ask(client, js, tenant, doomed)
    assert grant is None and reply.problem is not None
    assert reply.problem.status == 500
    assert "master key version is not configured" in reply.problem.message
    # The live destination still works.
    kept = (await client.get(tenant, name="kept")).destination
    assert kept is not None
    reply, grant = await ask(client, js, tenant, kept.destination_id)
    assert grant is not None, reply.problem
