"""The facts a grant is checked against: from memory when followed, from the log otherwise."""

from __future__ import annotations

import asyncio

from nats.js import JetStreamContext

from services.credentials.facts import Facts
from shared import natsio
from shared.events import recordings as rec_events
from shared.events import uploads as up_events
from shared.ids import new_destination_id, new_recording_id, new_tenant_id

from .helpers import publish_attempt, publish_resend, publish_started


async def _forget_log(js: JetStreamContext, rid: str) -> None:
    await js.purge_stream(rec_events.STREAM.name, subject=f"recordings.{rid}.>")
    await js.purge_stream(up_events.STREAM.name, subject=f"uploads.{rid}.>")


async def test_facts_from_before_the_vault_started_are_read_from_the_log(
    js: JetStreamContext,
) -> None:
    await natsio.ensure_streams(js)
    tenant, dest, other = new_tenant_id(), new_destination_id(), new_destination_id()
    rid = new_recording_id()
    await publish_started(js, rid, tenant, dest)
    await publish_attempt(js, rid, tenant, dest, f"{rid}:1")
    await publish_attempt(js, rid, tenant, dest, f"{rid}:2")
    await publish_resend(js, rid, tenant, other)
    facts = Facts(js)  # not following: nothing in memory

    started = await facts.started(rid)
    assert started is not None and started.destination_id == dest
    older = await facts.job(rid, f"{rid}:1")  # not the newest attempt: the whole history
    assert older is not None and older.job_id == f"{rid}:1"
    assert await facts.job(rid, f"{rid}:3") is None
    assert await facts.job(new_recording_id(), f"{rid}:1") is None  # another recording's job
    assert await facts.resend_to(rid, other) and not await facts.resend_to(rid, dest)
    assert await facts.started(new_recording_id()) is None


async def test_followed_facts_are_served_from_memory_within_its_bound(
    js: JetStreamContext,
) -> None:
    await natsio.ensure_streams(js)
    facts = Facts(js, capacity=2)
    await facts.follow()
    try:
        tenant, dest, other = new_tenant_id(), new_destination_id(), new_destination_id()
        rids = [new_recording_id() for _ in range(3)]
        for rid in rids:
            await publish_started(js, rid, tenant, dest)
            await publish_attempt(js, rid, tenant, dest, f"{rid}:1")
            await publish_resend(js, rid, tenant, other)
        newest = rids[-1]
        for _ in range(100):  # the copies arrive asynchronously
            if await facts.job(newest, f"{newest}:1") and await facts.resend_to(newest, other):
                break
            await asyncio.sleep(0.05)
        for rid in rids:
            await _forget_log(js, rid)
        # The log no longer has them: what answers now is the memory, which keeps two of each.
        for rid in rids[1:]:
            started = await facts.started(rid)
            assert started is not None and started.tenant_id == tenant
            job = await facts.job(rid, f"{rid}:1")
            assert isinstance(job, up_events.UploadAttemptStarted) and job.destination_id == dest
            assert await facts.resend_to(rid, other)
        assert await facts.started(rids[0]) is None
        assert await facts.job(rids[0], f"{rids[0]}:1") is None
    finally:
        await facts.stop()


async def test_known_facts_are_memory_only_and_never_another_recordings(
    js: JetStreamContext,
) -> None:
    """The grant's fast path (``known_*``): a copy in memory or None, never a read of the log,
    and a job id remembered for one recording is not taken for another's."""
    await natsio.ensure_streams(js)
    tenant, dest = new_tenant_id(), new_destination_id()
    rid = new_recording_id()
    await publish_started(js, rid, tenant, dest)
    await publish_attempt(js, rid, tenant, dest, f"{rid}:1")
    facts = Facts(js)  # not following: nothing in memory until a look-up reads the log
    assert facts.known_started(rid) is None and facts.known_job(rid, f"{rid}:1") is None
    assert await facts.started(rid) is not None and await facts.job(rid, f"{rid}:1") is not None
    started, job = facts.known_started(rid), facts.known_job(rid, f"{rid}:1")
    assert started is not None and started.destination_id == dest
    assert job is not None and job.job_id == f"{rid}:1"
    assert facts.known_job(new_recording_id(), f"{rid}:1") is None
