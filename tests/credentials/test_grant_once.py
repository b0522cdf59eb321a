"""One grant per job, enforced by the VAULT stream itself: a grant's audit event is the first
message on the job's own subject, and the stream stores it only while that subject is empty."""

from __future__ import annotations

import asyncio

from nats.js import JetStreamContext

from shared import natsio
from shared.events import now
from shared.events import vault as vault_events
from shared.ids import new_tenant_id

from .helpers import VaultClient, announced_job


async def _job(client: VaultClient, js: JetStreamContext) -> tuple[str, str, str, str]:
    tenant = new_tenant_id()
    created = await client.create(tenant, "once", "file", {"path": "/tmp/resguardo-once"})
    assert created.destination is not None, created.problem
    dest = created.destination.destination_id
    rid, job = await announced_job(js, tenant, dest)
    return tenant, dest, rid, job


async def _issued(js: JetStreamContext, rid: str) -> int:
    info = await js.stream_info(vault_events.STREAM.name, subjects_filter=f"vault.{rid}.>")
    subjects = info.state.subjects or {}
    return sum(n for s, n in subjects.items() if ".grant_issued." in s)


async def test_a_grant_older_than_the_dedup_window_still_blocks_a_second(
    client: VaultClient, js: JetStreamContext
) -> None:
    tenant, dest, rid, job = await _job(client, js)
    # As if the job had been granted longer ago than JetStream's duplicate window: its audit
    # event is on the job's subject under another message id, so only the subject check can
    # refuse the new request.
    await natsio.publish(
        js,
        vault_events.GrantIssued(
            event_id="granted-long-ago",
            recording_id=rid,
            tenant_id=tenant,
            occurred_at=now(),
            job_id=job,
            destination_id=dest,
            requester="uploader",
        ),
    )
    reply, grant = await client.grant(
        job_id=job, recording_id=rid, tenant_id=tenant, destination_id=dest
    )
    assert grant is None and reply.problem is not None and not reply.sealed
    assert reply.problem.status == 409 and "already granted" in reply.problem.message
    assert await _issued(js, rid) == 1


async def test_concurrent_requests_for_one_job_get_one_grant(
    client: VaultClient, js: JetStreamContext
) -> None:
    tenant, dest, rid, job = await _job(client, js)
    replies = await asyncio.gather(
        *(
            client.grant(job_id=job, recording_id=rid, tenant_id=tenant, destination_id=dest)
            for _ in range(8)
        )
    )
    granted = [grant for _, grant in replies if grant is not None]
    refused = [reply.problem for reply, grant in replies if grant is None]
    assert len(granted) == 1 and len(refused) == 7
    assert all(p is not None and p.status == 409 for p in refused)
    assert await _issued(js, rid) == 1
