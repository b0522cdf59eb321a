"""``natsio.publish`` against a real nats-server: a first-on-subject publish whose ack is lost
is recognised as stored by its retry, and a subject held by another message is refused."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
from nats.js import JetStreamContext

from shared import natsio
from shared.embedded import NatsServer
from shared.events import event_id, now
from shared.events import vault as vault_events
from shared.ids import new_recording_id, new_tenant_id


def grant_issued(rid: str, tenant: str, nonce: str) -> vault_events.GrantIssued:
    return vault_events.GrantIssued(
        event_id=event_id(rid, "grant_issued", nonce),
        recording_id=rid,
        tenant_id=tenant,
        occurred_at=now(),
        job_id=f"{rid}:sealed:1",
        destination_id="dst_test",
        requester="uploader",
    )


async def test_first_on_subject_publish_whose_ack_was_lost_is_ours_on_retry(
    js: JetStreamContext, nats_server: NatsServer
) -> None:
    rid, tenant = new_recording_id(), new_tenant_id()
    event = grant_issued(rid, tenant, "first")
    assert nats_server.proc is not None
    pid = nats_server.proc.pid
    # The server is frozen while the publish goes out: the first try times out unanswered
    # (2 s), and is stored when the server wakes, before the retry reaches it.
    os.kill(pid, signal.SIGSTOP)
    try:
        task = asyncio.create_task(natsio.publish(js, event, first_on_subject=True))
        await asyncio.sleep(2.5)
    finally:
        os.kill(pid, signal.SIGCONT)
    ack = await task
    stored = await natsio.read_subject(js, vault_events.STREAM, f"vault.{rid}.grant_issued.>")
    assert [e for _, e in stored] == [event]
    assert ack.seq == stored[0][0]

    # Another message for the same subject is refused by the stream itself.
    with pytest.raises(natsio.SubjectTaken):
        await natsio.publish(js, grant_issued(rid, tenant, "second"), first_on_subject=True)
