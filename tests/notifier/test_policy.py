"""The notifier's pure parts: what each event's body says, and the retry and order decisions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from services.notifier import policy
from shared import webhook_bodies as bodies
from shared.events import recordings, uploads
from shared.events import webhooks as wh

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
RID, TENANT, ENDPOINT = "rec_" + "0" * 24, "ten_" + "0" * 16, "wh_" + "0" * 16


def queued(n: int, at: datetime = T0) -> wh.DeliveryQueued:
    return wh.DeliveryQueued(
        event_id=f"d{n}",
        recording_id=RID,
        tenant_id=TENANT,
        occurred_at=at,
        endpoint_id=ENDPOINT,
        webhook_id=f"msg_{n}",
        webhook_type="recording.started",
        source_event_id=f"s{n}",
        body="{}",
    )


def attempted(n: int, attempt: int, status: int, next_at: datetime | None) -> wh.DeliveryAttempted:
    return wh.DeliveryAttempted(
        event_id=f"a{n}-{attempt}",
        recording_id=RID,
        tenant_id=TENANT,
        occurred_at=T0,
        endpoint_id=ENDPOINT,
        delivery_id=f"d{n}",
        webhook_id=f"msg_{n}",
        attempt=attempt,
        status=status,
        latency_ms=1.0,
        next_attempt_at=next_at,
    )


def delivered(n: int) -> wh.DeliveryDelivered:
    return wh.DeliveryDelivered(
        event_id=f"ok{n}",
        recording_id=RID,
        tenant_id=TENANT,
        occurred_at=T0,
        endpoint_id=ENDPOINT,
        delivery_id=f"d{n}",
        webhook_id=f"msg_{n}",
        attempts=1,
        status=200,
    )


def test_retry_delays_double_with_jitter_up_to_the_cap() -> None:
    retry = policy.RetryPolicy(base_s=5, max_s=60, jitter=0.2)
    assert [retry.delay_s(n, 0.5) for n in (1, 2, 3, 4, 5)] == [5, 10, 20, 40, 60]
    assert retry.delay_s(1, 0.0) == pytest.approx(4.0)
    assert retry.delay_s(1, 0.999999) == pytest.approx(6.0, rel=1e-5)


def test_the_default_policy_retries_for_about_three_days() -> None:
    retry = policy.RetryPolicy()
    state = policy.DeliveryState("d1", 1, queued(1))
    now, attempts = T0, 0
    while True:
        attempts += 1
        nxt = policy.next_attempt(state, attempts, now, retry, 0.5)
        if nxt is None:
            break
        now = nxt
    assert timedelta(days=2, hours=18) <= now - T0 <= timedelta(days=3)
    assert 15 <= attempts <= 25


def test_order_within_a_recording_waits_for_the_earlier_delivery() -> None:
    log = policy.fold([(1, queued(1)), (2, queued(2))])
    assert policy.decide(log, "d1", T0) == policy.Attempt(1)
    waiting = policy.decide(log, "d2", T0)
    assert isinstance(waiting, policy.Wait) and "d1" in waiting.why
    retry_at = T0 + timedelta(seconds=40)
    log = policy.fold([(1, queued(1)), (2, queued(2)), (3, attempted(1, 1, 500, retry_at))])
    assert policy.decide(log, "d2", T0) == policy.Wait(40.0, waiting.why)
    assert isinstance(policy.decide(log, "d1", T0), policy.Wait)  # backing off
    assert policy.decide(log, "d1", retry_at) == policy.Attempt(2)
    log = policy.fold([(1, queued(1)), (2, queued(2)), (3, delivered(1))])
    assert policy.decide(log, "d1", T0) == policy.Done()
    assert policy.decide(log, "d2", T0) == policy.Attempt(1)


def test_a_second_copy_of_a_queued_delivery_is_the_same_delivery() -> None:
    log = policy.fold([(1, queued(1)), (2, delivered(1)), (9, queued(1))])
    assert log.deliveries["d1"].seq == 1
    assert policy.decide(log, "d1", T0) == policy.Done()


def test_give_up_when_the_next_attempt_would_be_past_the_policy() -> None:
    retry = policy.RetryPolicy(base_s=10, max_s=10, give_up_after_s=25, jitter=0)
    state = policy.DeliveryState("d1", 1, queued(1))
    assert policy.next_attempt(state, 1, T0, retry, 0.5) == T0 + timedelta(seconds=10)
    assert policy.next_attempt(state, 2, T0 + timedelta(seconds=20), retry, 0.5) is None


def test_bodies_say_what_happened_and_nothing_else() -> None:
    f = uploads.RemoteFile(
        name="manifest.json",
        uri="s3://b/k",
        size=3,
        sha256="a" * 64,
        checksum_algorithm="CRC32",
        checksum="x",
    )
    event = uploads.RecordingUploaded(
        event_id="e",
        recording_id=RID,
        tenant_id=TENANT,
        occurred_at=T0,
        job_id="j",
        destination_id="dst_1",
        files=[f],
    )
    mapped = bodies.data_of(event)
    assert mapped is not None
    kind, data = mapped
    body = msgspec.json.decode(bodies.body_of(kind, data, T0))
    assert body["type"] == "recording.uploaded"
    assert body["timestamp"] == "2026-12-01T12:00:00Z"
    assert body["data"]["manifest"]["uri"] == "s3://b/k"
    stop = recordings.RecordingStopRequested(
        event_id="s", recording_id=RID, tenant_id=TENANT, occurred_at=T0
    )
    assert bodies.data_of(stop) is None  # receivers are not told of everything
    assert set(bodies.DATA_OF_TYPE) == set(wh.WEBHOOK_TYPES)
    # Ids: stable per event and endpoint, different across endpoints.
    assert bodies.webhook_id("wh_a", "e") == bodies.webhook_id("wh_a", "e")
    assert bodies.webhook_id("wh_a", "e") != bodies.webhook_id("wh_b", "e")


def test_every_body_matches_its_exported_schema() -> None:
    import jsonschema

    from shared.events import EVENT_TYPES
    from shared.schema import webhook_schemas
    from tests.contracts.samples import build

    schemas = webhook_schemas()
    seen = set()
    for event_type in EVENT_TYPES:
        mapped = bodies.data_of(build(event_type))
        if mapped is None:
            continue
        kind, data = mapped
        body = msgspec.json.decode(bodies.body_of(kind, data, T0))
        jsonschema.validate(body, schemas[kind])
        seen.add(kind)
        wrong = {**body, "type": "recording.other"}
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(wrong, schemas[kind])
    assert seen == set(wh.WEBHOOK_TYPES)
