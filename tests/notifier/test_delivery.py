"""Webhook deliveries end to end: the vault, the notifier as a process, a real HTTP receiver that
verifies every signature with the Standard Webhooks reference library."""

from __future__ import annotations

import asyncio

import pytest

from shared.events import webhooks as wh
from shared.ids import new_recording_id, new_tenant_id
from tests.credentials.helpers import publish_resend, publish_started

from .conftest import System
from .support import (
    Receiver,
    create_endpoint,
    eventually,
    publish_upload_events,
    webhook_events,
)

LIFECYCLE = [
    "recording.started",
    "recording.failed",
    "recording.uploaded",
    "backup.purged",
]
DEST = "dst_0123456789abcdef"


async def test_a_lifecycle_arrives_in_order_each_verified(system: System) -> None:
    tenant = new_tenant_id()
    receiver = await Receiver([]).start()
    try:
        endpoint, secret = await create_endpoint(system.nc, system.vault_key, tenant, receiver.url)
        receiver.secrets = [secret]
        # Two recordings' whole lifecycles are in the streams before the notifier starts: its
        # three fan-out consumers then race, and order must hold all the same.
        first, second = new_recording_id(), new_recording_id()
        for rid in (first, second):
            await publish_started(system.js, rid, tenant, DEST, label="weekly call")
            await publish_upload_events(system.js, rid, tenant, DEST)
        other_tenant = new_tenant_id()  # has no endpoint: hears nothing, and we hear nothing
        await publish_started(system.js, new_recording_id(), other_tenant, DEST)
        system.notifier()
        await eventually(lambda: len(receiver.received) >= 8, 60, f"8 deliveries\n{system.logs()}")
        await asyncio.sleep(1.0)  # nothing more may come
        assert receiver.refused == []
        assert receiver.types(first) == LIFECYCLE
        assert receiver.types(second) == LIFECYCLE
        assert len(receiver.received) == 8
        assert len({r.webhook_id for r in receiver.received}) == 8
        uploaded = next(r for r in receiver.received if r.type == "recording.uploaded")
        data = uploaded.data
        assert data["recording_id"] in (first, second) and data["tenant_id"] == tenant
        assert [f["name"] for f in data["files"]] == ["alice.webm", "manifest.json"]
        assert data["files"][0] == {
            "name": "alice.webm",
            "size": 1234,
            "sha256": "ab" * 32,
            "checksum_algorithm": "CRC32",
            "checksum": "AAAAAA==",
            "uri": "s3://bucket/rec/alice.webm",
        }
        assert data["manifest"]["name"] == "manifest.json"
        started = next(r for r in receiver.received if r.type == "recording.started")
        assert started.data["label"] == "weekly call"
        # The log says the same: each delivery queued, attempted once, delivered.
        events = await webhook_events(system.js, first)
        delivered = [e for e in events if isinstance(e, wh.DeliveryDelivered)]
        assert len(delivered) == 4 and all(e.attempts == 1 for e in delivered)
        assert all(e.endpoint_id == endpoint.endpoint_id for e in events)
    finally:
        await receiver.stop()


async def test_receiver_down_then_back_gets_everything_once_per_id(system: System) -> None:
    tenant = new_tenant_id()
    receiver = Receiver([])  # not listening yet: connections are refused
    _, secret = await create_endpoint(system.nc, system.vault_key, tenant, receiver.url)
    receiver.secrets = [secret]
    system.notifier()
    rid = new_recording_id()
    await publish_started(system.js, rid, tenant, DEST)
    await publish_upload_events(system.js, rid, tenant, DEST)
    await publish_resend(system.js, rid, tenant, DEST, name="other")

    async def refused_attempts() -> int:
        return sum(
            1
            for e in await webhook_events(system.js, rid)
            if isinstance(e, wh.DeliveryAttempted) and e.status == 0
        )

    await eventually(refused_attempts, 30, f"failed attempts\n{system.logs()}")
    await asyncio.sleep(2.0)  # down for a while: several retries fail
    await receiver.start()
    try:
        await eventually(lambda: len(receiver.received) >= 5, 60, "5 deliveries")
        await asyncio.sleep(1.0)
        ids = {}
        for r in receiver.received:
            ids.setdefault(r.webhook_id, set()).add(r.body)
        assert all(len(bodies) == 1 for bodies in ids.values())  # a repeat is the same delivery
        assert sorted(r.type for r in receiver.received) == sorted([*LIFECYCLE, "recording.resent"])
        assert len(ids) == 5
        assert receiver.types(rid)[0] == "recording.started"
        assert await refused_attempts() >= 2
    finally:
        await receiver.stop()


