"""Deliveries when things go wrong: a receiver that never succeeds, a notifier killed mid-request,
a slow tenant next to a fast one, a secret rotated mid-stream, targets the guard refuses."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from shared import natsio
from shared.events import event_id, recordings
from shared.events import webhooks as wh
from shared.ids import new_recording_id, new_tenant_id
from tests.credentials.helpers import publish_started

from .conftest import System
from .support import (
    Receiver,
    create_endpoint,
    eventually,
    rotate_secret,
    webhook_events,
)

DEST = "dst_0123456789abcdef"


async def _of_type(system: System, rid: str, kind: type) -> list:
    return [e for e in await webhook_events(system.js, rid) if isinstance(e, kind)]


async def test_never_succeeds_gives_up_then_redeliver_sends_it(system: System) -> None:
    tenant = new_tenant_id()
    failing = True

    async def behaviour(n: int) -> int:
        return 500 if failing else 200

    receiver = await Receiver([], behaviour).start()
    try:
        endpoint, secret = await create_endpoint(system.nc, system.vault_key, tenant, receiver.url)
        receiver.secrets = [secret]
        system.notifier(webhook_give_up_after_s="3")
        rid = new_recording_id()
        await publish_started(system.js, rid, tenant, DEST)
        gave_up = await eventually(
            lambda: _of_type(system, rid, wh.DeliveryGaveUp), 30, f"gave up\n{system.logs()}"
        )
        attempts = await _of_type(system, rid, wh.DeliveryAttempted)
        assert len(attempts) >= 2 and all(a.status == 500 for a in attempts)
        assert attempts[-1].next_attempt_at is None
        assert gave_up[0].attempts == len(attempts)
        assert "last: HTTP 500" in gave_up[0].reason
        # Asked for again (what `webhooks redeliver` publishes through the API), it is sent with
        # the same webhook-id and body, and a fresh retry window.
        failing = False
        queued = (await _of_type(system, rid, wh.DeliveryQueued))[0]
        await natsio.publish(
            system.js,
            recordings.WebhookRedeliveryRequested(
                event_id=event_id(rid, "redeliver", "req-1"),
                recording_id=rid,
                tenant_id=tenant,
                occurred_at=datetime.now(UTC),
                request_id="req-1",
                delivery_id=queued.event_id,
                endpoint_id=endpoint.endpoint_id,
            ),
        )
        await eventually(lambda: receiver.received, 30, "the redelivery")
        again = receiver.received[0]
        assert again.webhook_id == queued.webhook_id
        assert again.body == queued.body.encode()
        queued_now = await _of_type(system, rid, wh.DeliveryQueued)
        assert [q.redelivery_of for q in queued_now] == ["", queued.event_id]
    finally:
        await receiver.stop()


async def test_killed_mid_delivery_delivers_after_restart_with_the_same_id(
    system: System,
) -> None:
    tenant = new_tenant_id()
    in_request = asyncio.Event()

    async def hang_first(n: int) -> int:
        if n == 1:
            in_request.set()
            await asyncio.sleep(30)  # the notifier dies while we hold its request
        return 200

    receiver = await Receiver([], hang_first).start()
    try:
        _, secret = await create_endpoint(system.nc, system.vault_key, tenant, receiver.url)
        receiver.secrets = [secret]
        first = system.notifier(webhook_timeout_s="60")
        rid = new_recording_id()
        await publish_started(system.js, rid, tenant, DEST)
        await asyncio.wait_for(in_request.wait(), 30)
        first.kill()  # kill -9 mid-delivery
        system.notifier("notifier-2")
        await eventually(lambda: receiver.received, 30, f"the delivery\n{system.logs()}")
        queued = (await _of_type(system, rid, wh.DeliveryQueued))[0]
        assert receiver.received[0].webhook_id == queued.webhook_id
        assert receiver.requests == 2  # the hung one, then the one after the restart
        delivered = await _of_type(system, rid, wh.DeliveryDelivered)
        assert len(delivered) == 1
    finally:
        await receiver.stop()


async def test_a_slow_receiver_does_not_delay_another_tenant(system: System) -> None:
    slow_tenant, fast_tenant = new_tenant_id(), new_tenant_id()

    async def slow(n: int) -> int:
        await asyncio.sleep(5)  # beyond the notifier's 2 s timeout: every attempt fails late
        return 200

    slow_receiver = await Receiver([], slow).start()
    fast_receiver = await Receiver([]).start()
    try:
        _, slow_secret = await create_endpoint(
            system.nc, system.vault_key, slow_tenant, slow_receiver.url
        )
        _, fast_secret = await create_endpoint(
            system.nc, system.vault_key, fast_tenant, fast_receiver.url
        )
        slow_receiver.secrets, fast_receiver.secrets = [slow_secret], [fast_secret]
        # Few slots, so a slow receiver that could take them all would show.
        system.notifier(webhook_concurrency="4", webhook_endpoint_concurrency="2")
        for _ in range(12):  # twelve recordings of the slow tenant first
            await publish_started(system.js, new_recording_id(), slow_tenant, DEST)
        await eventually(lambda: slow_receiver.requests >= 2, 30, "the slow receiver busy")
        sent = time.monotonic()
        await publish_started(system.js, new_recording_id(), fast_tenant, DEST)
        await eventually(lambda: fast_receiver.received, 30, "the fast tenant's delivery")
        # Delivered while the slow receiver's first attempts still hang (they time out at 2 s).
        assert fast_receiver.received[0].at - sent < 2.0
    finally:
        await slow_receiver.stop()
        await fast_receiver.stop()


async def test_a_secret_rotation_fails_no_verification(system: System) -> None:
    tenant = new_tenant_id()
    receiver = await Receiver([]).start()
    try:
        endpoint, old = await create_endpoint(system.nc, system.vault_key, tenant, receiver.url)
        receiver.secrets = [old]  # it holds the old secret only, until it sees the new one
        system.notifier(webhook_secret_ttl_s="1")
        for _ in range(3):
            await publish_started(system.js, new_recording_id(), tenant, DEST)
        await eventually(lambda: len(receiver.received) >= 3, 30, "3 deliveries")
        new = await rotate_secret(system.nc, system.vault_key, endpoint)
        receiver.secrets = [old, new]  # the receiver takes the new one on, keeps the old
        deadline = time.monotonic() + 30
        while not any(r.signatures == 2 for r in receiver.received):
            assert time.monotonic() < deadline, f"never signed with both\n{system.logs()}"
            await publish_started(system.js, new_recording_id(), tenant, DEST)
            await asyncio.sleep(0.3)
        receiver.secrets = [new]  # switched: the old secret is gone from the receiver
        before = len(receiver.received)
        for _ in range(3):
            await publish_started(system.js, new_recording_id(), tenant, DEST)
        await eventually(lambda: len(receiver.received) >= before + 3, 30, "3 more")
        assert receiver.refused == []
    finally:
        await receiver.stop()


async def test_the_guard_refuses_private_and_metadata_targets_at_delivery(
    system: System,
) -> None:
    """Registered around the API's check (straight to the vault), a loopback URL still reaches
    nothing: the notifier checks the address it connects to."""
    tenant = new_tenant_id()
    receiver = await Receiver([]).start()
    try:
        loopback_url = f"https://127.0.0.1:{receiver.port}/hooks"
        _, secret = await create_endpoint(system.nc, system.vault_key, tenant, loopback_url)
        receiver.secrets = [secret]
        metadata_tenant = new_tenant_id()
        await create_endpoint(
            system.nc, system.vault_key, metadata_tenant, "https://169.254.169.254/latest/"
        )
        system.notifier(webhook_allow_private="false", webhook_give_up_after_s="2")
        rid, meta_rid = new_recording_id(), new_recording_id()
        await publish_started(system.js, rid, tenant, DEST)
        await publish_started(system.js, meta_rid, metadata_tenant, DEST)
        for r in (rid, meta_rid):
            await eventually(
                lambda r=r: _of_type(system, r, wh.DeliveryGaveUp), 30, f"gave up\n{system.logs()}"
            )
        loopback = (await _of_type(system, rid, wh.DeliveryAttempted))[0]
        metadata = (await _of_type(system, meta_rid, wh.DeliveryAttempted))[0]
        assert loopback.status == 0 and "refused by the webhook target rules" in loopback.error
        assert "127.0.0.1 is a loopback address" in loopback.error
        assert metadata.status == 0 and "refused by the webhook target rules" in metadata.error
        assert "a cloud metadata service address" in metadata.error
        assert receiver.requests == 0
    finally:
        await receiver.stop()
