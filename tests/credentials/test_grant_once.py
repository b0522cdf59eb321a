"""One grant per job even when the database forgets: grant records are committed without
waiting for fsync, and the audit event's JetStream message id (the job's) is the backstop."""

from __future__ import annotations

import asyncpg
from nats.js import JetStreamContext

from shared.ids import new_recording_id, new_tenant_id

from .helpers import VaultClient, publish_attempt, publish_started


async def test_a_forgotten_grant_record_is_still_refused(
    client: VaultClient, js: JetStreamContext, database_url: str
) -> None:
    tenant = new_tenant_id()
    created = await client.create(tenant, "once", "file", {"path": "/tmp/resguardo-once"})
    assert created.destination is not None, created.problem
    dest = created.destination.destination_id
    rid = new_recording_id()
    job = f"{rid}:1"
    await publish_started(js, rid, tenant, dest)
    await publish_attempt(js, rid, tenant, dest, job)
    first, grant = await client.grant(
        job_id=job, recording_id=rid, tenant_id=tenant, destination_id=dest
    )
    assert grant is not None, first.problem

    # As if a database crash lost the (asynchronously committed) record of that grant.
    conn = await asyncpg.connect(database_url)
    try:
        assert await conn.execute("DELETE FROM vault.grants WHERE job_id = $1", job) == "DELETE 1"
    finally:
        await conn.close()
    again, grant = await client.grant(
        job_id=job, recording_id=rid, tenant_id=tenant, destination_id=dest
    )
    assert grant is None and again.problem is not None and not again.sealed
    assert again.problem.status == 409 and "already granted" in again.problem.message
