"""``read_subject`` leaves nothing behind on the server: a stream refuses its 1001st consumer,
and the notifier reads a delivery's log before every attempt."""

from __future__ import annotations

from datetime import UTC, datetime

from nats.js import JetStreamContext

from shared import natsio
from shared.events import event_id, recordings


async def test_reading_a_subject_leaves_no_consumer(js: JetStreamContext) -> None:
    rid = "rec_" + "a" * 24
    await natsio.publish(
        js,
        recordings.RecordingStopRequested(
            event_id=event_id(rid, "stop"),
            recording_id=rid,
            tenant_id="ten_" + "0" * 16,
            occurred_at=datetime.now(UTC),
        ),
    )
    for _ in range(5):
        events = await natsio.read_subject(js, recordings.STREAM, f"recordings.{rid}.>")
        assert len(events) == 1
    info = await js.stream_info(recordings.STREAM.name)
    assert info.state.consumer_count == 0
