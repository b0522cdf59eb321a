"""kill -9 the proxy mid-capture, restart it, stop: nothing finished is lost, the capture closes."""

from __future__ import annotations

import asyncio

from nats.js import JetStreamContext

from resguardo.publisher import Publisher
from shared import natsio
from shared.capture_format import read_segment
from shared.events import captures, event_id, now, recordings

from .conftest import (
    Proxy,
    consumer_drained,
    history,
    recording_key,
    start_recording,
    stop_recording,
    wait_for_count,
    wait_for_event,
)
from .media_check import assert_files_match, decode_segments, segments_of


async def test_kill_9_mid_capture_then_restart_and_stop(js: JetStreamContext, proxy: Proxy) -> None:
    rec = await start_recording(js)
    rec_dir = proxy.rec_dir(rec)
    pub = Publisher(proxy.whip_url(rec.rid), rec.token, participant="ana", ca_file=proxy.ca_file)
    await pub.start()
    try:
        await wait_for_count(js, rec.rid, captures.SegmentWritten, 4)
        await asyncio.sleep(0.6)  # well into the next segments
        proxy.process.kill()
        before = [e for e in await history(js, rec.rid) if isinstance(e, captures.SegmentWritten)]
        parts = sorted(rec_dir.rglob("*.rgc.part"))
        assert parts, "expected segments being written at the time of the kill"
        # what a reader can get back from each partial file (an unflushed one holds nothing)
        recoverable = 0
        key = await recording_key(js, rec)
        for part in parts:
            name = part.with_suffix("").relative_to(rec_dir).as_posix()  # sealed as the final
            try:
                _, frames = read_segment(
                    part, key=key, recording_id=rec.rid, name=name, salvage=True
                )
                recoverable += any(True for _ in frames)
            except ValueError:
                pass
        await proxy.start()  # salvage runs before the proxy listens again
        after_restart = [
            e for e in await history(js, rec.rid) if isinstance(e, captures.SegmentWritten)
        ]
        assert len(after_restart) == len(before) + recoverable
        print(
            f"segments before kill {len(before)}, partial files {len(parts)}, "
            f"recoverable {recoverable}"
        )
    finally:
        await pub.stop()  # the new proxy does not know the old session: DELETE gets 404

    await stop_recording(js, rec)
    closed = await wait_for_event(js, f"captures.{rec.rid}.closed")
    events = await history(js, rec.rid)
    segments = [e for e in events if isinstance(e, captures.SegmentWritten)]
    assert isinstance(closed, captures.CaptureClosed)
    assert closed.segments == len(segments) == len({(s.track_id, s.seq) for s in segments})
    assert closed.tracks == 2
    assert assert_files_match(rec_dir, events, key) == closed.segments
    assert not list(rec_dir.rglob("*.part")) and not list(rec_dir.rglob("*.salvage"))
    # the dead session's tracks and participant are ended on its behalf
    ended = [e for e in events if isinstance(e, captures.TrackEnded)]
    assert len(ended) == 2
    left = [e for e in events if isinstance(e, captures.ParticipantLeft)]
    assert len(left) == 1 and left[0].reason == "proxy restarted"
    for end in ended:
        mine = [s for s in segments if s.track_id == end.track_id]
        assert end.segments == len(mine)
        assert sorted(s.seq for s in mine) == list(range(len(mine)))
    video = decode_segments(rec_dir, segments_of(events, "video"), "vp8", key)
    assert video.errors == 0 and video.keyframe_first and video.frames_out > 30
    audio = decode_segments(rec_dir, segments_of(events, "audio"), "opus", key)
    assert audio.errors == 0 and audio.frames_out > 50
    # another stop request (a new message, not a dedup'd copy) changes nothing
    await natsio.publish(
        js,
        recordings.RecordingStopRequested(
            event_id=event_id(rec.rid, "stop", "again"),
            recording_id=rec.rid,
            tenant_id=rec.tenant_id,
            occurred_at=now(),
        ),
    )
    await consumer_drained(js, "RECORDINGS", "proxy-stop")
    assert len(await history(js, rec.rid)) == len(events)


async def test_sigterm_finishes_open_segments(js: JetStreamContext, proxy: Proxy) -> None:
    rec = await start_recording(js)
    rec_dir = proxy.rec_dir(rec)
    pub = Publisher(proxy.whip_url(rec.rid), rec.token, participant="bo", ca_file=proxy.ca_file)
    await pub.start()
    try:
        await wait_for_count(js, rec.rid, captures.SegmentWritten, 2)
        rc = await asyncio.to_thread(proxy.process.stop)
        assert rc == 0, (rc, proxy.process.log_path.read_text()[-3000:])
        assert list(rec_dir.rglob("*.part")) == []
    finally:
        await pub.stop(delete=False)
    events = await history(js, rec.rid)
    left = [e for e in events if isinstance(e, captures.ParticipantLeft)]
    assert len(left) == 1 and left[0].reason == "proxy shutting down"
    ended = [e for e in events if isinstance(e, captures.TrackEnded)]
    segments = [e for e in events if isinstance(e, captures.SegmentWritten)]
    assert len(ended) == 2 and sum(e.segments for e in ended) == len(segments)
    key = await recording_key(js, rec)
    assert assert_files_match(rec_dir, events, key) == len(segments)
    assert len(list(rec_dir.rglob("*.rgc"))) == len(segments)