async def test_500_then_200_is_delivered_on_the_second_attempt(system: System) -> None:
    tenant = new_tenant_id()

    async def flaky(n: int) -> int:
        return 500 if n == 1 else 200

    receiver = await Receiver([], flaky).start()
    try:
        _, secret = await create_endpoint(
            system.nc, system.vault_key, tenant, receiver.url, ["recording.started"]
        )
        receiver.secrets = [secret]
        system.notifier()
        rid = new_recording_id()
        await publish_started(system.js, rid, tenant, DEST)
        await publish_upload_events(system.js, rid, tenant, DEST)  # not subscribed to these
        await eventually(lambda: receiver.received, 30, "a delivery")
        await asyncio.sleep(1.0)
        assert receiver.types(rid) == ["recording.started"]
        events = await webhook_events(system.js, rid)
        attempts = [e for e in events if isinstance(e, wh.DeliveryAttempted)]
        assert [(a.attempt, a.status) for a in attempts] == [(1, 500), (2, 200)]
        assert attempts[0].next_attempt_at is not None and attempts[0].error == "HTTP 500"
        assert len({a.webhook_id for a in attempts}) == 1
    finally:
        await receiver.stop()


async def test_a_receiver_slower_than_the_timeout_is_retried(system: System) -> None:
    tenant = new_tenant_id()

    async def slow_first(n: int) -> int:
        if n == 1:
            await asyncio.sleep(4)  # the notifier's timeout is 2 s
        return 204

    receiver = await Receiver([], slow_first).start()
    try:
        _, secret = await create_endpoint(
            system.nc, system.vault_key, tenant, receiver.url, ["recording.started"]
        )
        receiver.secrets = [secret]
        system.notifier()
        rid = new_recording_id()
        await publish_started(system.js, rid, tenant, DEST)

        async def delivered() -> list[wh.DeliveryDelivered]:
            return [
                e
                for e in await webhook_events(system.js, rid)
                if isinstance(e, wh.DeliveryDelivered)
            ]

        done = await eventually(delivered, 30, f"delivered\n{system.logs()}")
        assert done[0].attempts == 2 and done[0].status == 204
        attempts = [
            e for e in await webhook_events(system.js, rid) if isinstance(e, wh.DeliveryAttempted)
        ]
        assert attempts[0].status == 0
        assert attempts[0].error == "the receiver did not answer in time"
        assert 1500 <= attempts[0].latency_ms < 4000
    finally:
        await receiver.stop()


@pytest.mark.parametrize("status", [410])
async def test_410_gone_disables_the_endpoint(system: System, status: int) -> None:
    from .support import endpoint_view

    tenant = new_tenant_id()

    async def gone(n: int) -> int:
        return status

    receiver = await Receiver([], gone).start()
    try:
        endpoint, secret = await create_endpoint(system.nc, system.vault_key, tenant, receiver.url)
        receiver.secrets = [secret]
        system.notifier()
        rid = new_recording_id()
        await publish_started(system.js, rid, tenant, DEST)

        async def disabled() -> bool:
            return not (await endpoint_view(system.nc, endpoint)).enabled

        await eventually(disabled, 30, f"the endpoint disabled\n{system.logs()}")
        view = await endpoint_view(system.nc, endpoint)
        assert "410" in view.disabled_reason
        events = await webhook_events(system.js, rid)
        assert any(isinstance(e, wh.EndpointDisabled) for e in events)
        gave_up = [e for e in events if isinstance(e, wh.DeliveryGaveUp)]
        assert len(gave_up) == 1 and "410" in gave_up[0].reason
        # A disabled endpoint is sent nothing more.
        await publish_upload_events(system.js, rid, tenant, DEST)
        await asyncio.sleep(2.0)
        assert receiver.requests == 1
    finally:
        await receiver.stop()
